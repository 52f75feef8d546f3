/**
 * What every in-graph estimator shares (issue 13, item 1; docs/metrics.md, "Adding an in-graph
 * estimator"): where a metric reduces (chooseEstimator), the suffix's session as a companion of the
 * Run's own (one per model, layers and suffix; same device and settings), and the chunk loop: one
 * stacked batch per chunk through G plus the suffix, only the suffix's outputs fetched, their bytes
 * counted. A metric supplies the suffix, its unit sizes, the layout feeds of a chunk, what to
 * fetch and how its accumulators take the outputs (graph-penalty.ts, graph-hessian.ts,
 * graph-activeness.ts, graph-orthogonality.ts).
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import type { Warning } from '../contract/results.js';
import { checkRunMemory } from '../runtime/memory-check.js';
import { type OpenSession, openSession } from '../runtime/session.js';
import { fetchedBytes } from '../runtime/suffix-run.js';
import { type FillRows, unitFeeds } from './feeds.js';
import type { UnitChunk } from './plan.js';
import { NO_HOST_STATE, type Run, timedRun, type UnitsDone } from './run.js';

export type Estimator = 'graph' | 'host';

/**
 * Where a metric's figures are reduced: as asked, else in the graph on CUDA/WebGPU (the copy out
 * and one JavaScript thread are what a GPU waits on) and on the host on the CPU (measured faster
 * there, bench/RESULTS.md). Per-pass runs (rows interact) stay on the host: a pass's rows are
 * separate batches, and a suffix reduces within one. A small penalty whose batches are shared
 * with other requests (dynamic batching, the only metric the pool batches) is reduced on the host
 * too when its rows are at most SHARED_HOST_BYTES: then its forward can share a run (a suffix's
 * runs are not shared), and copying that little costs less than running alone.
 */
export function chooseEstimator(run: Run, asked: 'auto' | Estimator | undefined): Estimator {
  if (run.executionMode !== 'stacked') return 'host';
  if (asked === 'graph' || asked === 'host') return asked;
  if (!/^(cuda|webgpu)/.test(run.executionProvider)) return 'host';
  return run.context.shared && hostFetchedBytes(run, penaltyRows(run)) <= SHARED_HOST_BYTES ? 'host' : 'graph';
}

/** Bytes of a shared request's rows below which it is reduced on the host (see chooseEstimator). */
export const SHARED_HOST_BYTES = 16 * 1024 * 1024;

/** A penalty's rows: N·(2k+1) for ε and for each ε of a sweep. */
const penaltyRows = ({ resolved }: Run): number => resolved.samples * (2 * resolved.k + 1) * (1 + (resolved.epsilons?.length ?? 0));

/**
 * chooseEstimator, and the warning when the graph was asked for and the host reduces: `what` names
 * the figures ("the penalty's moments"), `refusal` a metric's own reason the suffix cannot serve this
 * request (null: none), which turns the choice to the host like rows that interact do.
 */
export function estimatorFor(run: Run, asked: 'auto' | Estimator | undefined, what: string, warnings: Warning[], refusal: string | null = null): Estimator {
  const chosen = refusal === null ? chooseEstimator(run, asked) : 'host';
  if (asked === 'graph' && chosen === 'host') {
    const why = refusal ?? 'rows of a batch influence each other, so each pass runs as its own batch, and the in-graph estimator reduces within one batch';
    warnings.push({ code: 'estimator_host', message: `${what} were reduced on the host, not in the graph: ${why}` });
  }
  return chosen;
}

/** A suffix as src/onnx/suffix.ts builds them: the model's bytes with it appended. */
export interface BuiltSuffix {
  bytes: Uint8Array;
}

/** One metric's in-graph work: its suffix, plan and, per chunk, a layout L (the slots and their rows). */
export interface SuffixWork<S extends BuiltSuffix, L> {
  /** The suffix's part of the session key (with whatever it depends on besides the layers). */
  name: string;
  build(bytes: Uint8Array, opset: number): S;
  stage: string;
  /** The units of a sample (a unit never straddles two batches: one of all a sample's rows keeps it whole). */
  unitSizes: readonly number[];
  /** A split sample repeats its first unit (the penalty's center) in each chunk (plan.ts). */
  repeatCenter?: boolean;
  /** The refusal when N × rows per sample is above the row limit (the host path's). */
  tooMany: (rows: number) => AuditError;
  /** Bytes the suffix's own tensors take per row of a batch (suffixBatchRows), beside the model's; without it, the model's budget alone. */
  suffixBytesPerRow?: number;
  fill: FillRows;
  /** A chunk's layout, worked out once for the three below. */
  layout(chunk: UnitChunk): L;
  /** The suffix's layout inputs for one chunk. */
  feeds(suffix: S, layout: L): Record<string, ort.Tensor>;
  fetches(suffix: S, layout: L): string[];
  /** The chunk's fetched outputs to the metric's accumulators. */
  consume(suffix: S, layout: L, outputs: ort.InferenceSession.OnnxValueMapType): void;
}

export interface SuffixDone {
  done: UnitsDone;
  /** Bytes of the suffix's outputs copied out of onnxruntime. */
  fetchedBytes: number;
}

/** Every chunk of `work.planned` through G plus the suffix, one stacked batch per chunk. */
export async function runSuffix<S extends BuiltSuffix, L>(run: Run, work: SuffixWork<S, L>): Promise<SuffixDone> {
  const rows = run.resolved.samples * work.unitSizes.reduce((a, b) => a + b, 0);
  if (rows > run.limits.maxRows) throw work.tooMany(rows);
  const planned = await run.plan(run.resolved.samples, work.unitSizes, 'stacked', work.repeatCenter, work.suffixBytesPerRow === undefined ? Infinity : suffixBatchRows(run, work.suffixBytesPerRow), NO_HOST_STATE);
  const { suffix, open } = await companion(run, work);
  const timing = { forwardMs: 0 };
  let bytes = 0;
  let done = 0;
  const { chunks } = planned.plan;
  for (const chunk of chunks) {
    const feeds = unitFeeds(run.resolved, chunk.batches[0], work.fill);
    checkRunMemory(run.model, feeds, run.limits.memoryBudget);
    const layout = work.layout(chunk);
    const outputs = await timedRun(open, work.fetches(suffix, layout), { ...feeds, ...work.feeds(suffix, layout) }, timing);
    bytes += fetchedBytes(outputs);
    work.consume(suffix, layout, outputs);
    run.context.onProgress?.(++done, chunks.length, work.stage);
  }
  run.forwardMs += timing.forwardMs;
  return { done: { ...planned, batches: chunks.length, forwardMs: timing.forwardMs, modeWarnings: [] }, fetchedBytes: bytes };
}

/** The suffix (cached with the session cache's derived models) and its session, a companion of the Run's. */
async function companion<S extends BuiltSuffix>(run: Run, work: { name: string; build(bytes: Uint8Array, opset: number): S }): Promise<{ suffix: S; open: OpenSession }> {
  const key = `${run.sessionKey}|${work.name}|${JSON.stringify(run.resolved.layers)}`;
  const suffix = run.context.sessions.derived(key, () => work.build(run.model.bytes, modelOpset(run)));
  let opening = run.open.companions.get(key);
  if (opening === undefined) {
    opening = openSession(suffix.bytes, [], run.context.device, run.context.sessions.settings);
    run.open.companions.set(key, opening);
    opening.catch(() => run.open.companions.delete(key));
  }
  return { suffix, open: await opening };
}

/** The model's default-domain opset (the suffixes follow its op signatures); 0 when it imports none. */
export function modelOpset(run: Run): number {
  return run.model.description.opsets.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 0;
}

/**
 * Rows a batch may hold for the suffix's own tensors within the memory budget: the budget counts
 * the model's outputs (Run.budgetRows), and a suffix's float64 intermediates are several times
 * those (the Hessian's [S, d², E] most of all), so the plan is cut to both.
 */
export const suffixBatchRows = (run: Run, suffixBytesPerRow: number): number => Math.max(1, Math.floor(run.limits.memoryBudget / suffixBytesPerRow));

/** Rows a suffix's batch may hold: the budget's for the model and for the suffix, and the request's batchRows. */
export const graphBatchRows = (run: Run, suffixBytesPerRow: number): number =>
  Math.min(run.budgetRows(Infinity, NO_HOST_STATE), suffixBatchRows(run, suffixBytesPerRow), run.askedBatchRows ?? Infinity);

/** Elements per row over the layers asked for (their suffixes run in one session.run). */
export const layerElements = (run: Run): number => run.resolved.layers.reduce((n, name) => n + run.shapes[name].size, 0);

/** A refusal (estimatorFor) when the model's opset is below what a suffix's ops need. */
export function opsetRefusal(run: Run, minimum: number, suffix: string): string | null {
  const opset = modelOpset(run);
  return opset < minimum ? `the ${suffix} suffix needs opset ${minimum} or later, and the model imports opset ${opset}` : null;
}

/**
 * A suffix flattens each row to the elements it has in this batch: a layer whose per-row size
 * depends on the batch size would be reduced over the wrong elements (the host path checks the
 * shapes; here only per-slot figures come back, so their count is checked).
 */
export function checkSlots(layer: string, length: number, slots: number, size: number, output: string): void {
  if (length === slots * size) return;
  throw new AuditError(
    'output_shape_changed',
    `layer '${layer}' has ${length / slots} elements per row in a stacked batch, but ${size} were expected from the preflight: ` +
      `its per-row output depends on the batch size, so rows cannot be audited independently (suffix output ${output})`,
    { layer },
  );
}

/** A host run's figures in the shape of a suffix run's: its plan, and the bytes its rows copied out. */
export const onHost = (run: Run, done: UnitsDone): SuffixDone => ({ done, fetchedBytes: hostFetchedBytes(run, done.plan.rows) });

/** checkSlots from a suffix's `shape` output (the layer's [rows, E] in the batch), for suffixes whose figures hide E. */
export function checkShape(layer: string, shape: ort.Tensor, size: number, output: string): void {
  const [rows, elements] = Array.from(shape.data as BigInt64Array, Number);
  checkSlots(layer, rows * elements, rows, size, output);
}

/** Bytes the host estimator copies out of onnxruntime: every row of every layer asked for. */
export function hostFetchedBytes(run: Run, rows: number): number {
  return rows * run.resolved.layers.reduce((s, name) => s + run.shapes[name].size * elementBytes(run.shapes[name].type), 0);
}

const elementBytes = (type: string): number => (type === 'float64' ? 8 : type === 'float16' ? 2 : 4);
