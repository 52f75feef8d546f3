/**
 * The Hessian Penalty (DESIGN.md, "The math"): per sample one center unit and k (+, −) units,
 * 2k+1 rows; per element the variance over the k directions of the second difference; per layer a
 * max or mean over elements and samples; the total is the sum over layers. With `epsilons`, the
 * same latents and directions again at each ε (the sweep).
 */
import { AuditError } from '../contract/errors.js';
import { type MetricRequest, PenaltyRequestSchema } from '../contract/request.js';
import { type LayerResult, type PenaltyResult, PenaltyResultSchema, type SweepPoint, type Warning } from '../contract/results.js';
import {
  type LayerPenalty,
  LayerPenaltyAccumulator,
  NOISE_MARGIN,
  noiseFloor,
  penaltyRow,
  penaltyUnitSizes,
  perturbedRows,
  rowsPerSample,
  secondDifferenceError,
  totalOverLayers,
} from '../math/index.js';
import { formatPenalty } from '../report/text.js';
import { type Run, timings, type UnitsDone } from '../run/run.js';
import { cutAndGroups } from './common.js';
import { defineMetric } from './types.js';

export const penalty = defineMetric<PenaltyResult>({
  name: 'penalty',
  summary: 'Hessian Penalty of each layer by finite differences',
  request: PenaltyRequestSchema,
  result: PenaltyResultSchema,
  flags: { steps: true, directions: true, basis: true, sweep: true },
  evaluate: runPenalty,
  format: formatPenalty,
  report: (penalty) => ({ penalty }),
});

export async function runPenalty(run: Run, _request: MetricRequest): Promise<PenaltyResult> {
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

  const estimate = async (epsilon: number): Promise<{ penalties: Record<string, LayerPenalty>; done: UnitsDone }> => {
    const accumulators = Object.fromEntries(
      resolved.layers.map((name) => [name, new LayerPenaltyAccumulator(resolved.samples, shapes[name].size, resolved.k, epsilon, resolved.variance)]),
    );
    const done = await run.units({
      stage: 'penalty',
      unitSizes: penaltyUnitSizes(resolved.k),
      passes: 'each of the 2k+1 passes',
      tooMany,
      fill: (rows, out) => perturbedRows(rows.map(penaltyRow), resolved.latents, resolved.directions, epsilon, resolved.size, resolved.samples, out),
      consumers: accumulators,
    });
    return { penalties: Object.fromEntries(resolved.layers.map((name) => [name, accumulators[name].result(resolved.reduction)])), done };
  };

  const started = performance.now();
  const forwardBefore = run.forwardMs;
  const { penalties, done } = await estimate(resolved.epsilon);
  warnings.push(...done.modeWarnings);
  const layers = resolved.layers.map((name) => layerResult(run, name, penalties[name], warnings));
  let sweep: SweepPoint[] | undefined;
  if (resolved.epsilons) {
    sweep = [];
    for (const epsilon of resolved.epsilons) {
      const at = (await estimate(epsilon)).penalties;
      const points = resolved.layers.map((name) => ({
        name,
        penalty: at[name].penalty,
        noiseFloor: noiseFloor(at[name].maxAbsOutput, epsilon, shapes[name].type),
      }));
      sweep.push({ epsilon, penalty: totalOverLayers(points.map((p) => p.penalty)), layers: points });
    }
  }

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
    mode: done.plan.mode,
    seed: resolved.seed,
    directions: resolved.explicitDirections ? 'explicit' : 'rademacher',
    wrt: resolved.wrt.name,
    executionProvider: run.executionProvider,
    ...(sweep ? { sweep } : {}),
    ...cutAndGroups(run),
    warnings,
    timings: timings(started, run.forwardMs - forwardBefore),
  };
}

function layerResult(run: Run, name: string, p: LayerPenalty, warnings: Warning[]): LayerResult {
  const { resolved } = run;
  const shape = run.shapes[name];
  const floor = noiseFloor(p.maxAbsOutput, resolved.epsilon, shape.type);
  const difference = run.probed.determinism[name];
  if (p.penalty === null) {
    warnings.push({
      code: 'non_finite_output',
      layer: name,
      message: `layer '${name}' produced NaN or infinite second differences in ${p.nonFinite} elements; its penalty is not defined`,
    });
  } else if (p.penalty < NOISE_MARGIN * floor) {
    warnings.push({
      code: 'below_noise_floor',
      layer: name,
      message: `layer '${name}': the penalty ${p.penalty.toPrecision(3)} is not clearly above the ${shape.type} rounding noise floor ${floor.toPrecision(3)} at epsilon ${resolved.epsilon}; use a larger epsilon (the floor grows as 1/epsilon^4)`,
    });
  }
  if (difference > 0) {
    warnings.push({
      code: 'nondeterministic_output',
      layer: name,
      message: `layer '${name}' differs by up to ${difference.toPrecision(3)} between two runs of the same G(z); each second difference can be off by about 4δ/ε² = ${secondDifferenceError(difference, resolved.epsilon).toPrecision(3)}, so its penalty is unreliable`,
    });
  }
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
