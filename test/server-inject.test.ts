/**
 * The HTTP API through Fastify's inject: every route of the contract, every error a client can
 * cause (status, code, message), numbers against the in-process call and against exact values.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { writeNpy } from '../dist/io/npy.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const dcgan = modelBytes('dcgan.onnx');
const cubic = modelBytes('cubic.onnx');
const mlp = modelBytes('mlp.onnx');
const limits = { maxSamples: 64, maxK: 16, maxRows: 2000, memoryBudget: 64 * 1024 * 1024 };
const { app, dir } = await startApp(t, { limits });
const json = { 'content-type': 'application/json' };

const upload = (bytes: Uint8Array, name = 'model', headers: Record<string, string> = {}) => {
  const body = multipart([{ name, filename: 'g.onnx', data: bytes }]);
  return app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: { ...body.headers, ...headers } });
};
const penalty = (id: string, body: unknown) =>
  app.inject({ method: 'POST', url: `/v1/models/${id}/penalty`, headers: json, payload: typeof body === 'string' ? body : JSON.stringify(body) });
const stored = (): string[] => readdirSync(dir).filter((n) => n !== '.tmp').sort();
const withoutTimings = (r: Record<string, unknown>) => ({ ...r, timings: undefined });

/** Status, error code and message, the three things the contract fixes. */
function expectError(t: Tap.Test, res: { statusCode: number; json: () => unknown }, status: number, code: string, message: RegExp): void {
  const body = res.json() as { error: { code: string; message: string } };
  t.equal(res.statusCode, status, `status ${status}`);
  t.equal(body.error?.code, code, `code ${code}`);
  t.match(body.error?.message, message);
}

t.test('upload: 201 with the description, the same bytes again give 200 and the same id', async (t) => {
  const first = await upload(dcgan);
  t.equal(first.statusCode, 201);
  const body = first.json();
  t.equal(body.id, sha256(dcgan));
  t.equal(body.created, true);
  t.same(body.inputs, [{ name: 'z', type: 'float32', shape: ['batch', 12] }]);
  t.equal(body.outputs[0].name, 'image');
  t.ok(body.layers.some((l: { name: string; afterLinear: boolean }) => l.name === '/fc/Gemm_output_0' && l.afterLinear));
  t.same(body.warnings, []);
  const again = await upload(dcgan);
  t.equal(again.statusCode, 200);
  t.same({ ...again.json(), created: true }, body);
  t.same(stored(), [`${body.id}.json`, `${body.id}.onnx`]);
  const got = await app.inject({ method: 'GET', url: `/v1/models/${body.id}` });
  t.equal(got.statusCode, 200);
  t.same(got.json().layers, body.layers);
});

t.test('penalty on a stored model equals the in-process evaluatePenalty', async (t) => {
  const request = { latents: { samples: 3 }, seed: 5, k: 4, layers: ['/block1/block1.2/LeakyRelu_output_0', 'image'] };
  const res = await penalty(sha256(dcgan), request);
  t.equal(res.statusCode, 200);
  const sessions = new SessionCache(1);
  t.teardown(() => sessions.clear());
  const local = await evaluatePenalty(loadModel(dcgan), { ...request }, { device: parseDevice('cpu'), sessions, limits });
  t.same(withoutTimings(res.json()), withoutTimings(JSON.parse(JSON.stringify(local))));
  t.equal(res.json().forwardPasses, 9);
  t.equal(res.json().rows, 27);
  t.equal(res.json().executionProvider, 'cpu');
});

// cubic.onnx: y0 = z0·z1, y1 = z0²·z1. The second difference is exact for cubics, so with explicit
// directions q_j = vᵀHv is known in closed form: y0 → 2·v0·v1, y1 → 2·z1·v0² + 4·z0·v0·v1.
const Z = [[0.5, 1.5], [-1, 2]];
const V = [[[1, 1], [1, -1]], [[-1, 1], [1, 1]], [[1, -1], [-1, -1]]];
function exactCubic(): { y0: number; y1: number } {
  const unbiased = (xs: number[]) => {
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    return xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1);
  };
  const per = Z.map((z, n) => ({
    y0: unbiased(V.map((v) => 2 * v[n][0] * v[n][1])),
    y1: unbiased(V.map((v) => 2 * z[1] * v[n][0] ** 2 + 4 * z[0] * v[n][0] * v[n][1])),
  }));
  return { y0: Math.max(...per.map((p) => p.y0)), y1: Math.max(...per.map((p) => p.y1)) };
}
const cubicRequest = { latents: Z, directions: V, k: 3, epsilon: 0.1, layers: ['y0', 'y1'], seed: 1 };

t.test('penalties of an analytic model match the closed form; the one-shot route gives the same numbers', async (t) => {
  t.equal((await upload(cubic)).statusCode, 201);
  const res = await penalty(sha256(cubic), cubicRequest);
  t.equal(res.statusCode, 200);
  const exact = exactCubic();
  const [y0, y1] = res.json().layers;
  t.ok(Math.abs(y0.penalty - exact.y0) <= 1e-3 * exact.y0, `y0 ${y0.penalty} vs ${exact.y0}`);
  t.ok(Math.abs(y1.penalty - exact.y1) <= 1e-3 * exact.y1, `y1 ${y1.penalty} vs ${exact.y1}`);
  t.equal(res.json().directions, 'explicit');

  const npy = (shape: number[], values: number[][] | number[][][]) => writeNpy({ type: 'float32', shape, data: Float32Array.from(values.flat(2) as number[]) });
  const { latents, directions, ...rest } = cubicRequest;
  const body = multipart([
    { name: 'model', filename: 'cubic.onnx', data: cubic },
    { name: 'request', data: JSON.stringify(rest) },
    { name: 'latents', filename: 'z.npy', data: npy([2, 2], latents) },
    { name: 'directions', filename: 'v.npy', data: npy([3, 2, 2], directions) },
  ]);
  const once = await app.inject({ method: 'POST', url: '/v1/penalty', payload: body.payload, headers: body.headers });
  t.equal(once.statusCode, 200);
  // The same numbers; only the noise measurement's and the step-halving's bookkeeping differ (the worker's session cache has them now).
  const sansNoise = (r: Record<string, unknown>) => ({ ...withoutTimings(r), noise: undefined, halving: undefined });
  t.same(sansNoise(once.json()), sansNoise(res.json()));
  t.same([once.json().noise.cached, once.json().noise.rows], [true, 0]);
});

t.test('a one-shot request on a new model stores nothing', async (t) => {
  const before = stored();
  const body = multipart([
    { name: 'model', filename: 'mlp.onnx', data: mlp },
    { name: 'request', data: JSON.stringify({ latents: { samples: 2 }, k: 2, seed: 3 }), contentType: 'application/json' },
  ]);
  const res = await app.inject({ method: 'POST', url: '/v1/penalty', payload: body.payload, headers: body.headers });
  t.equal(res.statusCode, 200);
  t.equal(res.json().model, sha256(mlp));
  t.same(stored(), before);
  t.same(readdirSync(join(dir, '.tmp')), []);
});

t.test('contract errors: malformed JSON, unknown field, k < 2, epsilon <= 0', async (t) => {
  const id = sha256(dcgan);
  expectError(t, await penalty(id, '{"k": 4,'), 400, 'malformed_json', /not valid JSON/);
  expectError(t, await penalty(id, { k: 4, epsilom: 0.1 }), 400, 'invalid_request', /^request has unknown field 'epsilom'$/);
  expectError(t, await penalty(id, { k: 1 }), 400, 'invalid_request', /^request\.k: must be at least 2/);
  expectError(t, await penalty(id, { epsilon: 0 }), 400, 'invalid_request', /^request\.epsilon: must be greater than 0/);
  expectError(t, await penalty(id, { epsilon: -1 }), 400, 'invalid_request', /^request\.epsilon: must be greater than 0/);
  expectError(t, await penalty(id, { latents: [[1, 2], [3]] }), 400, 'invalid_array', /latents is not rectangular/);
});

t.test('contract errors that need the model: 422 for shapes and layers, 404 for unknown models', async (t) => {
  const id = sha256(dcgan);
  expectError(t, await penalty(id, { latents: [[1, 2, 3]] }), 422, 'shape_mismatch', /latents have shape \[1, 3\] but input 'z' expects \[batch, 12\]/);
  expectError(t, await penalty(id, { layers: ['nope'] }), 422, 'unknown_layer', /layer 'nope' is not an output or intermediate tensor/);
  expectError(t, await penalty(id, { wrt: 'x' }), 422, 'unknown_tensor', /wrt names 'x', which is neither an input nor a tensor of the model/);
  const unknown = 'f'.repeat(64);
  expectError(t, await penalty(unknown, { k: 2 }), 404, 'unknown_model', new RegExp(`no model with id '${unknown}'`));
  expectError(t, await app.inject({ method: 'GET', url: '/v1/models/abc' }), 404, 'unknown_model', /no model with id 'abc'/);
  expectError(t, await app.inject({ method: 'DELETE', url: `/v1/models/${unknown}` }), 404, 'unknown_model', /upload it with POST \/v1\/models/);
  expectError(t, await app.inject({ method: 'GET', url: '/v2/nothing' }), 404, 'not_found', /no route GET \/v2\/nothing/);
});

t.test('limits on N, k and rows are settings: 422 naming the limit', async (t) => {
  const id = sha256(dcgan);
  expectError(t, await penalty(id, { latents: { samples: 65 } }), 422, 'limit_exceeded', /samples is 65, above this server's limit of 64/);
  expectError(t, await penalty(id, { k: 17 }), 422, 'limit_exceeded', /k is 17, above this server's limit of 16/);
  expectError(t, await penalty(id, { latents: { samples: 64 }, k: 16 }), 422, 'limit_exceeded', /needs 2112 forward rows .* above the limit of 2000/);
});

t.test('upload errors: not ONNX, wrong field, not multipart; nothing is stored', async (t) => {
  const before = stored();
  expectError(t, await upload(new TextEncoder().encode('{"not": "a model"}')), 422, 'invalid_model', /the file is not an ONNX model/);
  expectError(t, await upload(mlp, 'file'), 400, 'invalid_request', /the file field is named 'file'; name it "model"/);
  expectError(
    t,
    await app.inject({ method: 'POST', url: '/v1/models', headers: json, payload: '{}' }),
    400,
    'invalid_request',
    /send multipart\/form-data with a file field named "model"/,
  );
  t.same(stored(), before);
  t.same(readdirSync(join(dir, '.tmp')), []);
});

t.test('one-shot errors: missing model, unknown part, bad request JSON, an array given twice', async (t) => {
  const send = (parts: Parameters<typeof multipart>[0]) => {
    const body = multipart(parts);
    return app.inject({ method: 'POST', url: '/v1/penalty', payload: body.payload, headers: body.headers });
  };
  const model = { name: 'model', filename: 'm.onnx', data: mlp };
  expectError(t, await send([{ name: 'request', data: '{}' }]), 400, 'missing_model', /no "model" file part/);
  expectError(t, await send([model, { name: 'extra', data: '1' }]), 400, 'invalid_request', /unknown multipart part 'extra'/);
  expectError(t, await send([model, { name: 'request', data: '{"k":' }]), 400, 'malformed_json', /the "request" part is not valid JSON/);
  expectError(t, await send([model, { name: 'request', data: '{"k": 1}' }]), 400, 'invalid_request', /request\.k: must be at least 2/);
  expectError(
    t,
    await send([model, { name: 'request', data: '{"latents": [[0,0,0,0,0,0,0,0]]}' }, { name: 'latents', data: '[[1,1,1,1,1,1,1,1]]' }]),
    400,
    'invalid_request',
    /latents is given both in the "request" JSON and as a part/,
  );
  expectError(t, await send([model, { name: 'latents', filename: 'z.npy', data: 'garbage' }]), 400, 'invalid_array', /neither a \.npy file nor a JSON array/);
  t.same(readdirSync(join(dir, '.tmp')), []);
});

t.test('delete removes a model; its penalty is then 404', async (t) => {
  const up = await upload(mlp);
  t.equal(up.statusCode, 201);
  const del = await app.inject({ method: 'DELETE', url: `/v1/models/${sha256(mlp)}` });
  t.equal(del.statusCode, 204);
  expectError(t, await penalty(sha256(mlp), {}), 404, 'unknown_model', /no model with id/);
});

t.test('operations: healthz, readyz, metrics, openapi, docs, request ids', async (t) => {
  const health = await app.inject({ method: 'GET', url: '/healthz' });
  t.same(health.json(), { status: 'ok' });
  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 200);
  const r = ready.json();
  t.equal(r.status, 'ready');
  t.equal(r.lanes.length, 1);
  t.match(r.lanes[0], { device: 'cpu', workers: 1, executionProvider: 'cpu', running: 0 });
  t.equal(r.models, stored().filter((n) => n.endsWith('.onnx')).length);
  t.equal(r.restarts, 0);
  t.ok(Object.values(r.lanes[0].sessions).every((n) => (n as number) >= 1), 'the worker reports its cached sessions');

  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(metrics.statusCode, 200);
  const text = metrics.body;
  t.match(text, /hessian_audit_http_requests_total\{method="POST",route="\/v1\/models\/:id\/penalty",status="200"\} \d+/);
  t.match(text, /hessian_audit_http_requests_total\{method="POST",route="\/v1\/models\/:id\/penalty",status="422"\} \d+/);
  t.match(text, /hessian_audit_http_request_duration_seconds_bucket\{le="0\.005",method="GET",route="\/healthz",status="200"\}/);
  t.match(text, /hessian_audit_queue_depth 0/);
  t.match(text, /hessian_audit_worker_restarts_total\{reason="crash"\} 0/);
  // Rows of the successful penalty requests above: 27 (dcgan), 14 + 14 (cubic twice), 10 (mlp one-shot).
  t.match(text, /hessian_audit_forward_rows_total 65\n/);
  t.match(text, /hessian_audit_forward_rows_per_second \d/);
  // The last penalty (mlp one-shot, 10 rows) ran as one batch: small requests are planned by the budget.
  t.match(text, /hessian_audit_batch_rows\{device="cpu"\} 10\n/);

  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
  for (const path of ['/v1/models', '/v1/models/{id}', '/v1/models/{id}/penalty', '/v1/penalty', '/healthz', '/readyz']) t.ok(doc.paths[path], path);
  t.equal(doc.components.schemas.PenaltyRequest.additionalProperties, false);
  t.ok(doc.components.schemas.PenaltyResult.properties.layers);
  const form = doc.paths['/v1/penalty'].post.requestBody.content['multipart/form-data'].schema;
  t.same(form.required, ['model']);
  t.equal(form.properties.latents.format, 'binary');
  t.ok(doc.paths['/v1/models'].post.requestBody.content['multipart/form-data'].schema.properties.model);
  const docs = await app.inject({ method: 'GET', url: '/docs/' });
  t.equal(docs.statusCode, 200);
  t.match(docs.headers['content-type'], /text\/html/);

  t.match(health.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  const echoed = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'trace-42' } });
  t.equal(echoed.headers['x-request-id'], 'trace-42');
});
