/**
 * One request split over lanes by samples (pool.ts, run/sample-range.ts): each part ran the whole
 * request's latents and directions for its samples [from, to), in sample order. Here the parts'
 * results become the one-lane result. Per-sample figures are concatenated, so they and every
 * reduction recomputed from them (max, mean over samples, the total over layers) are exactly the
 * one-lane values. Means over elements and samples (the interaction matrix, the heatmap, the
 * diagonal-ness figures, activeness) are weighted by the parts' sample counts: equal to one lane's
 * up to float64 rounding of the summation order (about 1e-16 relative). When a layer has NaN or
 * infinite outputs its penalty is null either way, and its diagonal-ness figures are weighted by
 * samples rather than by the finite elements counted. Warnings: the union without repeats, with
 * the per-layer warnings that depend on merged figures (non-finite, below the rounding floor)
 * recomputed in layer order.
 */
import type { ActivenessResult, HessianResult, OrthogonalityResult, RunInfo, Warning } from '../contract/results.js';
import { unusedLatents } from '../math/activeness.js';
import { NOISE_MARGIN } from '../math/noise.js';
import { reduceSamples, totalOverLayers } from '../math/reduction.js';
import { nonFinite } from './common.js';
import { belowFloor } from './hessian.js';

export type SplitMetric = 'hessian' | 'orthogonality' | 'activeness';
export const SPLIT_METRICS: readonly SplitMetric[] = ['hessian', 'orthogonality', 'activeness'];

interface SplitResults {
  hessian: HessianResult;
  orthogonality: OrthogonalityResult;
  activeness: ActivenessResult;
}

export function mergeParts<M extends SplitMetric>(metric: M, parts: SplitResults[M][]): SplitResults[M] {
  if (parts.length === 0) throw new Error('nothing to merge');
  if (parts.length === 1) return parts[0];
  const merge = { hessian: mergeHessian, orthogonality: mergeOrthogonality, activeness: mergeActiveness }[metric] as unknown as (p: SplitResults[M][]) => SplitResults[M];
  return merge(parts);
}

/** Weights of the parts: their share of the samples. */
const weightsOf = (parts: { samples: number }[]): number[] => {
  const total = parts.reduce((n, p) => n + p.samples, 0);
  return parts.map((p) => p.samples / total);
};

/** Σ_p w_p·x_p, entry by entry. */
export function weightedMean(values: readonly (readonly number[])[], weights: readonly number[]): number[] {
  return values[0].map((_, i) => values.reduce((s, v, p) => s + weights[p] * v[i], 0));
}

const weightedMatrix = (matrices: number[][][], weights: number[]): number[][] => matrices[0].map((_, r) => weightedMean(matrices.map((m) => m[r]), weights));

/** Per-sample values concatenated in sample order; null (NaN or infinite) stays null. */
export function concatSamples(parts: readonly (readonly (number | null)[])[]): (number | null)[] {
  return parts.flat();
}

/** The reduction over samples of concatenated per-sample values, as an accumulator gives it: null if any part's was. */
export function reduceConcatenated(perSample: readonly (number | null)[], reduction: 'max' | 'mean', anyNull: boolean): number | null {
  return anyNull ? null : reduceSamples(perSample.map((x) => (x === null ? Number.NaN : x)), reduction);
}

/** Warnings of all parts without repeats, leaving out the per-layer codes the merge recomputes. */
export function unionWarnings(parts: { warnings: Warning[] }[], recomputed: readonly string[]): Warning[] {
  const out: Warning[] = [];
  for (const w of parts.flatMap((p) => p.warnings)) {
    if (w.layer !== undefined && recomputed.includes(w.code)) continue;
    if (!out.some((x) => x.code === w.code && x.message === w.message && x.layer === w.layer)) out.push(w);
  }
  return out;
}

/** Non-finite elements a part counted in a layer (its warning says how many). */
function nonFiniteCount(parts: { warnings: Warning[] }[], layer: string): number {
  let count = 0;
  for (const w of parts.flatMap((p) => p.warnings)) {
    if (w.code !== 'non_finite_output' || w.layer !== layer) continue;
    const n = /in (\d+) elements/.exec(w.message);
    count += n ? Number(n[1]) : 0;
  }
  return count;
}

/** The run facts of the parts as one run: samples, rows and batches add up; the wall time is the longest part's. */
function mergeRunInfo<T extends RunInfo>(parts: T[], warnings: Warning[]): RunInfo {
  const first = parts[0];
  const totalMs = Math.max(...parts.map((p) => p.timings.totalMs));
  const forwardMs = parts.reduce((s, p) => s + p.timings.forwardMs, 0);
  return {
    ...first,
    samples: parts.reduce((n, p) => n + p.samples, 0),
    rows: parts.reduce((n, p) => n + p.rows, 0),
    batches: parts.reduce((n, p) => n + p.batches, 0),
    // Each part plans on its own lane's session: the largest batch of any part.
    batchRows: Math.max(...parts.map((p) => p.batchRows)),
    warnings,
    timings: { totalMs, forwardMs: Math.round(forwardMs * 100) / 100, reduceMs: Math.round(parts.reduce((s, p) => s + p.timings.reduceMs, 0) * 100) / 100 },
    lanes: parts.length,
  };
}

/** Each lane copied its own part's bytes out (the estimator is the same on every lane: the same device kind). */
const sumFetched = (parts: { fetchedBytes: number }[]): number => parts.reduce((n, p) => n + p.fetchedBytes, 0);

const withSamples = (shape: number[], samples: number): number[] => [samples, ...shape.slice(1)];

function mergeHessian(parts: HessianResult[]): HessianResult {
  const w = weightsOf(parts);
  const samples = parts.reduce((n, p) => n + p.samples, 0);
  const reduction = parts[0].reduction;
  const warnings = unionWarnings(parts, ['non_finite_output', 'below_noise_floor']);
  const layers = parts[0].layers.map((first, l) => {
    const of = parts.map((p) => p.layers[l]);
    const perSample = concatSamples(of.map((x) => x.perSample));
    const penalty = reduceConcatenated(perSample, reduction, of.some((x) => x.penalty === null));
    // The floor grows with the largest |output|, so the largest part's floor is the whole one's.
    const noiseFloor = Math.max(...of.map((x) => x.noiseFloor));
    if (penalty === null) warnings.push(nonFinite(first.name, nonFiniteCount(parts, first.name)));
    else if (penalty < NOISE_MARGIN * noiseFloor) warnings.push(belowFloor(first.name, penalty, noiseFloor, parts[0].epsilon));
    const heatmap = first.heatmap
      ? { ...first.heatmap, values: weightedMatrix(of.map((x) => x.heatmap!.values), w) }
      : undefined;
    return {
      ...first,
      shape: withSamples(first.shape, samples),
      penalty,
      perSample,
      interaction: weightedMatrix(of.map((x) => x.interaction), w),
      diagonalFraction: weightedMean(of.map((x) => [x.diagonalFraction]), w)[0],
      diagonalRatio: weightedMean(of.map((x) => [x.diagonalRatio]), w)[0],
      noiseFloor,
      ...(heatmap ? { heatmap } : {}),
      ...(first.elementHessian ? { elementHessian: of.flatMap((x) => x.elementHessian!) } : {}),
    };
  });
  return {
    ...parts[0],
    ...mergeRunInfo(parts, warnings),
    fetchedBytes: sumFetched(parts),
    metric: 'hessian',
    penalty: totalOverLayers(layers.map((x) => x.penalty)),
    layers,
  };
}

function mergeOrthogonality(parts: OrthogonalityResult[]): OrthogonalityResult {
  const samples = parts.reduce((n, p) => n + p.samples, 0);
  const warnings = unionWarnings(parts, ['non_finite_output']);
  const layers = parts[0].layers.map((first, l) => {
    const of = parts.map((p) => p.layers[l]);
    const perSample = concatSamples(of.map((x) => x.perSample));
    const score = reduceConcatenated(perSample, parts[0].reduction, of.some((x) => x.score === null));
    if (score === null) warnings.push(nonFinite(first.name, Number.NaN));
    return { ...first, shape: withSamples(first.shape, samples), score, perSample };
  });
  return { ...parts[0], ...mergeRunInfo(parts, warnings), fetchedBytes: sumFetched(parts), metric: 'orthogonality', score: totalOverLayers(layers.map((x) => x.score)), layers };
}

function mergeActiveness(parts: ActivenessResult[]): ActivenessResult {
  const w = weightsOf(parts);
  const samples = parts.reduce((n, p) => n + p.samples, 0);
  const { threshold, latents } = parts[0];
  const layers = parts[0].layers.map((first, l) => {
    const of = parts.map((p) => p.layers[l]);
    const activeness = first.activeness.map((_, i) =>
      of.some((x) => x.activeness[i] === null) ? null : of.reduce((s, x, p) => s + w[p] * (x.activeness[i] as number), 0),
    );
    return { ...first, shape: withSamples(first.shape, samples), activeness, unused: unusedLatents(activeness.map((a) => a ?? Number.NaN), threshold) };
  });
  const unused = Array.from({ length: latents }, (_, i) => i).filter((i) => layers.every((x) => x.unused.includes(i)));
  return { ...parts[0], ...mergeRunInfo(parts, unionWarnings(parts, [])), fetchedBytes: sumFetched(parts), metric: 'activeness', layers, unused };
}
