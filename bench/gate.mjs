// Release gate figures: what common random numbers buy, how the interval narrows with N, and the
// gate's overhead over evaluating the two models. Prints a table; figures go in bench/RESULTS.md.
//
//   npm run build && node bench/gate.mjs
import { readFileSync } from 'node:fs';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { pairedRatioInterval, quantile, ratio, resampleIndices } from '../dist/gate/bootstrap.js';
import { gateSpec } from '../dist/gate/config.js';
import { inProcess, runGate } from '../dist/gate/gate.js';
import { modelProto } from '../dist/onnx/proto.js';
import { standardNormal, Xoshiro128 } from '../dist/math/index.js';

const model = (name) => loadModel(new Uint8Array(readFileSync(new URL(`../models/${name}`, import.meta.url))));
const baseline = model('dcgan.onnx');
const candidate = model('dcgan_entangled.onnx');

/** A "retrained" candidate close to the baseline: every float weight times (1 + 0.05·noise). */
function nudged(bytes, scale) {
  const type = modelProto();
  const message = type.decode(bytes);
  let seed = 0;
  for (const tensor of message.graph.initializer) {
    if (tensor.dataType !== 1 || !tensor.rawData?.length) continue;
    const raw = new Uint8Array(tensor.rawData);
    const w = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const noise = standardNormal(w.length, ++seed);
    for (let i = 0; i < w.length; i++) w[i] *= 1 + scale * noise[i];
    tensor.rawData = raw;
  }
  return loadModel(type.encode(message).finish());
}
const near = nudged(baseline.bytes, 0.05);
const context = { device: parseDevice('cpu'), sessions: new SessionCache(4) };
const K = 4;
const RESAMPLES = 2000;

const perSample = async (m, samples, seed) =>
  Float64Array.from((await evaluatePenalty(m, { latents: { samples }, k: K, seed }, context)).layers[0].perSample);

/** Unpaired percentile bootstrap (what independent draws for the two models allow). */
function unpairedInterval(c, b, seed) {
  const rng = new Xoshiro128(seed, 9);
  const pick = (xs) => {
    let s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[Math.floor((rng.nextUint32() * xs.length) / 2 ** 32)];
    return s;
  };
  const reps = Float64Array.from({ length: RESAMPLES }, () => ratio(pick(c), pick(b))).sort();
  const sum = (xs) => xs.reduce((a, x) => a + x, 0);
  return { estimate: ratio(sum(c), sum(b)), lower: quantile(reps, 0.025), upper: quantile(reps, 0.975) };
}

const fmt = (i) => `${i.estimate.toFixed(3)} [${i.lower.toFixed(3)}, ${i.upper.toFixed(3)}]`;
const width = (i) => i.upper - i.lower;

console.log('k = 4, 95% intervals, CPU. Paired: both models on seed 0 (the gate). Unpaired: candidate on seed 1, percentile bootstrap.');
console.log('| candidate vs dcgan | N | paired ratio [interval] | width | unpaired ratio [interval] | width | unpaired / paired width |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const [name, cand] of [['dcgan (itself)', baseline], ['dcgan, weights ×(1 + 0.05·noise)', near], ['dcgan_entangled', candidate]]) {
  for (const n of [16, 64, 128]) {
    const [b0, c0, c1] = [await perSample(baseline, n, 0), await perSample(cand, n, 0), await perSample(cand, n, 1)];
    const paired = pairedRatioInterval(c0, b0, resampleIndices(n, RESAMPLES, 0), 0.95);
    const unpaired = unpairedInterval(c1, b0, 0);
    const w = width(paired) === 0 ? '∞' : (width(unpaired) / width(paired)).toFixed(2);
    console.log(`| ${name} | ${n} | ${fmt(paired)} | ${width(paired).toFixed(3)} | ${fmt(unpaired)} | ${width(unpaired).toFixed(3)} | ${w} |`);
  }
}

// Overhead: the gate against evaluating both models alone (sessions warm in both), alternating,
// medians of 7; and the statistics alone (resampling and intervals) on N = 64 paired samples.
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const spec = gateSpec([{ penalty: { samples: 64, k: K }, resamples: RESAMPLES }]);
const request = { latents: { samples: 64 }, k: K, seed: 0 };
const gateMs = [];
const bareMs = [];
for (let r = 0; r < 7; r++) {
  let t = performance.now();
  await runGate(candidate, baseline, spec, { evaluate: inProcess(context) });
  gateMs.push(performance.now() - t);
  t = performance.now();
  await evaluatePenalty(baseline, request, context);
  await evaluatePenalty(candidate, request, context);
  bareMs.push(performance.now() - t);
}
const [b, c] = [await perSample(baseline, 64, 0), await perSample(candidate, 64, 0)];
const statsMs = [];
for (let r = 0; r < 7; r++) {
  const t = performance.now();
  pairedRatioInterval(c, b, resampleIndices(64, RESAMPLES, r), 0.95);
  statsMs.push(performance.now() - t);
}
console.log(
  `\ngate N=64 k=4, ${RESAMPLES} resamples: ${median(gateMs).toFixed(1)} ms; two penalty runs: ${median(bareMs).toFixed(1)} ms; ` +
    `ratio ${(median(gateMs) / median(bareMs)).toFixed(3)}; statistics of one layer alone ${median(statsMs).toFixed(2)} ms`,
);
await context.sessions.clear();
