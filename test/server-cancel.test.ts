/** A client that disconnects cancels its work: a queued task leaves the queue, a running one stops. */
import { request as httpRequest } from 'node:http';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, until } from './helpers/server.js';

const hanging = modelBytes('separable.onnx');
const mlp = modelBytes('mlp.onnx');
const { app, context } = await startApp(t, {
  maxQueue: 4,
  requestTimeoutMs: 60_000,
  workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)}` },
});
for (const bytes of [hanging, mlp]) {
  const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
  await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
}
await app.listen({ host: '127.0.0.1', port: 0 });
const { port } = app.server.address() as { port: number };

/** Send a penalty request over a real socket; returns a function that cuts the connection. */
function send(bytes: Uint8Array): { cut: () => void; done: Promise<string> } {
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: `/v1/models/${sha256(bytes)}/penalty`, headers: { 'content-type': 'application/json' } });
  const done = new Promise<string>((resolve) => {
    req.on('response', (res) => resolve(`status ${res.statusCode}`));
    req.on('error', (err) => resolve(`error ${err.message}`));
  });
  req.end('{"k": 2, "seed": 1, "latents": {"samples": 2}}');
  return { cut: () => req.destroy(), done };
}

t.test('cutting a queued request removes it from the queue; cutting a running one frees its worker', async (t) => {
  const running = send(hanging);
  await until(() => context.pool.status().running === 1, 'the hanging task to start');
  const queued = send(mlp);
  await until(() => context.pool.status().queued === 1, 'the second request to queue');
  queued.cut();
  await until(() => context.pool.status().queued === 0, 'the queue to empty');
  t.equal(context.pool.status().running, 1, 'the running task is untouched');

  const before = context.pool.status().restarts;
  running.cut();
  await until(() => context.pool.status().running === 0, 'the running task to stop');
  await until(() => context.pool.status().restarts === before + 1 && context.pool.ready(), 'a replacement worker');
  t.match(await running.done, /^error /, 'the client saw its own disconnect');
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /hessian_audit_worker_restarts_total\{reason="cancelled"\} 1/);

  const next = await app.inject({ method: 'POST', url: `/v1/models/${sha256(mlp)}/penalty`, headers: { 'content-type': 'application/json' }, payload: '{"k": 2, "seed": 1, "latents": {"samples": 2}}' });
  t.equal(next.statusCode, 200, 'the next request is served');
});
