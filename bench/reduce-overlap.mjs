// Could the host reduction overlap the next batch's forward? (issue 13) session.run blocks its
// thread, so an overlap needs a second thread; onnxruntime's intra-op pool already uses the cores.
// This measures, on dcgan.onnx (or MODEL.onnx), N = 64, k = 8 (1,088 rows, batches of 64):
//   forwardMs      the 17 batches of a request through bare onnxruntime, alone;
//   reduceMs       one request's reduction (LayerPenaltyAccumulator over the same outputs) alone;
//   busyForwardMs  the same batches while a worker thread runs that reduction in a loop;
//   busyReductions how many requests' reductions the worker finished meanwhile.
// Sequential costs forwardMs + reduceMs per request. An overlapped pipeline would cost about
// max(busyForwardMs, reduceMs × its slowdown); it pays only if busyForwardMs is well below
// forwardMs + reduceMs. The worker reduces without pause (more than one request needs), so
// forwardLostPerReductionMs scales the slowdown to the reduction done. On a machine shared with
// other work, a third thread also takes CPU from the other tenants: measure on a quiet machine. Alternating, medians over REPEATS (default 9); prints JSON with the load.
//
//   npm run build && node bench/reduce-overlap.mjs [MODEL.onnx]
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { decodeModel } from '../dist/onnx/proto.js';
import { openSession } from '../dist/runtime/session.js';

const N = 64;
const K = 8;
const ROWS = N * (2 * K + 1);
const BATCH = 64;
const REPEATS = Number(process.env.REPEATS ?? 9);
const path = process.argv[2] ?? new URL('../models/dcgan.onnx', import.meta.url).pathname;
const bytes = new Uint8Array(readFileSync(path));
const input = decodeModel(bytes).graph.input[0];
const latentShape = input.type.tensorType.shape.dim.slice(1).map((d) => Number(d.dimValue));
const size = latentShape.reduce((a, b) => a * b, 1);
const bare = await openSession(bytes, [], { kind: 'cpu' });
const latents = new Float32Array(ROWS * size).map(() => Math.random() - 0.5);
const forward = async () => {
  const outputs = [];
  for (let first = 0; first < ROWS; first += BATCH) {
    const count = Math.min(BATCH, ROWS - first);
    const result = await bare.session.run({ [input.name]: new ort.Tensor('float32', latents.subarray(first * size, (first + count) * size), [count, ...latentShape]) });
    outputs.push(Object.values(result)[0].data);
  }
  return outputs;
};
const outputs = await forward();
const layerSize = outputs[0].length / BATCH;

// The reduction, as the Run feeds it: every unit of the plan (18 batches: units never straddle) to
// LayerPenaltyAccumulator, batch c reading forward output c mod 17. It runs
// in this thread (reduceMs) and, on copies of the same outputs, in a worker (busy).
const reduceSource = `
  const { parentPort, workerData } = require('node:worker_threads');
  const { outputs, layerSize, dist, flag } = workerData;
  const stop = new Int32Array(flag);
  import(dist + '/math/second-difference.js').then(async ({ LayerPenaltyAccumulator, penaltyUnitSizes }) => {
    const { planUnits } = await import(dist + '/run/plan.js');
    const plan = planUnits({ samples: ${N}, unitSizes: penaltyUnitSizes(${K}), maxRows: ${BATCH} });
    const once = () => {
      const acc = new LayerPenaltyAccumulator(${N}, layerSize, ${K}, 0.1, 'unbiased');
      plan.chunks.forEach((chunk, c) => {
        for (const { sample, unit, rows } of chunk.units) acc.unit(sample, unit, rows.map(() => outputs[c % outputs.length]), rows.map((r) => r.row * layerSize));
      });
      return acc.result('max');
    };
    for (let i = 0; i < 5; i++) once();
    parentPort.postMessage('ready');
    for (;;) {
      Atomics.wait(stop, 0, 0);
      let done = 0;
      while (Atomics.load(stop, 0) === 1) { once(); done++; }
      parentPort.postMessage(done);
    }
  });
`;
const dist = new URL('../dist', import.meta.url).href;
const { LayerPenaltyAccumulator, penaltyUnitSizes } = await import(`${dist}/math/second-difference.js`);
const { planUnits } = await import(`${dist}/run/plan.js`);
const plan = planUnits({ samples: N, unitSizes: penaltyUnitSizes(K), maxRows: BATCH });
const reduce = () => {
  const acc = new LayerPenaltyAccumulator(N, layerSize, K, 0.1, 'unbiased');
  plan.chunks.forEach((chunk, c) => {
    for (const { sample, unit, rows } of chunk.units) acc.unit(sample, unit, rows.map(() => outputs[c % outputs.length]), rows.map((r) => r.row * layerSize));
  });
  return acc.result('max');
};
const flag = new SharedArrayBuffer(4);
const stop = new Int32Array(flag);
const worker = new Worker(reduceSource, { eval: true, workerData: { outputs: outputs.map((o) => o.slice()), layerSize, dist, flag } });
await new Promise((resolve) => worker.once('message', resolve));

const time = async (f) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x, digits = 1) => Number(x.toFixed(digits));
const loadBefore = loadavg();
for (let i = 0; i < 5; i++) reduce();
const ms = { forward: [], reduce: [], busyForward: [], busyReductions: [] };
for (let i = 0; i < REPEATS; i++) {
  ms.forward.push(await time(forward));
  ms.reduce.push(await time(reduce));
  const finished = new Promise((resolve) => worker.once('message', resolve));
  Atomics.store(stop, 0, 1);
  Atomics.notify(stop, 0);
  ms.busyForward.push(await time(forward));
  Atomics.store(stop, 0, 0);
  ms.busyReductions.push(await finished);
}
await worker.terminate();
const forwardMs = round(median(ms.forward));
const reduceMs = round(median(ms.reduce), 2);
const busyForwardMs = round(median(ms.busyForward));
console.log(
  JSON.stringify(
    {
      cpu: `${cpus()[0]?.model} × ${cpus().length}`,
      loadAverage: { before: loadBefore.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
      date: new Date().toISOString(),
      model: path.split('/').pop(),
      rows: ROWS,
      batchRows: BATCH,
      repeats: REPEATS,
      forwardMs,
      reduceMs,
      sequentialMs: round(forwardMs + reduceMs),
      busyForwardMs,
      busyReductions: median(ms.busyReductions),
      // Below 1: running the reduction beside the forward would save time; at or above 1 it would not.
      busyForwardOverSequential: round(busyForwardMs / (forwardMs + reduceMs), 3),
      // Forward time lost per millisecond of reduction done beside it: near 1, the two threads
      // only share the cores (nothing gained); near 0, the reduction would be free.
      forwardLostPerReductionMs: round((busyForwardMs - forwardMs) / (median(ms.busyReductions) * reduceMs), 2),
    },
    null,
    2,
  ),
);
