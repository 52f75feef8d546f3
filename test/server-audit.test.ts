/**
 * The audit routes through Fastify's inject: numbers against exact values and against the
 * in-process call, the HTML report on Accept: text/html, and the errors a client can cause.
 */
import t from 'tap';
import { evaluateHessian } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { wantsHtml } from '../dist/server/routes/metrics.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const limits = { maxSamples: 64, maxK: 64, maxRows: 3000, memoryBudget: 64 * 1024 * 1024 };
const { app } = await startApp(t, { limits });
const json = { 'content-type': 'application/json' };

async function upload(name: string): Promise<string> {
  const body = multipart([{ name: 'model', filename: name, data: modelBytes(name) }]);
  const res = await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
  if (res.statusCode !== 201) throw new Error(`upload ${name}: ${res.statusCode} ${res.body.slice(0, 200)}`);
  return res.json().id;
}
const post = (id: string, metric: string, body: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: `/v1/models/${id}/${metric}`, headers: { ...json, ...headers }, payload: JSON.stringify(body) });

const quadratic = await upload('quadratic.onnx');
const ignoring = await upload('ignoring.onnx');
const orthogonal = await upload('linear_orthogonal.onnx');
const dcgan = await upload('dcgan.onnx');

function expectError(t: Tap.Test, res: { statusCode: number; json: () => unknown }, status: number, code: string, message: RegExp): void {
  const body = res.json() as { error: { code: string; message: string } };
  t.equal(res.statusCode, status, `status ${status}`);
  t.equal(body.error?.code, code, `code ${code}`);
  t.match(body.error?.message, message);
}

t.test('POST /hessian: the quadratic model’s exact figures, and the same numbers as in process', async (t) => {
  const body = { latents: { samples: 2 }, seed: 4, epsilon: 0.5, element: 0 };
  const res = await post(quadratic, 'hessian', body);
  t.equal(res.statusCode, 200, res.body.slice(0, 300));
  const r = res.json();
  t.equal(r.metric, 'hessian');
  t.ok(Math.abs(r.penalty - 33) < 1e-3, `penalty ${r.penalty}`);
  t.ok(Math.abs(r.layers[0].interaction[1][1] - 36) < 1e-3);
  t.same(r.layers[0].elementHessian[0][1].map((x: number) => Math.round(x * 1e3) / 1e3), [2, 6, 1, 1]);
  const sessions = new SessionCache(1);
  t.teardown(() => sessions.clear());
  const local = await evaluateHessian(loadModel(modelBytes('quadratic.onnx')), body, { device: { kind: 'cpu' }, sessions });
  t.same(r.layers, JSON.parse(JSON.stringify(local.layers)));
});

t.test('POST /activeness and /orthogonality', async (t) => {
  const a = await post(ignoring, 'activeness', { latents: { samples: 3 }, seed: 1 });
  t.equal(a.statusCode, 200, a.body.slice(0, 300));
  t.same(a.json().unused, [3]);
  t.equal(a.json().layers[0].activeness[3], 0);
  const o = await post(orthogonal, 'orthogonality', { latents: { samples: 3 }, seed: 1, k: 4, epsilon: 1 });
  t.equal(o.statusCode, 200, o.body.slice(0, 300));
  t.ok(Math.abs(o.json().score) < 1e-8);
});

t.test('POST /audit: JSON by default, the HTML report on Accept: text/html', async (t) => {
  const body = { latents: { samples: 2 }, seed: 7, k: 2 };
  const res = await post(dcgan, 'audit', body);
  t.equal(res.statusCode, 200, res.body.slice(0, 300));
  const r = res.json();
  t.equal(r.metric, 'audit');
  t.equal(r.hessian.rows, 2 * 157);
  t.equal(r.seed, 7);
  t.notOk('previews' in r);
  const html = await post(dcgan, 'audit', { ...body, modelName: 'dcgan.onnx' }, { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' });
  t.equal(html.statusCode, 200);
  t.match(html.headers['content-type'], /^text\/html/);
  t.match(html.body, /^<!DOCTYPE html>/);
  t.match(html.body, /Disentanglement audit — dcgan\.onnx/);
  for (const id of ['summary', 'parameters', 'penalties', 'interaction', 'activeness', 'orthogonality', 'samples', 'warnings']) t.match(html.body, `<section id="${id}"`);
  t.match(html.body, /<img src="data:image\/png;base64,/);
  const hessianReport = await post(quadratic, 'hessian', { latents: { samples: 1 }, seed: 1 }, { accept: 'text/html' });
  t.match(hessianReport.body, /<section id="interaction"/);
  t.notMatch(hessianReport.body, /<section id="activeness"/);
  t.ok(wantsHtml('text/html') && !wantsHtml('application/json, text/html') && !wantsHtml(undefined) && !wantsHtml('*/*'));
});

t.test('audit errors: unknown model, unknown field, bad settings, d too large, basis shape', async (t) => {
  expectError(t, await post('0'.repeat(64), 'hessian', {}), 404, 'unknown_model', /0{64}/);
  expectError(t, await post(quadratic, 'audit', { samples: 3 }), 400, 'invalid_request', /request has unknown field 'samples'/);
  expectError(t, await post(quadratic, 'activeness', { extent: 0 }), 400, 'invalid_request', /request\.extent: must be greater than 0/);
  expectError(t, await post(quadratic, 'hessian', { element: -1 }), 400, 'invalid_request', /request\.element: must be at least 0/);
  expectError(
    t,
    await post(dcgan, 'hessian', { latents: { samples: 20 }, seed: 1 }),
    422,
    'hessian_too_large',
    /N·\(d²\+d\+1\) = 20·157 = 3140 forward rows for d = 12 latents, above the limit of 3000; use fewer samples, or the stochastic penalty/,
  );
  expectError(t, await post(quadratic, 'hessian', { basis: [[1, 0, 0]] }), 422, 'shape_mismatch', /basis has shape \[1, 3\]/);
  expectError(t, await post(quadratic, 'activeness', { basis: [[1, 0, 0, 0]] }), 400, 'invalid_argument', /not defined along a basis/);
});

t.test('the penalty route takes a basis too, and the OpenAPI document lists the audit routes', async (t) => {
  const identity = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
  const plain = await post(quadratic, 'penalty', { latents: { samples: 2 }, seed: 3, k: 4 });
  const along = await post(quadratic, 'penalty', { latents: { samples: 2 }, seed: 3, k: 4, basis: identity });
  t.equal(along.statusCode, 200, along.body.slice(0, 300));
  t.same(along.json().layers[0].perSample, plain.json().layers[0].perSample);
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
  for (const metric of ['hessian', 'activeness', 'orthogonality', 'audit']) t.ok(doc.paths[`/v1/models/{id}/${metric}`], metric);
  t.equal(doc.components.schemas.AuditRequest.additionalProperties, false);
  t.ok(doc.components.schemas.HessianResult.properties.layers);
  t.equal(sha256(modelBytes('quadratic.onnx')), quadratic);
});
