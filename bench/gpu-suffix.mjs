// The in-graph estimator on a device against the JavaScript reference on the CPU, on every
// example generator with the same rows (bench/gpu-check.sh runs it; DEVICE=cpu checks the plumbing).
//
//   DEVICE=cuda:0 node bench/gpu-suffix.mjs        # prints JSON; exits 1 when a layer is off
//
// N = 8, k = 4, ε = 0.1, maxRows 9 (so one sample's 4 directions are split 4 = 4, and maxRows 5
// splits them 2 + 2 and exercises the Chan merge). Tolerance |device − cpu| ≤ RTOL·|cpu| + ATOL
// (1e-3, 1e-6: float32 forward passes on another provider, TF32 off), for float64 and float32 accumulation.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { parseDevice } from '../dist/runtime/device.js';
import { openSession } from '../dist/runtime/session.js';
import { suffixFeeds, suffixFetches, suffixOutputs } from '../dist/runtime/suffix-run.js';
import { appendPenaltySuffix } from '../dist/onnx/suffix.js';
import { estimatePenaltyInGraph } from '../dist/math/moments.js';
import { perturbedRows } from '../dist/math/perturb.js';
import { penaltyRow, penaltyUnitSizes } from '../dist/math/second-difference.js';
import { planUnits } from '../dist/run/plan.js';
import { estimateOnHost } from './host-penalty.mjs';

const device = parseDevice(process.env.DEVICE ?? 'cuda:0');
const RTOL = Number(process.env.RTOL ?? 1e-3);
const ATOL = Number(process.env.ATOL ?? 1e-6);
const N = 8;
const K = 4;
const EPSILON = 0.1;
const settings = { reduction: 'max', variance: 'unbiased' };
const MODELS = [
  ['cubic', 2, ['y0', 'y1']],
  ['quadratic', 4, ['y']],
  ['mlp', 8, ['out']],
  ['dcgan', 12, ['image']],
  ['dcgan_smooth', 12, ['image']],
  ['conditional', 8, ['out']],
];
const random = (count, seed) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s / 2 ** 31 - 1));
};

const report = [];
let failed = 0;
let provider;
for (const [name, latents, layers] of MODELS) {
  const bytes = new Uint8Array(readFileSync(new URL(`../models/${name}.onnx`, import.meta.url)));
  const z = random(N * latents, 7);
  const directions = random(K * N * latents, 11);
  const feedsOf = (rows) => ({
    z: new ort.Tensor('float32', perturbedRows(rows.map(penaltyRow), z, directions, EPSILON, latents, N), [rows.length, latents]),
    ...(name === 'conditional'
      ? {
          label: new ort.Tensor('int64', BigInt64Array.from(rows, (r) => BigInt(r.sample % 10)), [rows.length]),
          truncation: new ort.Tensor('float32', Float32Array.of(0.7), [1]),
        }
      : {}),
  });
  const cpu = (await openSession(bytes, [], { kind: 'cpu' })).session;
  const probe = await cpu.run(feedsOf([{ sample: 0, index: 0 }]));
  const sizes = Object.fromEntries(layers.map((l) => [l, probe[l].dims.slice(1).reduce((a, b) => a * b, 1)]));
  for (const maxRows of [9, 5]) {
    const plan = planUnits({ samples: N, unitSizes: penaltyUnitSizes(K), maxRows, repeatCenter: true });
    const reference = await estimateOnHost(plan, sizes, { k: K, epsilon: EPSILON }, async (rows) => {
      const out = await cpu.run(feedsOf(rows));
      return Object.fromEntries(layers.map((l) => [l, out[l].data]));
    });
    for (const accumulation of ['float64', 'float32']) {
      const suffix = appendPenaltySuffix(bytes, { layers, accumulation });
      const opened = await openSession(suffix.bytes, [], device);
      provider = opened.executionProvider;
      const actual = await estimatePenaltyInGraph(plan, K, sizes, async (rows, layout) =>
        suffixOutputs(suffix, await opened.session.run({ ...feedsOf(rows), ...suffixFeeds(suffix, layout, EPSILON) }, suffixFetches(suffix, layout, K))), settings);
      await opened.session.release();
      for (const layer of layers) {
        const want = reference[layer].penalty;
        const got = actual[layer].penalty;
        const ok = got !== null && Math.abs(got - want) <= RTOL * Math.abs(want) + ATOL;
        if (!ok) failed++;
        report.push({ model: name, layer, maxRows, accumulation, cpu: want, device: got, relative: Math.abs(got - want) / Math.abs(want), ok });
      }
    }
  }
  await cpu.release();
}
console.log(JSON.stringify({ device: provider, tolerance: { rtol: RTOL, atol: ATOL }, failed, report }, null, 2));
process.exit(failed ? 1 : 0);
