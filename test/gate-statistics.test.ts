import t from 'tap';
import {
  bootstrapT,
  pairedRatioInterval,
  quantile,
  ratio,
  ratioAndError,
  resampleIndices,
} from '../dist/gate/bootstrap.js';
import { compareLayer, totalPair } from '../dist/gate/compare.js';
import { applyRules, figureRule, layerVerdict, maxIncrease, maxPenalty } from '../dist/gate/rules.js';
import { standardNormal } from '../dist/math/index.js';

/**
 * Synthetic paired per-sample penalties with a known ratio of means: baseline bᵢ lognormal (σ = 0.4,
 * right-skewed like real per-sample penalties), candidate cᵢ = r·bᵢ·wᵢ with wᵢ lognormal of mean 1
 * (σ = 0.4), independent of bᵢ, so E[c]/E[b] = r exactly. (σ's as measured on dcgan vs
 * dcgan_entangled: per-sample CV 0.3–0.37, log-ratio sd 0.39.)
 */
function trial(seed: number, n: number, truth: number): { c: Float64Array; b: Float64Array } {
  const z = standardNormal(2 * n, seed);
  const b = new Float64Array(n);
  const c = new Float64Array(n);
  const s = 0.4;
  for (let i = 0; i < n; i++) {
    b[i] = Math.exp(s * z[i]);
    c[i] = truth * b[i] * Math.exp(s * z[n + i] - (s * s) / 2);
  }
  return { c, b };
}

function coverage(confidence: number, n: number, truth: number): { rate: number; below: number; above: number } {
  const trials = 1000;
  let covered = 0;
  let below = 0;
  let above = 0;
  for (let i = 0; i < trials; i++) {
    const { c, b } = trial(10_000 + i, n, truth);
    const interval = pairedRatioInterval(c, b, resampleIndices(n, 500, i), confidence);
    if (truth < interval.lower) below++;
    else if (truth > interval.upper) above++;
    else covered++;
  }
  return { rate: covered / trials, below, above };
}

t.test('the 95% interval covers the true ratio in 95% ± 3% of 1,000 seeded trials', async (t) => {
  const { rate, below, above } = coverage(0.95, 32, 1.3);
  t.ok(Math.abs(rate - 0.95) <= 0.03, `coverage ${rate} (truth below the interval ${below}×, above ${above}×)`);
});

t.test('the confidence level is honoured: 80% intervals cover about 80% of the time', async (t) => {
  const { rate } = coverage(0.8, 32, 0.7);
  t.ok(Math.abs(rate - 0.8) <= 0.03, `coverage ${rate}`);
});

t.test('identical samples give a ratio of exactly 1 with a zero-width interval', async (t) => {
  const { b } = trial(5, 40, 1);
  const interval = pairedRatioInterval(b, b, resampleIndices(40, 300, 1), 0.95);
  t.same(interval, { estimate: 1, lower: 1, upper: 1 });
  // A constant ratio per pair leaves nothing to resample either.
  const doubled = b.map((x) => 2 * x);
  const i2 = pairedRatioInterval(doubled, b, resampleIndices(40, 300, 1), 0.95);
  t.equal(i2.lower, i2.upper);
  t.ok(Math.abs(i2.estimate - 2) < 1e-12);
});

t.test('the interval widens with the confidence level and is reproducible from the seed', async (t) => {
  const { c, b } = trial(9, 48, 1.2);
  const idx = resampleIndices(48, 1000, 3);
  const narrow = pairedRatioInterval(c, b, idx, 0.8);
  const wide = pairedRatioInterval(c, b, idx, 0.99);
  t.equal(narrow.estimate, wide.estimate);
  t.ok(wide.lower < narrow.lower && narrow.upper < wide.upper, JSON.stringify({ narrow, wide }));
  t.same(pairedRatioInterval(c, b, resampleIndices(48, 1000, 3), 0.8), narrow, 'same seed, same interval');
  t.not(pairedRatioInterval(c, b, resampleIndices(48, 1000, 4), 0.8).upper, narrow.upper, 'another seed resamples differently');
});

t.test('ratio of means and its delta-method standard error match a hand computation', async (t) => {
  const c = [2, 4, 9];
  const b = [1, 2, 3];
  const { ratio: r, se } = ratioAndError(c, b);
  t.equal(r, 15 / 6);
  // residuals cᵢ − R·bᵢ = −0.5, −1, 1.5; Σ² = 3.5; se = sqrt(3.5 / (3·2)) / mean(b)
  t.ok(Math.abs(se - Math.sqrt(3.5 / 6) / 2) < 1e-15);
  t.equal(ratio(0, 0), 1, '0/0 is no change');
  t.equal(ratio(1, 0), Infinity, 'any penalty over a zero baseline is unbounded');
});

t.test('bootstrap-t on explicit resamples', async (t) => {
  const c = [2, 4, 9];
  const b = [1, 2, 3];
  // Resample 1 = the sample itself (t = 0); resample 2 = pair 0 three times (no spread, same ratio 2 < 2.5: -∞).
  const tStar = bootstrapT(c, b, Uint32Array.from([0, 1, 2, 0, 0, 0]), 2.5);
  t.same(Array.from(tStar), [0, -Infinity]);
});

t.test('resample indices are in range, uniform, and pinned by the seed', async (t) => {
  const idx = resampleIndices(7, 10_000, 42);
  t.equal(idx.length, 70_000);
  const counts = new Array(7).fill(0);
  for (const i of idx) counts[i]++;
  t.ok(counts.every((n) => Math.abs(n - 10_000) < 400), counts.join(','));
  t.ok(Buffer.from(resampleIndices(7, 10_000, 42).buffer).equals(Buffer.from(idx.buffer)), 'same seed, same indices');
  t.not(resampleIndices(7, 10, 43).join(), resampleIndices(7, 10, 42).join());
});

t.test('quantile interpolates between order statistics (type 7)', async (t) => {
  const xs = [1, 2, 4, 8];
  t.equal(quantile(xs, 0), 1);
  t.equal(quantile(xs, 1), 8);
  t.equal(quantile(xs, 0.5), 3);
  t.equal(quantile(xs, 0.25), 1.75);
});

t.test('bad inputs to the interval are refused', async (t) => {
  t.throws(() => pairedRatioInterval([1, 2], [1], resampleIndices(2, 10, 0), 0.95), /same, non-zero length/);
  t.throws(() => pairedRatioInterval([1, 2], [1, 3], resampleIndices(2, 10, 0), 1), /confidence must be between 0 and 1/);
  t.throws(() => pairedRatioInterval([1, 2], [1, 3], new Uint32Array(3), 0.95), /whole resamples/);
});

const pair = (candidate: (number | null)[], baseline: (number | null)[], name = 'y') => ({
  name,
  baselineName: name,
  candidate: { penalty: candidate.includes(null) ? null : Math.max(...(candidate as number[])), perSample: candidate },
  baseline: { penalty: baseline.includes(null) ? null : Math.max(...(baseline as number[])), perSample: baseline },
});

t.test('a layer compares means and keeps the reported penalties', async (t) => {
  const c = compareLayer(pair([2, 4, 6], [1, 2, 3]), resampleIndices(3, 200, 0), 0.95);
  t.equal(c.candidate.mean, 4);
  t.equal(c.baseline.mean, 2);
  t.equal(c.candidate.penalty, 6);
  t.same(c.ratio, { estimate: 2, lower: 2, upper: 2 });
  t.equal(c.problem, undefined);
});

t.test('a layer with a non-finite sample cannot be compared, and its verdict is error', async (t) => {
  const c = compareLayer(pair([2, null, 6], [1, 2, 3]), resampleIndices(3, 200, 0), 0.95);
  t.equal(c.ratio, null);
  t.match(c.problem, /candidate produced NaN or infinite/);
  const outcomes = applyRules(c, { maxIncrease: 0.1 });
  t.equal(outcomes[0].verdict, 'error');
  t.equal(layerVerdict(c, outcomes), 'error');
  t.equal(layerVerdict(c, []), 'error', 'an unevaluated layer is never a pass, even without rules');
});

t.test('the total sums per-sample penalties across layers', async (t) => {
  const total = totalPair([pair([1, 2], [1, 1], 'a'), pair([3, 4], [2, 2], 'b')]);
  t.same(total.candidate.perSample, [4, 6]);
  t.same(total.baseline.perSample, [3, 3]);
  t.equal(total.candidate.penalty, 2 + 4);
  const broken = totalPair([pair([1, 2], [1, 1], 'a'), pair([null, 4], [2, 2], 'b')]);
  t.same(broken.candidate.perSample, [null, 6]);
  t.equal(broken.candidate.penalty, null);
});

t.test('rules: ceilings, switched-off rules, an unbounded ratio', async (t) => {
  const c = compareLayer(pair([1.5, 2.5, 2, 3], [1, 2, 2, 2]), resampleIndices(4, 500, 0), 0.95);
  const [inc, pen] = applyRules(c, { maxIncrease: 0.1, maxPenalty: 2 });
  t.equal(inc.rule, 'maxIncrease');
  t.equal(inc.limit, 1.1);
  t.equal(inc.value, c.ratio!.upper);
  t.equal(inc.verdict, 'fail');
  t.match(inc.message, /ratio upper bound .* > 1.1/);
  t.same([pen.value, pen.verdict], [3, 'fail']);
  t.equal(applyRules(c, { maxIncrease: null, maxPenalty: 3 }).length, 1, 'null switches a rule off');
  t.equal(applyRules(c, { maxPenalty: 3 })[0].verdict, 'pass', 'at the limit passes');

  const fromZero = compareLayer(pair([0, 1], [0, 0]), resampleIndices(2, 100, 0), 0.95);
  t.equal(fromZero.ratio!.upper, Infinity);
  const [o] = applyRules(fromZero, { maxIncrease: 10 });
  t.equal(o.verdict, 'fail');
  t.match(o.message, /∞ > 11/);
  t.equal(maxIncrease.measure(fromZero), Infinity);
  t.equal(maxPenalty.measure(fromZero), 1);
});

t.test('audit-figure rules read figures a provider filled in, and error without them', async (t) => {
  const diagonal = figureRule('minDiagonalFraction', '--min-diagonal-fraction', 'diagonalFraction', 'floor', 'floor');
  const unused = figureRule('maxUnusedLatents', '--max-unused-latents', 'unusedLatents', 'ceiling', 'ceiling');
  const c = compareLayer(pair([1, 2], [1, 2]), resampleIndices(2, 100, 0), 0.95);
  const rules = [diagonal, unused];
  t.equal(applyRules(c, { minDiagonalFraction: 0.5 }, rules)[0].verdict, 'error', 'no provider ran');
  c.candidate.figures = { diagonalFraction: 0.4, unusedLatents: 1 };
  const [d, u] = applyRules(c, { minDiagonalFraction: 0.5, maxUnusedLatents: 1 }, rules);
  t.same([d.verdict, d.value], ['fail', 0.4]);
  t.match(d.message, /candidate diagonalFraction 0.4 < 0.5/);
  t.same([u.verdict, u.value], ['pass', 1]);
});
