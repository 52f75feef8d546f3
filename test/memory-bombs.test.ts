/**
 * Run-time memory bombs (issue 11, item 5): tiny models whose tensors explode are refused with
 * memory_budget_exceeded from the inferred sizes, before onnxruntime allocates them (before the
 * session opens, before the preflight, before each batch); the worker and the numbers are unharmed.
 */
import t from 'tap';
import { largestTensor, shapeGraph } from '../dist/onnx/shapes.js';
import { decodeModel } from '../dist/onnx/proto.js';
import { batchTiledWideModel, constantOfShapeModel, encode, expandModel, floatInfo, linearModel, wideRowModel } from './helpers/onnx-build.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const MiB = 1024 * 1024;
const BUDGET = 64 * MiB;
const { app, context } = await startApp(t, { limits: { maxSamples: 4096, maxK: 4096, maxRows: 1_000_000, memoryBudget: BUDGET } });
const expand = encode(expandModel(2 ** 25));
const growing = encode(batchTiledWideModel(256));
const folded = encode(constantOfShapeModel(2 ** 26));
const mlp = modelBytes('mlp.onnx');
for (const bytes of [expand, growing, folded, mlp]) {
  const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
  await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
}
const penalty = (bytes: Uint8Array, request: unknown) =>
  app.inject({ method: 'POST', url: `/v1/models/${sha256(bytes)}/penalty`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(request) });
const sessions = (): number => Object.values(context.pool.status().lanes[0].sessions).reduce((a, b) => a + b, 0);

const good = await penalty(mlp, { k: 2, seed: 1, latents: { samples: 4 } });

t.test('shape inference: exact sizes for the common ops, unknown for unknown ops', async (t) => {
  const graph = (model: object) => shapeGraph(decodeModel(encode(model)));
  t.same(largestTensor(graph(expandModel(2 ** 25)), { z: [2, 3] }), { name: 'y', op: 'Expand', shape: [2, 3, 2 ** 25], bytes: 2 * 3 * 2 ** 25 * 4 });
  t.same(largestTensor(graph(batchTiledWideModel(256)), { z: [10, 256] }), { name: 'y', op: 'Tile', shape: [10, 2560], bytes: 10 * 2560 * 4 });
  t.same(largestTensor(graph(constantOfShapeModel(2 ** 26)), { z: [2, 3] }), { name: 'c', op: 'ConstantOfShape', shape: [1, 2 ** 26], bytes: 2 ** 28 });
  t.same(largestTensor(graph(linearModel()), { z: [5, 3] }), { name: 'y', op: 'MatMul', shape: [5, 4], bytes: 80 });
  const unknownOp = { node: [{ opType: 'SomethingNew', input: ['z', 'W'], output: ['y'] }] };
  t.same(largestTensor(graph(linearModel(unknownOp)), { z: [5, 3] }), { name: 'y', op: 'SomethingNew', shape: [5, 4], bytes: 80 }, 'an op it does not know: the declared shape, the batch bound');
  t.equal(largestTensor(graph(linearModel({ ...unknownOp, output: [floatInfo('y', ['N', 'M'])] })), { z: [5, 3] }), null, 'neither inferred nor declared: unknown');
  t.same(largestTensor(graph(wideRowModel(2 ** 26)), { z: [4, 2] }), { name: 'y', op: 'Expand', shape: [4, 2 ** 26], bytes: 2 ** 30 }, 'slices along an axis of a batch');
});

t.test('Expand to 2^26 elements: 422 before the session opens', async (t) => {
  const before = sessions();
  const res = await penalty(expand, { k: 2, seed: 1, latents: { samples: 2 } });
  t.equal(res.statusCode, 422, res.body);
  t.equal(res.json().error.code, 'memory_budget_exceeded');
  t.equal(
    res.json().error.message,
    // The preflight's 2 rows, its two runs' outputs, one sample's float64 state (8 + 84 + 24 = 116 bytes an element, no step test at N = 2: docs/harden.md).
    `the penalty's float64 accumulators for 1 sample would have shape [1, 100663296], ${116 * 100663296} bytes, for a batch of 2 rows, ` +
      `with the outputs of layer 'y' fetched into JavaScript ([4, 100663296], ${16 * 100663296} bytes) and tensor 'y' (Expand) ([2, 3, 33554432], 805306368 bytes): ` +
      `${(116 + 16 + 8) * 100663296} bytes in all: over the memory budget of ${BUDGET} bytes (--memory-budget), so the model is not run`,
  );
  t.equal(sessions(), before, 'no session was created');
});

t.test('ConstantOfShape folded at session creation: 422 before the session opens', async (t) => {
  const before = sessions();
  const res = await penalty(folded, { k: 2, seed: 1, latents: { samples: 2 }, layers: ['y'] });
  t.equal(res.statusCode, 422, res.body);
  t.equal(res.json().error.code, 'memory_budget_exceeded');
  t.match(res.json().error.message, /^tensor 'c' \(ConstantOfShape\) would have shape \[1, 67108864\], 268435456 bytes/);
  t.equal(sessions(), before, 'no session was created');
});

t.test('an output that grows with the batch: the preflight passes, the real batch is refused before it runs', async (t) => {
  // Preflight: 2 rows → [2, 512], tiny. Planned batch: 64 × (2·2+1) = 320 rows → [320, 81920], 100 MiB.
  const res = await penalty(growing, { k: 2, seed: 1, latents: { samples: 64 } });
  t.equal(res.statusCode, 422, res.body);
  t.equal(res.json().error.code, 'memory_budget_exceeded');
  t.match(res.json().error.message, /^tensor 'y' \(Tile\) would have shape \[320, 81920\], 104857600 bytes, for a batch of 320 rows/);
});

t.test('nothing lost: the worker was not replaced and a good model gives the same numbers', async (t) => {
  t.equal(context.pool.status().restarts, 0);
  const again = await penalty(mlp, { k: 2, seed: 1, latents: { samples: 4 } });
  t.equal(again.statusCode, 200);
  t.same(again.json().layers, good.json().layers);
});
