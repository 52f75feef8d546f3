/**
 * ECnoise (Moré & Wild) on functions with known noise, in float64: a smooth function plus seeded
 * Gaussian noise of known σ, and a smooth function rounded to a grid (the way float rounding makes
 * noise). The adaptive driver must recover σ from a spacing that is too small and too large.
 */
import t from 'tap';
import {
  belowMeasuredFloor,
  crossesKink,
  ecnoise,
  elementFloor,
  expectedMaxChiSquare,
  gammaFactors,
  gammaQ,
  logGamma,
  measuredFloor,
  measureNoise,
  MEASURED_NOISE_MARGIN,
  NOISE_STATUS_NAMES,
  NoiseStatus,
  quantile,
  recommendedEpsilon,
  secondDifferenceNoise,
  standardNormal,
  summarizeNoise,
  truncationModel,
} from '../dist/math/index.js';

const ELEMENTS = 200;
/** Element e's smooth part: different scales, slopes and curvatures. */
const smooth = (e: number, t: number) => (1 + (e % 7)) * Math.sin(0.3 + 0.01 * e + t) + 3 + 0.5 * Math.exp(0.2 * t * (e % 3));
/** Element e's noise level: spread over two decades. */
const sigmaOf = (e: number) => 1e-6 * 10 ** ((2 * e) / ELEMENTS);

/** f(t) + σ_e·noise at each offset; fresh seeded noise for every call, as a new evaluation has. */
function noisy(seed: number) {
  let call = 0;
  return async (offsets: Float64Array) => {
    const noise = standardNormal(offsets.length * ELEMENTS, seed + call++);
    return Float64Array.from({ length: offsets.length * ELEMENTS }, (_, k) => {
      const i = Math.floor(k / ELEMENTS);
      const e = k % ELEMENTS;
      return smooth(e, offsets[i]) + sigmaOf(e) * noise[k];
    });
  };
}

const close = (a: number, b: number, tol = 1e-12) => Math.abs(a - b) <= tol * Math.abs(b);
const ratios = (sigma: Float64Array, truth: (e: number) => number) => Array.from(sigma, (s, e) => s / truth(e));

t.test('γ_j = (j!)²/(2j)!', async (t) => {
  const g = gammaFactors(4);
  [1, 1 / 2, 1 / 6, 1 / 20, 1 / 70].forEach((x, j) => t.ok(Math.abs(g[j] - x) < 1e-16, `γ_${j}`));
});

t.test('one table at a good spacing: σ within a factor of 2 of the truth, element by element', async (t) => {
  const h = 1e-3;
  const values = await noisy(1)(Float64Array.from({ length: 8 }, (_, i) => i * h));
  const table = ecnoise(values, 8, ELEMENTS);
  const r = ratios(table.sigma, sigmaOf);
  const okCount = table.status.filter((s) => s === NoiseStatus.ok).length;
  t.ok(okCount >= 0.95 * ELEMENTS, `${okCount} of ${ELEMENTS} resolved`);
  const within = r.filter((x) => x >= 0.5 && x <= 2).length;
  // One 8-point table per element is a small sample: single elements scatter, the summary does not.
  t.ok(within >= 0.8 * okCount, `${within} of ${okCount} within 2×`);
  const median = quantile(Float64Array.from(r.filter(Number.isFinite)).sort(), 0.5);
  t.ok(median > 0.8 && median < 1.25, `median ratio ${median}`);
  t.ok(Array.from(table.order).every((j, e) => table.status[e] !== NoiseStatus.ok || (j >= 1 && j <= 5)));
});

t.test('h too large: the relative range rule, then the driver shrinks h and recovers σ', async (t) => {
  const values = await noisy(2)(Float64Array.from({ length: 8 }, (_, i) => i * 1));
  const table = ecnoise(values, 8, ELEMENTS);
  t.ok(table.status.every((s) => s === NoiseStatus.hTooLarge));
  t.ok(table.sigma.every(Number.isNaN));
  const m = await measureNoise(noisy(3), ELEMENTS, { h: 1 });
  t.same(m.tries.map((x) => x.h), [1, 0.01]);
  t.equal(m.tries[0].hTooLarge, ELEMENTS);
  t.equal(m.rows, 14, 'two tries of the default 7 points');
  const r = ratios(m.sigma, sigmaOf).filter(Number.isFinite);
  t.ok(r.length >= 0.9 * ELEMENTS);
  const s = summarizeNoise(r);
  t.ok(s.median > 0.5 && s.median < 2, `median ratio ${s.median}`);
  const within = r.filter((x) => x >= 0.5 && x <= 2).length;
  t.ok(within >= 0.8 * r.length, `${within} of ${r.length} within 2×`);
});

t.test('h too small: a function rounded to a grid gives equal values, the driver grows h', async (t) => {
  // Rounding to a grid of q is deterministic noise of σ = q/√12 once the points are q apart.
  const q = 1e-4;
  const rounded = async (offsets: Float64Array) =>
    Float64Array.from({ length: offsets.length * ELEMENTS }, (_, k) => q * Math.round(smooth(k % ELEMENTS, offsets[Math.floor(k / ELEMENTS)]) / q));
  const first = ecnoise(await rounded(Float64Array.from({ length: 8 }, (_, i) => i * 1e-9)), 8, ELEMENTS);
  t.ok(first.status.every((s) => s === NoiseStatus.hTooSmall));
  const m = await measureNoise(rounded, ELEMENTS, { h: 1e-9 });
  t.ok(m.tries[0].hTooSmall === ELEMENTS && m.tries.length >= 2, m.tries.map((x) => `${x.h}:${x.ok}`).join(' '));
  const s = summarizeNoise(m.sigma);
  t.ok(s.resolved >= 0.9 * ELEMENTS, `${s.resolved} resolved`);
  const truth = q / Math.sqrt(12);
  t.ok(s.median > truth / 2 && s.median < 2 * truth, `median ${s.median} vs ${truth}`);
  t.equal(NOISE_STATUS_NAMES[m.status[0]], 'ok');
});

t.test('the driver never retries a spacing and stops after maxTries', async (t) => {
  // Constant elements never resolve: ×100, ×10, then nothing left to try upward.
  const constant = async (offsets: Float64Array) => new Float64Array(offsets.length * 3).fill(2);
  const m = await measureNoise(constant, 3, { h: 1, maxTries: 10 });
  t.same(m.tries.map((x) => x.h), [1, 100, 10000, 1000000, 100000000, 10000000000, 1000000000000, 100000000000000, 1e16, 1e18]);
  t.ok(m.status.every((s) => s === NoiseStatus.hTooSmall));
  // Too small, then too large: back down by 10 rather than to the spacing already tried.
  let calls = 0;
  const flip = async (offsets: Float64Array) => {
    calls++;
    const values = new Float64Array(offsets.length);
    for (let i = 0; i < offsets.length; i++) values[i] = calls === 1 ? 1 : 1 + i; // equal, then range 7 > 0.1
    return values;
  };
  const f = await measureNoise(flip, 1, { h: 1e-3, maxTries: 5 });
  const expected = [1e-3, 1e-1, 1e-2, 1e-4, 1e-6];
  t.equal(f.tries.length, 5);
  f.tries.forEach((x, i) => t.ok(Math.abs(x.h / expected[i] - 1) < 1e-12, `try ${i}: ${x.h}`));
  // Non-finite values get their own status and do not steer the spacing.
  const broken = ecnoise(Float64Array.from([Number.NaN, 1, 1, 2, 1, Infinity, 1, 2]), 4, 2);
  t.same(Array.from(broken.status), [NoiseStatus.nonFinite, NoiseStatus.nonFinite]);
  t.equal(NOISE_STATUS_NAMES[NoiseStatus.nonFinite], 'non_finite');
  const nanRows = await measureNoise(async (o) => new Float64Array(o.length).fill(Number.NaN), 1, { maxTries: 2 });
  t.same(nanRows.tries.map((x) => [x.ok, x.hTooSmall, x.hTooLarge]), [[0, 0, 0], [0, 0, 0]]);
  const nan = summarizeNoise([Number.NaN]);
  t.equal(nan.resolved, 0);
  t.ok(Number.isNaN(nan.median));
});

t.test('bad arguments are refused with a clear message', async (t) => {
  t.throws(() => ecnoise(new Float64Array(6), 3, 2), /at least 4 points, got 3/);
  t.throws(() => ecnoise(new Float64Array(7), 4, 2), /expects 4×2 = 8 values, got 7/);
  await t.rejects(measureNoise(noisy(4), 1, { h: 0 }), /spacing h must be a finite number greater than 0, got 0/);
  await t.rejects(measureNoise(noisy(4), 1, { maxTries: 0 }), /maxTries must be an integer of at least 1, got 0/);
  t.throws(() => expectedMaxChiSquare(0, 4), /nu >= 1/);
});

t.test('summary: quantiles, rms and max over the resolved elements', async (t) => {
  const s = summarizeNoise([4, Number.NaN, 1, 3, 2, 5]);
  t.same(s, { elements: 6, resolved: 5, median: 3, p90: 4.6, rms: Math.sqrt(11), max: 5 });
});

t.test('the floor: √6σ/ε² per second difference, 2σ²/ε⁴ per element, the max factor', async (t) => {
  t.ok(close(secondDifferenceNoise(1e-6, 1e-3), Math.sqrt(6)));
  t.ok(close(elementFloor(1e-6, 1e-3, 2, 'unbiased'), 2));
  t.ok(close(elementFloor(1e-6, 1e-3, 4, 'biased'), 1.5));
  // χ²₂/2 is Exp(1): the expected maximum of M of them is the harmonic number H_M.
  t.ok(Math.abs(expectedMaxChiSquare(2, 10) - 2.9289682539682538) < 1e-9);
  t.ok(Math.abs(expectedMaxChiSquare(1, 1) - 1) < 1e-3);
  t.ok(Math.abs(expectedMaxChiSquare(1, 128) - 8.148) < 1e-2);
  t.ok(Math.abs(gammaQ(1, 2.5) - Math.exp(-2.5)) < 1e-15);
  t.ok(Math.abs(gammaQ(3, 7) - Math.exp(-7) * (1 + 7 + 24.5)) < 1e-15);
  t.equal(gammaQ(2, 0), 1);
  t.ok(close(logGamma(0.25), Math.log(3.625609908221908)), 'ln Γ by reflection below 1/2');
  t.ok(close(logGamma(5), Math.log(24)));
  const noise = { p90: 1e-6, rms: 5e-7 };
  t.ok(close(measuredFloor({ noise, epsilon: 1e-3, k: 2, variance: 'unbiased', reduction: 'mean', count: 128 }), 0.5));
  t.ok(Math.abs(measuredFloor({ noise, epsilon: 1e-3, k: 3, variance: 'unbiased', reduction: 'max', count: 10 }) - 2 * 2.9289682539682538) < 1e-8);
  t.ok(belowMeasuredFloor(MEASURED_NOISE_MARGIN * 2 - 1e-9, 2));
  t.notOk(belowMeasuredFloor(MEASURED_NOISE_MARGIN * 2, 2));
  t.ok(belowMeasuredFloor(Number.NaN, 2), 'an undefined penalty is never above the floor');
});

t.test('the recommended ε range: the floor bound below, the truncation bound above', async (t) => {
  // P(ε) = 2 + 3ε²: the truncation model recovers P₀ and B exactly.
  const model = truncationModel(0.1, 2 + 3 * 0.01, 0.2, 2 + 3 * 0.04);
  t.ok(Math.abs(model.p0 - 2) < 1e-12 && Math.abs(model.b - 3) < 1e-12);
  // The floor is 0.01 at ε = 1e-3 and falls as 1/ε⁴; with margin 5 and P = 2 it clears at ε·(0.025)^¼.
  const range = recommendedEpsilon({ epsilon: 1e-3, penalty: 2, floorAt: 0.01, margin: 5, truncation: model, tolerance: 0.02 });
  t.ok(Math.abs(range.min - 1e-3 * 0.025 ** 0.25) < 1e-15);
  t.ok(Math.abs(range.max! - Math.sqrt((0.02 * 2) / 3)) < 1e-12);
  t.equal(range.usable, true);
  t.same(recommendedEpsilon({ epsilon: 1e-3, penalty: 2, floorAt: 0.01 }).max, null);
  t.equal(recommendedEpsilon({ epsilon: 1e-3, penalty: 2, floorAt: 0.01, truncation: { p0: 2, b: 0 } }).max, Infinity);
  t.equal(recommendedEpsilon({ epsilon: 0.1, penalty: 2, floorAt: 100, truncation: model }).usable, false);
});

t.test('a line through a ReLU kink is discarded as a kink, not read as noise; a rounding staircase is noise', async (t) => {
  // 200 elements: a·max(0, t − t₀) + b·t with the kink t₀ inside the line at every element.
  const h = 1e-3;
  const points = 7;
  const kinked = Float64Array.from({ length: points * ELEMENTS }, (_, k) => {
    const i = Math.floor(k / ELEMENTS);
    const e = k % ELEMENTS;
    const t0 = (0.3 + (5.2 * e) / ELEMENTS) * h; // strictly between points, everywhere on the line
    return 2 + 0.5 * i * h + (1 + (e % 5)) * Math.max(0, i * h - t0);
  });
  const table = ecnoise(kinked, points, ELEMENTS);
  t.ok(table.status.every((s) => s === NoiseStatus.kink), 'every kinked line is a kink');
  t.equal(NOISE_STATUS_NAMES[NoiseStatus.kink], 'kink');
  // The same line with its noise: still the kink (its jump is far above σ).
  const noise = standardNormal(points * ELEMENTS, 9);
  const noisyKink = ecnoise(kinked.map((x, k) => x + 1e-9 * noise[k]), points, ELEMENTS);
  t.ok(noisyKink.status.filter((s) => s === NoiseStatus.kink).length >= 0.95 * ELEMENTS);
  // Pure noise spreads its Δ² energy: no element is a kink.
  const pure = ecnoise(Float64Array.from({ length: points * ELEMENTS }, (_, k) => 3 + 1e-6 * noise[k]), points, ELEMENTS);
  t.equal(pure.status.filter((s) => s === NoiseStatus.kink).length, 0);
  // One step of a rounding grid gives a (+q, −q) pair: noise, not a kink.
  t.equal(crossesKink([0, 1e-4, -1e-4, 0, 0], 5), false);
  t.equal(crossesKink([0, 1e-4, 3e-5, 0, 0], 5), true, 'two adjacent entries of one sign');
  t.equal(crossesKink([0, 0, 0, 2e-3, 0], 5), true, 'a kink on a grid point: one entry');
  t.equal(crossesKink([0, 0, 0, 0, 0], 5), false, 'a straight line');
  // The driver re-samples the kink lines at h/100, where the kink lies off the line.
  const lines = async (offsets: Float64Array) =>
    Float64Array.from({ length: offsets.length * ELEMENTS }, (_, k) => {
      const i = Math.floor(k / ELEMENTS);
      const e = k % ELEMENTS;
      const x = offsets[i];
      return 2 + 0.5 * x + (1 + (e % 5)) * Math.max(0, x - 2.5e-3) + sigmaOf(e) * noise[(k + 7 * e) % noise.length] * (1 + i);
    });
  const m = await measureNoise(lines, ELEMENTS);
  t.equal(m.tries[0].kinks, ELEMENTS - m.tries[0].ok - m.tries[0].hTooLarge - m.tries[0].hTooSmall);
  t.ok(m.tries[0].kinks > 0, `${m.tries[0].kinks} kink lines at h = 1e-3`);
  t.equal(m.tries[1].h, 1e-5);
});
