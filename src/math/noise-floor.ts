/**
 * The penalty's noise floor from a measured noise level σ (ECnoise), and the ε range it leaves.
 * The derivation is in docs/noise.md; in short, for one element with noise e at each evaluation:
 *
 *   q_j = (g(z+εv_j) − 2g(z) + g(z−εv_j))/ε² carries (e⁺_j + e⁻_j − 2e⁰)/ε²: variance 6σ²/ε⁴;
 *   the e⁰ part is common to every direction j, so the variance over j never sees it, and the
 *   part that does vary has variance 2σ²/ε⁴ per direction, independent across directions.
 *   Its unbiased variance over k directions has mean 2σ²/ε⁴ and is (2σ²/ε⁴)·χ²_{k−1}/(k−1).
 *
 * Layer floor: a mean over elements adds the mean of those (σ² → its mean: the rms of σ); a max
 * over M = N·E elements adds up to the largest of M such variables, E[max] = (2σ²/ε⁴)·c_k(M).
 */
import type { NoiseSummary } from './ecnoise.js';
import type { Reduction } from './reduction.js';
import type { VarianceKind } from './variance.js';

/** The noise of one second difference (all three evaluations): about √6·σ/ε². */
export const secondDifferenceNoise = (sigma: number, epsilon: number): number => (Math.sqrt(6) * sigma) / (epsilon * epsilon);

/** Expected noise contribution to one element's variance over k directions. */
export function elementFloor(sigma: number, epsilon: number, k: number, variance: VarianceKind): number {
  const unbiased = (2 * sigma * sigma) / epsilon ** 4;
  return variance === 'unbiased' ? unbiased : (unbiased * (k - 1)) / k;
}

export interface FloorInput {
  noise: Pick<NoiseSummary, 'p90' | 'rms'>;
  epsilon: number;
  k: number;
  variance: VarianceKind;
  reduction: Reduction;
  /** Elements the reduction runs over: samples × elements per sample. */
  count: number;
}

/**
 * The layer's floor: the expected amount rounding noise adds to its penalty. Max: the 90th
 * percentile of σ (the upper tail the max lands on, robust to single misfired elements) times the
 * expected maximum factor; mean: the rms of σ.
 */
export function measuredFloor(o: FloorInput): number {
  if (o.reduction === 'mean') return elementFloor(o.noise.rms, o.epsilon, o.k, o.variance);
  return elementFloor(o.noise.p90, o.epsilon, o.k, o.variance) * expectedMaxChiSquare(o.k - 1, o.count);
}

/**
 * The warning margin: the floor says "possibly noise" when penalty < MARGIN × floor, and the
 * step-halving test (step-halving.ts) then decides. Chosen on the float64 ground truth of
 * models/noise_*.onnx (test/noise-models.test.ts, docs/noise.md): with the halving clearing kinked
 * and lucky points, 10 leaves one point of the sweep tables wrong, 5 two; a larger margin costs
 * nothing where the halving clears, and catches more of ECnoise's underestimates.
 */
export const MEASURED_NOISE_MARGIN = 10;

export const belowMeasuredFloor = (penalty: number, floor: number, margin = MEASURED_NOISE_MARGIN): boolean => !(penalty >= margin * floor);

/**
 * E[max of `count` independent χ²_ν/ν], by integrating 1 − F(y)^count over y (F: the χ²_ν CDF
 * at νy). ν = k−1 = 1 (the default k = 2) gives about 2·ln(count) − ln ln(count): 9 for 128
 * elements, 17 for 8·3072.
 */
export function expectedMaxChiSquare(nu: number, count: number): number {
  if (!(nu >= 1) || !(count >= 1)) throw new RangeError(`expected nu >= 1 and count >= 1, got ${nu}, ${count}`);
  // A pure function of (ν, count) costing ~4,000 incomplete-gamma evaluations: computed once each.
  const key = `${nu}/${count}`;
  const known = maxChiSquareCache.get(key);
  if (known !== undefined) return known;
  const value = integrateMaxChiSquare(nu, count);
  if (maxChiSquareCache.size >= 256) maxChiSquareCache.delete(maxChiSquareCache.keys().next().value as string);
  maxChiSquareCache.set(key, value);
  return value;
}

const maxChiSquareCache = new Map<string, number>();

function integrateMaxChiSquare(nu: number, count: number): number {
  const a = nu / 2;
  const tail = (y: number) => gammaQ(a, (nu * y) / 2); // P(χ²_ν/ν > y)
  const aboveMax = (y: number) => -Math.expm1(count * Math.log1p(-Math.min(tail(y), 1 - 1e-300))); // P(max > y)
  let upper = 2;
  while (count * tail(upper) > 1e-13) upper *= 2;
  const steps = 4096; // Simpson's rule; the integrand is smooth and bounded by 1
  const dy = upper / steps;
  let sum = aboveMax(0) + aboveMax(upper);
  for (let i = 1; i < steps; i++) sum += (i % 2 ? 4 : 2) * aboveMax(i * dy);
  return (sum * dy) / 3;
}

/** Regularized upper incomplete gamma Q(a, x) (series below a+1, continued fraction above). */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const front = Math.exp(-x + a * Math.log(x) - logGamma(a));
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 1000 && Math.abs(term) > Math.abs(sum) * 1e-16; n++) {
      term *= x / (a + n);
      sum += term;
    }
    return 1 - sum * front;
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return front * h;
}

const LANCZOS = [676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];

/** ln Γ(x) for x > 0 (Lanczos, g = 7). */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let s = 0.99999999999980993;
  for (let i = 0; i < LANCZOS.length; i++) s += LANCZOS[i] / (x + i + 1);
  const t = x + LANCZOS.length - 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(s);
}

/**
 * Truncation: the penalty is P(ε) = P₀ + B·ε² + O(ε⁴) (the second difference's error is
 * ε²/12·(4th derivative) + …). Two penalties at ε₁ < ε₂ on the same latents and directions,
 * both well above the floor, give B and P₀; the relative truncation error at ε is |B|·ε²/P₀.
 */
export function truncationModel(epsilon1: number, penalty1: number, epsilon2: number, penalty2: number): { p0: number; b: number } {
  const b = (penalty2 - penalty1) / (epsilon2 ** 2 - epsilon1 ** 2);
  return { p0: penalty1 - b * epsilon1 ** 2, b };
}

export interface EpsilonRange {
  /** Smallest ε whose penalty clears margin × floor (the floor falls as 1/ε⁴). */
  min: number;
  /** Largest ε whose relative truncation error stays under the tolerance; null when unknown. */
  max: number | null;
  /** False when min > max: no ε is both above the floor and accurate. */
  usable: boolean;
}

/**
 * The recommended ε range for one layer. `floorAt` is the floor at `epsilon` (it scales as
 * 1/ε⁴), `penalty` the penalty there; `truncation` (from truncationModel) bounds ε from above.
 */
export function recommendedEpsilon(o: {
  epsilon: number;
  penalty: number;
  floorAt: number;
  margin?: number;
  truncation?: { p0: number; b: number };
  tolerance?: number;
}): EpsilonRange {
  const margin = o.margin ?? MEASURED_NOISE_MARGIN;
  const min = o.epsilon * ((margin * o.floorAt) / o.penalty) ** 0.25;
  let max: number | null = null;
  if (o.truncation) {
    const { p0, b } = o.truncation;
    max = b === 0 ? Infinity : Math.sqrt(((o.tolerance ?? 0.02) * Math.abs(p0)) / Math.abs(b));
  }
  return { min, max, usable: max === null || min <= max };
}
