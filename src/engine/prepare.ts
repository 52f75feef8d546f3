/**
 * What every metric does before its own plan: validate the request against the model, refuse
 * random ops, open the cached session, and probe it (shapes, determinism, row independence).
 * The penalty and the audit metrics share it, so they accept and refuse the same requests.
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../errors.js';
import { formatShape } from '../io/ndarray.js';
import type { ExecutionMode, Row } from '../penalty/index.js';
import type { Device } from './device.js';
import type { LoadedModel } from './model.js';
import { checkRunMemory } from './memory-check.js';
import { type LayerShape, type Probe, preflight, preflightRows } from './preflight.js';
import { DEFAULT_LIMITS, type Limits, type PenaltyRequest } from './request.js';
import { resolvePenalty, type ResolvedPenalty } from './resolve.js';
import type { OpenSession, SessionCache } from './session.js';
import { batchFeeds } from './tensors.js';

export interface Warning {
  code: string;
  message: string;
  layer?: string;
}

export interface PrepareContext {
  device: Device;
  sessions: SessionCache;
  limits?: Limits;
}

export interface Prepared {
  model: LoadedModel;
  resolved: ResolvedPenalty;
  open: OpenSession;
  limits: Limits;
  probed: Probe;
  shapes: Record<string, LayerShape>;
  warnings: Warning[];
  /** Milliseconds spent inside onnxruntime so far. */
  forwardMs: number;
  started: number;
}

/** Validate, refuse random ops, open the cached session and probe it, exactly as the penalty does. */
export async function prepare(model: LoadedModel, request: PenaltyRequest, context: PrepareContext): Promise<Prepared> {
  const started = performance.now();
  const limits = context.limits ?? DEFAULT_LIMITS;
  const resolved = resolvePenalty(model.description, request, limits);
  const warnings: Warning[] = [...resolved.warnings];
  refuseRandomOps(model, request.allowNondeterministic === true, warnings);
  // Before the session opens: constant folding at creation allocates too.
  checkRunMemory(model, batchFeeds(resolved, preflightRows(resolved)), limits.memoryBudget);
  const open = await context.sessions.get(model.id, model.bytes, resolved.expose, context.device);
  if (open.fallback) warnings.push({ code: 'device_fallback', message: open.fallback });
  const timing = { forwardMs: 0 };
  const probed = await probeOnce(open, resolved, (rows: Row[]) => {
    const feeds = batchFeeds(resolved, rows);
    checkRunMemory(model, feeds, limits.memoryBudget);
    return timed(timing, open, resolved, feeds);
  });
  return { model, resolved, open, limits, probed, shapes: probed.shapes, warnings, forwardMs: timing.forwardMs, started };
}

/**
 * Run one batch on the prepared session, counting the time spent inside onnxruntime. Every batch's
 * outputs must have the shapes the preflight saw: a model whose per-row output depends on the batch
 * size would otherwise be reduced with the wrong row size (and report a wrong penalty).
 */
export async function run(p: Prepared, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  checkRunMemory(p.model, feeds, p.limits.memoryBudget);
  const outputs = await timed(p, p.open, p.resolved, feeds);
  checkBatchShapes(p, Number(feeds[p.resolved.wrt.name].dims[0]), outputs);
  return outputs;
}

function checkBatchShapes(p: Prepared, rows: number, outputs: Record<string, ort.Tensor>): void {
  for (const name of p.resolved.layers) {
    const dims = outputs[name].dims.map(Number);
    const expected = [rows, ...p.shapes[name].shape];
    if (dims.length === expected.length && dims.every((d, i) => d === expected[i])) continue;
    throw new AuditError(
      'output_shape_changed',
      `layer '${name}' has shape ${formatShape(dims)} for a batch of ${rows} rows, but ${formatShape(expected)} was expected from the preflight: ` +
        'its per-row output depends on the batch size, so rows cannot be audited independently',
      422,
      { layer: name, shape: dims, expected },
    );
  }
}

async function timed(
  timing: { forwardMs: number },
  open: OpenSession,
  resolved: ResolvedPenalty,
  feeds: Record<string, ort.Tensor>,
): Promise<Record<string, ort.Tensor>> {
  const t = performance.now();
  try {
    return await runSession(open, feeds, resolved.layers);
  } finally {
    timing.forwardMs += performance.now() - t;
  }
}


/**
 * Probe a session once per input signature: shapes and row independence are properties of the
 * model. A model whose outputs changed between two runs is probed again on every request.
 */
export async function probeOnce(open: OpenSession, resolved: ResolvedPenalty, run: (rows: Row[]) => Promise<Record<string, ort.Tensor>>): Promise<Probe> {
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
export function refuseRandomOps(model: LoadedModel, allowed: boolean, warnings: Warning[]): void {
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
export function chooseMode(
  model: LoadedModel,
  resolved: ResolvedPenalty,
  probed: Probe,
  warnings: Warning[],
  passes = 'each of the 2k+1 passes',
): ExecutionMode {
  if (resolved.mode) return resolved.mode;
  if (resolved.fixedBatch !== null) {
    warnings.push({
      code: 'fixed_batch',
      message: `input '${resolved.wrt.name}' has a fixed batch size of ${resolved.fixedBatch}, so ${passes} runs as its own batch`,
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
      message: `rows of a batch influence each other (${why}), so ${passes} runs as its own batch of ${resolved.samples}, as the reference implementations do`,
    });
    return 'per-pass';
  }
  return 'stacked';
}

export async function runSession(open: OpenSession, feeds: Record<string, ort.Tensor>, layers: string[]): Promise<Record<string, ort.Tensor>> {
  try {
    return await open.session.run(feeds, layers);
  } catch (err) {
    throw new AuditError('model_run_failed', `onnxruntime could not run the model: ${(err as Error).message.split('\n')[0]}`, 422);
  }
}

/** Bytes one row costs: its input, and its outputs held twice while a batch is reduced. */
function bytesPerRow(resolved: ResolvedPenalty, shapes: Record<string, LayerShape>): number {
  const inputBytes = resolved.size * (resolved.latentType === 'float64' ? 8 : 4);
  // Outputs are held twice while a batch is reduced: onnxruntime's tensors and the accumulators' reads.
  return inputBytes + 2 * Object.values(shapes).reduce((s, l) => s + l.bytesPerRow, 0);
}

/**
 * Plan within the memory budget: rows per batch from the bytes a row costs; when even the smallest
 * piece of work does not fit, the refusal says how many bytes a row takes and what the budget is.
 */
export function planWithinBudget<T>(resolved: ResolvedPenalty, shapes: Record<string, LayerShape>, limits: Limits, plan: (maxRows: number) => T): T {
  const bytes = bytesPerRow(resolved, shapes);
  try {
    return plan(Math.max(1, Math.floor(limits.memoryBudget / bytes)));
  } catch (err) {
    if (err instanceof AuditError) {
      err.message = `${err.message} (about ${bytes} bytes per row for the layers asked, budget ${limits.memoryBudget} bytes)`;
    }
    throw err;
  }
}
