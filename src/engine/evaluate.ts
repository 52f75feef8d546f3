/**
 * evaluatePenalty: request → validate → plan → execute → reduce → result. The CLI calls it in
 * process; the server calls it inside a worker. Both get the same numbers.
 */
import type * as ort from 'onnxruntime-node';
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
import type { Device } from './device.js';
import type { LoadedModel } from './model.js';
import { type LayerShape, type Probe, preflight } from './preflight.js';
import { DEFAULT_LIMITS, type Limits, type PenaltyRequest } from './request.js';
import { resolvePenalty, type ResolvedPenalty } from './resolve.js';
import { type OpenSession, SessionCache } from './session.js';
import { batchFeeds, outputValues } from './tensors.js';

export interface Warning {
  code: string;
  message: string;
  layer?: string;
}

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

export interface EvaluateContext {
  device: Device;
  sessions: SessionCache;
  limits?: Limits;
  onProgress?: (done: number, total: number) => void;
}

export async function evaluatePenalty(model: LoadedModel, request: PenaltyRequest, context: EvaluateContext): Promise<PenaltyResult> {
  const started = performance.now();
  const limits = context.limits ?? DEFAULT_LIMITS;
  const resolved = resolvePenalty(model.description, request, limits);
  const warnings: Warning[] = [...resolved.warnings];
  refuseRandomOps(model, request.allowNondeterministic === true, warnings);

  const open = await context.sessions.get(model.id, model.bytes, resolved.expose, context.device);
  if (open.fallback) warnings.push({ code: 'device_fallback', message: open.fallback });
  let forwardMs = 0;
  const run = async (rows: Row[], epsilon = resolved.epsilon): Promise<Record<string, ort.Tensor>> => {
    const t = performance.now();
    const outputs = await runSession(open, batchFeeds({ ...resolved, epsilon }, rows), resolved.layers);
    forwardMs += performance.now() - t;
    return outputs;
  };

  const probed = await probeOnce(open, resolved, run);
  const mode = chooseMode(model, resolved, probed, warnings);
  const plan = planFor(resolved, probed.shapes, limits, mode);
  const estimate = async (epsilon: number): Promise<Record<string, LayerPenalty>> => {
    const sizes = Object.fromEntries(resolved.layers.map((name) => [name, probed.shapes[name].size]));
    const layerOutputs = async (rows: Row[]): Promise<Record<string, Activations>> => {
      const outputs = await run(rows, epsilon);
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
    executionProvider: open.executionProvider,
    ...(sweep ? { sweep } : {}),
    warnings,
    timings: { totalMs: round(totalMs), forwardMs: round(forwardMs), reduceMs: round(totalMs - forwardMs) },
  };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

/**
 * Probe a session once per input signature: shapes and row independence are properties of the
 * model. A model whose outputs changed between two runs is probed again on every request.
 */
async function probeOnce(open: OpenSession, resolved: ResolvedPenalty, run: (rows: Row[]) => Promise<Record<string, ort.Tensor>>): Promise<Probe> {
  const key = JSON.stringify([
    resolved.wrt.name,
    resolved.latentShape,
    resolved.layers,
    resolved.fixedBatch,
    resolved.extras.map((e) => [e.name, e.perSample, e.array.shape.slice(e.perSample ? 1 : 0)]),
  ]);
  const known = open.facts.get(key) as Probe | undefined;
  if (known) return known;
  const probed = await preflight(resolved, run);
  if (Object.values(probed.determinism).every((d) => d === 0)) open.facts.set(key, probed);
  return probed;
}

/** Random ops make G(z+εv), G(z), G(z−εv) different computations: refuse unless overridden. */
function refuseRandomOps(model: LoadedModel, allowed: boolean, warnings: Warning[]): void {
  const random = model.description.randomOps;
  if (random.length === 0) return;
  const nodes = random.map((r) => `${r.node} (${r.op}: ${r.why})`).join(', ');
  if (!allowed) {
    throw new AuditError(
      'nondeterministic_model',
      `the model is not deterministic: ${nodes}; the Hessian Penalty needs G(z) to be exactly the same computation on every run. ` +
        'Export it in eval mode or with seeded noise, or pass allowNondeterministic (--allow-nondeterministic) to run anyway',
      422,
      { nodes: random },
    );
  }
  warnings.push({ code: 'nondeterministic_model', message: `run despite random ops: ${nodes}` });
}

/** Stacked unless rows interact (graph or probe) or the batch size is fixed: then pass by pass. */
function chooseMode(model: LoadedModel, resolved: ResolvedPenalty, probed: Probe, warnings: Warning[]): ExecutionMode {
  if (resolved.mode) return resolved.mode;
  if (resolved.fixedBatch !== null) {
    warnings.push({
      code: 'fixed_batch',
      message: `input '${resolved.wrt.name}' has a fixed batch size of ${resolved.fixedBatch}, so each of the 2k+1 passes runs as its own batch`,
    });
    return 'per-pass';
  }
  const mixing = model.description.batchMixingOps;
  if (mixing.length > 0 || probed.rowsInteract) {
    const why = mixing.length > 0
      ? mixing.map((m) => `${m.node} (${m.op}: ${m.why})`).join(', ')
      : 'a probe changed one row and another row changed too';
    warnings.push({
      code: 'rows_interact',
      message: `rows of a batch influence each other (${why}), so each of the 2k+1 passes runs as its own batch of ${resolved.samples}, as the reference implementations do`,
    });
    return 'per-pass';
  }
  return 'stacked';
}

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

async function runSession(open: OpenSession, feeds: Record<string, ort.Tensor>, layers: string[]): Promise<Record<string, ort.Tensor>> {
  try {
    return await open.session.run(feeds, layers);
  } catch (err) {
    throw new AuditError('model_run_failed', `onnxruntime could not run the model: ${(err as Error).message.split('\n')[0]}`, 422);
  }
}

/** Rows per batch from the memory budget, then the plan. */
function planFor(resolved: ResolvedPenalty, shapes: Record<string, LayerShape>, limits: Limits, mode: ExecutionMode): Plan {
  const inputBytes = resolved.size * (resolved.latentType === 'float64' ? 8 : 4);
  // Outputs are held twice while a batch is reduced: onnxruntime's tensors and the accumulators' reads.
  const bytesPerRow = inputBytes + 2 * Object.values(shapes).reduce((s, l) => s + l.bytesPerRow, 0);
  const maxRows = Math.max(1, Math.floor(limits.memoryBudget / bytesPerRow));
  let plan: Plan;
  try {
    plan = planPenalty({ samples: resolved.samples, k: resolved.k, maxRows, mode });
  } catch (err) {
    if (err instanceof AuditError) {
      err.message = `${err.message} (about ${bytesPerRow} bytes per row for the layers asked, budget ${limits.memoryBudget} bytes)`;
    }
    throw err;
  }
  if (plan.rows > limits.maxRows) {
    throw new AuditError(
      'limit_exceeded',
      `the request needs ${plan.rows} forward rows (N·(2k+1) = ${resolved.samples}·${rowsPerSample(resolved.k)}), above the limit of ${limits.maxRows}; use fewer samples or a smaller k`,
      422,
      { rows: plan.rows, limit: limits.maxRows },
    );
  }
  return plan;
}

export { SessionCache };
