/**
 * A request over several lanes (issue 13): two CPU lanes split a large hessian, orthogonality or
 * activeness request by samples and merge the parts; the result is the one-lane result (the same
 * engine in process) field for field apart from timings and `lanes`: per-sample figures and the
 * reductions over them exactly, means over samples (interaction, heatmap, diagonal-ness,
 * activeness) to 1e-12 relative (float64 summation order). Requests that cannot be split (rows
 * interact) or that one lane would refuse run whole and answer as one lane does. `batches` differs
 * (each part cuts its own), and is left out with the timings.
 */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { WorkerPool } from '../dist/pool/pool.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const path = (name: string) => fileURLToPath(new URL(`../models/${name}`, import.meta.url));
const pool = new WorkerPool({ devices: [{ kind: 'cpu' }, { kind: 'cpu' }], workersPerDevice: 1, maxQueue: 8, taskTimeoutMs: 120_000, intraOpThreads: 1, splitMinSamples: 2 });
const sessions = new SessionCache(4);
t.teardown(async () => {
  await pool.destroy();
  await sessions.clear();
});

const limits = DEFAULT_LIMITS;
const idOf = (model: string) => loadModel(new Uint8Array(readFileSync(path(model)))).id;
const task = (kind: string, model: string, request: Record<string, unknown>) => ({ kind, modelId: idOf(model), modelPath: path(model), request, limits }) as never;
const alone = (kind: string, model: string, request: Record<string, unknown>) =>
  evaluateMetric(kind as 'hessian', loadModel(new Uint8Array(readFileSync(path(model)))), request as never, { device: { kind: 'cpu' }, sessions, limits });

/** Field for field, numbers to 1e-12 relative; timings, lanes, batches, batchRows (each part runs its own) and fetchedBytes (checked on its own) left out. */
function compare(t: Tap.Test, got: unknown, want: unknown, at = ''): void {
  if (typeof want === 'number' && typeof got === 'number') {
    if (!(Math.abs(got - want) <= 1e-12 * Math.max(Math.abs(got), Math.abs(want)))) t.fail(`${at}: ${got} vs ${want}`);
    return;
  }
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) return void t.fail(`${at}: length ${JSON.stringify(got)?.slice(0, 80)}`);
    want.forEach((w, i) => compare(t, got[i], w, `${at}[${i}]`));
    return;
  }
  if (want && typeof want === 'object') {
    const keys = new Set([...Object.keys(want), ...Object.keys(got as object)].filter((k) => !['timings', 'lanes', 'batches', 'batchRows', 'batchRowsFrom', 'fetchedBytes'].includes(k)));
    for (const k of keys) compare(t, (got as Record<string, unknown>)[k], (want as Record<string, unknown>)[k], `${at}.${k}`);
    return;
  }
  if (got !== want) t.fail(`${at}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
}

const cases: [string, string, Record<string, unknown>][] = [
  ['hessian', 'quadratic.onnx', { latents: { samples: 5 }, seed: 3, epsilon: 0.5, element: 0 }],
  ['hessian', 'dcgan_smooth.onnx', { latents: { samples: 4 }, seed: 4, epsilon: 0.05, reduction: 'mean' }],
  ['orthogonality', 'dcgan.onnx', { latents: { samples: 6 }, seed: 5, k: 3 }],
  ['activeness', 'ignoring.onnx', { latents: { samples: 4 }, seed: 6 }],
  // The in-graph estimators split the same way (their bytes are per sample, so the parts add up too).
  ['hessian', 'quadratic.onnx', { latents: { samples: 5 }, seed: 3, epsilon: 0.5, element: 0, estimator: 'graph' }],
  ['activeness', 'ignoring.onnx', { latents: { samples: 4 }, seed: 6, estimator: 'graph' }],
];

for (const [kind, model, request] of cases) {
  t.test(`${kind} on ${model}: two lanes give the one-lane result`, async (t) => {
    const split = (await pool.evaluate(task(kind, model, request))) as Record<string, any>;
    const one = (await alone(kind, model, request)) as Record<string, any>;
    t.equal(split.lanes, 2, 'split over both lanes');
    t.equal(one.lanes, undefined);
    t.equal(split.samples, one.samples);
    t.same(split.layers.map((l: any) => l.perSample ?? null), one.layers.map((l: any) => l.perSample ?? null), 'per-sample figures exactly');
    t.equal(split.penalty ?? split.score, one.penalty ?? one.score, 'the reduction over samples exactly');
    t.equal(split.estimator, one.estimator, 'the same estimator');
    // Per sample the bytes add up; activeness's and orthogonality's suffixes add their layers' [rows, E] (16 B) per batch.
    const perBatch = split.estimator === 'graph' && kind !== 'hessian' ? 16 * split.layers.length : 0;
    t.equal(split.fetchedBytes - perBatch * split.batches, one.fetchedBytes - perBatch * one.batches, 'the parts’ bytes add up to one lane’s');
    compare(t, split, one);
    t.pass('compared');
  });
}

t.test('too few samples per lane: one lane, no lanes field', async (t) => {
  const r = (await pool.evaluate(task('hessian', 'quadratic.onnx', { latents: { samples: 1 }, seed: 1 }))) as Record<string, unknown>;
  t.equal(r.lanes, undefined);
  t.equal(r.samples, 1);
});

t.test('rows that interact: the parts refuse and the request runs whole, as one lane does', async (t) => {
  const request = { latents: { samples: 4 }, seed: 2 };
  const split = (await pool.evaluate(task('hessian', 'bn_train.onnx', request))) as Record<string, any>;
  const one = (await alone('hessian', 'bn_train.onnx', request)) as Record<string, any>;
  t.equal(split.lanes, undefined);
  t.equal(split.mode, 'per-pass');
  compare(t, split, one);
  t.pass('compared');
});

t.test('a request one lane refuses is refused with the one-lane message, not a part’s', async (t) => {
  const small = { ...DEFAULT_LIMITS, maxRows: 80 };
  // 4 samples × 21 rows = 84 > 80; a part of 2 samples (42 rows) would fit the whole limit.
  await t.rejects(pool.evaluate({ ...(task('hessian', 'quadratic.onnx', { latents: { samples: 4 }, seed: 1 }) as object), limits: small } as never), {
    code: 'hessian_too_large',
    message: /N·\(d²\+d\+1\) = 4·21 = 84 forward rows for d = 4 latents, above the limit of 80/,
  });
  const fits = (await pool.evaluate({ ...(task('hessian', 'quadratic.onnx', { latents: { samples: 3 }, seed: 1 }) as object), limits: { ...small, maxRows: 63 } } as never)) as Record<string, unknown>;
  t.equal(fits.rows, 63, 'exactly at the limit: it runs');
});

t.test('over HTTP: --devices cpu,cpu splits a request of 2 × 8 samples (the default share per lane)', async (t) => {
  const { startApp, multipart } = await import('./helpers/server.js');
  const { parseDevice } = await import('../dist/runtime/device.js');
  const { app } = await startApp(t, { devices: [parseDevice('cpu'), parseDevice('cpu')] });
  const body = multipart([{ name: 'model', filename: 'quadratic.onnx', data: new Uint8Array(readFileSync(path('quadratic.onnx'))) }]);
  const id = (await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers })).json().id;
  const post = (request: unknown) => app.inject({ method: 'POST', url: `/v1/models/${id}/hessian`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(request) });
  const request = { latents: { samples: 16 }, seed: 9, epsilon: 0.5 };
  const res = await post(request);
  t.equal(res.statusCode, 200, res.body.slice(0, 200));
  const split = res.json();
  t.equal(split.lanes, 2);
  compare(t, split, JSON.parse(JSON.stringify(await alone('hessian', 'quadratic.onnx', request))));
  const small = (await post({ latents: { samples: 15 }, seed: 9 })).json();
  t.equal(small.lanes, undefined, 'fewer than 8 samples per lane: one lane');
  t.equal(small.samples, 15);
});
