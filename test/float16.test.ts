/** Half-precision outputs: widened exactly, and judged against the float16 noise floor. */
import t from 'tap';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { halfToFloat } from '../dist/runtime/tensors.js';
import { modelProto } from '../dist/onnx/proto.js';

t.test('float16 bit patterns widen to the exact values', async (t) => {
  const bits = Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x3555, 0x7c00, 0xfc00, 0x0000, 0x8000]);
  const values = Array.from(halfToFloat(bits));
  t.same(values.slice(0, 4), [1, -2, 65504, 2 ** -24]);
  t.equal(values[4], 0.333251953125);
  t.same(values.slice(5, 7), [Infinity, -Infinity]);
  t.ok(Object.is(values[8], -0));
  t.ok(Number.isNaN(halfToFloat(Uint16Array.from([0x7e00]))[0]));
});

/** y = Cast<float16>(z0 · z1) for z of shape [N, 2]: the penalty is exactly Var(2·v0·v1) = 4·k/(k−1)·(1 − m²). */
function halfModel(): Uint8Array {
  const type = modelProto();
  const dims = (...d: (number | string)[]) => ({ dim: d.map((x) => (typeof x === 'number' ? { dimValue: x } : { dimParam: x })) });
  return type
    .encode(
      type.fromObject({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 13 }],
        graph: {
          name: 'half',
          node: [
            { opType: 'ReduceProd', input: ['z'], output: ['p'], attribute: [{ name: 'axes', type: 7, ints: [1] }, { name: 'keepdims', type: 2, i: 1 }] },
            { opType: 'Cast', input: ['p'], output: ['y'], attribute: [{ name: 'to', type: 2, i: 10 }] },
          ],
          input: [{ name: 'z', type: { tensorType: { elemType: 1, shape: dims('batch', 2) } } }],
          output: [{ name: 'y', type: { tensorType: { elemType: 10, shape: dims('batch', 1) } } }],
        },
      }),
    )
    .finish();
}

t.test('a float16 layer gives the analytic penalty and a float16 noise floor', async (t) => {
  const sessions = new SessionCache(2);
  t.teardown(() => sessions.clear());
  const model = loadModel(halfModel());
  t.equal(model.description.outputs[0].type, 'float16');
  // Directions chosen so that v0·v1 = +1, −1, −1: q = 2, −2, −2, whose unbiased variance is 16/3.
  const directions = { type: 'float32' as const, shape: [3, 1, 2], data: Float32Array.from([1, 1, 1, -1, -1, 1]) };
  const latents = { type: 'float32' as const, shape: [1, 2], data: Float32Array.from([0.75, -0.5]) };
  const result = await evaluatePenalty(model, { latents, directions, epsilon: 0.5 }, { device: { kind: 'cpu' }, sessions });
  t.ok(Math.abs(result.penalty! - 16 / 3) / (16 / 3) < 1e-2, `${result.penalty} ≈ 16/3 within float16 rounding`);
  t.ok(result.layers[0].noiseFloor > 1e-6, 'the floor uses the float16 unit roundoff');
  const tiny = await evaluatePenalty(model, { latents, directions, epsilon: 0.01 }, { device: { kind: 'cpu' }, sessions });
  t.ok(tiny.warnings.some((w) => w.code === 'below_noise_floor'), 'a small ε drowns a float16 layer in rounding');
});
