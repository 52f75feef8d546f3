/**
 * The disentanglement audit (DESIGN.md, "Audit metrics"): the full Hessian figures, activeness
 * and Jacobian orthogonality of every layer, each as its own call or all on one set of latents.
 * The CLI calls these in process; the server calls them inside a worker.
 */
import { AuditError, invalid } from '../contract/errors.js';
import {
  ActivenessAccumulator,
  activenessRows,
  activenessUnitSizes,
  channelMean,
  DEFAULT_EXTENT,
  DEFAULT_THRESHOLD,
  HessianAccumulator,
  type HessianFigures,
  hessianLayout,
  hessianRowsPerSample,
  isImageShape,
  NOISE_MARGIN,
  OrthogonalityAccumulator,
  orthogonalityRow,
  orthogonalityUnitSizes,
  perturbedRows,
  randomSeed,
  type Reduction,
  steppedRows,
  UNIT_ROUNDOFF,
  totalOverLayers,
  unusedLatents,
  type VarianceKind,
} from '../penalty/index.js';
import { type AuditContext, planFor, round, runUnits } from './audit-run.js';
import { type Prepared, prepare, run, type Warning } from './prepare.js';
import { evaluatePenalty, type PenaltyResult } from './evaluate.js';
import type { LoadedModel } from './model.js';
import type { PenaltyRequest } from './request.js';
import { batchFeeds, outputValues } from './tensors.js';

export type { AuditContext, Progress } from './audit-run.js';

/** A penalty request plus the audit's own settings. */
export interface AuditRequest extends PenaltyRequest {
  /** Activeness: z_i is set to −extent, 0 and +extent (default 2). */
  extent?: number;
  /** Activeness below this marks a latent unused (default 1e-6). */
  threshold?: number;
  /** Hessian: also return the full d×d Hessian of this element (flat index within a sample) per sample. */
  element?: number;
}

/** What every audit result says about how it ran. */
export interface RunInfo {
  model: string;
  samples: number;
  seed: number;
  wrt: string;
  /** d: latent components, or basis rows when a basis is given. */
  latents: number;
  /** Rows of the direction basis; null when the latents' own axes are used. */
  basis: number | null;
  rowsPerSample: number;
  rows: number;
  batches: number;
  mode: string;
  executionProvider: string;
  warnings: Warning[];
  timings: { totalMs: number; forwardMs: number; reduceMs: number };
}

export interface Heatmap {
  height: number;
  width: number;
  /** H × W: the mean over samples of the per-element penalty, averaged over channels. */
  values: number[][];
}

export interface HessianLayer {
  name: string;
  shape: number[];
  op?: string;
  /** Exact penalty 2·Σ_{i≠j} H_ij² under the reduction; null when the layer produced NaN. */
  penalty: number | null;
  perSample: (number | null)[];
  /** d×d: mean over elements and samples of H_ij². */
  interaction: number[][];
  diagonalFraction: number;
  diagonalRatio: number;
  /** Rough float rounding floor of the penalty at this ε: values near it are rounding. */
  noiseFloor: number;
  heatmap?: Heatmap;
  /** N × d × d, when an element was asked for. */
  elementHessian?: number[][][];
}

export interface HessianResult extends RunInfo {
  metric: 'hessian';
  epsilon: number;
  reduction: Reduction;
  penalty: number | null;
  layers: HessianLayer[];
  /** Only when the context asks for previews (the HTML report); left out of JSON. */
  previews?: Preview[];
}

export interface ActivenessLayer {
  name: string;
  shape: number[];
  op?: string;
  /** Per latent. */
  activeness: (number | null)[];
  unused: number[];
}

export interface ActivenessResult extends RunInfo {
  metric: 'activeness';
  extent: number;
  threshold: number;
  layers: ActivenessLayer[];
  /** Latents below the threshold in every layer. */
  unused: number[];
}

export interface OrthogonalityLayer {
  name: string;
  shape: number[];
  op?: string;
  score: number | null;
  perSample: (number | null)[];
}

export interface OrthogonalityResult extends RunInfo {
  metric: 'orthogonality';
  k: number;
  epsilon: number;
  reduction: Reduction;
  variance: VarianceKind;
  directions: 'rademacher' | 'explicit';
  score: number | null;
  layers: OrthogonalityLayer[];
}

/** Generated images of an image-shaped layer ([1 or 3, H, W] per sample), for the report. */
export interface Preview {
  layer: string;
  shape: number[];
  images: Float32Array[];
}

export interface AuditResult extends Pick<RunInfo, 'model' | 'samples' | 'seed' | 'wrt' | 'latents' | 'basis'> {
  metric: 'audit';
  penalty: PenaltyResult;
  /** null when d is too large for the row limit (see warnings). */
  hessian: HessianResult | null;
  activeness: ActivenessResult;
  orthogonality: OrthogonalityResult;
  warnings: Warning[];
  timings: { totalMs: number };
  /** Only when the context asks for previews (the HTML report); left out of JSON. */
  previews?: Preview[];
}

const PREVIEW_SAMPLES = 4;

/** Ops that are linear on either side of a kink: G has no second derivative there. */
const PIECEWISE_LINEAR = new Set(['Relu', 'LeakyRelu', 'PRelu', 'ThresholdedRelu', 'Abs', 'Clip', 'HardSigmoid', 'HardSwish', 'Max', 'Min']);

export async function evaluateHessian(model: LoadedModel, request: AuditRequest, context: AuditContext): Promise<HessianResult> {
  const p = await prepare(model, request, context);
  const result = await hessianOn(p, request, context);
  return context.previews ? { ...result, previews: await previews(p) } : result;
}

export async function evaluateActiveness(model: LoadedModel, request: AuditRequest, context: AuditContext): Promise<ActivenessResult> {
  if (request.basis !== undefined) {
    throw invalid('activeness sets latent components to fixed values, so it is not defined along a basis; leave out basis (audit computes activeness on the latents themselves)');
  }
  const p = await prepare(model, request, context);
  return activenessOn(p, request, context);
}

export async function evaluateOrthogonality(model: LoadedModel, request: AuditRequest, context: AuditContext): Promise<OrthogonalityResult> {
  const p = await prepare(model, request, context);
  return orthogonalityOn(p, context);
}

/** Every metric on one set of latents (one seed), the stochastic penalty included. */
export async function evaluateAudit(model: LoadedModel, request: AuditRequest, context: AuditContext): Promise<AuditResult> {
  const started = performance.now();
  const fixed: AuditRequest = { ...request, seed: request.seed ?? randomSeed() };
  checkAuditSettings(fixed);
  const penalty = await evaluatePenalty(model, fixed, {
    ...context,
    onProgress: context.onProgress ? (done, total) => context.onProgress?.(done, total, 'penalty') : undefined,
  });
  const p = await prepare(model, fixed, context);
  const warnings: Warning[] = [...p.warnings];
  let hessian: HessianResult | null = null;
  try {
    hessian = await hessianOn(p, fixed, context);
  } catch (err) {
    if (!(err instanceof AuditError) || err.code !== 'hessian_too_large') throw err;
    warnings.push({ code: 'hessian_skipped', message: err.message });
  }
  const activeness = await activenessOn(p, fixed, context);
  if (fixed.basis !== undefined) {
    warnings.push({
      code: 'activeness_without_basis',
      message: 'activeness is measured on the latent components themselves; the basis applies to the penalty, the Hessian and orthogonality',
    });
  }
  const orthogonality = await orthogonalityOn(p, context);
  for (const w of [...penalty.warnings, ...(hessian?.warnings ?? []), ...activeness.warnings, ...orthogonality.warnings]) {
    if (!warnings.some((x) => x.code === w.code && x.message === w.message)) warnings.push(w);
  }
  return {
    metric: 'audit',
    model: model.id,
    samples: p.resolved.samples,
    seed: p.resolved.seed,
    wrt: p.resolved.wrt.name,
    latents: latentCount(p),
    basis: p.resolved.basis?.rows ?? null,
    penalty,
    hessian,
    activeness,
    orthogonality,
    warnings,
    timings: { totalMs: round(performance.now() - started) },
    ...(context.previews ? { previews: await previews(p) } : {}),
  };
}

const latentCount = (p: Prepared): number => p.resolved.basis?.rows ?? p.resolved.size;

function checkAuditSettings(request: AuditRequest): { extent: number; threshold: number } {
  const extent = request.extent ?? DEFAULT_EXTENT;
  if (typeof extent !== 'number' || !Number.isFinite(extent) || extent <= 0) {
    throw invalid(`extent must be a finite number greater than 0 (the reference uses 2), got ${String(extent)}`);
  }
  const threshold = request.threshold ?? DEFAULT_THRESHOLD;
  if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold < 0) {
    throw invalid(`threshold must be a finite number of at least 0, got ${String(threshold)}`);
  }
  const element = request.element;
  if (element !== undefined && (!Number.isSafeInteger(element) || element < 0)) {
    throw invalid(`element must be a whole number of at least 0 (a flat index within one sample's layer), got ${String(element)}`);
  }
  return { extent, threshold };
}

async function hessianOn(p: Prepared, request: AuditRequest, context: AuditContext): Promise<HessianResult> {
  checkAuditSettings(request);
  const { resolved, shapes } = p;
  const d = latentCount(p);
  const layout = hessianLayout(d);
  const perSample = hessianRowsPerSample(d);
  const tooMany = (rows: number): AuditError =>
    new AuditError(
      'hessian_too_large',
      perSample > p.limits.maxRows
        ? `the full Hessian needs 2d²+1 = ${perSample} forward rows per sample for d = ${d} latents, above the limit of ${p.limits.maxRows} rows; ` +
          'use the stochastic penalty (hessian-audit penalty, POST /v1/models/:id/penalty), whose 2k+1 rows per sample do not grow with d, or a basis of fewer directions'
        : `the full Hessian needs N·(2d²+1) = ${resolved.samples}·${perSample} = ${rows} forward rows for d = ${d} latents, above the limit of ${p.limits.maxRows}; ` +
          'use fewer samples, or the stochastic penalty (hessian-audit penalty, POST /v1/models/:id/penalty)',
      { rows, limit: p.limits.maxRows, latents: d },
    );
  const element = request.element;
  if (element !== undefined) {
    for (const name of resolved.layers) {
      if (element >= shapes[name].size) {
        throw new AuditError('invalid_element', `element ${element} is outside layer '${name}', which has ${shapes[name].size} elements per sample`);
      }
    }
  }
  const plan = planFor(p, layout.unitSizes, 'each Hessian pass', tooMany);
  const accumulators = Object.fromEntries(
    resolved.layers.map((name) => [name, new HessianAccumulator(resolved.samples, shapes[name].size, layout, resolved.epsilon, element)]),
  );
  const basis = resolved.basis?.data ?? null;
  const forwardBefore = p.forwardMs;
  const started = performance.now();
  const { batches } = await runUnits(
    p,
    plan,
    (rows, out) => steppedRows(rows, layout.steps, resolved.latents, resolved.epsilon, resolved.size, basis, out),
    accumulators,
    'hessian',
    context.onProgress,
  );
  const warnings = [...p.warnings];
  const kinks = Object.keys(p.model.description.ops).filter((op) => PIECEWISE_LINEAR.has(op));
  if (kinks.length > 0) {
    warnings.push({
      code: 'piecewise_linear',
      message: `the model uses ${kinks.join(', ')}: its second derivatives vanish except across kinks, so finite-difference Hessians ` +
        'measure kink crossings, grow about like 1/epsilon, and the exact and stochastic penalties estimate different quantities; compare models at the same epsilon',
    });
  }
  const layers = resolved.layers.map((name) => {
    const figures = accumulators[name].result(resolved.reduction);
    const layer = hessianLayer(p, name, figures, d);
    if (figures.penalty === null) warnings.push(nonFinite(name, figures.nonFinite));
    else if (figures.penalty < NOISE_MARGIN * layer.noiseFloor) {
      warnings.push({
        code: 'below_noise_floor',
        layer: name,
        message: `layer '${name}': the exact penalty ${figures.penalty.toPrecision(3)} is not well above the float rounding floor (about ${layer.noiseFloor.toPrecision(3)} at epsilon ${resolved.epsilon}); read it as 0, or raise epsilon`,
      });
    }
    return layer;
  });
  return {
    metric: 'hessian',
    ...runInfo(p, plan.rowsPerSample, plan.rows, batches, plan.mode, warnings, started, forwardBefore),
    epsilon: resolved.epsilon,
    reduction: resolved.reduction,
    penalty: totalOverLayers(layers.map((l) => l.penalty)),
    layers,
  };
}

function hessianLayer(p: Prepared, name: string, f: HessianFigures, d: number): HessianLayer {
  const { shape, type } = p.shapes[name];
  const u = UNIT_ROUNDOFF[type] ?? UNIT_ROUNDOFF.float32;
  // Each H entry sums four outputs, each off by about u·|g|, over 4ε²; the penalty sums 2·d(d−1) squares.
  const sigma = (u * f.maxAbsOutput) / p.resolved.epsilon ** 2;
  const op = opOf(p, name);
  return {
    name,
    shape: [p.resolved.samples, ...shape],
    ...(op ? { op } : {}),
    penalty: f.penalty,
    perSample: nullable(f.perSample),
    interaction: rowsOf(f.interaction, d),
    diagonalFraction: f.diagonalFraction,
    diagonalRatio: f.diagonalRatio,
    noiseFloor: 2 * d * (d - 1) * sigma * sigma,
    ...(isImageShape(shape) ? { heatmap: heatmapOf(f.elementMean, shape) } : {}),
    ...(f.elementHessian ? { elementHessian: Array.from({ length: p.resolved.samples }, (_, n) => rowsOf(f.elementHessian!.subarray(n * d * d, (n + 1) * d * d), d)) } : {}),
  };
}

async function activenessOn(p: Prepared, request: AuditRequest, context: AuditContext): Promise<ActivenessResult> {
  const { extent, threshold } = checkAuditSettings(request);
  const { resolved, shapes } = p;
  const d = resolved.size;
  const unitSizes = activenessUnitSizes(d);
  const plan = planFor(p, unitSizes, 'each activeness pass', (rows) => rowLimit(p, rows, `N·3d = ${resolved.samples}·${3 * d}`));
  const accumulators = Object.fromEntries(resolved.layers.map((name) => [name, new ActivenessAccumulator(shapes[name].size, d)]));
  const forwardBefore = p.forwardMs;
  const started = performance.now();
  const { batches } = await runUnits(
    p,
    plan,
    (rows, out) => activenessRows(rows, resolved.latents, extent, resolved.size, out),
    accumulators,
    'activeness',
    context.onProgress,
  );
  const layers = resolved.layers.map((name) => {
    const activeness = accumulators[name].result();
    const op = opOf(p, name);
    return {
      name,
      shape: [resolved.samples, ...shapes[name].shape],
      ...(op ? { op } : {}),
      activeness: nullable(activeness),
      unused: unusedLatents(activeness, threshold),
    };
  });
  const unused = Array.from({ length: d }, (_, i) => i).filter((i) => layers.every((l) => l.unused.includes(i)));
  return {
    metric: 'activeness',
    ...runInfo(p, plan.rowsPerSample, plan.rows, batches, plan.mode, [...p.warnings], started, forwardBefore),
    latents: d,
    basis: null,
    extent,
    threshold,
    layers,
    unused,
  };
}

async function orthogonalityOn(p: Prepared, context: AuditContext): Promise<OrthogonalityResult> {
  const { resolved, shapes } = p;
  const unitSizes = orthogonalityUnitSizes(resolved.k);
  const plan = planFor(p, unitSizes, 'each of the 1+k passes', (rows) => rowLimit(p, rows, `N·(1+k) = ${resolved.samples}·${resolved.k + 1}`));
  const accumulators = Object.fromEntries(
    resolved.layers.map((name) => [name, new OrthogonalityAccumulator(resolved.samples, shapes[name].size, resolved.k, resolved.epsilon, resolved.variance)]),
  );
  const forwardBefore = p.forwardMs;
  const started = performance.now();
  const { batches } = await runUnits(
    p,
    plan,
    (rows, out) => perturbedRows(rows.map(orthogonalityRow), resolved.latents, resolved.directions, resolved.epsilon, resolved.size, resolved.samples, out),
    accumulators,
    'orthogonality',
    context.onProgress,
  );
  const warnings = [...p.warnings];
  const layers = resolved.layers.map((name) => {
    const figures = accumulators[name].result(resolved.reduction);
    if (figures.score === null) warnings.push(nonFinite(name, NaN));
    const op = opOf(p, name);
    return { name, shape: [resolved.samples, ...shapes[name].shape], ...(op ? { op } : {}), score: figures.score, perSample: nullable(figures.perSample) };
  });
  return {
    metric: 'orthogonality',
    ...runInfo(p, plan.rowsPerSample, plan.rows, batches, plan.mode, warnings, started, forwardBefore),
    k: resolved.k,
    epsilon: resolved.epsilon,
    reduction: resolved.reduction,
    variance: resolved.variance,
    directions: resolved.explicitDirections ? 'explicit' : 'rademacher',
    score: totalOverLayers(layers.map((l) => l.score)),
    layers,
  };
}

/** The first few generated samples of every image-shaped layer. */
async function previews(p: Prepared): Promise<Preview[]> {
  const names = p.resolved.layers.filter((name) => isImageShape(p.shapes[name].shape));
  if (names.length === 0) return [];
  const count = p.resolved.fixedBatch ?? Math.min(PREVIEW_SAMPLES, p.resolved.samples);
  const rows = Array.from({ length: count }, (_, n) => ({ sample: Math.min(n, p.resolved.samples - 1), direction: -1, sign: 0 as const }));
  const outputs = await run(p, batchFeeds(p.resolved, rows));
  return names.map((layer) => {
    const { shape, size } = p.shapes[layer];
    const values = outputValues(outputs[layer]);
    const images = Array.from({ length: Math.min(count, PREVIEW_SAMPLES) }, (_, n) => Float32Array.from({ length: size }, (_, e) => values[n * size + e]));
    return { layer, shape, images };
  });
}

function rowLimit(p: Prepared, rows: number, formula: string): AuditError {
  return new AuditError(
    'limit_exceeded',
    `the request needs ${rows} forward rows (${formula}), above the limit of ${p.limits.maxRows}; use fewer samples or a smaller k`,
    { rows, limit: p.limits.maxRows },
  );
}

function runInfo(
  p: Prepared,
  rowsPerSample: number,
  rows: number,
  batches: number,
  mode: string,
  warnings: Warning[],
  started: number,
  forwardBefore: number,
): RunInfo {
  const totalMs = performance.now() - started;
  const forwardMs = p.forwardMs - forwardBefore;
  return {
    model: p.model.id,
    samples: p.resolved.samples,
    seed: p.resolved.seed,
    wrt: p.resolved.wrt.name,
    latents: latentCount(p),
    basis: p.resolved.basis?.rows ?? null,
    rowsPerSample,
    rows,
    batches,
    mode,
    executionProvider: p.open.executionProvider,
    warnings,
    timings: { totalMs: round(totalMs), forwardMs: round(forwardMs), reduceMs: round(totalMs - forwardMs) },
  };
}

function heatmapOf(elementMean: Float64Array, [channels, height, width]: number[]): Heatmap {
  const map = channelMean(elementMean, channels, height * width);
  return { height, width, values: Array.from({ length: height }, (_, y) => Array.from(map.subarray(y * width, (y + 1) * width))) };
}

const rowsOf = (flat: ArrayLike<number>, d: number): number[][] =>
  Array.from({ length: d }, (_, i) => Array.from({ length: d }, (_, j) => flat[i * d + j]));

const nullable = (xs: ArrayLike<number>): (number | null)[] => Array.from(xs, (x) => (Number.isFinite(x) ? x : null));

const opOf = (p: Prepared, name: string): string | undefined => p.model.description.layers.find((l) => l.name === name)?.op;

const nonFinite = (name: string, count: number): Warning => ({
  code: 'non_finite_output',
  layer: name,
  message: `layer '${name}' produced NaN or infinite values${Number.isNaN(count) ? '' : ` in ${count} elements`}; its figures are not defined`,
});
