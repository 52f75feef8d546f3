/**
 * The release gate's heavy arithmetic (the bootstrap) runs in a worker, is capped, and stops when
 * its client disconnects (issue 11, items 4 and 9).
 */
import { request as httpRequest } from 'node:http';
import t from 'tap';
import type { Task } from '../dist/pool/protocol.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, until } from './helpers/server.js';

// Three compatible generators (same latents, same layer names): the baseline and two candidates.
const mlp = modelBytes('dcgan.onnx');
const slow = modelBytes('dcgan_smooth.onnx');
const hanging = modelBytes('dcgan_entangled.onnx');
const { app, context } = await startApp(t, {
  maxQueue: 4,
  requestTimeoutMs: 60_000,
  limits: { maxSamples: 4096, maxK: 4096, maxRows: 1_000_000, memoryBudget: 512 * 1024 * 1024, maxBootstrapDraws: 1_000_000 },
  // The candidate's id names the compare task: `delay` holds its worker 2 s, `hang` forever.
  workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `delay=compare:${sha256(slow)},hang=compare:${sha256(hanging)}` },
});
for (const bytes of [mlp, slow, hanging]) {
  const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
  await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
}
await app.listen({ host: '127.0.0.1', port: 0 });
const { port } = app.server.address() as { port: number };

const gate = (candidate: Uint8Array, extra: Record<string, unknown> = {}) =>
  app.inject({
    method: 'POST',
    url: '/v1/gate',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ candidate: sha256(candidate), baseline: sha256(mlp), penalty: { samples: 8, k: 2, seed: 5 }, resamples: 500, ...extra }),
  });

/**
 * Tasks the pool ran, in order, with the pid of the worker that ran each: metrics as they are
 * evaluated (small ones may be batched, never passing run()), the rest as they are run.
 */
const tasks: { kind: Task['kind']; pid?: number }[] = [];
const record = async <T>(kind: Task['kind'], work: () => Promise<T>): Promise<T> => {
  const entry: { kind: Task['kind']; pid?: number } = { kind };
  tasks.push(entry);
  const value = await work();
  entry.pid = context.pool.status().lanes[0].pids[0];
  return value;
};
const run = context.pool.run.bind(context.pool);
context.pool.run = (task: Task, ...rest: unknown[]) => (task.kind === 'compare' ? record(task.kind, () => run(task, ...(rest as []))) : run(task, ...(rest as [])));
const evaluate = context.pool.evaluate.bind(context.pool) as (...args: unknown[]) => Promise<unknown>;
context.pool.evaluate = ((task: Task, ...rest: unknown[]) => record(task.kind, () => evaluate(task, ...rest))) as never;

t.test('the bootstrap runs as a worker task; /healthz answers while it runs; the numbers equal the in-process ones', async (t) => {
  tasks.length = 0;
  let gateDone = false;
  const pending = gate(slow).then((r) => ((gateDone = true), r));
  await until(() => tasks.some((x) => x.kind === 'compare'), 'the compare task to start');
  const health = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(health.statusCode, 200, '/healthz answers');
  t.notOk(gateDone, 'and it answered while the gate was still computing (its worker is held 2 s)');
  const res = await pending;
  t.equal(res.statusCode, 200, res.body);
  t.same(tasks.map((x) => x.kind), ['penalty', 'penalty', 'compare']);
  const compare = tasks.find((x) => x.kind === 'compare')!;
  t.not(compare.pid, process.pid, 'the compare ran in a worker process');
  t.ok(compare.pid! > 0);

  // Same numbers as the bootstrap in process, on the penalties the gate reported.
  const body = res.json();
  t.equal(body.settings.resamples, 500);
  t.ok(Number.isFinite(body.total.ratio.estimate));
  const again = await gate(slow);
  t.same({ ...again.json(), timings: null }, { ...body, timings: null }, 'a rerun gives the same verdict and figures');
  // Remote (worker bootstrap) against embedded (in-process bootstrap) figures: test/gate-remote.test.ts.
});

t.test('samples × resamples past --max-bootstrap-draws: 422 bootstrap_too_large before any model runs', async (t) => {
  tasks.length = 0;
  const res = await gate(mlp, { penalty: { samples: 4000, k: 2, seed: 1 }, resamples: 1000 });
  t.equal(res.statusCode, 422);
  t.equal(res.json().error.code, 'bootstrap_too_large');
  t.match(res.json().error.message, /4000 × 1000 = 4000000 bootstrap draws, over this server's limit of 1000000 \(--max-bootstrap-draws\)/);
  t.same(tasks, [], 'no worker task was started');
  t.equal((await gate(mlp)).statusCode, 200, 'the next gate is served');
});

t.test('a client that disconnects from a gate cancels its running task and frees the worker', async (t) => {
  tasks.length = 0;
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/gate', headers: { 'content-type': 'application/json' } });
  const done = new Promise<string>((resolve) => {
    req.on('response', (r) => resolve(`status ${r.statusCode}`));
    req.on('error', (err) => resolve(`error ${err.message}`));
  });
  req.end(JSON.stringify({ candidate: sha256(hanging), baseline: sha256(mlp), penalty: { samples: 8, k: 2, seed: 5 }, resamples: 500 }));
  await until(() => tasks.some((x) => x.kind === 'compare') && context.pool.status().running === 1, 'the hanging compare to start');
  const before = context.pool.status().restarts;
  req.destroy();
  t.match(await done, /^error /);
  await until(() => context.pool.status().running === 0, 'the cancelled task to stop');
  await until(() => context.pool.status().restarts === before + 1 && context.pool.ready(), 'a replacement worker');
  const res = await gate(mlp);
  t.equal(res.statusCode, 200, 'the next gate is served');
});
