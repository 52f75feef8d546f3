/**
 * Gate rules (pure functions). A rule reads one figure from a layer's comparison and holds it
 * under a ceiling or over a floor. The registry below is the single list of rules: the config
 * schema's keys, the CLI flags and the verdicts are all derived from it, so a new rule is one entry
 * here. Rules on audit figures (a floor on the diagonal-ness fraction, a ceiling on unused latents)
 * are `figureRule(...)` entries reading `candidate.figures[name]`, which a figure provider fills in.
 */
import { noiseVerdict } from '../math/step-halving.js';
import type { Comparison, SideFigures } from './compare.js';

export type Scope = 'layer' | 'total';

export interface RuleDefinition {
  /** Key in the config file and the API (`maxIncrease`). */
  key: string;
  /** Command-line flag (`--max-increase`); it sets the rule for every layer. */
  flag: string;
  /** One line for --help and the docs. */
  help: string;
  bound: 'ceiling' | 'floor';
  /** Where the rule can be set: every layer (and per-layer overrides) and/or the total. */
  scopes: readonly Scope[];
  /** The limit a threshold stands for (maxIncrease 0.10 → ratio bound 1.10). */
  limit(threshold: number): number;
  /**
   * The figure checked against the limit: a number, or null when the layer could not be
   * evaluated, or undefined when this gate run did not compute it (no figure provider).
   */
  measure(c: Comparison): number | null | undefined;
  /** How the figure reads in a verdict: `ratio upper bound 1.23`. */
  label: string;
  /** Why a failing figure fails, appended to the verdict's message. */
  explain?(c: Comparison, limit: number): string;
  /**
   * A verdict other than the figure against the limit (minNoiseMargin: the noise verdict, which
   * weighs the step-halving with the floor): pass or fail, and a note saying why.
   */
  decide?(c: Comparison, limit: number): { ok: boolean; note: string } | undefined;
}

export const maxIncrease: RuleDefinition = {
  key: 'maxIncrease',
  flag: '--max-increase',
  help: 'fail when the upper confidence bound of the candidate/baseline ratio exceeds 1 + X (e.g. 0.10)',
  bound: 'ceiling',
  scopes: ['layer', 'total'],
  limit: (x) => 1 + x,
  measure: (c) => (c.ratio ? c.ratio.upper : null),
  label: 'ratio upper bound',
};

export const maxPenalty: RuleDefinition = {
  key: 'maxPenalty',
  flag: '--max-penalty',
  help: "fail when the candidate's penalty of a layer exceeds X (absolute, as `penalty` reports it)",
  bound: 'ceiling',
  scopes: ['layer', 'total'],
  limit: (x) => x,
  measure: (c) => c.candidate.penalty,
  label: 'candidate penalty',
};

/** penalty / measured floor of one side; undefined when the side's noise was not measured. */
function noiseRatio(side: Comparison['candidate']): number | null | undefined {
  if (side.noiseFloor === undefined || side.noiseFloor === null) return undefined;
  if (side.penalty === null) return null;
  return side.noiseFloor > 0 ? side.penalty / side.noiseFloor : Infinity;
}

/**
 * One side's noise verdict at the rule's margin: the penalty's own (math/step-halving.ts), so the
 * gate and below_noise_floor agree. undefined when the side's noise was not measured.
 */
function sideVerdict(side: SideFigures, margin: number) {
  if (side.noiseFloor === undefined || side.noiseFloor === null || side.penalty === null) return undefined;
  const { halving } = side;
  return noiseVerdict({ penalty: side.penalty, floor: side.noiseFloor, margin, evidence: halving ?? null, kinked: halving?.kinked ?? false });
}

const SIDES = ['candidate', 'baseline'] as const;

/**
 * Both models' penalties must clear their measured rounding noise (issues 14 and 20, docs/noise.md):
 * a comparison of two figures that are mostly rounding says nothing about disentanglement. On by
 * default at the warning's margin. The figure shown is the lower side's penalty/floor; the verdict
 * is the noise verdict at the margin, which the step-halving can clear (kinks, a stable figure) or
 * raise (growth like rounding on both sides of ε).
 */
export const minNoiseMargin: RuleDefinition = {
  key: 'minNoiseMargin',
  flag: '--min-noise-margin',
  help: 'fail when the candidate or the baseline penalty of a layer is below its measured rounding noise: less than X times the floor, unless the step-halving clears it, or growing like rounding under halving (default 10, the below_noise_floor margin)',
  bound: 'floor',
  scopes: ['layer'],
  limit: (x) => x,
  measure: (c) => {
    const ratios = [noiseRatio(c.candidate), noiseRatio(c.baseline)];
    if (ratios.includes(null)) return null;
    const known = ratios.filter((r): r is number => r !== undefined);
    return known.length === 0 ? undefined : Math.min(...known);
  },
  label: 'penalty / noise floor',
  decide: (c, limit) => {
    const verdicts = SIDES.map((s) => [s, sideVerdict(c[s], limit)] as const).filter((v) => v[1] !== undefined);
    if (verdicts.length === 0) return undefined;
    const below = verdicts.filter(([, v]) => v!.belowFloor).map(([s]) => s);
    if (below.length > 0) {
      const rounding = verdicts.some(([s, v]) => below.includes(s) && v!.reason === 'rounding');
      return {
        ok: false,
        note: ` (the ${below.join(' and the ')} ${below.length > 1 ? 'are' : 'is'} below the measured rounding noise${rounding ? ': it grows like rounding when epsilon halves' : ''}: mostly rounding, not a penalty; raise epsilon, see below_noise_floor)`,
      };
    }
    const cleared = verdicts.filter(([, v]) => v!.reason === 'halving' || v!.reason === 'negligible').map(([s]) => s);
    return {
      ok: true,
      note: cleared.length > 0 ? `, but the ${cleared.join(' and the ')} ${cleared.length > 1 ? 'are' : 'is'} not rounding by the step-halving (its figure scales like kinks or a smooth layer when epsilon halves)` : '',
    };
  },
};

/** A rule on a named audit figure of the candidate (filled in by a figure provider). */
export function figureRule(key: string, flag: string, figure: string, bound: 'ceiling' | 'floor', help: string): RuleDefinition {
  return {
    key,
    flag,
    help,
    bound,
    scopes: ['layer'],
    limit: (x) => x,
    measure: (c) => (c.candidate.figures && figure in c.candidate.figures ? c.candidate.figures[figure] : undefined),
    label: `candidate ${figure}`,
  };
}

/** Floor on the candidate's diagonal-ness: the share of per-element Hessians whose largest |H_ij| is on the diagonal. */
export const minDiagonalFraction = figureRule(
  'minDiagonalFraction',
  '--min-diagonal-fraction',
  'diagonalFraction',
  'floor',
  "fail when less than this fraction of the candidate's per-element Hessians have their largest entry on the diagonal (runs the full Hessian)",
);

/** Ceiling on latents the candidate does not use in a layer (activeness below its threshold). */
export const maxUnusedLatents = figureRule(
  'maxUnusedLatents',
  '--max-unused-latents',
  'unusedLatents',
  'ceiling',
  'fail when more than this many latents are unused in a layer of the candidate (runs the activeness sweep)',
);

/** Every rule the gate knows. */
export const RULES: readonly RuleDefinition[] = [maxIncrease, maxPenalty, minDiagonalFraction, maxUnusedLatents, minNoiseMargin];

/** The audit figure each figure rule needs. */
export const FIGURE_RULES: Record<string, string> = {
  [minDiagonalFraction.key]: 'diagonalFraction',
  [maxUnusedLatents.key]: 'unusedLatents',
};

/** Thresholds by rule key; null switches a rule off (e.g. for one layer). */
export type Thresholds = Record<string, number | null | undefined>;

export interface RuleOutcome {
  rule: string;
  threshold: number;
  limit: number;
  /** The measured figure; null when it could not be measured. */
  value: number | null;
  verdict: 'pass' | 'fail' | 'error';
  message: string;
}

export type Verdict = 'pass' | 'fail' | 'error';

/** Check every rule that has a threshold against one comparison. */
export function applyRules(comparison: Comparison, thresholds: Thresholds, rules: readonly RuleDefinition[] = RULES): RuleOutcome[] {
  const outcomes: RuleOutcome[] = [];
  for (const rule of rules) {
    const threshold = thresholds[rule.key];
    if (threshold === undefined || threshold === null) continue;
    const limit = rule.limit(threshold);
    const measured = rule.measure(comparison);
    const relation = rule.bound === 'ceiling' ? '≤' : '≥';
    if (measured === undefined || measured === null || Number.isNaN(measured)) {
      const why = measured === undefined ? 'this run did not compute it' : 'the layer could not be evaluated';
      outcomes.push({ rule: rule.key, threshold, limit, value: null, verdict: 'error', message: `${rule.label} unavailable (${why})` });
      continue;
    }
    const within = rule.bound === 'ceiling' ? measured <= limit : measured >= limit;
    const decided = rule.decide?.(comparison, limit);
    const ok = decided ? decided.ok : within;
    const note = decided ? decided.note : !ok && rule.explain ? rule.explain(comparison, limit) : '';
    outcomes.push({
      rule: rule.key,
      threshold,
      limit,
      value: measured,
      verdict: ok ? 'pass' : 'fail',
      message: `${rule.label} ${show(measured)} ${within ? relation : rule.bound === 'ceiling' ? '>' : '<'} ${show(limit)}${note}`,
    });
  }
  return outcomes;
}

/** A layer fails when a rule fails; it is an error when it could not be evaluated at all. */
export function layerVerdict(comparison: Comparison, outcomes: readonly RuleOutcome[]): Verdict {
  if (comparison.problem !== undefined || outcomes.some((o) => o.verdict === 'error')) return 'error';
  return outcomes.some((o) => o.verdict === 'fail') ? 'fail' : 'pass';
}

const show = (x: number): string => (Number.isFinite(x) ? String(Number(x.toPrecision(4))) : '∞');
