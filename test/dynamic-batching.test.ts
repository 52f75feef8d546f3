/**
 * Dynamic batching across requests (issue 13, item 5): concurrent small penalty requests on one
 * model share a worker task and their stacked batches share runs, and every request gets exactly
 * the figures it gets alone (rows of a stacked batch are independent, and onnxruntime computes a
 * row the same whatever its batch), its own errors, and its own cancellation.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { WorkerPool } from '../dist/pool/pool.js';
import { loadModel } from '../dist/runtime/model.js';
import { openSession, SessionCache } from '../dist/runtime/session.js';
import { packs, SharedBatches } from '../dist/runtime/shared-batches.js';
import { spawnCli } from './helpers/cli.js';
import { encode, floatInfo } from './helpers/onnx-build.js';
import { get, penalty, spawnServer, upload } from './helpers/serve-child.js';

const path = (name: string) => fileURLToPath(new URL(`../models/${name}`, import.meta.url));
const bytesOf = (name: string) => new Uint8Array(readFileSync(path(name)));
const idOf = (name: string) => loadModel(bytesOf(name)).id;
const cpu = { kind: 'cpu' } as const;

/** A pool of one CPU worker with one onnxruntime thread, its batching and environment as given, started and torn down with the test. */
async function poolFor(t: Tap.Test, options: Partial<ConstructorParameters<typeof WorkerPool>[0]>): Promise<WorkerPool> {
  const pool = new WorkerPool({ devices: [cpu], workersPerDevice: 1, maxQueue: 8, taskTimeoutMs: 120_000, intraOpThreads: 1, ...options });
  t.teardown(() => pool.destroy());
  await pool.openProviders();
  return pool;
}

/** What a request's figures are: everything but the timings and how its rows were cut into batches. */
function figures(result: Record<string, unknown>): Record<string, unknown> {
  // The step-halving's rows: spent by whichever of the requests ran first on the session (its cache).
  const { timings: _t, batches: _b, batchRows: _r, batchRowsFrom: _f, halving: _h, ...rest } = result;
  const noise = rest.noise as Record<string, unknown> | null | undefined;
  if (noise) {
    const { stepRows: _s, ...kept } = noise;
    rest.noise = kept;
  }
  return rest;
}

const requests = [
  { latents: { samples: 3 }, k: 2, seed: 11 },
  { latents: { samples: 5 }, k: 4, seed: 12, epsilon: 0.05 },
  { latents: { samples: 2 }, k: 3, seed: 13, epsilon: 0.2, reduction: 'mean' },
  { latents: { samples: 4 }, k: 2, seed: 14, variance: 'biased' },
  { latents: { samples: 6 }, k: 5, seed: 15 },
  { latents: { samples: 1 }, k: 2, seed: 16, epsilons: [0.05, 0.3] },
];

t.test('packs: by session and inputs, in arrival order, within every member cap', async (t) => {
  const a = { id: 'a' } as never;
  const b = { id: 'b' } as never;
  const feeds = (rows: number, width = 4) => ({ z: { type: 'float32', dims: [rows, width] } }) as never;
  const batch = (open: never, rows: number, maxRows = 100, width = 4, layers = ['y']) => ({ open, rows, maxRows, layers, feeds: feeds(rows, width), alone: async () => ({}), timing: { forwardMs: 0 } });
  const list = [batch(a, 10), batch(a, 20), batch(b, 5), batch(a, 30, 100, 8), batch(a, 50, 60), batch(a, 40), batch(a, 10, 100, 4, ['x'])];
  const rows = packs(list).map((p) => p.map((x) => x.rows));
  // Session a, width 4, layer y: 10 + 20 fit; 50 has a cap of 60, so it starts a pack whose cap is 60; 40 does not fit in it.
  t.same(rows, [[10, 20], [50], [40], [30], [10], [5]]);
});

t.test('shared runs in one process: the same values as alone, and who ran packed', async (t) => {
  const model = loadModel(bytesOf('dcgan.onnx'));
  const sessions = new SessionCache(2);
  t.teardown(() => sessions.clear());
  const context = { device: cpu, sessions };
  // The session's first request measures its rounding noise, which every later one reuses: the same first request on both sides.
  await evaluateMetric('penalty', model, requests[0] as never, context);
  const alone = [];
  for (const r of requests) alone.push(await evaluateMetric('penalty', model, r as never, context));
  const shared = new SharedBatches();
  const together = await Promise.all(requests.map((r) => evaluateMetric('penalty', model, r as never, { ...context, shared })));
  together.forEach((result, i) => t.same(figures(result as never), figures(alone[i] as never), `request ${i}: the figures it gets alone`));
  t.ok(shared.stats.packed >= 1, `at least one run held several requests' rows (${JSON.stringify(shared.stats)})`);
  t.ok(shared.stats.runs < shared.stats.batches, 'fewer runs than batches');
});

t.test('rows that interact never share a run', async (t) => {
  // bn_train normalizes over the batch: its rows run pass by pass, each pass its own batch.
  const model = loadModel(bytesOf('bn_train.onnx'));
  const sessions = new SessionCache(2);
  t.teardown(() => sessions.clear());
  const asks = [
    { latents: { samples: 4 }, k: 2, seed: 1 },
    { latents: { samples: 4 }, k: 3, seed: 2 },
  ];
  await evaluateMetric('penalty', model, asks[0] as never, { device: cpu, sessions });
  const alone = [];
  for (const r of asks) alone.push(await evaluateMetric('penalty', model, r as never, { device: cpu, sessions }));
  const shared = new SharedBatches();
  const together = await Promise.all(asks.map((r) => evaluateMetric('penalty', model, r as never, { device: cpu, sessions, shared })));
  t.equal((together[0] as { mode: string }).mode, 'per-pass');
  together.forEach((result, i) => t.same(figures(result as never), figures(alone[i] as never)));
  t.equal(shared.stats.batches, 0, 'no batch of a per-pass run was handed over to be shared');
});

/** z [n, 2] → Reshape to a fixed [2, 2]: runs on batches of exactly two rows, fails on any other. */
const twoRowsOnly = () =>
  encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'two-rows',
      node: [{ opType: 'Reshape', input: ['z', 'shape'], output: ['y'] }],
      initializer: [{ name: 'shape', dims: [2], dataType: 7, int64Data: [2, 2] }],
      input: [floatInfo('z', ['n', 2])],
      output: [floatInfo('y', [2, 2])],
    },
  });

t.test('an input held once for the whole batch (not one per row) never shares a run', async (t) => {
  // conditional.onnx: label has a row per sample, truncation [1] is one value for every row.
  const model = loadModel(bytesOf('conditional.onnx'));
  const sessions = new SessionCache(2);
  t.teardown(() => sessions.clear());
  const ask = (seed: number, truncation: number) => ({
    latents: { samples: 3 },
    k: 2,
    seed,
    inputs: {
      label: { type: 'int64', shape: [3], data: BigInt64Array.from([1n, 2n, 3n]) },
      truncation: { type: 'float64', shape: [1], data: Float64Array.from([truncation]) },
    },
  });
  const asks = [ask(1, 0.7), ask(2, 0.5)];
  await evaluateMetric('penalty', model, asks[0] as never, { device: cpu, sessions });
  const alone = [];
  for (const r of asks) alone.push(await evaluateMetric('penalty', model, r as never, { device: cpu, sessions }));
  const shared = new SharedBatches();
  const together = await Promise.all(asks.map((r) => evaluateMetric('penalty', model, r as never, { device: cpu, sessions, shared })));
  together.forEach((result, i) => t.same(figures(result as never), figures(alone[i] as never), `request ${i}: its own truncation`));
  t.equal(shared.stats.batches, 0, 'no batch was handed over to be shared');
});

t.test('a packed run that fails runs each batch alone: each gets its own outcome', async (t) => {
  const open = await openSession(twoRowsOnly(), [], cpu);
  t.teardown(() => open.session.release());
  const shared = new SharedBatches();
  const feeds = (rows: number, value: number) => ({ z: new ort.Tensor('float32', new Float32Array(rows * 2).fill(value), [rows, 2]) });
  const run = (rows: number, value: number) =>
    shared.run({ open, layers: ['y'], feeds: feeds(rows, value), rows, maxRows: 100, alone: () => open.session.run(feeds(rows, value)), timing: { forwardMs: 0 } });
  // Packed, the two batches are 5 rows: the Reshape fails; alone, the first runs and the second fails as it would alone.
  const [a, b] = await Promise.allSettled([run(2, 7), run(3, 1)]);
  t.equal(a.status, 'fulfilled');
  t.same(Array.from((a as PromiseFulfilledResult<Record<string, ort.Tensor>>).value.y.data as Float32Array), [7, 7, 7, 7], 'its own values');
  t.equal(b.status, 'rejected', 'the batch that fails alone fails');
  t.equal(shared.stats.packed, 1, 'it was tried packed');
  t.equal(shared.stats.runs, 3, 'then each ran alone');
});

t.test('a pack whose outputs do not have the packed rows runs each batch alone', async (t) => {
  // Sum over the batch: the output has one row whatever the batch, so a pack of two cannot be cut back.
  const model = encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'sum',
      node: [{ opType: 'ReduceSum', input: ['z'], output: ['y'], attribute: [{ name: 'keepdims', type: 2, i: 1 }] }],
      input: [floatInfo('z', ['n', 2])],
      output: [floatInfo('y', [1, 1])],
    },
  });
  const open = await openSession(model, [], cpu);
  t.teardown(() => open.session.release());
  const shared = new SharedBatches();
  const feeds = (rows: number) => ({ z: new ort.Tensor('float32', new Float32Array(rows * 2).fill(1), [rows, 2]) });
  const run = (rows: number) => shared.run({ open, layers: ['y'], feeds: feeds(rows), rows, maxRows: 100, alone: () => open.session.run(feeds(rows)), timing: { forwardMs: 0 } });
  const [a, b] = await Promise.all([run(2), run(3)]);
  t.same(Array.from(a.y.data as Float32Array), [4], 'the first batch alone: 2 rows of two ones');
  t.same(Array.from(b.y.data as Float32Array), [6]);
  t.equal(shared.stats.packed, 1, 'it was tried packed');
  t.equal(shared.stats.runs, 3, 'then each ran alone');
});

t.test('the pool: concurrent requests share a worker task, each with its own figures and errors', async (t) => {
  const pool = await poolFor(t, { maxQueue: 16, batchMaxRequests: 16, batchDelayMs: 200 });
  const task = (request: unknown) => ({ kind: 'penalty', modelId: idOf('dcgan.onnx'), modelPath: path('dcgan.onnx'), request, limits: DEFAULT_LIMITS }) as never;
  const sessions = new SessionCache(2);
  t.teardown(() => sessions.clear());
  const model = loadModel(bytesOf('dcgan.onnx'));
  // The same first request on both sides: it measures the session's noise, which the others reuse.
  await pool.evaluate(task(requests[0]));
  await evaluateMetric('penalty', model, requests[0] as never, { device: cpu, sessions });
  const alone = [];
  for (const r of requests) alone.push(await evaluateMetric('penalty', model, r as never, { device: cpu, sessions }));
  // A request the model refuses (its latents have 5 values, the model takes 12): its own 422, nobody else's.
  const wrong = { latents: { shape: [1, 5], data: [0, 0, 0, 0, 0] }, k: 2 };
  const settled = await Promise.allSettled([...requests, wrong].map((r) => pool.evaluate(task(r))));
  settled.slice(0, requests.length).forEach((s, i) => {
    t.equal(s.status, 'fulfilled', `request ${i} succeeded`);
    if (s.status === 'fulfilled') t.same(figures(s.value as never), figures(alone[i] as never), `request ${i}: the figures it gets alone`);
  });
  const refused = settled[requests.length] as PromiseRejectedResult;
  t.equal(refused.status, 'rejected');
  t.equal(refused.reason.status, 422);
  t.match(refused.reason.message, /5/);
  t.equal(pool.batching.batches, 1, 'one batch task');
  t.equal(pool.batching.requests, requests.length + 1, 'held every request');
  // The batch's run counts come with its end, after its requests were answered.
  const deadline = Date.now() + 10_000;
  while (pool.batching.runs === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.ok(pool.batching.packedRuns >= 1, 'at least one run was shared');
});

t.test('the pool: who is not batched, and a request that leaves a batch', async (t) => {
  const pool = await poolFor(t, { maxQueue: 1, batchMaxRequests: 4, batchDelayMs: 300 });
  const task = (request: unknown, extra: Record<string, unknown> = {}) =>
    ({ kind: 'penalty', modelId: idOf('dcgan.onnx'), modelPath: path('dcgan.onnx'), request, limits: DEFAULT_LIMITS, ...extra }) as never;
  // A large request and a report are not batched: they run as tasks of their own.
  await pool.evaluate(task({ latents: { samples: 64 }, k: 8, seed: 1 }));
  await pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 1 }, { format: 'html' }));
  t.equal(pool.batching.batches, 0, 'neither went into a batch task');

  // One of three gathering requests leaves (its client went away): it is cancelled, the others run.
  const leaving = new AbortController();
  const a = pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 2 }));
  const b = pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 3 }), leaving.signal);
  const c = pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 4 }));
  leaving.abort();
  const [ra, rb, rc] = await Promise.allSettled([a, b, c]);
  t.equal(ra.status, 'fulfilled');
  t.equal(rc.status, 'fulfilled');
  t.equal(rb.status, 'rejected');
  t.equal((rb as PromiseRejectedResult).reason.code, 'cancelled');
  t.equal(pool.batching.batches, 1);
  t.equal(pool.batching.requests, 2, 'the batch held the two that stayed');

  // A lone gathering request that leaves: the worker it held is free again once the delay ends.
  const lone = new AbortController();
  const gone = pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 8 }), lone.signal);
  lone.abort();
  await t.rejects(gone, { code: 'cancelled' });
  const deadline = Date.now() + 10_000;
  while (pool.status().running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.equal(pool.status().running, 0, 'no worker held for nobody');
  t.equal(pool.batching.batches, 1, 'nothing ran for it');

  // The queue bound holds for batched requests: the worker busy, one waiting, the next is refused.
  const slow = pool.evaluate(task({ latents: { samples: 64 }, k: 8, seed: 5 }));
  const waiting = pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 6 }));
  await t.rejects(pool.evaluate(task({ latents: { samples: 2 }, k: 2, seed: 7, layers: ['output'] })), { code: 'overloaded', status: 503 });
  await Promise.all([slow, waiting]);
});

t.test('the pool with batchMaxRequests 1 runs every request alone', async (t) => {
  const pool = await poolFor(t, { batchMaxRequests: 1, batchDelayMs: 100 });
  const task = (seed: number) => ({ kind: 'penalty', modelId: idOf('dcgan.onnx'), modelPath: path('dcgan.onnx'), request: { latents: { samples: 2 }, k: 2, seed }, limits: DEFAULT_LIMITS }) as never;
  await Promise.all([1, 2, 3].map((s) => pool.evaluate(task(s))));
  t.equal(pool.batching.batches, 0);
});

t.test('over HTTP: concurrent requests give what each gets alone, and /metrics counts the batched ones', async (t) => {
  const server = await spawnServer(t, ['--batch-delay-ms', '200', '--batch-max-requests', '8', '--max-per-client', '0']);
  const up = await upload(server.url, bytesOf('dcgan.onnx'));
  const id = (up.body as { id: string }).id;
  // The first request measures the session's noise; every later one reuses it.
  await penalty(server.url, id, requests[0]);
  const alone = [];
  for (const r of requests.slice(0, 4)) alone.push((await penalty(server.url, id, r)).body);
  const together = await Promise.all(requests.slice(0, 4).map((r) => penalty(server.url, id, r)));
  together.forEach((reply, i) => {
    t.equal(reply.status, 200);
    t.same(figures(reply.body), figures(alone[i] as never), `request ${i}`);
  });
  const metrics = (await get(server.url, '/metrics')).body as unknown as { text: string };
  const batched = /^hessian_audit_batched_requests_total (\d+)/m.exec(metrics.text);
  t.ok(batched, 'the counter is exported');
  t.equal(Number(batched![1]), 4, 'the four concurrent requests ran batched, the five alone did not');
});

t.test('serve refuses bad batching settings with exit code 2', async (t) => {
  const delay = spawnCli('serve', '--batch-delay-ms', '5000');
  t.equal(delay.code, 2);
  t.match(delay.stderr, /--batch-delay-ms must be a number from 0 to 1000, got '5000'/);
  const requestsFlag = spawnCli('serve', '--batch-max-requests', '0');
  t.equal(requestsFlag.code, 2);
  t.match(requestsFlag.stderr, /--batch-max-requests must be a whole number of at least 1, got '0'/);
});

t.test('the pool: a batch whose every request left is stopped and its worker replaced', async (t) => {
  const hanging = idOf('separable.onnx');
  const pool = await poolFor(t, { batchMaxRequests: 4, batchDelayMs: 100, env: { HESSIAN_AUDIT_TEST_FAULTS: `hang=${hanging}` } });
  const task = (seed: number) => ({ kind: 'penalty', modelId: hanging, modelPath: path('separable.onnx'), request: { latents: { samples: 2 }, k: 2, seed }, limits: DEFAULT_LIMITS }) as never;
  const first = new AbortController();
  const second = new AbortController();
  const a = pool.evaluate(task(1), first.signal);
  const b = pool.evaluate(task(2), second.signal);
  const deadline = Date.now() + 30_000;
  while (pool.status().running === 0 || pool.batching.batches === 0) {
    if (Date.now() > deadline) throw new Error('the batch did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  first.abort();
  await t.rejects(a, { code: 'cancelled' });
  t.equal(pool.status().restarts, 0, 'one request left, the other still wants the batch: it runs on');
  second.abort();
  await t.rejects(b, { code: 'cancelled' });
  while (pool.status().restarts === 0 || !pool.ready()) {
    if (Date.now() > deadline) throw new Error('no replacement worker');
    await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(pool.status().restarts, 1, 'the hanging worker was replaced once both had left');
});

t.test('the pool: a worker that crashes under a batch fails each of its requests with worker_crashed; the next is served', async (t) => {
  const crashing = idOf('mlp.onnx');
  const pool = await poolFor(t, { batchMaxRequests: 2, batchDelayMs: 1000, env: { HESSIAN_AUDIT_TEST_FAULTS: `abort=${crashing}` } });
  const task = (modelId: string, file: string, seed: number) => ({ kind: 'penalty', modelId, modelPath: path(file), request: { latents: { samples: 2 }, k: 2, seed }, limits: DEFAULT_LIMITS }) as never;
  // Two requests fill the batch (batchMaxRequests 2), so it goes at once, without the delay.
  const settled = await Promise.allSettled([pool.evaluate(task(crashing, 'mlp.onnx', 1)), pool.evaluate(task(crashing, 'mlp.onnx', 2))]);
  for (const s of settled) {
    t.equal(s.status, 'rejected');
    t.match((s as PromiseRejectedResult).reason, { code: 'worker_crashed', status: 500 });
  }
  t.equal(pool.batching.batches, 1, 'they ran as one batch');
  const next = (await pool.evaluate(task(idOf('dcgan.onnx'), 'dcgan.onnx', 3))) as { penalty: number };
  t.ok(Number.isFinite(next.penalty), 'the replacement worker serves the next request');
});

t.test('auto on a GPU: a small request sharing batches is reduced on the host, a large one in the graph', async (t) => {
  const { chooseEstimator, SHARED_HOST_BYTES } = await import('../dist/run/graph-suffix.js');
  const run = (samples: number, shared: boolean, provider = 'cuda:0', epsilons?: number[]) =>
    ({
      executionMode: 'stacked',
      executionProvider: provider,
      context: shared ? { shared: new SharedBatches() } : {},
      resolved: { samples, k: 4, layers: ['y'], ...(epsilons ? { epsilons } : {}) },
      shapes: { y: { size: 3 * 32 * 32, type: 'float32' } },
    }) as never;
  // 8 samples × 9 rows × 12,288 bytes = 0.9 MB: worth copying to share the forward.
  t.equal(chooseEstimator(run(8, true), 'auto'), 'host');
  t.equal(chooseEstimator(run(8, false), 'auto'), 'graph', 'alone: the graph, as before');
  // Just above the bound: 9 rows per sample of 12,288 bytes.
  const over = Math.floor(SHARED_HOST_BYTES / (9 * 12288)) + 1;
  t.equal(chooseEstimator(run(over, true), 'auto'), 'graph');
  t.equal(chooseEstimator(run(over - 1, true), 'auto'), 'host');
  t.equal(chooseEstimator(run(over - 1, true, 'cuda:0', [0.05, 0.2]), 'auto'), 'graph', 'a sweep copies every ε');
  t.equal(chooseEstimator(run(8, true), 'graph'), 'graph', 'as asked');
  t.equal(chooseEstimator(run(8, true, 'cpu'), 'auto'), 'host');
});

t.test('the pool: each request of a batch is answered when its own work ends', async (t) => {
  const pool = await poolFor(t, { batchMaxRequests: 2, batchDelayMs: 1000 });
  const task = (request: unknown) => ({ kind: 'penalty', modelId: idOf('dcgan.onnx'), modelPath: path('dcgan.onnx'), request, limits: DEFAULT_LIMITS }) as never;
  const order: string[] = [];
  // The long one asks for batches of 50 rows: 18 runs for its 900 rows; the short one needs one.
  const long = pool.evaluate(task({ latents: { samples: 100 }, k: 4, seed: 1, batchRows: 50 })).then(() => order.push('long'));
  const short = pool.evaluate(task({ latents: { samples: 1 }, k: 2, seed: 2 })).then(() => order.push('short'));
  await Promise.all([long, short]);
  t.same(order, ['short', 'long'], 'the short request did not wait for the long one');
  t.equal(pool.batching.batches, 1, 'they shared one batch task');
});
