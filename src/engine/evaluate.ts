/**
 * evaluatePenalty: request → validate → plan → execute → reduce → result. The CLI calls it in
 * process; the server calls it inside a worker. Both get the same numbers.
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../errors.js';
import { formatShape } from '../io/ndarray.js';
import {
  type Activations,
  estimatePenalty,
  type ExecutionMode,
  type Plan,
  planPenalty,
  type Reduction,
  rowsPerSample,
  totalOverLayers,
  type VarianceKind,
} from '../penalty/index.js';
import type { Device } from './device.js';
import type { LoadedModel } from './model.js';
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
  const open = await context.sessions.get(model.id, model.bytes, resolved.expose, context.device);
  const warnings: Warning[] = open.fallback ? [{ code: 'device_fallback', message: open.fallback }] : [];

  let forwardMs = 0;
  const run = async (rows: Parameters<typeof batchFeeds>[1]): Promise<Record<string, ort.Tensor>> => {
    const t = performance.now();
    const outputs = await runSession(open, batchFeeds(resolved, rows), resolved.layers);
    forwardMs += performance.now() - t;
    return outputs;
  };

  const shapes = await probeShapes(resolved, run);
  const plan = choosePlan(resolved, shapes, limits, warnings);
  const sizes = Object.fromEntries(resolved.layers.map((name) => [name, shapes[name].size]));
  const layerOutputs = async (rows: Parameters<typeof batchFeeds>[1]): Promise<Record<string, Activations>> => {
    const outputs = await run(rows);
    return Object.fromEntries(resolved.layers.map((name) => [name, outputValues(outputs[name])]));
  };
  const penalties = await estimatePenalty(plan, sizes, layerOutputs, resolved, context.onProgress);

  const ops = new Map(model.description.layers.map((l) => [l.name, l.op]));
  const layers: LayerResult[] = resolved.layers.map((name) => {
    const p = penalties[name];
    if (p.penalty === null) {
      warnings.push({
        code: 'non_finite_output',
        layer: name,
        message: `layer '${name}' produced NaN or infinite second differences in ${p.nonFinite} elements; its penalty is not defined`,
      });
    }
    const op = ops.get(name);
    return {
      name,
      penalty: p.penalty,
      shape: [resolved.samples, ...shapes[name].shape],
      ...(op ? { op } : {}),
      perSample: Array.from(p.perSample, (x) => (Number.isFinite(x) ? x : null)),
    };
  });
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
    warnings,
    timings: { totalMs: round(totalMs), forwardMs: round(forwardMs), reduceMs: round(totalMs - forwardMs) },
  };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

export async function runSession(open: OpenSession, feeds: Record<string, ort.Tensor>, layers: string[]): Promise<Record<string, ort.Tensor>> {
  try {
    return await open.session.run(feeds, layers);
  } catch (err) {
    throw new AuditError('model_run_failed', `onnxruntime could not run the model: ${(err as Error).message.split('\n')[0]}`, 422);
  }
}

export interface LayerShape {
  /** Per-sample shape (without the batch dimension). */
  shape: number[];
  size: number;
  bytesPerRow: number;
}

/**
 * Run a small batch of center rows to learn each layer's per-sample shape (symbolic dimensions
 * become concrete) and to check that every layer is batch first.
 */
export async function probeShapes(
  resolved: ResolvedPenalty,
  run: (rows: { sample: number; direction: number; sign: 0 }[]) => Promise<Record<string, ort.Tensor>>,
): Promise<Record<string, LayerShape>> {
  const count = resolved.fixedBatch ?? 2;
  const rows = Array.from({ length: count }, (_, r) => ({ sample: Math.min(r, resolved.samples - 1), direction: -1, sign: 0 as const }));
  const outputs = await run(rows);
  const shapes: Record<string, LayerShape> = {};
  for (const name of resolved.layers) {
    const tensor = outputs[name];
    if (!['float32', 'float64', 'float16'].includes(tensor.type)) {
      throw new AuditError('unsupported_type', `layer '${name}' is ${tensor.type}; only floating-point layers have a Hessian Penalty`, 422, { layer: name });
    }
    if (tensor.dims[0] !== count) {
      throw new AuditError(
        'layer_not_batched',
        `layer '${name}' has shape ${formatShape([...tensor.dims])} for ${count} rows: its first dimension is not the batch, so it cannot be audited per sample`,
        422,
        { layer: name },
      );
    }
    const shape = tensor.dims.slice(1).map(Number);
    const size = shape.reduce((a, b) => a * b, 1);
    shapes[name] = { shape, size, bytesPerRow: size * (tensor.type === 'float64' ? 8 : 4) };
  }
  return shapes;
}

/** Stacked unless the request or the model (a fixed batch size) requires a batch per pass. */
export function executionMode(resolved: ResolvedPenalty, warnings: Warning[], passes = 'each of the 2k+1 passes'): ExecutionMode {
  const mode = resolved.mode ?? 'stacked';
  if (resolved.fixedBatch === null || mode !== 'stacked') return mode;
  warnings.push({
    code: 'fixed_batch',
    message: `input '${resolved.wrt.name}' has a fixed batch size of ${resolved.fixedBatch}, so ${passes} runs as its own batch`,
  });
  return 'per-pass';
}

/** Rows that fit the memory budget in one batch. */
export function maxRowsPerBatch(resolved: ResolvedPenalty, shapes: Record<string, LayerShape>, limits: Limits): number {
  const inputBytes = resolved.size * (resolved.latentType === 'float64' ? 8 : 4);
  // Outputs are held twice while a batch is reduced: onnxruntime's tensors and the accumulators' reads.
  const bytesPerRow = inputBytes + 2 * Object.values(shapes).reduce((s, l) => s + l.bytesPerRow, 0);
  return Math.max(1, Math.floor(limits.memoryBudget / bytesPerRow));
}

/** Rows per batch from the memory budget, then the plan for the model's execution mode. */
function choosePlan(resolved: ResolvedPenalty, shapes: Record<string, LayerShape>, limits: Limits, warnings: Warning[]): Plan {
  const maxRows = maxRowsPerBatch(resolved, shapes, limits);
  const mode = executionMode(resolved, warnings);
  const plan = planPenalty({ samples: resolved.samples, k: resolved.k, maxRows, mode });
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
