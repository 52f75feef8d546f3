/**
 * The Hessian Penalty (docs/design.md, "The math"): per sample one center unit and k (+, −) units,
 * 2k+1 rows; per element the variance over the k directions of the second difference; per layer a
 * max or mean over elements and samples; the total is the sum over layers. With `epsilons`, the
 * same latents and directions again at each ε (the sweep).
 */
import { AuditError } from '../contract/errors.js';
import { type MetricRequest, PenaltyRequestSchema } from '../contract/request.js';
import { type LayerNoiseResult, type LayerResult, type PenaltyResult, PenaltyResultSchema, type SweepPoint, type Warning } from '../contract/results.js';
import {
  belowMeasuredFloor,
  halvingEvidence,
  type HalvingFigures,
  stepPlan,
  type LayerPenalty,
  maxScale,
  noiseVerdict,
  scaling,
  LayerPenaltyAccumulator,
  MEASURED_NOISE_MARGIN,
  NOISE_MARGIN,
  noiseFloor,
  recommendedEpsilon,
  truncationModel,
  penaltyRow,
  penaltyUnitSizes,
  perturbedRows,
  rowsPerSample,
  secondDifferenceError,
  totalOverLayers,
} from '../math/index.js';
import { formatPenalty } from '../report/text.js';
import type { FillRows } from '../run/feeds.js';
import { penaltyInGraph } from '../run/graph-penalty.js';
import { estimatorFor, hostFetchedBytes } from '../run/graph-suffix.js';
import type { ResolvedRequest } from '../run/resolve.js';
import { type HostState, type Run, timings, type UnitConsumer, type UnitsDone } from '../run/run.js';
import { cutAndGroups } from './common.js';
import { halvingPlan, halvingSkipped, type HalvingMeasurement } from './halving.js';
import { floorAt, type LayerNoise, NOISE_TABLE_BYTES, noisePlan, precisionOf, sigmaResult, unresolved } from './noise.js';
import { defineMetric } from './types.js';

export const penalty = defineMetric<PenaltyResult>({
  name: 'penalty',
  summary: 'Hessian Penalty of each layer by finite differences',
  request: PenaltyRequestSchema,
  result: PenaltyResultSchema,
  flags: { steps: true, directions: true, basis: true, sweep: true, noise: true, estimator: true },
  hostState: penaltyHostState,
  evaluate: runPenalty,
  format: formatPenalty,
  report: (penalty) => ({ penalty }),
});

/**
 * Host bytes per element: a sample in flight keeps its centre and Welford mean and M2 in float64
 * (24); the run keeps per-element sums (8), the noise measurement's tables for its sample, and the
 * step test's centres (8 per sample it reruns).
 */
export function penaltyHostState(resolved: ResolvedRequest, request: MetricRequest): HostState {
  const noise = request.noise !== false;
  const steps = noise && request.stepTest !== false ? stepPlan(resolved.samples, request.stepTest === true) : null;
  const halving = 8 * (steps?.samples ?? 0);
  return { what: "the penalty's float64 accumulators", fixed: 8 + (noise ? NOISE_TABLE_BYTES : 0) + halving, perSample: 24 };
}

export async function runPenalty(run: Run, request: MetricRequest): Promise<PenaltyResult> {
  const { resolved, shapes } = run;
  const warnings: Warning[] = [...run.warnings];
  const passes = (resolved.epsilons?.length ?? 0) + 1;
  const perSample = rowsPerSample(resolved.k);
  // Each ε of a sweep runs every pass again, so its rows count against the same limit.
  const tooMany = (rows: number): AuditError => {
    const sweep = passes > 1 ? ` for each of ${passes} ε (epsilon and ${passes - 1} of epsilons)` : '';
    return new AuditError(
      'limit_exceeded',
      `the request needs ${rows * passes} forward rows (N·(2k+1) = ${resolved.samples}·${perSample}${sweep}), above the limit of ${run.limits.maxRows}; use fewer samples, a smaller k${passes > 1 ? ' or fewer epsilons' : ''}`,
      { rows: rows * passes, limit: run.limits.maxRows },
    );
  };
  if (passes > 1 && resolved.samples * perSample * passes > run.limits.maxRows) throw tooMany(resolved.samples * perSample);

  // The measured noise (metrics/noise.ts): from the session's cache, or measured after the main
  // estimate, reusing its centre rows (their t = 0 point).
  const plan = request.noise === false ? null : noisePlan(run, 'noise');
  // The step-halving test (metrics/halving.ts) decides with the floor; it needs the floor, and
  // stacked rows (per-pass runs would repeat all N samples twice).
  const steps = stepPlan(resolved.samples, request.stepTest === true);
  const skipped = plan ? halvingSkipped(run, request.stepTest !== false, steps) : null;
  const halving = plan && steps && request.stepTest !== false && !skipped ? halvingPlan(run, 'halving', steps) : null;
  const estimator = estimatorFor(run, request.estimator, "the penalty's moments", warnings);
  let fetched = 0;
  const fill = (epsilon: number): FillRows => (rows, out) =>
    perturbedRows(rows.map(penaltyRow), resolved.latents, resolved.directions, epsilon, resolved.size, resolved.samples, out);
  const estimate = async (epsilon: number, keepCentre = false): Promise<{ penalties: Record<string, LayerPenalty>; done: UnitsDone }> => {
    if (estimator === 'graph') {
      // The centre rows stay in the session: the noise measurement runs its own (metrics/noise.ts).
      const graph = await penaltyInGraph(run, { epsilon, k: resolved.k, variance: resolved.variance, reduction: resolved.reduction, fill: fill(epsilon), stage: 'penalty', tooMany });
      fetched += graph.fetchedBytes;
      return graph;
    }
    const accumulators = Object.fromEntries(
      resolved.layers.map((name) => [name, new LayerPenaltyAccumulator(resolved.samples, shapes[name].size, resolved.k, epsilon, resolved.variance)]),
    );
    const done = await run.units({
      stage: 'penalty',
      unitSizes: penaltyUnitSizes(resolved.k),
      passes: 'each of the 2k+1 passes',
      tooMany,
      fill: fill(epsilon),
      consumers: keepCentre ? keepCentres(accumulators as Record<string, UnitConsumer>) : accumulators,
    });
    // The host reads every output row: N·(2k+1) rows × each layer's bytes per row.
    fetched += hostFetchedBytes(run, done.plan.rows);
    return { penalties: Object.fromEntries(resolved.layers.map((name) => [name, accumulators[name].result(resolved.reduction)])), done };
  };

  const keepCentres = (consumers: Record<string, UnitConsumer>): Record<string, UnitConsumer> => {
    const kept = plan?.capture ? plan.capture(consumers) : consumers;
    return halving ? halving.capture(kept) : kept;
  };

  const started = performance.now();
  const forwardBefore = run.forwardMs;
  const { penalties, done } = await estimate(resolved.epsilon, true);
  const fetchedBytes = fetched;
  warnings.push(...done.modeWarnings);
  const measured = plan ? await plan.measure(plan.centres) : null;
  const halved = halving ? await halving.measure(penalties) : null;
  const noiseOf = (name: string): LayerNoise | null => {
    const layer = measured?.layers[name];
    return layer && layer.summary.resolved > 0 ? layer : null;
  };
  const layers = resolved.layers.map((name) => layerResult(run, name, penalties[name]));
  let sweep: SweepPoint[] | undefined;
  if (resolved.epsilons) {
    sweep = [];
    for (const epsilon of resolved.epsilons) {
      const at = (await estimate(epsilon)).penalties;
      const points = resolved.layers.map((name) => {
        const noise = noiseOf(name);
        const floor = noise ? floorAt(run, noise, name, epsilon) : null;
        return {
          name,
          penalty: at[name].penalty,
          noiseFloor: noiseFloor(at[name].maxAbsOutput, epsilon, shapes[name].type),
          ...(measured ? { floor, belowFloor: below(at[name].penalty, floor) } : {}),
        };
      });
      sweep.push({
        epsilon,
        penalty: totalOverLayers(points.map((p) => p.penalty)),
        layers: points,
        ...(measured ? { noiseDominated: points.some((p) => p.belowFloor === true) } : {}),
      });
    }
  }
  layers.forEach((layer, i) => {
    const name = resolved.layers[i];
    const noise = noiseOf(name);
    if (measured && !noise) warnings.push(unresolved(name, measured.layers[name]));
    if (measured) layer.noise = noise ? layerNoise(run, name, layer, noise, sweep, halved) : null;
    warnings.push(...layerWarnings(run, layer, penalties[name]));
  });

  if (skipped) warnings.push(skipped);

  return {
    model: run.model.id,
    penalty: totalOverLayers(layers.map((l) => l.penalty)),
    layers,
    k: resolved.k,
    epsilon: resolved.epsilon,
    reduction: resolved.reduction,
    variance: resolved.variance,
    samples: resolved.samples,
    forwardPasses: perSample,
    rows: done.plan.rows,
    batches: done.batches,
    batchRows: done.batchRows,
    batchRowsFrom: done.batchRowsFrom,
    estimator,
    fetchedBytes,
    mode: done.plan.mode,
    seed: resolved.seed,
    directions: resolved.explicitDirections ? 'explicit' : 'rademacher',
    wrt: resolved.wrt.name,
    executionProvider: run.executionProvider,
    ...(sweep ? { sweep } : {}),
    ...cutAndGroups(run),
    noise: measured ? { points: measured.points, tries: measured.layers[resolved.layers[0]].tries, cached: measured.cached, rows: measured.rows, stepRows: halved?.rows ?? 0 } : null,
    halving: halved ? { samples: halved.samples, factors: halved.factors, rows: halved.rows, cached: halved.cached } : null,
    precision: precisionOf(run),
    warnings,
    timings: timings(started, run.forwardMs - forwardBefore),
  };
}

/** Bytes of one element of an output as onnxruntime hands it over. */
const below = (penalty: number | null, floor: number | null): boolean | null =>
  penalty === null || floor === null ? null : belowMeasuredFloor(penalty, floor, MEASURED_NOISE_MARGIN);

/**
 * The layer's measured floor at ε and the recommended ε range. The smallest ε comes from the point
 * (ε or a sweep point) most clearly above its floor (the penalty there is the truest); the largest
 * from the truncation model of the two points above their floors nearest to ε (sweeps only).
 */
function layerNoise(run: Run, name: string, layer: LayerResult, noise: LayerNoise, sweep: SweepPoint[] | undefined, halved: HalvingMeasurement | null): LayerNoiseResult {
  const { epsilon, k, samples, reduction } = run.resolved;
  const floor = floorAt(run, noise, name, epsilon);
  const figures = halved?.layers[name];
  const size = run.shapes[name].size;
  const evidence =
    figures && layer.penalty !== null ? halvingEvidence(figures, layer.penalty, maxScale(k, halved!.samples * size, samples * size, reduction)) : null;
  const verdict =
    layer.penalty !== null && floor !== null
      ? noiseVerdict({ penalty: layer.penalty, floor, margin: MEASURED_NOISE_MARGIN, evidence, kinked: noise.kinkLines > 0 })
      : null;
  const points = [{ epsilon, penalty: layer.penalty, floor }];
  for (const p of sweep ?? []) {
    const l = p.layers.find((x) => x.name === name)!;
    points.push({ epsilon: p.epsilon, penalty: l.penalty, floor: l.floor ?? null });
  }
  const ratio = (p: (typeof points)[number]): number => (p.penalty !== null && p.floor !== null && p.floor > 0 ? p.penalty / p.floor : Number.NaN);
  const best = points.filter((p) => ratio(p) > 0).sort((a, b) => ratio(b) - ratio(a))[0];
  const trusted = points
    .filter((p) => ratio(p) >= MEASURED_NOISE_MARGIN)
    .filter((p, i, all) => all.findIndex((q) => q.epsilon === p.epsilon) === i)
    .sort((a, b) => Math.abs(Math.log(a.epsilon / epsilon)) - Math.abs(Math.log(b.epsilon / epsilon)));
  let range: LayerNoiseResult['recommendedEpsilon'] = null;
  if (best) {
    const truncation = trusted.length >= 2 ? truncationModel(trusted[0].epsilon, trusted[0].penalty!, trusted[1].epsilon, trusted[1].penalty!) : undefined;
    const r = recommendedEpsilon({ epsilon: best.epsilon, penalty: best.penalty!, floorAt: best.floor!, ...(truncation ? { truncation } : {}) });
    range = {
      min: Number.isFinite(r.min) ? r.min : null,
      max: r.max !== null && Number.isFinite(r.max) ? r.max : null,
      usable: r.usable,
      // From a point below its floor the penalty is mostly noise, so ε_min is only a lower bound.
      lowerBound: ratio(best) < MEASURED_NOISE_MARGIN,
    };
  }
  return {
    sigma: sigmaResult(noise.summary),
    samples: noise.samples,
    floor,
    margin: MEASURED_NOISE_MARGIN,
    belowFloor: verdict ? verdict.belowFloor : null,
    ...(verdict ? { reason: verdict.reason, kinks: verdict.kinks } : {}),
    ...(evidence ? scaling(evidence, noise.kinkLines > 0) : { exponent: null, regime: null, roundingShare: null }),
    kinkLines: noise.kinkLines,
    stableEpsilon: figures ? stableRange(epsilon, finiteFigures(figures)) : null,
    halving: figures && evidence ? { ...finiteFigures(figures), growth: evidence.growth, share: evidence.share } : null,
    recommendedEpsilon: range,
  };
}

const finiteFigures = (f: HalvingFigures) => {
  const n = (x: number): number | null => (Number.isFinite(x) ? x : null);
  return { double: n(f.double), at: n(f.at), half: n(f.half) };
};

/**
 * Where the figure stays within 10% of its value at ε among 2ε, ε and ε/2 (the spacings the halving
 * ran): the ε range a kinked layer's penalty can be quoted for; null where it moves on both sides.
 */
function stableRange(epsilon: number, f: { double: number | null; at: number | null; half: number | null }): { min: number; max: number } | null {
  const near = (x: number | null) => x !== null && f.at !== null && Math.abs(x - f.at) <= 0.1 * f.at;
  const range = { min: near(f.half) ? epsilon / 2 : epsilon, max: near(f.double) ? 2 * epsilon : epsilon };
  return range.min < range.max ? range : null;
}

function layerResult(run: Run, name: string, p: LayerPenalty): LayerResult {
  const { resolved } = run;
  const shape = run.shapes[name];
  const floor = noiseFloor(p.maxAbsOutput, resolved.epsilon, shape.type);
  const difference = run.preflight.determinism[name];
  const op = run.model.description.layers.find((l) => l.name === name)?.op;
  return {
    name,
    penalty: p.penalty,
    shape: [resolved.samples, ...shape.shape],
    ...(op ? { op } : {}),
    perSample: Array.from(p.perSample, (x) => (Number.isFinite(x) ? x : null)),
    noiseFloor: floor,
    determinism: { maxDifference: difference, secondDifferenceError: secondDifferenceError(difference, resolved.epsilon) },
  };
}

/**
 * The layer's warnings. below_noise_floor: with a measured σ, penalty < margin × measured floor,
 * naming the recommended ε; without one (noise: false, nothing resolved), the output's rounding
 * unit with its 100× margin, as before.
 */
function layerWarnings(run: Run, layer: LayerResult, p: LayerPenalty): Warning[] {
  const { resolved } = run;
  const { name } = layer;
  const type = run.shapes[name].type;
  const difference = run.preflight.determinism[name];
  const warnings: Warning[] = [];
  const noise = layer.noise;
  if (p.penalty === null) {
    warnings.push({
      code: 'non_finite_output',
      layer: name,
      message: `layer '${name}' produced NaN or infinite second differences in ${p.nonFinite} elements; its penalty is not defined`,
    });
  } else if (noise && noise.floor !== null) {
    // Kinks are information, not an alarm (noise.regime, noise.kinks, noise.stableEpsilon): most
    // generators are ReLU nets, and a warning on every one at the default ε would teach users to
    // ignore warnings.
    if (noise.belowFloor) {
      const range = noise.recommendedEpsilon;
      const advice =
        range?.min != null
          ? `use epsilon >= ${range.min.toPrecision(2)}${range.lowerBound ? ' (a lower bound: this penalty is mostly noise, so the true one may be smaller and need a larger epsilon)' : ''}${range.max !== null ? ` (recommended range ${range.min.toPrecision(2)} to ${range.max.toPrecision(2)}${range.usable ? '' : ', empty: no epsilon is both above the floor and accurate'})` : ''}`
          : 'use a larger epsilon';
      warnings.push({
        code: 'below_noise_floor',
        layer: name,
        message:
          noise.reason === 'rounding'
            ? `layer '${name}': the penalty ${p.penalty.toPrecision(3)} grows like rounding when epsilon halves (x${noise.halving!.growth.up!.toPrecision(2)} from ${2 * resolved.epsilon}, x${noise.halving!.growth.down!.toPrecision(2)} to ${resolved.epsilon / 2}; rounding grows x16) although it is above the measured floor ${noise.floor.toPrecision(3)} at epsilon ${resolved.epsilon}; use a larger epsilon (the rounding grows as 1/epsilon^4)`
            : `layer '${name}': the penalty ${p.penalty.toPrecision(3)} is not clearly above the measured rounding noise floor ${noise.floor.toPrecision(3)} (${MEASURED_NOISE_MARGIN}x margin; sigma p90 ${noise.sigma.p90!.toPrecision(3)} on ${run.executionProvider}) at epsilon ${resolved.epsilon}; ${advice}; the floor grows as 1/epsilon^4`,
      });
    }
  } else if (p.penalty < NOISE_MARGIN * layer.noiseFloor) {
    warnings.push({
      code: 'below_noise_floor',
      layer: name,
      message: `layer '${name}': the penalty ${p.penalty.toPrecision(3)} is not clearly above the ${type} rounding noise floor ${layer.noiseFloor.toPrecision(3)} at epsilon ${resolved.epsilon}; use a larger epsilon (the floor grows as 1/epsilon^4)`,
    });
  }
  if (difference > 0) {
    warnings.push({
      code: 'nondeterministic_output',
      layer: name,
      message: `layer '${name}' differs by up to ${difference.toPrecision(3)} between two runs of the same G(z); each second difference can be off by about 4δ/ε² = ${secondDifferenceError(difference, resolved.epsilon).toPrecision(3)}, so its penalty is unreliable`,
    });
  }
  return warnings;
}
