// The measured noise floor on models/noise_*.onnx against their float64 truth (issue 14):
// per (model, ε) the float32 penalty, its relative error, penalty/floor for the measured floor and
// for the output-ulp floor, and per model the ECnoise σ, its row cost and the recommended ε range.
// Usage: npm run build --silent && node bench/noise-margin.mjs [points=7] [samples=1]
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { MEASURED_NOISE_MARGIN, measuredFloor, measureNoise, recommendedEpsilon, summarizeNoise, truncationModel } from '../dist/math/index.js';

const models = new URL('../models/', import.meta.url);
const ref = JSON.parse(readFileSync(new URL('noise_reference.json', models), 'utf8'));
const sessions = new SessionCache(8);
const z = Float32Array.from(ref.latents.data);
const v = Float32Array.from(ref.directions.data);
const [n, d] = ref.latents.shape;
const points = Number(process.argv[2] ?? 7);
const samplesMeasured = Number(process.argv[3] ?? 1);
const mustWarn = [];
const mustNot = [];
const fmt = (x) => x.toPrecision(3);

for (const [name, truth] of Object.entries(ref.models)) {
  const bytes = new Uint8Array(readFileSync(new URL(name, models)));
  const session = await ort.InferenceSession.create(bytes);
  const sigmas = [];
  let rows = 0;
  for (let s = 0; s < samplesMeasured; s++) {
    const x = z.subarray(s * d, (s + 1) * d);
    const dir = v.subarray(s * d, (s + 1) * d);
    const evaluate = async (offsets) => {
      const feed = new Float32Array(offsets.length * d);
      offsets.forEach((t, i) => {
        for (let j = 0; j < d; j++) feed[i * d + j] = x[j] + t * dir[j];
      });
      return (await session.run({ z: new ort.Tensor('float32', feed, [offsets.length, d]) })).out.data;
    };
    const elements = (await session.run({ z: new ort.Tensor('float32', x.slice(), [1, d]) })).out.data.length;
    const m = await measureNoise(evaluate, elements, { points });
    rows += m.rows;
    sigmas.push(...m.sigma);
  }
  await session.release();
  const noise = summarizeNoise(Float64Array.from(sigmas));
  console.log(`\n${name}: σ median ${fmt(noise.median)} p90 ${fmt(noise.p90)} rms ${fmt(noise.rms)} (${noise.resolved}/${noise.elements} resolved), ${rows} rows`);
  console.log('  ε\tfloat32\tfloat64\toff\tP/floor\tP/ulp-floor');
  const penalties = {};
  const floors = {};
  for (const point of truth) {
    const r = await evaluatePenalty(
      loadModel(bytes),
      { latents: { type: 'float32', shape: [n, d], data: z }, directions: { type: 'float32', shape: [ref.k, n, d], data: v }, epsilon: point.epsilon },
      { device: { kind: 'cpu' }, sessions },
    );
    const layer = r.layers[0];
    const p = layer.penalty;
    const count = layer.shape.reduce((a, b) => a * b, 1);
    const floor = measuredFloor({ noise, epsilon: point.epsilon, k: ref.k, variance: 'unbiased', reduction: 'max', count });
    penalties[point.epsilon] = p;
    floors[point.epsilon] = floor;
    const off = Math.abs(p - point.max) / point.max;
    const tag = off > 1 ? 'must warn' : off <= 0.02 ? 'must not' : '';
    if (off > 1) mustWarn.push([`${name}@${point.epsilon}`, p / floor]);
    if (off <= 0.02) mustNot.push([`${name}@${point.epsilon}`, p / floor]);
    console.log(`  ${point.epsilon}\t${p.toPrecision(4)}\t${point.max.toPrecision(4)}\t${fmt(100 * off)}%\t${fmt(p / floor)}\t${fmt(p / layer.noiseFloor)}\t${tag}`);
  }
  // As a request at the default ε = 0.1 with a sweep point at 0.03 would see it.
  const range = recommendedEpsilon({ epsilon: 0.1, penalty: penalties[0.1], floorAt: floors[0.1], truncation: truncationModel(0.03, penalties[0.03], 0.1, penalties[0.1]) });
  console.log(`  recommended ε: [${fmt(range.min)}, ${fmt(range.max)}]${range.usable ? '' : ' (none usable)'}`);
}
sessions.clear();
mustWarn.sort((a, b) => b[1] - a[1]);
mustNot.sort((a, b) => a[1] - b[1]);
const show = (list) => list.slice(0, 3).map(([p, r]) => `${p} ${fmt(r)}`).join(', ');
console.log(`\npoints=${points} samples=${samplesMeasured} margin=${MEASURED_NOISE_MARGIN}`);
console.log(`off by more than the truth (${mustWarn.length}): largest penalty/floor ${show(mustWarn)}`);
console.log(`within 2% (${mustNot.length}): smallest penalty/floor ${show(mustNot)}`);
