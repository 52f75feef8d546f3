// The floor and the in-graph estimator (issue 13), CPU provider unless DEVICE=cuda:N.
//
//   npm run build && node bench/floor.mjs [MODEL.onnx] [ROWS]
//
// 1. Floor: the fastest bare onnxruntime time for ROWS rows (default 1088 = N 64 × (2·8+1)) over
//    batch sizes 16, 32, …, ROWS (ROWS/b batches of b rows, the last one partial); sizes alternate
//    within each repeat, medians over REPEATS (default 5).
// 2. Penalty, N = 64, k = 2, 8, 32 on the model: the host reduction (every output row fetched and
//    reduced by the JS accumulator, as today) against the in-graph suffix (float64 and float32
//    accumulation), bytes fetched from onnxruntime per request and median time, each at one
//    batch per request (budget-only planning) and at the floor's best batch size. Alternating.
// `bare` runs the same batches with nothing reduced (the plan's own floor); `overBare` and
// `overFloor` divide by it and by the floor scaled to the plan's rows.
// Prints JSON. A model with one float input of shape [batch, d] only (the latent).
import { readFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import * as ort from 'onnxruntime-node';
import { fetchedBytes, suffixFeeds, suffixFetches, suffixOutputs } from '../dist/runtime/suffix-run.js';
import { openSession } from '../dist/runtime/session.js';
import { parseDevice } from '../dist/runtime/device.js';
import { appendPenaltySuffix } from '../dist/onnx/suffix.js';
import { decodeModel } from '../dist/onnx/proto.js';
import { estimatePenaltyInGraph } from '../dist/math/moments.js';
import { perturbedRows } from '../dist/math/perturb.js';
import { penaltyRow, penaltyUnitSizes } from '../dist/math/second-difference.js';
import { planUnits } from '../dist/run/plan.js';
import { estimateOnHost } from './host-penalty.mjs';

const modelPath = process.argv[2] ?? new URL('../models/dcgan.onnx', import.meta.url).pathname;
const ROWS = Number(process.argv[3] ?? 1088);
const REPEATS = Number(process.env.REPEATS ?? 5);
const KS = (process.env.KS ?? '2,8,32').split(',').map(Number);
const N = Number(process.env.SAMPLES ?? 64);
const EPSILON = 0.1;
const device = parseDevice(process.env.DEVICE ?? 'cpu');

const bytes = new Uint8Array(readFileSync(modelPath));
const graph = decodeModel(bytes).graph;
if (graph.input.length !== 1) throw new Error(`${modelPath}: floor.mjs runs models with one latent input`);
const input = graph.input[0].name;
const latents = graph.input[0].type.tensorType.shape.dim[1].dimValue;
const layers = graph.output.map((o) => o.name);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (f) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
const random = (count, seed) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s / 2 ** 31 - 1));
};

// --- 1. floor ---------------------------------------------------------------------------------
const bare = await openSession(bytes, [], device);
const sizes = [];
for (let b = 16; b < ROWS; b *= 2) sizes.push(b);
sizes.push(ROWS);
const latentRows = random(ROWS * latents, 1);
const runRows = async (session, batch) => {
  for (let first = 0; first < ROWS; first += batch) {
    const count = Math.min(batch, ROWS - first);
    await session.run({ [input]: new ort.Tensor('float32', latentRows.subarray(first * latents, (first + count) * latents), [count, latents]) });
  }
};
for (const b of sizes) await runRows(bare.session, b); // warm-up
const floorTimes = Object.fromEntries(sizes.map((b) => [b, []]));
for (let r = 0; r < REPEATS; r++) for (const b of sizes) floorTimes[b].push(await time(() => runRows(bare.session, b)));
const floorMs = Object.fromEntries(sizes.map((b) => [b, Number(median(floorTimes[b]).toFixed(1))]));
const best = sizes.reduce((x, y) => (floorMs[y] < floorMs[x] ? y : x));

// --- 2. host reduction vs the in-graph suffix ------------------------------------------------
const suffix64 = appendPenaltySuffix(bytes, { layers, accumulation: 'float64' });
const suffix32 = appendPenaltySuffix(bytes, { layers, accumulation: 'float32' });
const session64 = (await openSession(suffix64.bytes, [], device)).session;
const session32 = (await openSession(suffix32.bytes, [], device)).session;
const settings = () => ({ reduction: 'max', variance: 'unbiased' });
const probe = await bare.session.run({ [input]: new ort.Tensor('float32', latentRows.subarray(0, latents), [1, latents]) });
const layerSizes = Object.fromEntries(layers.map((l) => [l, probe[l].dims.slice(1).reduce((a, b) => a * b, 1)]));

function penaltyRuns(k, maxRows) {
  // repeatCenter: the same plan serves both estimators (the suffix needs a split sample's center in each chunk).
  const plan = planUnits({ samples: N, unitSizes: penaltyUnitSizes(k), maxRows, repeatCenter: true });
  const z = random(N * latents, 2);
  const directions = random(k * N * latents, 3);
  const feedsOf = (rows) => ({ [input]: new ort.Tensor('float32', perturbedRows(rows.map(penaltyRow), z, directions, EPSILON, latents, N), [rows.length, latents]) });
  const counter = { bytes: 0 };
  // The same batches through the bare session, nothing reduced: this plan's own floor.
  const bareRuns = async () => {
    counter.bytes = 0;
    for (const chunk of plan.chunks) for (const rows of chunk.batches) counter.bytes += fetchedBytes(await bare.session.run(feedsOf(rows)));
  };
  const host = async () => {
    counter.bytes = 0;
    return estimateOnHost(plan, layerSizes, { k, epsilon: EPSILON }, async (rows) => {
      const out = await bare.session.run(feedsOf(rows));
      counter.bytes += fetchedBytes(out);
      return Object.fromEntries(layers.map((l) => [l, out[l].data]));
    });
  };
  const inGraph = (suffix, session) => async () => {
    counter.bytes = 0;
    return estimatePenaltyInGraph(plan, k, layerSizes, async (rows, layout) => {
      const out = await session.run({ ...feedsOf(rows), ...suffixFeeds(suffix, layout, EPSILON) }, suffixFetches(suffix, layout, k));
      counter.bytes += fetchedBytes(out);
      return suffixOutputs(suffix, out);
    }, settings());
  };
  return { plan, counter, variants: { bare: bareRuns, host, suffix64: inGraph(suffix64, session64), suffix32: inGraph(suffix32, session32) } };
}

const penalty = [];
for (const k of KS) {
  for (const [label, maxRows] of [['one batch', N * (2 * k + 1)], [`floor's best (${best})`, best]]) {
    const { plan, counter, variants } = penaltyRuns(k, maxRows);
    const results = {};
    const bytesOut = {};
    for (const [name, run] of Object.entries(variants)) {
      results[name] = await run(); // warm-up, and the figures to compare
      bytesOut[name] = counter.bytes;
    }
    const times = Object.fromEntries(Object.keys(variants).map((n) => [n, []]));
    for (let r = 0; r < REPEATS; r++) for (const [name, run] of Object.entries(variants)) times[name].push(await time(run));
    const ms = Object.fromEntries(Object.entries(times).map(([n, t]) => [n, median(t)]));
    const rel = (name) => Math.max(...layers.map((l) => Math.abs(results[name][l].penalty - results.host[l].penalty) / Math.abs(results.host[l].penalty)));
    penalty.push({
      k,
      batches: label,
      rows: plan.rows,
      bytesFetched: bytesOut,
      ms: Object.fromEntries(Object.entries(ms).map(([n, t]) => [n, Number(t.toFixed(1))])),
      overBare: Object.fromEntries(['host', 'suffix64', 'suffix32'].map((n) => [n, Number((ms[n] / ms.bare).toFixed(3))])),
      overFloor: Object.fromEntries(['host', 'suffix64', 'suffix32'].map((n) => [n, Number((ms[n] / ((floorMs[best] * plan.rows) / ROWS)).toFixed(3))])),
      relativeDifferenceFromHost: { suffix64: Number(rel('suffix64').toExponential(2)), suffix32: Number(rel('suffix32').toExponential(2)) },
    });
  }
}

console.log(JSON.stringify({
  model: modelPath.split('/').pop(),
  device: bare.executionProvider,
  cpu: `${cpus()[0]?.model} × ${cpus().length}`,
  loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
  date: new Date().toISOString(),
  repeats: REPEATS,
  floor: { rows: ROWS, msByBatchRows: floorMs, bestBatchRows: best, floorMs: floorMs[best], rowsPerSecond: Math.round((ROWS * 1000) / floorMs[best]) },
  penalty,
}, null, 2));
for (const s of [bare.session, session64, session32]) await s.release();
