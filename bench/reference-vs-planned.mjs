#!/usr/bin/env node
/**
 * The Hessian Penalty computed the way the reference implementations do it — 2k+1 separate forward
 * passes of N rows (G(z), then G(z+εv_j) and G(z−εv_j) for each direction) — versus this project's
 * planned batches (evaluatePenalty: the N·(2k+1) rows stacked and cut to the memory budget).
 * Same session, same z, same directions; prints both times, the ratio, and how far apart the
 * two penalties are (they must agree to float32 rounding).
 *
 * usage: npm run build && node bench/reference-vs-planned.mjs [--model models/dcgan.onnx] [--n 64] [--k 8] [--repeats 7]
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { rademacherDirections, standardNormal } from '../dist/math/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/dcgan.onnx' },
    n: { type: 'string', default: '64' },
    k: { type: 'string', default: '8' },
    epsilon: { type: 'string', default: '0.1' },
    repeats: { type: 'string', default: '7' },
  },
});
const n = Number(values.n);
const k = Number(values.k);
const epsilon = Number(values.epsilon);
const repeats = Number(values.repeats);

const model = loadModel(new Uint8Array(readFileSync(values.model)));
const input = model.description.inputs[0];
const layer = model.description.outputs[0].name;
const size = input.shape.slice(1).reduce((a, b) => a * b, 1);
const z = standardNormal(n * size, 1);
const v = rademacherDirections(k, n * size, 2);

const device = parseDevice('cpu');
const sessions = new SessionCache(1);
const request = {
  latents: { type: 'float32', shape: [n, size], data: z },
  directions: { type: 'float32', shape: [k, n, size], data: v },
  k,
  epsilon,
  layers: [layer],
};

/** The reference loop: one run per pass, then the unbiased variance and the max, in float64. */
async function reference(session) {
  const run = async (sign, j) => {
    const x = new Float32Array(z.length);
    for (let i = 0; i < x.length; i++) x[i] = z[i] + (sign === 0 ? 0 : sign * epsilon * v[j * z.length + i]);
    const out = await session.run({ [input.name]: new ort.Tensor('float32', x, [n, size]) }, [layer]);
    return out[layer].data;
  };
  const center = await run(0, 0);
  const sum = new Float64Array(center.length);
  const sumSq = new Float64Array(center.length);
  for (let j = 0; j < k; j++) {
    const plus = await run(1, j);
    const minus = await run(-1, j);
    for (let e = 0; e < center.length; e++) {
      const q = (plus[e] - 2 * center[e] + minus[e]) / (epsilon * epsilon);
      sum[e] += q;
      sumSq[e] += q * q;
    }
  }
  let max = -Infinity;
  for (let e = 0; e < center.length; e++) max = Math.max(max, (sumSq[e] - (sum[e] * sum[e]) / k) / (k - 1));
  return max;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Warm up: open the session once (not timed) through the cache both paths share.
const first = await evaluatePenalty(model, request, { device, sessions });
const open = await sessions.get(model.id, model.bytes, [], device);
const referencePenalty = await reference(open.session);

const times = { reference: [], planned: [], plannedForward: [] };
let planned = first;
for (let r = 0; r < repeats; r++) {
  let t = performance.now();
  await reference(open.session);
  times.reference.push(performance.now() - t);
  t = performance.now();
  planned = await evaluatePenalty(model, request, { device, sessions });
  times.planned.push(performance.now() - t);
  times.plannedForward.push(planned.timings.forwardMs);
}
await sessions.clear();

const ref = median(times.reference);
const plan = median(times.planned);
const result = {
  model: values.model,
  samples: n,
  k,
  rows: n * (2 * k + 1),
  referencePasses: 2 * k + 1,
  plannedBatches: planned.batches,
  plannedMode: planned.mode,
  referenceMs: Math.round(ref * 10) / 10,
  plannedMs: Math.round(plan * 10) / 10,
  plannedForwardMs: Math.round(median(times.plannedForward) * 10) / 10,
  speedup: Math.round((ref / plan) * 100) / 100,
  penaltyReference: referencePenalty,
  penaltyPlanned: planned.penalty,
  relativeDifference: Math.abs(planned.penalty - referencePenalty) / Math.abs(referencePenalty),
  repeats,
  machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}, onnxruntime-node ${ort.env.versions.node}`,
};
console.log(JSON.stringify(result, null, 2));
