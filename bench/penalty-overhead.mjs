// In-process `penalty` against the floor (issue 13): N = 64, k = 8 (1,088 rows), CPU provider
// unless DEVICE=cuda:N, on each model given (default models/dcgan.onnx and models/dcgan64.onnx).
//
//   npm run build && node bench/penalty-overhead.mjs [MODEL.onnx …]
//
// The floor: the fastest bare onnxruntime time for the same 1,088 rows over batch sizes 16, 32, …,
// 1,088 (the median of each size, then the minimum). The penalty variants, warm (session, probe,
// tuning and the noise measurement cached by a first request): `auto` (the default plan: the
// session's tuned batch size, the host reduction on the CPU), `one batch` (batchRows 1,088:
// budget-only planning, as before the tuner), `graph` (the in-graph estimator at the tuned size).
// Every size and variant runs once per repeat, in turn, so machine noise hits all alike; medians
// over REPEATS (default 7). Prints JSON with the ratios over the floor and the load average.
// With BEFORE=<root of an older checkout with its dist/ built> the older build's `auto` runs too,
// alternating with the others in the same process (`auto (before)`, its own session cache), and
// both builds run at FIXED_ROWS (default 64) rows per batch as well. `hostMs` (total − time inside
// onnxruntime) is printed for every variant.
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-node';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { decodeModel } from '../dist/onnx/proto.js';
import { parseDevice } from '../dist/runtime/device.js';
import { loadModel } from '../dist/runtime/model.js';
import { openSession } from '../dist/runtime/session.js';

const N = 64;
const K = 8;
const ROWS = N * (2 * K + 1);
const REPEATS = Number(process.env.REPEATS ?? 7);
const device = parseDevice(process.env.DEVICE ?? 'cpu');
const paths = process.argv.slice(2);
const before = process.env.BEFORE
  ? {
      ...(await import(pathToFileURL(`${process.env.BEFORE}/dist/metrics/evaluate.js`).href)),
      ...(await import(pathToFileURL(`${process.env.BEFORE}/dist/runtime/model.js`).href)),
    }
  : null;
if (paths.length === 0) for (const m of ['dcgan', 'dcgan64']) paths.push(new URL(`../models/${m}.onnx`, import.meta.url).pathname);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (f) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
const round = (x, digits = 1) => Number(x.toFixed(digits));

const out = [];
const loadBefore = loadavg();
for (const path of paths) {
  const bytes = new Uint8Array(readFileSync(path));
  const model = loadModel(bytes);
  const input = decodeModel(bytes).graph.input[0];
  const latentShape = input.type.tensorType.shape.dim.slice(1).map((d) => Number(d.dimValue));
  const size = latentShape.reduce((a, b) => a * b, 1);
  const bare = await openSession(bytes, [], device);
  const latents = new Float32Array(ROWS * size).map(() => Math.random() - 0.5);
  const sizes = [];
  for (let b = 16; b < ROWS; b *= 2) sizes.push(b);
  sizes.push(ROWS);
  const runRows = async (batch) => {
    for (let first = 0; first < ROWS; first += batch) {
      const count = Math.min(batch, ROWS - first);
      await bare.session.run({ [input.name]: new ort.Tensor('float32', latents.subarray(first * size, (first + count) * size), [count, ...latentShape]) });
    }
  };
  const sessions = new SessionCache(4);
  const context = { device, sessions };
  const request = (extra) => ({ latents: { samples: N }, k: K, seed: 1, ...extra });
  const variants = {
    auto: request({}),
    'one batch': request({ batchRows: ROWS }),
    graph: request({ estimator: 'graph' }),
  };
  const cleanups = [];
  const evaluate = { auto: (r) => evaluatePenalty(model, r, context), 'one batch': (r) => evaluatePenalty(model, r, context), graph: (r) => evaluatePenalty(model, r, context) };
  if (before) {
    const beforeModel = before.loadModel(bytes);
    const beforeContext = { device, sessions: new before.SessionCache(4) };
    variants['auto (before)'] = request({});
    evaluate['auto (before)'] = (r) => before.evaluatePenalty(beforeModel, r, beforeContext);
    // Both builds at one fixed size too: their tuners may pick different sizes on a noisy machine.
    const fixed = Number(process.env.FIXED_ROWS ?? 64);
    variants[`batch ${fixed}`] = request({ batchRows: fixed });
    evaluate[`batch ${fixed}`] = (r) => evaluatePenalty(model, r, context);
    variants[`batch ${fixed} (before)`] = request({ batchRows: fixed });
    evaluate[`batch ${fixed} (before)`] = (r) => before.evaluatePenalty(beforeModel, r, beforeContext);
    cleanups.push(() => beforeContext.sessions.clear());
  }
  const seen = {};
  for (const [name, r] of Object.entries(variants)) {
    const result = await evaluate[name](r); // warm-up: session, probe, tuning, noise
    seen[name] = { batchRows: result.batchRows, batchRowsFrom: result.batchRowsFrom, batches: result.batches, estimator: result.estimator, fetchedBytes: result.fetchedBytes };
  }
  for (const b of sizes) await runRows(b);
  const floorTimes = Object.fromEntries(sizes.map((b) => [b, []]));
  const times = Object.fromEntries(Object.keys(variants).map((n) => [n, []]));
  const hostMs = Object.fromEntries(Object.keys(variants).map((n) => [n, []]));
  for (let i = 0; i < REPEATS; i++) {
    for (const b of sizes) floorTimes[b].push(await time(() => runRows(b)));
    for (const [name, r] of Object.entries(variants)) {
      let result;
      const ms = await time(async () => (result = await evaluate[name](r)));
      times[name].push(ms);
      hostMs[name].push(ms - result.timings.forwardMs);
    }
  }
  const floorMs = Object.fromEntries(sizes.map((b) => [b, round(median(floorTimes[b]))]));
  const best = sizes.reduce((x, y) => (floorMs[y] < floorMs[x] ? y : x));
  const penalty = Object.fromEntries(
    Object.entries(times).map(([name, t]) => [name, { ms: round(median(t)), overFloor: round(median(t) / floorMs[best], 3), hostMs: round(median(hostMs[name])), ...seen[name] }]),
  );
  out.push({ model: path.split('/').pop(), device: bare.executionProvider, rows: ROWS, floor: { msByBatchRows: floorMs, bestBatchRows: best, ms: floorMs[best] }, penalty, target: 1.05 });
  await bare.session.release();
  await sessions.clear();
  for (const cleanup of cleanups) await cleanup();
}
console.log(
  JSON.stringify(
    {
      cpu: `${cpus()[0]?.model} × ${cpus().length}`,
      loadAverage: { before: loadBefore.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
      date: new Date().toISOString(),
      samples: N,
      k: K,
      repeats: REPEATS,
      models: out,
    },
    null,
    2,
  ),
);
