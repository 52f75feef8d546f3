/**
 * The step-halving test (issue 20; docs/noise.md, "The verdict"): the same latents and directions
 * at 2ε, ε and ε/2 on a few samples. How the figure scales under halving tells what sets it:
 *
 *   rounding   q carries δ/ε²: its variance grows as ε⁻⁴, ×16 per halving;
 *   kinks      a direction that crosses a ReLU kink at distance d < ε gives q ≈ c(ε − d)/ε²: the
 *              mean over elements grows as ε⁻¹ (×2), the max as up to ε⁻² (×4);
 *   smooth     P(ε) = P₀ + Bε²: flat once ε is small.
 *
 * ECnoise's floor is the first opinion (metrics/noise.ts); the halving overrides it where its
 * evidence is clear. Pure functions; the rows are run by metrics/halving.ts.
 */
import { expectedMaxChiSquare } from './noise-floor.js';
import type { Reduction } from './reduction.js';

/** The spacings evaluated besides ε, as factors of ε. */
export const HALVING_FACTORS = [2, 0.5] as const;

/** The step test's rows by default stay within this share of the request's N·(2k+1). */
export const STEP_ROWS_SHARE = 0.25;

/** The samples the step test reruns and the spacings it runs them at (factors of ε). */
export interface StepPlan {
  samples: number;
  factors: number[];
}

/**
 * The step test within STEP_ROWS_SHARE of the request's rows, whatever k (a sample costs 2k rows a
 * spacing, its centre is the penalty's): from N = 8, ⌊N/8⌋ samples at 2ε and ε/2, at most
 * 4k/(8(2k+1)) < ¼ (20% at k = 2); for N = 4 to 7 one sample at 2ε alone, 2k/(4(2k+1)) < ¼; below 4
 * none (null). `forced` (stepTest: true asked for explicitly) runs one sample at both below N = 8.
 */
export function stepPlan(samples: number, forced = false): StepPlan | null {
  if (samples >= 8) return { samples: Math.floor(samples / 8), factors: [...HALVING_FACTORS] };
  if (forced) return { samples: 1, factors: [...HALVING_FACTORS] };
  return samples >= 4 ? { samples: 1, factors: [2] } : null;
}

/**
 * A growth per halving below this on both sides (2ε → ε and ε → ε/2) is not rounding's ×16 but at
 * most a kink's ×4: the figure at ε is set by the model, not by rounding. Chosen on the float64
 * sweep tables (test/noise-models.test.ts): 4.5 lies between kinks' largest (4.0) and the
 * smallest pair rounding showed on both sides.
 */
export const KINK_GROWTH_MAX = 4.5;

/**
 * A layer with no kink on its lines (smooth) clears only where both growths lie within
 * [1/SMOOTH_GROWTH_MAX, SMOOTH_GROWTH_MAX]: near flat, as truncation is at a small ε; a drop by
 * more than 3× under halving is a rounding draw, not a smooth layer. On the sweep tables 3 is the
 * band that leaves no point wrong (2.5 and 3.5 leave one each: docs/noise.md).
 */
export const SMOOTH_GROWTH_MAX = 3;

/** Both sides growing at least this much per halving is rounding however ECnoise reads it. */
export const ROUNDING_GROWTH_MIN = 8;

/** ...when the step test's samples carry at least this share of the layer's figure. */
export const ROUNDING_SHARE_MIN = 0.5;

/**
 * Below this share of the figure the subset's whole figure (scaled to the request's elements) is
 * too small to matter: whatever sets it, rounding cannot be a visible part of the request's figure
 * (kinked nets at tiny ε: the halving samples cross no kink, the others do).
 */
export const NEGLIGIBLE_SHARE = 0.03;

/** Within this factor of 1 on both sides the figure is stable when ε doubles and halves. */
export const STABLE_GROWTH = 1.1;

/** The subset's figure at the three spacings. */
export interface HalvingFigures {
  double: number;
  at: number;
  half: number;
}

export interface HalvingEvidence {
  /** P(ε)/P(2ε) and P(ε/2)/P(ε) on the subset; null where a figure is 0 or not finite. */
  growth: { up: number | null; down: number | null };
  /** The subset's figure at ε over the request's, the max scaled to the request's element count. */
  share: number | null;
}

/** The factor by which a max over `all` elements exceeds one over `subset` of them, for noise (χ²_{k−1}). */
export function maxScale(k: number, subset: number, all: number, reduction: Reduction): number {
  return reduction === 'mean' ? 1 : expectedMaxChiSquare(k - 1, all) / expectedMaxChiSquare(k - 1, subset);
}

export function halvingEvidence(figures: HalvingFigures, penalty: number, scale: number): HalvingEvidence {
  const ratio = (a: number, b: number): number | null => (a > 0 && b > 0 && Number.isFinite(a / b) ? a / b : null);
  return {
    growth: { up: ratio(figures.at, figures.double), down: ratio(figures.half, figures.at) },
    share: penalty > 0 && Number.isFinite(figures.at) ? (figures.at * scale) / penalty : null,
  };
}

/** What sets a figure, read off how it scales when ε halves. */
export type Regime = 'smooth' | 'kinks' | 'rounding' | 'mixed';

/**
 * How the figure scales with ε: the exponent a of P ∝ ε^−a measured on the step test's samples
 * (log₂ of the growth per halving, the mean of 2ε→ε and ε→ε/2), and the regime. Rounding: both
 * sides grow at least ROUNDING_GROWTH_MIN (×8, toward ε⁻⁴). Otherwise a layer whose lines cross
 * kinks (ECnoise's kink lines) has a figure set by them, ε⁻¹ (a mean) to ε⁻² (a max) over all
 * samples: a finite-scale quantity that depends on ε everywhere, though the step test's few samples
 * may cross none at this ε; one without kinks is smooth (the O(ε²) truncation fading). One side
 * growing like rounding and not the other is mixed. Null where neither side could be measured.
 */
export function scaling(evidence: HalvingEvidence, kinked: boolean): { exponent: number | null; regime: Regime | null; roundingShare: number | null } {
  const sides = [evidence.growth.up, evidence.growth.down].filter((g): g is number => g !== null);
  if (sides.length === 0) return { exponent: null, regime: null, roundingShare: null };
  const exponent = sides.map(Math.log2).reduce((a, b) => a + b, 0) / sides.length;
  // On a kinked layer the step test's samples speak for the layer's figure only where theirs is a
  // good part of it (the kinks that set it may all lie in the other samples); rounding, where it
  // shows, is in every sample.
  const speaks = !kinked || (evidence.share ?? 0) >= ROUNDING_SHARE_MIN;
  const rounding = speaks ? sides.filter((g) => g >= ROUNDING_GROWTH_MIN).length : 0;
  const regime: Regime = rounding === 2 ? 'rounding' : rounding === 1 ? 'mixed' : kinked ? 'kinks' : 'smooth';
  return { exponent, regime, roundingShare: roundingShare(evidence.growth) };
}

/**
 * The share of the figure at ε that is rounding, Richardson-style: P = S + R with the signal S
 * growing by g per halving (a power law: ε⁻¹ to ε⁻² kinks, flat smooth) and rounding R by 16 (ε⁻⁴).
 * Then P(ε/2)/P(ε) = (1 − ρ)·g + 16ρ, so ρ = (down − g)/(16 − g). The signal's growth is read on
 * the upper side, 2ε → ε, where rounding is 16× smaller: g = up, within [¼, 4] (no signal grows
 * faster than a max over kinks, ×4; up beyond that is rounding's, which leaves ρ = (down − 4)/12,
 * 1 for pure rounding). Clamped to [0, 1]; null without both sides.
 */
export function roundingShare(growth: HalvingEvidence['growth']): number | null {
  if (growth.up === null || growth.down === null) return null;
  const g = Math.min(4, Math.max(0.25, growth.up));
  return Math.min(1, Math.max(0, (growth.down - g) / (16 - g)));
}

export type VerdictReason =
  /** penalty ≥ margin × floor and the halving does not say rounding */
  | 'clear'
  /** below margin × floor, and the halving does not clear it */
  | 'floor'
  /** below margin × floor, but the figure grows under halving like kinks or not at all */
  | 'halving'
  /** below margin × floor, but the halving samples' figure is a negligible share of the request's */
  | 'negligible'
  /** above margin × floor, but the figure grows like rounding on both sides of ε */
  | 'rounding';

export interface Verdict {
  belowFloor: boolean;
  reason: VerdictReason;
  /** Not below the floor, the network has kinks on its lines, and the figure moves under halving. */
  kinks: boolean;
}

/**
 * The layer's verdict. `floor` is ECnoise's; `evidence` null when the halving did not run (then
 * the floor alone decides); `kinked` whether ECnoise found lines crossing kinks on the layer.
 */
export function noiseVerdict(o: { penalty: number; floor: number; margin: number; evidence: HalvingEvidence | null; kinked: boolean }): Verdict {
  const belowMargin = !(o.penalty >= o.margin * o.floor);
  const e = o.evidence;
  const up = e?.growth.up ?? null;
  const down = e?.growth.down ?? null;
  let verdict: Pick<Verdict, 'belowFloor' | 'reason'>;
  if (e === null) verdict = { belowFloor: belowMargin, reason: belowMargin ? 'floor' : 'clear' };
  else if (belowMargin) {
    // A zero figure at some spacing is rounding's staircase (the rows round to the centre): no clearance.
    const modelGrowth = o.kinked
      ? (x: number) => x < KINK_GROWTH_MAX
      : (x: number) => x >= 1 / SMOOTH_GROWTH_MAX && x <= SMOOTH_GROWTH_MAX;
    if (up !== null && down !== null && modelGrowth(up) && modelGrowth(down)) verdict = { belowFloor: false, reason: 'halving' };
    else if (up !== null && down !== null && e.share !== null && e.share < NEGLIGIBLE_SHARE) verdict = { belowFloor: false, reason: 'negligible' };
    else verdict = { belowFloor: true, reason: 'floor' };
  } else if (up !== null && down !== null && up >= ROUNDING_GROWTH_MIN && down >= ROUNDING_GROWTH_MIN && (e.share ?? 0) >= ROUNDING_SHARE_MIN) {
    verdict = { belowFloor: true, reason: 'rounding' };
  } else verdict = { belowFloor: false, reason: 'clear' };
  const stable = up !== null && down !== null && Math.max(up, 1 / up, down, 1 / down) <= STABLE_GROWTH;
  return { ...verdict, kinks: !verdict.belowFloor && o.kinked && e !== null && !stable };
}
