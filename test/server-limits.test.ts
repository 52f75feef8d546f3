/**
 * Deployment settings through inject: bearer token, upload and body limits (413 naming the limit,
 * nothing written to the store), and the worker faults: a crash, a time-out, a full queue.
 */
import { readdirSync } from 'node:fs';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, until } from './helpers/server.js';

const dcgan = modelBytes('dcgan.onnx');
const mlp = modelBytes('mlp.onnx');
const json = { 'content-type': 'application/json' };

function expectError(t: Tap.Test, res: { statusCode: number; json: () => unknown }, status: number, code: string, message: RegExp): void {
  const body = res.json() as { error: { code: string; message: string } };
  t.equal(res.statusCode, status, `status ${status}`);
  t.equal(body.error?.code, code, `code ${code}`);
  t.match(body.error?.message, message);
}

t.test('token and size limits', async (t) => {
  const { app, dir } = await startApp(t, { token: 's3cret', maxUploadBytes: 64 * 1024, maxBodyBytes: 4 * 1024 });
  const auth = { authorization: 'Bearer s3cret' };
  const upload = (bytes: Uint8Array, headers: Record<string, string>) => {
    const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
    return app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: { ...body.headers, ...headers } });
  };
  const files = () => readdirSync(dir);

  t.test('every /v1 route answers 401 without the token or with a wrong one', async (t) => {
    expectError(t, await upload(mlp, {}), 401, 'unauthorized', /needs a token: send the header "Authorization: Bearer <token>"/);
    expectError(t, await upload(mlp, { authorization: 'Bearer nope' }), 401, 'unauthorized', /the bearer token is not valid/);
    const id = sha256(mlp);
    expectError(t, await app.inject({ method: 'GET', url: `/v1/models/${id}` }), 401, 'unauthorized', /needs a token/);
    expectError(t, await app.inject({ method: 'POST', url: `/v1/models/${id}/penalty`, headers: json, payload: '{}' }), 401, 'unauthorized', /needs a token/);
    expectError(t, await app.inject({ method: 'POST', url: '/v1/penalty', headers: { ...json, authorization: 'Basic abc' } }), 401, 'unauthorized', /needs a token/);
    t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'operations stay open');
    t.same(files(), ['.tmp']);
    const ok = await upload(mlp, auth);
    t.equal(ok.statusCode, 201);
    const res = await app.inject({ method: 'POST', url: `/v1/models/${id}/penalty`, headers: { ...json, ...auth }, payload: '{"k": 2, "seed": 1}' });
    t.equal(res.statusCode, 200);
  });

  t.test('an oversize upload is 413 with the limit named, and nothing is written', async (t) => {
    const before = files();
    expectError(t, await upload(dcgan, auth), 413, 'payload_too_large', /larger than this server's limit of 64 KiB \(--max-upload-mib\); nothing was stored/);
    const body = multipart([
      { name: 'request', data: '{}' },
      { name: 'model', filename: 'g.onnx', data: dcgan },
    ]);
    const once = await app.inject({ method: 'POST', url: '/v1/penalty', payload: body.payload, headers: { ...body.headers, ...auth } });
    expectError(t, once, 413, 'payload_too_large', /limit of 64 KiB/);
    t.same(files(), before);
    t.same(readdirSync(`${dir}/.tmp`), []);
  });

  t.test('a JSON body over the limit is 413 with the limit named', async (t) => {
    const latents = Array.from({ length: 100 }, () => Array.from({ length: 8 }, () => 0.123456));
    const res = await app.inject({ method: 'POST', url: `/v1/models/${sha256(mlp)}/penalty`, headers: { ...json, ...auth }, payload: JSON.stringify({ latents }) });
    expectError(t, res, 413, 'payload_too_large', /the request body is larger than this server's limit of 4 KiB \(--max-body-mib\)/);
  });
});

t.test('worker faults: crash isolation, time-out, full queue', async (t) => {
  const crashing = modelBytes('linear_orthogonal.onnx');
  const hanging = modelBytes('separable.onnx');
  const { app, context } = await startApp(t, {
    maxQueue: 1,
    requestTimeoutMs: 3000,
    workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `abort=${sha256(crashing)},hang=${sha256(hanging)}` },
  });
  for (const bytes of [crashing, hanging, mlp]) {
    const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
    const res = await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
    t.equal(res.statusCode, 201, res.body.slice(0, 300));
  }
  const penalty = (bytes: Uint8Array) =>
    app.inject({ method: 'POST', url: `/v1/models/${sha256(bytes)}/penalty`, headers: json, payload: '{"k": 2, "seed": 1, "latents": {"samples": 2}}' });
  const pids = () => context.pool.status().lanes[0].pids;

  t.test('a worker that aborts fails only its request (500), is replaced, and the server keeps serving', async (t) => {
    const before = pids();
    expectError(t, await penalty(crashing), 500, 'worker_crashed', /the worker running this penalty task died .* the worker was replaced/);
    const after = await penalty(mlp);
    t.equal(after.statusCode, 200);
    t.equal(after.json().model, sha256(mlp));
    t.equal(pids().length, 1);
    t.not(pids()[0], before[0], 'a new worker process');
    const ready = (await app.inject({ method: 'GET', url: '/readyz' })).json();
    t.equal(ready.status, 'ready', JSON.stringify(ready));
    t.equal(ready.restarts, 1);
    t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /hessian_audit_worker_restarts_total\{reason="crash"\} 1/);
  });

  t.test('beyond the queue limit 503 with Retry-After; a hung task times out and its worker is replaced', async (t) => {
    const hung = penalty(hanging);
    await until(() => context.pool.status().running === 1, 'the hanging task to start');
    const waiting = penalty(mlp);
    await until(() => context.pool.status().queued === 1, 'the second request to queue');
    const refused = await penalty(mlp);
    expectError(t, refused, 503, 'overloaded', /all 1 workers are busy and 1 requests are waiting \(queue limit 1\); retry later/);
    t.match(refused.headers['retry-after'], /^[1-9]\d*$/);
    expectError(t, await hung, 503, 'timeout', /ran past this server's time limit of 3000 ms and was cancelled/);
    const served = await waiting;
    t.equal(served.statusCode, 200, `the queued request runs on the replacement worker: ${served.body}`);
    t.equal(context.pool.status().restarts, 2);
    t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /hessian_audit_worker_restarts_total\{reason="timeout"\} 1/);
  });
});
