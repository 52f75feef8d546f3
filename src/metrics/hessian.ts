/**
 * The full Hessian of every element by central differences in d² + d + 1 rows per sample
 * (math/hessian.ts): the exact
 * penalty 2·Σ_{i≠j} H_ij², the latent interaction matrix, the two diagonal-ness figures of the
 * paper, penalty heatmaps of image-shaped layers, and optionally one element's full Hessian.
 */
import { AuditError } from '../contract/errors.js';
import { AuditRequestSchema, type MetricRequest } from '../contract/request.js';
import { type Heatmap, type HessianLayer, type HessianResult, HessianResultSchema, type Preview, type Warning } from '../contract/results.js';
import {
  channelMean,
  HessianAccumulator,
  type HessianFigures,
  hessianLayout,
  hessianRowsPerSample,
  isImageShape,
  NOISE_MARGIN,
  steppedRows,
  totalOverLayers,
  UNIT_ROUNDOFF,
} from '../math/index.js';
import { formatHessian } from '../report/text.js';
import type { FillRows } from '../run/feeds.js';
import { hessianGraphRefusal, hessianInGraph } from '../run/graph-hessian.js';
import { estimatorFor, onHost } from '../run/graph-suffix.js';
import type { ResolvedRequest } from '../run/resolve.js';
import type { HostState, Run } from '../run/run.js';
import { latentCount, nonFinite, nullable, opOf, runInfo } from './common.js';
import { defineMetric } from './types.js';

/** Ops that are linear on either side of a kink: G has no second derivative there. */
const PIECEWISE_LINEAR = new Set(['Relu', 'LeakyRelu', 'PRelu', 'ThresholdedRelu', 'Abs', 'Clip', 'HardSigmoid', 'HardSwish', 'Max', 'Min']);

const PREVIEW_SAMPLES = 4;

export const hessian = defineMetric<HessianResult>({
  name: 'hessian',
  summary: 'Full Hessian of each layer: exact penalty, latent interaction matrix, diagonal-ness',
  request: AuditRequestSchema,
  result: HessianResultSchema,
  flags: { steps: true, basis: true, element: true, estimator: true },
  hostState: hessianHostState,
  evaluate: async (run, request) => {
    const result = await runHessian(run, request);
    return run.context.previews ? { ...result, previews: await previews(run) } : result;
  },
  format: formatHessian,
  report: (hessian) => ({ hessian, ...(hessian.previews ? { previews: hessian.previews } : {}) }),
  figures: {
    diagonalFraction: { perLayer: (result) => Object.fromEntries(result.layers.map((l) => [l.name, l.penalty === null ? null : l.diagonalFraction])) },
  },
});

/**
 * Host bytes per element: a sample in flight keeps its centre, its d axis sums and five figures in
 * float64 (48 + 8d, d the latents or basis rows); the run keeps per-element sums (8).
 */
export function hessianHostState(resolved: ResolvedRequest): HostState {
  const d = resolved.basis?.rows ?? resolved.size;
  return { what: "the Hessian's float64 accumulators", fixed: 8, perSample: 48 + 8 * d };
}

export async function runHessian(run: Run, request: MetricRequest): Promise<HessianResult> {
  const { resolved, shapes } = run;
  const d = latentCount(run);
  const layout = hessianLayout(d);
  const perSample = hessianRowsPerSample(d);
  const tooMany = (rows: number): AuditError =>
    new AuditError(
      'hessian_too_large',
      perSample > run.limits.maxRows
        ? `the full Hessian needs d²+d+1 = ${perSample} forward rows per sample for d = ${d} latents, above the limit of ${run.limits.maxRows} rows; ` +
          'use the stochastic penalty (hessian-audit penalty, POST /v1/models/:id/penalty), whose 2k+1 rows per sample do not grow with d, or a basis of fewer directions'
        : `the full Hessian needs N·(d²+d+1) = ${resolved.samples}·${perSample} = ${rows} forward rows for d = ${d} latents, above the limit of ${run.limits.maxRows}; ` +
          'use fewer samples, or the stochastic penalty (hessian-audit penalty, POST /v1/models/:id/penalty)',
      { rows, limit: run.limits.maxRows, latents: d },
    );
  const element = request.element;
  if (element !== undefined) {
    for (const name of resolved.layers) {
      if (element >= shapes[name].size) {
        throw new AuditError('invalid_element', `element ${element} is outside layer '${name}', which has ${shapes[name].size} elements per sample`);
      }
    }
  }
  const accumulators = Object.fromEntries(
    resolved.layers.map((name) => [name, new HessianAccumulator(resolved.samples, shapes[name].size, layout, resolved.epsilon, element)]),
  );
  const basis = resolved.basis?.data ?? null;
  const fill: FillRows = (rows, out) => steppedRows(rows, layout.steps, resolved.latents, resolved.epsilon, resolved.size, basis, out);
  const estimatorWarnings: Warning[] = [];
  const estimator = estimatorFor(run, request.estimator, "the Hessian's figures", estimatorWarnings, hessianGraphRefusal(run, d));
  const started = performance.now();
  const { done, fetchedBytes } =
    estimator === 'graph'
      ? await hessianInGraph(run, { layout, epsilon: resolved.epsilon, element, fill, stage: 'hessian', tooMany, accumulators })
      : await onHost(run, await run.units({ stage: 'hessian', unitSizes: layout.unitSizes, passes: 'each Hessian pass', tooMany, fill, consumers: accumulators, host: hessianHostState(resolved) }));
  const warnings: Warning[] = [...run.warnings, ...estimatorWarnings, ...done.modeWarnings];
  const kinks = Object.keys(run.model.description.ops).filter((op) => PIECEWISE_LINEAR.has(op));
  if (kinks.length > 0) {
    warnings.push({
      code: 'piecewise_linear',
      message: `the model uses ${kinks.join(', ')}: its second derivatives vanish except across kinks, so finite-difference Hessians ` +
        'measure kink crossings, grow about like 1/epsilon, and the exact and stochastic penalties estimate different quantities; compare models at the same epsilon',
    });
  }
  const layers = resolved.layers.map((name) => {
    const figures = accumulators[name].result(resolved.reduction);
    const layer = hessianLayer(run, name, figures, d);
    if (figures.penalty === null) warnings.push(nonFinite(name, figures.nonFinite));
    else if (figures.penalty < NOISE_MARGIN * layer.noiseFloor) warnings.push(belowFloor(name, figures.penalty, layer.noiseFloor, resolved.epsilon));
    return layer;
  });
  return {
    metric: 'hessian',
    ...runInfo(run, done, warnings, started),
    estimator,
    fetchedBytes,
    epsilon: resolved.epsilon,
    reduction: resolved.reduction,
    penalty: totalOverLayers(layers.map((l) => l.penalty)),
    layers,
  };
}

/** The exact penalty is not well above the float rounding floor (also recomputed by metrics/merge.ts). */
export const belowFloor = (name: string, penalty: number, floor: number, epsilon: number): Warning => ({
  code: 'below_noise_floor',
  layer: name,
  message: `layer '${name}': the exact penalty ${penalty.toPrecision(3)} is not well above the float rounding floor (about ${floor.toPrecision(3)} at epsilon ${epsilon}); read it as 0, or raise epsilon`,
});

function hessianLayer(run: Run, name: string, f: HessianFigures, d: number): HessianLayer {
  const { shape, type } = run.shapes[name];
  const samples = run.resolved.samples;
  const u = UNIT_ROUNDOFF[type] ?? UNIT_ROUNDOFF.float32;
  // A diagonal entry sums 4·u|g| over ε², a pair 8·u|g| over 2ε² (math/hessian.ts); the penalty sums 2·d(d−1) squares.
  const sigma = (4 * u * f.maxAbsOutput) / run.resolved.epsilon ** 2;
  const op = opOf(run, name);
  return {
    name,
    shape: [samples, ...shape],
    ...(op ? { op } : {}),
    penalty: f.penalty,
    perSample: nullable(f.perSample),
    interaction: rowsOf(f.interaction, d),
    diagonalFraction: f.diagonalFraction,
    diagonalRatio: f.diagonalRatio,
    noiseFloor: 2 * d * (d - 1) * sigma * sigma,
    ...(isImageShape(shape) ? { heatmap: heatmapOf(f.elementMean, shape) } : {}),
    ...(f.elementHessian ? { elementHessian: Array.from({ length: samples }, (_, n) => rowsOf(f.elementHessian!.subarray(n * d * d, (n + 1) * d * d), d)) } : {}),
  };
}

/** The first few generated samples of every image-shaped layer, for the report. */
export async function previews(run: Run): Promise<Preview[]> {
  const names = run.resolved.layers.filter((name) => isImageShape(run.shapes[name].shape));
  if (names.length === 0) return [];
  const count = run.resolved.fixedBatch ?? Math.min(PREVIEW_SAMPLES, run.resolved.samples);
  const outputs = await run.centers(count);
  return names.map((layer) => {
    const { shape, size } = run.shapes[layer];
    const values = outputs[layer];
    const images = Array.from({ length: Math.min(count, PREVIEW_SAMPLES) }, (_, n) => Float32Array.from({ length: size }, (_, e) => values[n * size + e]));
    return { layer, shape, images };
  });
}

function heatmapOf(elementMean: Float64Array, [channels, height, width]: number[]): Heatmap {
  const map = channelMean(elementMean, channels, height * width);
  return { height, width, values: Array.from({ length: height }, (_, y) => Array.from(map.subarray(y * width, (y + 1) * width))) };
}

const rowsOf = (flat: ArrayLike<number>, d: number): number[][] =>
  Array.from({ length: d }, (_, i) => Array.from({ length: d }, (_, j) => flat[i * d + j]));
