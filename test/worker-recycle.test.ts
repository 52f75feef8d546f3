/**
 * A worker whose resident memory passes --max-worker-rss-mib after a task is replaced before it
 * takes another (issue 11, item 5): onnxruntime's native memory does not always go back.
 * A 1-byte limit makes every task pass it.
 */
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const { app, context } = await startApp(t, { maxWorkerRssBytes: 1 });
const mlp = modelBytes('mlp.onnx');
const body = multipart([{ name: 'model', filename: 'g.onnx', data: mlp }]);
await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
const penalty = () =>
  app.inject({ method: 'POST', url: `/v1/models/${sha256(mlp)}/penalty`, headers: { 'content-type': 'application/json' }, payload: '{"k": 2, "seed": 1, "latents": {"samples": 4}}' });

t.test('past the limit: the worker is replaced after its task, the answers are unharmed', async (t) => {
  const pid = () => context.pool.status().lanes[0].pids[0];
  const first = pid();
  const restarts = context.pool.status().restarts;
  const a = await penalty();
  t.equal(a.statusCode, 200);
  const second = pid();
  t.not(second, first, 'a new worker after the first task');
  const b = await penalty();
  t.equal(b.statusCode, 200);
  t.not(pid(), second, 'and after the second');
  t.same(b.json().layers, a.json().layers, 'the same numbers');
  t.equal(context.pool.status().restarts, restarts + 2);
  t.ok(context.pool.ready());
  // Every replacement so far (the probe's and the upload's tasks too) was for memory, none a crash.
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(metrics, new RegExp(`hessian_audit_worker_restarts_total\\{reason="memory"\\} ${context.pool.status().restarts}\n`));
  t.match(metrics, /hessian_audit_worker_restarts_total\{reason="crash"\} 0/);
});
