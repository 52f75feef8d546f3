/**
 * Paired comparison of two models' per-sample penalties (pure functions, no I/O): per layer and for
 * the total over layers, the candidate/baseline ratio of mean penalties with its bootstrap interval.
 */
import type { HalvingEvidence } from '../math/step-halving.js';
import { type Interval, pairedRatioInterval, resampleIndices } from './bootstrap.js';

/** One model's figures for one layer (or the total). */
export interface SideFigures {
  /** The layer penalty as `hessian-audit penalty` reports it (the reduction over samples applied). */
  penalty: number | null;
  /** Mean over samples of the per-sample penalties: the figure the ratio compares. */
  mean: number | null;
  /** Audit figures by name (diagonal-ness, unused latents, …) when a figure provider computed them. */
  figures?: Record<string, number | null>;
  /** The measured rounding noise floor of the penalty at this ε (absent when it was not measured). */
  noiseFloor?: number | null;
  /** The step-halving evidence beside the floor (absent or null when it did not run). */
  halving?: (HalvingEvidence & { kinked: boolean }) | null;
}

export interface Comparison {
  /** The candidate's layer name, or 'total'. */
  name: string;
  /** The baseline's name for it (differs when mapped). */
  baselineName: string;
  baseline: SideFigures;
  candidate: SideFigures;
  /** Candidate/baseline ratio of the means with its interval; null when it could not be evaluated. */
  ratio: Interval | null;
  /** Why the layer could not be evaluated. */
  problem?: string;
}

/** What the gate feeds in per layer: the two models' per-sample penalties, paired by index. */
export interface LayerPair {
  name: string;
  baselineName: string;
  baseline: PairSide;
  candidate: PairSide;
}

interface PairSide {
  penalty: number | null;
  perSample: readonly (number | null)[];
  /** The penalty result's measured noise (null: not resolved; absent: not measured). */
  noise?: { floor: number | null; halving?: HalvingEvidence | null; kinkLines?: number } | null;
}

export const TOTAL = 'total';

/** Everything the bootstrap of one gate needs: small (n numbers per layer and side), so it can travel to a worker. */
export interface CompareInput {
  pairs: LayerPair[];
  /** Samples per side. */
  samples: number;
  resamples: number;
  seed: number;
  confidence: number;
}

export interface CompareOutput {
  layers: Comparison[];
  total: Comparison;
}

/**
 * Every layer and the total, on one set of resamples. This is the CPU-heavy part of a gate
 * (samples × resamples index draws per layer): the server runs it in a worker.
 */
export function compareAll(input: CompareInput): CompareOutput {
  const indices = resampleIndices(input.samples, input.resamples, input.seed);
  return {
    layers: input.pairs.map((p) => compareLayer(p, indices, input.confidence)),
    total: compareLayer(totalPair(input.pairs), indices, input.confidence),
  };
}

export function compareLayer(pair: LayerPair, indices: Uint32Array, confidence: number): Comparison {
  const c = finiteValues(pair.candidate.perSample);
  const b = finiteValues(pair.baseline.perSample);
  const side = (p: PairSide, values: Float64Array | null): SideFigures => ({
    penalty: p.penalty,
    mean: values ? mean(values) : null,
    ...(p.noise !== undefined ? { noiseFloor: p.noise?.floor ?? null } : {}),
    ...(p.noise?.halving ? { halving: { growth: p.noise.halving.growth, share: p.noise.halving.share, kinked: (p.noise.kinkLines ?? 0) > 0 } } : {}),
  });
  const comparison: Comparison = {
    name: pair.name,
    baselineName: pair.baselineName,
    baseline: side(pair.baseline, b),
    candidate: side(pair.candidate, c),
    ratio: null,
  };
  const broken = [
    ...(c === null || pair.candidate.penalty === null ? ['candidate'] : []),
    ...(b === null || pair.baseline.penalty === null ? ['baseline'] : []),
  ];
  if (broken.length > 0) {
    comparison.problem = `the ${broken.join(' and the ')} produced NaN or infinite second differences, so the layer cannot be compared`;
  } else {
    comparison.ratio = pairedRatioInterval(c as Float64Array, b as Float64Array, indices, confidence);
  }
  return comparison;
}

/**
 * The total over layers: per sample, the sum of the layers' per-sample penalties, compared like a
 * layer; its penalty is the sum of the layer penalties (the `penalty` field of a penalty result).
 */
export function totalPair(pairs: readonly LayerPair[]): LayerPair {
  const sum = (side: 'baseline' | 'candidate') => {
    const n = pairs[0]?.[side].perSample.length ?? 0;
    const perSample = Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (const p of pairs) {
        const x = p[side].perSample[i];
        if (x === null) return null;
        s += x;
      }
      return s;
    });
    const penalties = pairs.map((p) => p[side].penalty);
    const penalty = penalties.includes(null) ? null : (penalties as number[]).reduce((a, b) => a + b, 0);
    return { penalty, perSample };
  };
  return { name: TOTAL, baselineName: TOTAL, baseline: sum('baseline'), candidate: sum('candidate') };
}

function finiteValues(values: readonly (number | null)[]): Float64Array | null {
  if (values.length === 0 || values.some((x) => x === null || !Number.isFinite(x))) return null;
  return Float64Array.from(values as number[]);
}

const mean = (values: Float64Array): number => values.reduce((s, x) => s + x, 0) / values.length;
