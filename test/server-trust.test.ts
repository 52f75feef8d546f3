/** The trust checks over HTTP: the same refusals and warnings as the command line. */
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, startApp } from './helpers/server.js';

const { app } = await startApp(t, {});
const json = { 'content-type': 'application/json' };

async function upload(name: string): Promise<string> {
  const body = multipart([{ name: 'model', filename: name, data: modelBytes(name) }]);
  const res = await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
  return res.json().id;
}
const penalty = (id: string, body: unknown) =>
  app.inject({ method: 'POST', url: `/v1/models/${id}/penalty`, headers: json, payload: JSON.stringify(body) });

t.test('a model with random ops: 422 nondeterministic_model, and a warning with the override', async (t) => {
  const id = await upload('noisy.onnx');
  const description = await app.inject({ method: 'GET', url: `/v1/models/${id}` });
  t.same(description.json().randomOps.map((r: { op: string }) => r.op), ['RandomNormalLike']);
  const refused = await penalty(id, { latents: { samples: 2 }, seed: 1 });
  t.equal(refused.statusCode, 422);
  t.equal(refused.json().error.code, 'nondeterministic_model');
  t.match(refused.json().error.message, /\/RandomNormalLike .*allowNondeterministic/);
  const allowed = await penalty(id, { latents: { samples: 2 }, seed: 1, allowNondeterministic: true });
  t.equal(allowed.statusCode, 200);
  t.ok(allowed.json().layers[0].determinism.maxDifference > 0);
  t.ok(allowed.json().warnings.some((w: { code: string }) => w.code === 'nondeterministic_output'));
});

t.test('rows that interact run pass by pass; the ε sweep and maxSamples come through', async (t) => {
  const bn = await upload('bn_train.onnx');
  const res = await penalty(bn, { latents: { samples: 3 }, seed: 1, k: 2 });
  t.equal(res.statusCode, 200);
  t.equal(res.json().mode, 'per-pass');
  t.ok(res.json().warnings.some((w: { code: string }) => w.code === 'rows_interact'));
  const cubic = await upload('cubic.onnx');
  const sweep = await penalty(cubic, { latents: { samples: 6 }, maxSamples: 2, seed: 1, k: 3, epsilons: [0.05, 0.2] });
  t.equal(sweep.statusCode, 200);
  t.equal(sweep.json().samples, 2);
  t.same(sweep.json().sweep.map((p: { epsilon: number }) => p.epsilon), [0.05, 0.2]);
  const bad = await penalty(cubic, { epsilons: [0] });
  t.equal(bad.statusCode, 400);
  t.match(bad.json().error.message, /request\.epsilons\.0: must be greater than 0/);
});
