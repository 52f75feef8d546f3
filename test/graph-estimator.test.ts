/**
 * The penalty's two estimators through the real path (issue 13): in the graph (the penalty
 * suffix in a second cached session, partial moments merged by Chan's formula) and on the host
 * (LayerPenaltyAccumulator, the reference). Both accumulate in float64, so they agree to the
 * rounding of the sums: relative 1e-9 (the building blocks' bound, test/suffix.test.ts). Also
 * the rows per batch (batchRows, the tuner's wiring) counted through onnxruntime, not timed.
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { AuditRequestSchema, DEFAULT_LIMITS, parseRequest } from '../dist/contract/request.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { TUNE_MIN_ROWS } from '../dist/run/run.js';

const model = (name: string) => loadModel(new Uint8Array(readFileSync(new URL(`../models/${name}`, import.meta.url))));
const sessions = new SessionCache(16);
t.teardown(() => sessions.clear());
const context = { device: { kind: 'cpu' as const }, sessions, limits: DEFAULT_LIMITS };
const penalty = (name: string, body: Record<string, unknown>) =>
  evaluateMetric('penalty', model(name), parseRequest({ noise: false, ...body }, {}, AuditRequestSchema), context);

/** Rows every session.run receives (the first feed is the wrt input: its batch axis). */
const counted: number[] = [];
const run = ort.InferenceSession.prototype.run;
ort.InferenceSession.prototype.run = function (this: ort.InferenceSession, feeds: Record<string, ort.Tensor>, ...rest: unknown[]) {
  counted.push(Number(Object.values(feeds)[0].dims[0]));
  return (run as (...a: unknown[]) => Promise<unknown>).call(this, feeds, ...rest);
} as typeof run;
t.teardown(() => {
  ort.InferenceSession.prototype.run = run;
});
const rowsRun = async <T>(f: () => Promise<T>): Promise<{ result: T; rows: number; runs: number }> => {
  counted.length = 0;
  const result = await f();
  return { result, rows: counted.reduce((a, b) => a + b, 0), runs: counted.length };
};

const relative = (a: number | null, b: number | null): number => (a === b ? 0 : Math.abs(a! - b!) / Math.max(Math.abs(b!), 1e-300));

const CASES: { model: string; body: Record<string, unknown> }[] = [
  { model: 'cubic.onnx', body: { latents: { samples: 5 }, k: 6, seed: 2, epsilon: 0.05 } },
  { model: 'quadratic.onnx', body: { latents: { samples: 3 }, k: 3, seed: 4 } },
  { model: 'mlp.onnx', body: { latents: { samples: 4 }, k: 5, seed: 3 } },
  { model: 'dcgan.onnx', body: { latents: { samples: 3 }, k: 4, seed: 7, layers: ['/block1/block1.2/LeakyRelu_output_0', 'image'] } },
  { model: 'dcgan_smooth.onnx', body: { latents: { samples: 2 }, k: 3, seed: 11, reduction: 'mean', variance: 'biased' } },
  {
    model: 'conditional.onnx',
    body: { latents: { samples: 3 }, k: 2, seed: 9, inputs: { label: { type: 'int64', shape: [3], data: [0, 1, 2] }, truncation: { shape: [1], data: [0.7] } } },
  },
];

for (const c of CASES) {
  t.test(`${c.model}: the graph estimator equals the host's, whole and split samples`, async (t) => {
    const host = await penalty(c.model, { ...c.body, estimator: 'host' });
    t.equal(host.estimator, 'host');
    for (const batchRows of [undefined, 3, 4]) {
      const graph = await penalty(c.model, { ...c.body, estimator: 'graph', ...(batchRows ? { batchRows } : {}) });
      t.equal(graph.estimator, 'graph');
      t.ok(relative(graph.penalty, host.penalty) <= 1e-9, `total, batchRows ${batchRows}: ${graph.penalty} vs ${host.penalty}`);
      graph.layers.forEach((layer, i) => {
        t.ok(relative(layer.penalty, host.layers[i].penalty) <= 1e-9, `${layer.name}`);
        layer.perSample.forEach((x, n) => t.ok(relative(x, host.layers[i].perSample[n]) <= 1e-9, `${layer.name} sample ${n}`));
        t.equal(layer.noiseFloor, host.layers[i].noiseFloor, 'max |g| of the centres: the same floor');
      });
      if (batchRows) {
        t.equal(graph.batchRowsFrom, 'request');
        t.ok(graph.batchRows <= batchRows);
        // A split sample repeats its center in every chunk after its first: more rows than N(2k+1).
        t.ok(graph.rows > host.rows, 'split samples repeat their centers');
      } else {
        t.equal(graph.rows, host.rows);
        t.equal(graph.batches, host.batches);
      }
    }
  });
}

t.test('per-pass models stay on the host even when the graph is asked for', async (t) => {
  const result = await penalty('bn_train.onnx', { latents: { samples: 4 }, k: 3, seed: 5, estimator: 'graph' });
  t.equal(result.mode, 'per-pass');
  t.equal(result.estimator, 'host');
  const warning = result.warnings.find((w) => w.code === 'estimator_host');
  t.match(warning?.message, /reduced on the host, not in the graph: rows of a batch influence each other/);
  const auto = await penalty('bn_train.onnx', { latents: { samples: 4 }, k: 3, seed: 5 });
  t.notOk(auto.warnings.some((w) => w.code === 'estimator_host'), 'no warning when the graph was not asked for');
});

t.test('auto: the host on the CPU', async (t) => {
  const result = await penalty('cubic.onnx', { latents: { samples: 2 }, k: 2, seed: 1 });
  t.equal(result.estimator, 'host');
});

t.test('bytes out of onnxruntime: the graph estimator fetches the same for k = 2, 8, 32; the host N(2k+1) rows', async (t) => {
  const body = { latents: { samples: 4 }, seed: 3 };
  const graph = await Promise.all([2, 8, 32].map((k) => penalty('dcgan.onnx', { ...body, k, estimator: 'graph' })));
  const bytes = graph.map((r) => r.fetchedBytes);
  t.equal(bytes[0], bytes[1]);
  t.equal(bytes[1], bytes[2]);
  // dcgan's image is 3×32×32 floats: per sample M2 [E] float64, plus count, max_abs, non_finite per slot.
  const elements = 3 * 32 * 32;
  t.equal(bytes[0], 4 * (elements * 8 + 3 * 8), 'M2 and three per-slot figures, float64');
  for (const k of [2, 8, 32]) {
    const host = await penalty('dcgan.onnx', { ...body, k, estimator: 'host' });
    t.equal(host.fetchedBytes, 4 * (2 * k + 1) * elements * 4, `host, k = ${k}: every row, float32`);
  }
});

t.test('batchRows: a request cuts its batches; small requests are planned by the budget alone', async (t) => {
  const body = { latents: { samples: 6 }, k: 5, seed: 3, estimator: 'host' };
  await penalty('mlp.onnx', body); // the probe, cached with the session
  const plain = await rowsRun(() => penalty('mlp.onnx', body));
  t.equal(plain.result.batchRowsFrom, 'budget');
  t.equal(plain.result.batches, 1);
  t.equal(plain.rows, 66, 'exactly the plan: no tuning below TUNE_MIN_ROWS');
  const cut = await rowsRun(() => penalty('mlp.onnx', { ...body, batchRows: 25 }));
  t.equal(cut.result.batchRowsFrom, 'request');
  t.equal(cut.result.batchRows, 25, 'units of 1 and 2 rows fill the 25');
  t.equal(cut.result.batches, 3);
  t.equal(cut.rows, 66);
  t.equal(cut.runs, 3);
  t.equal(cut.result.penalty, plain.result.penalty, 'the host reduction does not depend on the batch cut');
});

t.test('tuning: once per session on its first large request, its runs on top of the plan; the same session then plans with it', async (t) => {
  const samples = Math.ceil(TUNE_MIN_ROWS / 5); // k = 2: 5 rows per sample
  const body = { latents: { samples }, k: 2, seed: 1, estimator: 'host' };
  const sessionsHere = new SessionCache(2);
  t.teardown(() => sessionsHere.clear());
  const evaluate = () => evaluateMetric('penalty', model('cubic.onnx'), parseRequest({ noise: false, ...body }, {}, AuditRequestSchema), { ...context, sessions: sessionsHere });
  const first = await rowsRun(evaluate);
  const planRows = samples * 5;
  t.equal(first.result.rows, planRows);
  t.ok(['tuned', 'budget'].includes(first.result.batchRowsFrom));
  // 'tuned' only where the tuned size cut the batches; otherwise the budget's one batch.
  if (first.result.batchRowsFrom === 'tuned') t.ok(first.result.batchRows < planRows);
  else t.equal(first.result.batches, 1);
  t.ok(first.rows > planRows, 'the tuning ran rows of its own (the session warm-up)');
  const second = await rowsRun(evaluate);
  t.equal(second.rows, planRows, 'tuned once: the second request runs its plan only');
  t.equal(second.result.batchRows, first.result.batchRows);
  t.equal(second.result.batches, first.result.batches);
  t.equal(second.result.batches, Math.ceil(planRows / 5 / Math.floor(second.result.batchRows / 5)), 'whole samples of 5 rows per batch');
  const oneShot = new SessionCache(1);
  t.teardown(() => oneShot.clear());
  const untuned = await rowsRun(() =>
    evaluateMetric('penalty', model('cubic.onnx'), parseRequest({ noise: false, ...body }, {}, AuditRequestSchema), { ...context, sessions: oneShot, tune: false }),
  );
  t.same([untuned.result.batchRowsFrom, untuned.result.batches], ['budget', 1], 'tune: false (the CLI) plans by the budget');
  t.ok(untuned.rows < planRows + 16, 'and runs no tuning rows (the probe only)');
  const asked = await rowsRun(() =>
    evaluateMetric('penalty', model('cubic.onnx'), parseRequest({ noise: false, ...body, batchRows: 100 }, {}, AuditRequestSchema), { ...context, sessions: sessionsHere }),
  );
  t.equal(asked.result.batchRowsFrom, 'request');
  t.equal(asked.result.batches, Math.ceil(planRows / 100));
  t.equal(asked.result.penalty, second.result.penalty);
});

t.test('the request fields are checked', async (t) => {
  t.throws(() => parseRequest({ batchRows: 0 }, {}, AuditRequestSchema), { code: 'invalid_request', message: /batchRows.*at least 1/ });
  t.throws(() => parseRequest({ batchRows: 2.5 }, {}, AuditRequestSchema), { code: 'invalid_request', message: /batchRows.*whole number/ });
  t.throws(() => parseRequest({ estimator: 'gpu' }, {}, AuditRequestSchema), { code: 'invalid_request', message: /estimator/ });
  await t.rejects(penalty('cubic.onnx', { latents: { samples: 2 }, k: 2, seed: 1, batchRows: 1 }), { code: 'memory_budget_exceeded' });
});

t.test('CLI: --estimator and --batch-rows, and their errors', async (t) => {
  const { cli } = await import('./helpers/cli.js');
  const path = new URL('../models/mlp.onnx', import.meta.url).pathname;
  const graph = await cli('penalty', path, '--samples', '3', '--k', '3', '--seed', '1', '--no-noise', '--estimator', 'graph', '--batch-rows', '5', '--json');
  t.equal(graph.code, 0, graph.stderr);
  const g = JSON.parse(graph.stdout);
  t.same([g.estimator, g.batchRowsFrom, g.batchRows], ['graph', 'request', 5]);
  const host = JSON.parse((await cli('penalty', path, '--samples', '3', '--k', '3', '--seed', '1', '--no-noise', '--estimator', 'host', '--json')).stdout);
  t.ok(relative(g.penalty, host.penalty) <= 1e-9);
  const hessian = await cli('hessian', path, '--samples', '2', '--seed', '1', '--batch-rows', '7', '--json');
  t.equal(hessian.code, 0, hessian.stderr);
  t.same([JSON.parse(hessian.stdout).batchRowsFrom, JSON.parse(hessian.stdout).batchRows <= 7], ['request', true]);
  const large = JSON.parse((await cli('penalty', path, '--samples', '100', '--k', '5', '--seed', '1', '--no-noise', '--json')).stdout);
  t.same([large.rows, large.batches, large.batchRowsFrom], [1100, 1, 'budget'], 'the CLI does not tune (one request per process)');
    const bad = await cli('penalty', path, '--estimator', 'gpu');
  t.equal(bad.code, 2);
  t.match(bad.stderr, /estimator/);
  const zero = await cli('penalty', path, '--batch-rows', '0');
  t.equal(zero.code, 2);
  t.match(zero.stderr, /batchRows.*at least 1/);
  const noise = await cli('noise', path, '--estimator', 'graph');
  t.equal(noise.code, 2);
  t.match(noise.stderr, /unknown option '--estimator'/);
});

t.test('the suffix session is a companion of the run’s own: a cache of one session keeps both, and eviction takes both', async (t) => {
  const one = new SessionCache(1);
  t.teardown(() => one.clear());
  const request = parseRequest({ latents: { samples: 2 }, k: 2, seed: 1, estimator: 'graph' }, {}, AuditRequestSchema);
  // The noise measurement (on by default) runs on the run's own session after the graph estimate.
  const first = await evaluateMetric('penalty', model('mlp.onnx'), request, { ...context, sessions: one });
  t.equal(first.estimator, 'graph');
  t.ok(first.noise, 'measured on the own session, still open');
  t.equal(one.size, 1);
  const again = await evaluateMetric('penalty', model('mlp.onnx'), request, { ...context, sessions: one });
  t.equal(again.penalty, first.penalty);
  const other = await evaluateMetric('penalty', model('cubic.onnx'), request, { ...context, sessions: one });
  t.equal(other.estimator, 'graph');
  t.equal(one.evictions, 1, 'mlp went, with its companion');
});
