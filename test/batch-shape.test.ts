/**
 * Every real batch's outputs are checked against the preflight's shapes (issue 11, item 8): a model
 * whose per-row output size depends on the batch size is refused, not reduced with the wrong rows.
 */
import t from 'tap';
import { batchTiledModel, encode } from './helpers/onnx-build.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const { app } = await startApp(t);
const tiled = encode(batchTiledModel());
const mlp = modelBytes('mlp.onnx');
for (const bytes of [tiled, mlp]) {
  const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
  await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
}
const penalty = (bytes: Uint8Array, request: unknown) =>
  app.inject({ method: 'POST', url: `/v1/models/${sha256(bytes)}/penalty`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(request) });

t.test('per-row output size that grows with the batch: 422 output_shape_changed, never a penalty', async (t) => {
  // Preflight: 2 rows → [2, 6]. The stacked batch: 2 samples × (2k+1) = 10 rows → [10, 30].
  const res = await penalty(tiled, { k: 2, seed: 1, latents: { samples: 2 } });
  t.equal(res.statusCode, 422, res.body);
  const { error } = res.json();
  t.equal(error.code, 'output_shape_changed');
  t.equal(error.message, "layer 'y' has shape [10, 30] for a batch of 10 rows, but [10, 6] was expected from the preflight: its per-row output depends on the batch size, so rows cannot be audited independently");
  t.same(error.details, { layer: 'y', shape: [10, 30], expected: [10, 6] });
});

t.test('nothing lost: the same model is refused again, and a good model gives its numbers', async (t) => {
  const good = await penalty(mlp, { k: 2, seed: 1, latents: { samples: 4 } });
  t.equal(good.statusCode, 200);
  t.equal((await penalty(tiled, { k: 2, seed: 1, latents: { samples: 2 } })).json().error.code, 'output_shape_changed');
  const again = await penalty(mlp, { k: 2, seed: 1, latents: { samples: 4 } });
  t.same(again.json().layers, good.json().layers, 'the same numbers afterwards');
});
