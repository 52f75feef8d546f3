/**
 * The measured floor against float64 ground truth (issue 14). models/noise_*.onnx are float32
 * generators; models/noise_reference.json holds their float64 penalties over an ε sweep on the
 * same latents and explicit directions (models/export_noise.py). Here: the float32 penalty from
 * evaluatePenalty, σ from ECnoise on one sample and direction through a plain onnxruntime session,
 * and the rule "penalty < MEASURED_NOISE_MARGIN × floor". Where the float32 penalty is off its
 * truth by more than the truth's size the rule must say "below"; where it is within 2%, "not below".
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import {
  belowMeasuredFloor,
  measuredFloor,
  measureNoise,
  MEASURED_NOISE_MARGIN,
  recommendedEpsilon,
  summarizeNoise,
  truncationModel,
} from '../dist/math/index.js';
import { modelBytes, modelPath } from './helpers/reference.js';

interface Reference {
  latents: { shape: [number, number]; data: number[] };
  directions: { shape: number[]; data: number[] };
  k: number;
  models: Record<string, { epsilon: number; max: number; mean: number }[]>;
}
const reference = JSON.parse(readFileSync(modelPath('noise_reference.json'), 'utf8')) as Reference;
const [n, d] = reference.latents.shape;
const z = Float32Array.from(reference.latents.data);
const v = Float32Array.from(reference.directions.data);
const sessions = new SessionCache(8);
t.teardown(() => sessions.clear());
const cpu = { device: { kind: 'cpu' as const }, sessions };
const DEFAULT_REQUEST_ROWS = 8 * (2 * 2 + 1);

/**
 * The one documented exception (docs/noise.md): at ε = 1e-3 this draw of directions happens to put
 * the clean residual model within 2%, although over 60 draws its median error there is 19%; the
 * rule warns, which is the statistically right answer.
 */
const LUCKY = new Set(['noise_residual_ln.onnx@0.001']);

/** ECnoise along direction 0 at sample 0: 7 points, one batch per try, as the metric will run it. */
async function measure(name: string) {
  const session = await ort.InferenceSession.create(modelBytes(name));
  const x = z.subarray(0, d);
  const dir = v.subarray(0, d);
  const evaluate = async (offsets: Float64Array) => {
    const feed = new Float32Array(offsets.length * d);
    offsets.forEach((o, i) => {
      for (let j = 0; j < d; j++) feed[i * d + j] = x[j] + o * dir[j];
    });
    const out = await session.run({ z: new ort.Tensor('float32', feed, [offsets.length, d]) });
    return out.out.data as Float32Array;
  };
  const elements = ((await session.run({ z: new ort.Tensor('float32', x.slice(), [1, d]) })).out.data as Float32Array).length;
  const measurement = await measureNoise(evaluate, elements);
  await session.release();
  return { measurement, summary: summarizeNoise(measurement.sigma), elements };
}

const verdicts: { point: string; relative: number; ratio: number; below: boolean }[] = [];

for (const [name, sweep] of Object.entries(reference.models)) {
  t.test(name, async (t) => {
    const { measurement, summary, elements } = await measure(name);
    t.equal(measurement.tries.length, 1, 'the default spacing resolves on the first try');
    t.ok(summary.resolved >= 0.9 * elements, `${summary.resolved} of ${elements} elements resolved`);
    // Clean models: noise of a few float32 ulps of their O(1) outputs. The failure cases: far more.
    const clean = !/offset|dc_/.test(name);
    if (clean) t.ok(summary.p90 < 2e-7, `σ p90 ${summary.p90}`);
    else t.ok(summary.p90 > 1e-5, `σ p90 ${summary.p90}`);
    // Extra rows: 7 per try on the first request (6 if the centre row is shared), none on a cache hit.
    t.equal(measurement.rows, 7);
    t.equal(measurement.rows / DEFAULT_REQUEST_ROWS, 0.175);

    const model = loadModel(modelBytes(name));
    const at: Record<number, { penalty: number; floor: number; relative: number }> = {};
    for (const point of sweep) {
      const result = await evaluatePenalty(
        model,
        { latents: { type: 'float32', shape: [n, d], data: z }, directions: { type: 'float32', shape: [reference.k, n, d], data: v }, epsilon: point.epsilon },
        cpu,
      );
      const layer = result.layers[0];
      const count = layer.shape.reduce((a, b) => a * b, 1);
      const floor = measuredFloor({ noise: summary, epsilon: point.epsilon, k: reference.k, variance: 'unbiased', reduction: 'max', count });
      const penalty = layer.penalty!;
      const relative = Math.abs(penalty - point.max) / point.max;
      const below = belowMeasuredFloor(penalty, floor);
      const id = `${name}@${point.epsilon}`;
      verdicts.push({ point: id, relative, ratio: penalty / floor, below });
      at[point.epsilon] = { penalty, floor, relative };
      const detail = `${id}: float32 ${penalty.toPrecision(4)}, float64 ${point.max.toPrecision(4)}, off ${(100 * relative).toPrecision(3)}%, penalty/floor ${(penalty / floor).toPrecision(3)}`;
      if (relative > 1) t.ok(below, `below the floor: ${detail}`);
      else if (relative <= 0.02 && LUCKY.has(id)) t.ok(below, `the documented lucky point still warns: ${detail}`);
      else if (relative <= 0.02) t.notOk(below, `not below: ${detail}`);
      // The blind spot: at ε = 3e-3 the output-ulp floor with its 100× margin is silent
      // on the failure cases although their float32 penalty is mostly rounding.
      if (!clean && point.epsilon === 3e-3) {
        t.ok(relative > 1 && penalty > 100 * layer.noiseFloor, `the output-ulp floor misses it: ${detail}`);
      }
    }

    // The recommended range, as a request at ε = 0.1 with a sweep point at 0.03 sees it: every point
    // off by more than its size lies below it, and inside it the float32 penalty is within 5% of
    // the ε → 0 float64 limit (truncation and rounding both small).
    const range = recommendedEpsilon({
      epsilon: 0.1,
      penalty: at[0.1].penalty,
      floorAt: at[0.1].floor,
      truncation: truncationModel(0.03, at[0.03].penalty, 0.1, at[0.1].penalty),
    });
    t.ok(range.usable, `recommended ε [${range.min}, ${range.max}]`);
    const limit = sweep[sweep.length - 2].max; // float64 at ε = 1e-4: truncation ≈ 1e-8 relative
    for (const point of sweep) {
      const inside = point.epsilon >= range.min && point.epsilon <= range.max!;
      if (at[point.epsilon].relative > 1) t.ok(point.epsilon < range.min, `ε = ${point.epsilon} is below the recommended ${range.min}`);
      if (inside) {
        const total = Math.abs(at[point.epsilon].penalty - limit) / limit;
        t.ok(total < 0.05, `ε = ${point.epsilon} in the range: ${(100 * total).toPrecision(3)}% from the limit`);
      }
    }
  });
}

t.test('the margin separates the two sets with room on both sides', async (t) => {
  const warn = verdicts.filter((x) => x.relative > 1).map((x) => x.ratio);
  const clean = verdicts.filter((x) => x.relative <= 0.02 && !LUCKY.has(x.point)).map((x) => x.ratio);
  t.ok(warn.length >= 15 && clean.length >= 20, `${warn.length} noisy points, ${clean.length} clean ones`);
  t.ok(Math.max(...warn) < MEASURED_NOISE_MARGIN && MEASURED_NOISE_MARGIN < Math.min(...clean));
  t.ok(Math.max(...warn) * 1.3 < MEASURED_NOISE_MARGIN, `largest noisy ratio ${Math.max(...warn)}`);
  t.ok(MEASURED_NOISE_MARGIN * 1.3 < Math.min(...clean), `smallest clean ratio ${Math.min(...clean)}`);
});
