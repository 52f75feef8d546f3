/**
 * A one-node model (y = Identity(x)) built in memory: opening it on a device tells which execution
 * provider a worker really gets, without needing any user model.
 */
import { modelProto } from '../onnx/proto.js';

const FLOAT = 1;

export function providerCheckModel(): Uint8Array {
  const type = modelProto();
  const tensor = { tensorType: { elemType: FLOAT, shape: { dim: [{ dimValue: 1 }] } } };
  return type
    .encode(
      type.fromObject({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 13 }],
        producerName: 'hessian-audit provider check',
        graph: {
          name: 'probe',
          node: [{ opType: 'Identity', input: ['x'], output: ['y'] }],
          input: [{ name: 'x', type: tensor }],
          output: [{ name: 'y', type: tensor }],
        },
      }),
    )
    .finish();
}
