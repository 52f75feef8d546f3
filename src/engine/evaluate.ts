/**
 * evaluatePenalty: request → validate → plan → execute → reduce → result. The CLI calls it in
 * process; the server calls it inside a worker. Both get the same numbers.
 */
import { AuditError } from '../errors.js';
import {
  type Activations,
  estimatePenalty,
  type ExecutionMode,
  type LayerPenalty,
  NOISE_MARGIN,
  noiseFloor,
  type Plan,
  planPenalty,
  type Reduction,
  type Row,
  rowsPerSample,
  secondDifferenceError,
  totalOverLayers,
  type VarianceKind,
} from '../penalty/index.js';
import type { LoadedModel } from './model.js';
import type { LayerShape, Probe } from './preflight.js';
import { chooseMode, planWithinBudget, prepare, type PrepareContext, run, type Warning } from './prepare.js';
import type { Limits, PenaltyRequest } from './request.js';
import type { ResolvedPenalty } from './resolve.js';
import { SessionCache } from './session.js';
import { batchFeeds, outputValues } from './tensors.js';

export type { Warning } from './prepare.js';

export interface LayerResult {
  name: string;
  /** null when the layer produced NaN or infinite values (see warnings). */
  penalty: number | null;
  /** Shape of the layer's activations for the N samples. */
  shape: number[];
  /** The op that produces the tensor, when it is an intermediate one. */
  op?: string;
  /** Per sample: the reduction over the layer's elements. */
  perSample: (number | null)[];
  /** Rounding noise floor of the penalty at this ε (see DESIGN.md, "Rounding"). */
  noiseFloor: number;
  /** Two runs of the same G(z): largest difference, and the error it puts on a second difference. */
  determinism: { maxDifference: number; secondDifferenceError: number };
}

export interface SweepPoint {
  epsilon: number;
  penalty: number | null;
  layers: { name: string; penalty: number | null; noiseFloor: number }[];
}

export interface PenaltyResult {
  model: string;
  penalty: number | null;
  layers: LayerResult[];
  k: number;
  epsilon: number;
  reduction: Reduction;
  variance: VarianceKind;
  samples: number;
  forwardPasses: number;
  rows: number;
  batches: number;
  mode: ExecutionMode;
  seed: number;
  directions: 'rademacher' | 'explicit';
  wrt: string;
  executionProvider: string;
  /** Penalties for each ε of `epsilons`, on the same latents and directions. */
  sweep?: SweepPoint[];
  warnings: Warning[];
  timings: { totalMs: number; forwardMs: number; reduceMs: number };
}

export interface EvaluateContext extends PrepareContext {
  onProgress?: (done: number, total: number) => void;
}

export async function evaluatePenalty(model: LoadedModel, request: PenaltyRequest, context: EvaluateContext): Promise<PenaltyResult> {
  const p = await prepare(model, request, context);
  const { resolved, probed, warnings, started } = p;
  const mode = chooseMode(model, resolved, probed, warnings);
  const plan = planFor(resolved, probed.shapes, p.limits, mode);
  const estimate = async (epsilon: number): Promise<Record<string, LayerPenalty>> => {
    const sizes = Object.fromEntries(resolved.layers.map((name) => [name, probed.shapes[name].size]));
    const layerOutputs = async (rows: Row[]): Promise<Record<string, Activations>> => {
      const outputs = await run(p, batchFeeds({ ...resolved, epsilon }, rows));
      return Object.fromEntries(resolved.layers.map((name) => [name, outputValues(outputs[name])]));
    };
    return estimatePenalty(plan, sizes, layerOutputs, { ...resolved, epsilon }, context.onProgress);
  };

  const penalties = await estimate(resolved.epsilon);
  const layers = resolved.layers.map((name) => layerResult(model, resolved, name, penalties[name], probed, warnings));
  let sweep: SweepPoint[] | undefined;
  if (resolved.epsilons) {
    sweep = [];
    for (const epsilon of resolved.epsilons) {
      const at = await estimate(epsilon);
      const points = resolved.layers.map((name) => ({
        name,
        penalty: at[name].penalty,
        noiseFloor: noiseFloor(at[name].maxAbsOutput, epsilon, probed.shapes[name].type),
      }));
      sweep.push({ epsilon, penalty: totalOverLayers(points.map((p) => p.penalty)), layers: points });
    }
  }

  const totalMs = performance.now() - started;
  return {
    model: model.id,
    penalty: totalOverLayers(layers.map((l) => l.penalty)),
    layers,
    k: resolved.k,
    epsilon: resolved.epsilon,
    reduction: resolved.reduction,
    variance: resolved.variance,
    samples: resolved.samples,
    forwardPasses: rowsPerSample(resolved.k),
    rows: plan.rows,
    batches: plan.chunks.reduce((n, c) => n + c.batches.length, 0),
    mode: plan.mode,
    seed: resolved.seed,
    directions: resolved.explicitDirections ? 'explicit' : 'rademacher',
    wrt: resolved.wrt.name,
    executionProvider: p.open.executionProvider,
    ...(sweep ? { sweep } : {}),
    warnings,
    timings: { totalMs: round(totalMs), forwardMs: round(p.forwardMs), reduceMs: round(totalMs - p.forwardMs) },
  };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

function layerResult(
  model: LoadedModel,
  resolved: ResolvedPenalty,
  name: string,
  p: LayerPenalty,
  probed: Probe,
  warnings: Warning[],
): LayerResult {
  const shape = probed.shapes[name];
  const floor = noiseFloor(p.maxAbsOutput, resolved.epsilon, shape.type);
  const difference = probed.determinism[name];
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
  const op = model.description.layers.find((l) => l.name === name)?.op;
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

/** Rows per batch from the memory budget, then the plan. */
function planFor(resolved: ResolvedPenalty, shapes: Record<string, LayerShape>, limits: Limits, mode: ExecutionMode): Plan {
  const plan = planWithinBudget(resolved, shapes, limits, (maxRows) => planPenalty({ samples: resolved.samples, k: resolved.k, maxRows, mode }));
  // Each ε of a sweep runs every pass again, so its rows count against the same limit.
  const runs = 1 + (resolved.epsilons?.length ?? 0);
  if (plan.rows * runs > limits.maxRows) {
    const sweep = runs > 1 ? ` for each of ${runs} ε (epsilon and ${runs - 1} of epsilons)` : '';
    throw new AuditError(
      'limit_exceeded',
      `the request needs ${plan.rows * runs} forward rows (N·(2k+1) = ${resolved.samples}·${rowsPerSample(resolved.k)}${sweep}), above the limit of ${limits.maxRows}; use fewer samples, a smaller k${runs > 1 ? ' or fewer epsilons' : ''}`,
      422,
      { rows: plan.rows * runs, limit: limits.maxRows },
    );
  }
  return plan;
}

export { SessionCache };
