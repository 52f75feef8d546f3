/**
 * One Run per request: it binds the request to the model (resolve), refuses random ops, opens the
 * cached session and runs its preflight, and then executes every metric's units through one `units` call:
 * the plan within the memory budget and the row limit, the execution mode, the batches through G,
 * the outputs to the metric's accumulators, progress and forward timing. Warnings are collected
 * once, deduplicated on insert; the combined audit runs all its metrics on the same Run.
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import { DEFAULT_LIMITS, type Limits, type MetricRequest } from '../contract/request.js';
import type { ExecutionMode, Warning } from '../contract/results.js';
import type { Activations } from '../math/second-difference.js';
import { withoutSourcePaths } from '../onnx/ort-message.js';
import type { Row } from '../math/rows.js';
import type { Device } from '../runtime/device.js';
import type { LoadedModel } from '../runtime/model.js';
import type { OpenSession, SessionCache } from '../runtime/session.js';
import { formatShape } from '../io/ndarray.js';
import { checkRunMemory, type Held, inferredSizes } from '../runtime/memory-check.js';
import type { SharedBatches } from '../runtime/shared-batches.js';
import { outputValues } from '../runtime/tensors.js';
import { tuneBatchRows, type TuneResult } from '../runtime/tune.js';
import { type FillRows, rowFeeds, unitFeeds } from './feeds.js';
import { planUnits, type UnitPlan } from './plan.js';
import { type LayerShape, type Preflight, preflight, preflightRows } from './preflight.js';
import { type CutInfo, isCut, openCut } from './cut.js';
import { resolveRequest, type ResolvedRequest } from './resolve.js';
import { onlySamples, type SampleRange } from './sample-range.js';

/** Progress of one stage of a long run: chunks done out of the total. */
export type Progress = (done: number, total: number, stage: string) => void;

export interface RunContext {
  device: Device;
  sessions: SessionCache;
  limits?: Limits;
  onProgress?: Progress;
  /** Keep the first few generated images of image-shaped layers (the HTML report). */
  previews?: boolean;
  /**
   * Tune the batch size on a session's first large request (default true). A one-shot process
   * (the CLI: one request, one session) cannot earn the tuning back, so it plans by the budget.
   */
  tune?: boolean;
  /** Run only these samples of the resolved request: one part of a request split over lanes (pool.ts). */
  sampleRange?: SampleRange;
  /**
   * Batches shared with the other requests of the same worker task (dynamic batching, pool.ts):
   * stacked batches go there instead of straight to onnxruntime. The session then tunes its batch
   * size on its first request whatever its size: the packs are cut to it.
   */
  shared?: SharedBatches;
}

/** Per layer, whatever combines a unit's rows (the metric's accumulator). */
export interface UnitConsumer {
  unit(sample: number, unit: number, values: Activations[], offsets: number[]): void;
}

/** One metric's work for the Run: its units per sample, how rows are filled, who consumes them. */
export interface UnitWork {
  /** Progress stage name (the metric). */
  stage: string;
  unitSizes: readonly number[];
  /** How the per-pass warning names this metric's passes ("each of the 2k+1 passes"). */
  passes: string;
  /** The refusal when N × rows per sample is above the row limit. */
  tooMany: (rows: number) => AuditError;
  fill: FillRows;
  consumers: Record<string, UnitConsumer>;
  /** What the consumers keep on the host per element (default: what the metric declared for the Run). */
  host?: HostState;
  /**
   * Run only the first `samples` samples (a traversal shows a few; the noise measurement needs
   * one). Per-pass mode runs them all regardless: a pass is one batch of all N rows, and fewer
   * rows would be another G.
   */
  samples?: number;
}

/** Where a plan's rows per batch came from: the memory budget alone, the tuner, or the request. */
export type BatchRowsFrom = 'budget' | 'tuned' | 'request';

/**
 * What a metric keeps on the host per output element of its layers, in bytes (float64 state is 8
 * per element, twice a float32 layer per copy): for the whole run, and per sample it holds at once.
 * The memory budget counts it beside each batch (docs/harden.md, "The memory budget").
 */
export interface HostState {
  /** As a refusal names it: "the penalty's accumulators". */
  what: string;
  /** Bytes per element held for the whole run (per-element sums, a measured sample's tables). */
  fixed: number;
  /** Bytes per element for each sample in flight (its centre and running moments). */
  perSample: number;
}

/** A metric's host state for a resolved request (metrics declare it: Metric.hostState). */
export type HostStateOf = (resolved: ResolvedRequest) => HostState;

/** The plan of one work, and the batch size it was cut to. */
export interface PlannedUnits {
  plan: UnitPlan;
  /** The largest batch the plan runs, in rows. */
  batchRows: number;
  batchRowsFrom: BatchRowsFrom;
}

export interface UnitsDone extends PlannedUnits {
  batches: number;
  /** Milliseconds inside onnxruntime for this work. */
  forwardMs: number;
  /** The execution mode's warning (fixed batch, rows that interact), if any. */
  modeWarnings: Warning[];
}

export class Run {
  readonly warnings: Warning[] = [];
  readonly started = performance.now();

  private constructor(
    readonly model: LoadedModel,
    readonly resolved: ResolvedRequest,
    readonly open: OpenSession,
    readonly preflight: Preflight,
    readonly limits: Limits,
    readonly context: RunContext,
    /** Milliseconds spent inside onnxruntime so far. */
    public forwardMs: number,
    /** When wrt named an intermediate tensor: the cut, and where its values came from. */
    readonly cut: CutInfo | null = null,
    /** The session cache's key of this run's model (the cut's, when cut): derived sessions extend it. */
    readonly sessionKey: string = model.id,
    /** Rows per batch the request asked for (batchRows): overrides the tuner. */
    readonly askedBatchRows: number | undefined = undefined,
    /** What the metric keeps on the host per output element (none: only the outputs fetched). */
    readonly host: HostState = NO_HOST_STATE,
    /** onnxruntime's largest tensor per row, inferred at the preflight's batch (0: unknown). */
    readonly largestPerRow = 0,
  ) {}

  /** Samples whose host state is held at once while the current work runs (units() sets it). */
  private inFlight = 1;
  /** The host state of the work units() runs now, when it declared its own. */
  private working: HostState | null = null;
  /** Rows of the current chunk's earlier batches, whose outputs are still held (per-pass chunks). */
  private chunkRowsHeld = 0;

  /** Validate against the model, refuse random ops, open the cached session and run its preflight. */
  static async open(whole: LoadedModel, asked: MetricRequest, context: RunContext, hostState?: HostStateOf): Promise<Run> {
    const limits = context.limits ?? DEFAULT_LIMITS;
    // wrt naming an intermediate tensor: the Run audits the suffix tensor → layers (run/cut.ts).
    const cut = isCut(whole, asked) ? await openCut(whole, asked, context.sessions, context.device, limits) : null;
    const model = cut?.model ?? whole;
    const request = cut?.request ?? asked;
    const resolved = onlySamples(resolveRequest(model.description, request, limits), context.sampleRange);
    const warnings: Warning[] = [...resolved.warnings];
    refuseRandomOps(model, request.allowNondeterministic === true, warnings);
    const host = hostState?.(resolved) ?? NO_HOST_STATE;
    // Before the session opens (constant folding at creation allocates too), from inferred sizes:
    // the preflight's batch, its two runs' outputs compared, and the metric's state for one sample.
    // A request that cannot hold that is refused before any row runs.
    const preflightFeeds = rowFeeds(resolved, preflightRows(resolved));
    const inferred = inferredSizes(model, preflightFeeds, resolved.layers);
    const preflightRowsCount = Number(Object.values(preflightFeeds)[0]?.dims[0] ?? 0);
    const largestPerRow = (inferred.largest?.bytes ?? 0) / Math.max(1, preflightRowsCount);
    const inferredLayers = resolved.layers.map((name) => {
      const size = inferred.named[name];
      const elements = size && size.shape.length > 0 && size.shape[0] === preflightRowsCount ? size.shape.slice(1).reduce((a, b) => a * b, 1) : 0;
      return { elements, bytesPerRow: elements > 0 ? size!.bytes / preflightRowsCount : 0 };
    });
    checkRunMemory(model, preflightFeeds, limits.memoryBudget, heldFor(resolved, inferredLayers, host, preflightRowsCount, 2, 1));
    const open = await context.sessions.get(cut?.sessionKey ?? model.id, model.bytes, resolved.expose, context.device);
    if (open.fallback) warnings.push({ code: 'device_fallback', message: open.fallback });
    const timing = { forwardMs: 0 };
    const checked = await preflightOnce(open, resolved, (rows) => {
      const feeds = rowFeeds(resolved, rows);
      checkRunMemory(model, feeds, limits.memoryBudget, heldFor(resolved, inferredLayers, host, rows.length, 2, 1));
      return timedRun(open, resolved.layers, feeds, timing);
    });
    const run = new Run(model, resolved, open, checked, limits, context, timing.forwardMs, cut?.info ?? null, cut?.sessionKey ?? model.id, asked.batchRows, host, largestPerRow);
    for (const w of warnings) run.warn(w);
    return run;
  }

  get shapes(): Record<string, LayerShape> {
    return this.preflight.shapes;
  }

  get executionProvider(): string {
    return this.open.executionProvider;
  }

  /** The execution mode units() will run in (units() gives its warning). */
  get executionMode(): ExecutionMode {
    return chooseMode(this.model, this.resolved, this.preflight, [], '');
  }

  /** Add a warning unless the same one is there already. */
  warn(warning: Warning): void {
    if (!this.warnings.some((w) => w.code === warning.code && w.message === warning.message && w.layer === warning.layer)) {
      this.warnings.push(warning);
    }
  }

  /**
   * One batch through G, counting the time spent inside onnxruntime; refused before it runs when
   * shape inference says a tensor would pass the memory budget (runtime/memory-check.ts).
   */
  forward(feeds: Record<string, ort.Tensor>, stacked = false): Promise<Record<string, ort.Tensor>> {
    checkRunMemory(this.model, feeds, this.limits.memoryBudget, this.held(Number(Object.values(feeds)[0]?.dims[0] ?? 0)));
    const alone = (): Promise<Record<string, ort.Tensor>> => timedRun(this.open, this.resolved.layers, feeds, this);
    const { shared } = this.context;
    // Only stacked rows may share a run (rows that interact must stay in their own batch), and only
    // when every input has a row per batch row (an input held as given cannot be concatenated).
    if (!shared || !stacked || !this.resolved.extras.every((e) => e.perSample)) return alone();
    const rows = Number(Object.values(feeds)[0].dims[0]);
    return shared.run({ open: this.open, layers: this.resolved.layers, feeds, rows, maxRows: this.packRows, alone, timing: this });
  }

  /**
   * The most rows a run shared with other requests may have: the largest size the session's tuner
   * measured within its margin of the best throughput (packing further would slow every row; up
   * to there, fewer and larger runs), unbounded when throughput still rose at the largest; within
   * the memory budget.
   */
  private get packRows(): number {
    const measured = this.tuning?.measurements ?? [];
    if (measured.length === 0) return this.budgetRows();
    const best = Math.max(...measured.map((m) => m.rowsPerSecond));
    const cap = Math.max(...measured.filter((m) => m.rowsPerSecond >= best * (1 - TUNE_MARGIN)).map((m) => m.rows));
    const largest = Math.max(...measured.map((m) => m.rows));
    return Math.min(this.budgetRows(), cap === largest ? Infinity : cap);
  }

  /** The generated images of the first samples, for previews: one batch of center rows. */
  async centers(count: number): Promise<Record<string, ArrayLike<number>>> {
    const rows: Row[] = Array.from({ length: count }, (_, n) => ({ sample: Math.min(n, this.resolved.samples - 1), direction: -1, sign: 0 }));
    const outputs = await this.forward(rowFeeds(this.resolved, rows));
    return Object.fromEntries(this.resolved.layers.map((name) => [name, outputValues(outputs[name])]));
  }

  /**
   * The one execution path of every metric: plan its units within the row limit and the memory
   * budget, stream the batches through G, and hand each chunk's units to every layer's consumer.
   */
  async units(work: UnitWork): Promise<UnitsDone> {
    const { resolved } = this;
    const perSample = work.unitSizes.reduce((a, b) => a + b, 0);
    const modeWarnings: Warning[] = [];
    const mode = chooseMode(this.model, resolved, this.preflight, modeWarnings, work.passes);
    const samples = mode === 'stacked' ? Math.min(work.samples ?? resolved.samples, resolved.samples) : resolved.samples;
    if (perSample * samples > this.limits.maxRows) throw work.tooMany(perSample * samples);
    this.working = work.host ?? null;
    try {
      return await this.runUnits(work, mode, samples, perSample, modeWarnings);
    } finally {
      // Whatever ends the work (an audit goes on after a metric refused), the next starts clean.
      this.inFlight = 1;
      this.chunkRowsHeld = 0;
      this.working = null;
    }
  }

  /** units() after its checks: plan, stream the batches, hand each chunk to the consumers. */
  private async runUnits(work: UnitWork, mode: ExecutionMode, samples: number, perSample: number, modeWarnings: Warning[]): Promise<UnitsDone> {
    const { resolved } = this;
    const planned = await this.plan(samples, work.unitSizes, mode);
    const { plan } = planned;
    // A stacked batch completes whole samples and may hold the ends of two split ones; a pass holds all.
    this.inFlight = mode === 'stacked' ? Math.min(samples, Math.ceil(plan.largestBatch / perSample) + 1) : samples;
    const forwardBefore = this.forwardMs;
    let done = 0;
    let batches = 0;
    for (const chunk of plan.chunks) {
      const outputs: Record<string, Activations>[] = [];
      this.chunkRowsHeld = 0;
      for (const batch of chunk.batches) {
        const result = await this.forward(unitFeeds(resolved, batch, work.fill), mode === 'stacked');
        this.chunkRowsHeld += batch.length;
        this.checkShapes(result, batch.length);
        outputs.push(Object.fromEntries(resolved.layers.map((name) => [name, outputValues(result[name])])));
        batches++;
      }
      for (const { sample, unit, rows } of chunk.units) {
        for (const name of resolved.layers) {
          const size = this.shapes[name].size;
          work.consumers[name].unit(
            sample,
            unit,
            rows.map((r) => outputs[r.batch][name]),
            rows.map((r) => r.row * size),
          );
        }
      }
      this.context.onProgress?.(++done, plan.chunks.length, work.stage);
    }
    return { ...planned, batches, forwardMs: this.forwardMs - forwardBefore, modeWarnings };
  }

  /**
   * What the host holds beside onnxruntime while a batch of `rows` runs: the batch's outputs
   * fetched into JavaScript (a per-pass chunk keeps every pass's), and the metric's state.
   */
  private held(rows: number): Held[] {
    const layers = this.resolved.layers.map((name) => ({ elements: this.shapes[name].size, bytesPerRow: this.shapes[name].bytesPerRow }));
    return heldFor(this.resolved, layers, this.working ?? this.host, rows + this.chunkRowsHeld, 1, this.inFlight);
  }

  /**
   * The plan of `samples` × `unitSizes` rows: batches within the memory budget, cut further to the
   * request's batchRows, or to the session's tuned size when the request is large enough to tune
   * for (see TUNE_MIN_ROWS); `limit` caps it for what the budget does not count (a suffix's tensors).
   */
  async plan(samples: number, unitSizes: readonly number[], mode: ExecutionMode, repeatCenter = false, limit = Infinity, host?: HostState): Promise<PlannedUnits> {
    const rows = samples * unitSizes.reduce((a, b) => a + b, 0);
    const budgetRows = this.budgetRows(rows / samples, host);
    let cap = Infinity;
    let from: BatchRowsFrom = 'budget';
    // Batches shared with other requests are packed to the session's tuned sizes (packRows), so a
    // session that packs tunes on its first request, however small; the request's own plan stays.
    if (this.context.shared && this.context.tune !== false && mode === 'stacked' && budgetRows > TUNE_MIN_CANDIDATE) await this.tuned(budgetRows);
    if (this.askedBatchRows !== undefined) {
      cap = this.askedBatchRows;
      from = 'request';
    } else if (this.context.tune !== false && mode === 'stacked' && Math.min(budgetRows, rows) > TUNE_MIN_CANDIDATE && rows >= TUNE_MIN_ROWS) {
      const tuned = await this.tuned(budgetRows);
      if (tuned !== null) {
        // With repeatCenter (the in-graph estimator) whole samples per batch: no split to merge, no center run twice.
        const perSample = rows / samples;
        cap = repeatCenter && tuned >= perSample ? tuned - (tuned % perSample) : tuned;
        cap = Math.max(cap, ...unitSizes); // a batch holds at least one unit (the in-graph Hessian's is a whole sample)
        // Only a size that cuts the batches is the tuner's doing; a larger one leaves the budget's.
        if (cap < Math.min(budgetRows, rows)) from = 'tuned';
      }
    }
    const plan = this.withinBudget(budgetRows, (maxRows) => planUnits({ samples, unitSizes, maxRows: Math.min(maxRows, cap, limit), mode, repeatCenter }));
    return { plan, batchRows: plan.largestBatch, batchRowsFrom: from };
  }

  /**
   * The session's tuned rows per batch, measured on its first large request and kept in its facts
   * (per input signature, like the preflight); null when the largest size measured was the fastest
   * (throughput still rising: the budget decides, as without tuning).
   */
  private async tuned(budgetRows: number): Promise<number | null> {
    const key = `tune|${signature(this.resolved)}`;
    let result = this.open.facts.get(key) as Promise<TuneResult> | undefined;
    if (result === undefined) {
      const { samples } = this.resolved;
      const cpu = this.executionProvider === 'cpu';
      result = tuneBatchRows({
        maxRows: Math.min(budgetRows, TUNE_MAX_ROWS),
        minRows: TUNE_MIN_CANDIDATE,
        order: 'ascending',
        measureRows: TUNE_MEASURE_ROWS,
        margin: TUNE_MARGIN,
        budgetMs: cpu ? TUNE_BUDGET_MS.cpu : TUNE_BUDGET_MS.device,
        run: async (rows) => {
          const centers: Row[] = Array.from({ length: rows }, (_, i) => ({ sample: i % samples, direction: -1, sign: 0 }));
          // Alone, never shared: the tuner times this session's own runs.
          await this.forward(rowFeeds(this.resolved, centers));
        },
      });
      this.open.facts.set(key, result);
      result.catch(() => this.open.facts.delete(key));
    }
    const tuned = await result;
    this.tuning = tuned;
    const largest = Math.max(...tuned.measurements.map((m) => m.rows));
    return tuned.batchRows === largest ? null : tuned.batchRows;
  }

  /** The session's tuning, once this run has used it (the /metrics gauge, bench/). */
  tuning: TuneResult | null = null;

  /**
   * Rows one batch may hold within the memory budget: its outputs (bytesPerRow) and the host state
   * of the samples it completes (one per `rowsPerSample` rows) plus a split one at each end.
   */
  budgetRows(rowsPerSample = Infinity, host: HostState = this.working ?? this.host): number {
    const elements = this.resolved.layers.reduce((sum, name) => sum + this.shapes[name].size, 0);
    const perSample = host.perSample * elements;
    const free = this.limits.memoryBudget - host.fixed * elements - 2 * perSample;
    return Math.max(1, Math.floor(free / (bytesPerRow(this.resolved, this.shapes, this.largestPerRow) + perSample / rowsPerSample)));
  }

  /**
   * Every batch's outputs must have the shapes the preflight found: a layer whose per-row size depends
   * on the batch size would otherwise be read at the wrong offsets.
   */
  private checkShapes(outputs: Record<string, ort.Tensor>, rows: number): void {
    for (const name of this.resolved.layers) {
      const dims = outputs[name].dims.map(Number);
      const expected = [rows, ...this.shapes[name].shape];
      if (dims.length === expected.length && dims.every((d, i) => d === expected[i])) continue;
      throw new AuditError(
        'output_shape_changed',
        `layer '${name}' has shape ${formatShape(dims)} for a batch of ${rows} rows, but ${formatShape(expected)} was expected from the preflight: ` +
          'its per-row output depends on the batch size, so rows cannot be audited independently',
        { layer: name, shape: dims, expected },
      );
    }
  }

  /** Rows per batch from the memory budget; a refusal says what a row costs and what the budget is. */
  private withinBudget<T>(budgetRows: number, plan: (maxRows: number) => T): T {
    const bytes = bytesPerRow(this.resolved, this.shapes, this.largestPerRow);
    try {
      return plan(budgetRows);
    } catch (err) {
      if (err instanceof AuditError) {
        err.message = `${err.message} (about ${bytes} bytes per row for the layers asked, budget ${this.limits.memoryBudget} bytes)`;
      }
      throw err;
    }
  }
}

/**
 * Tuning (runtime/tune.ts), bounded: only requests of at least TUNE_MIN_ROWS rows tune or use a
 * tuned size (below that a request is one batch of a few hundred rows, and the few milliseconds a
 * better size could save would not pay for measuring it; such plans stay what the budget gives);
 * sizes from TUNE_MIN_CANDIDATE up to TUNE_MAX_ROWS, ascending, stopping once two sizes in a row
 * are slower than the best or the time budget is spent (a second on a CPU, once per session:
 * the runs are its warm-up).
 */
export const TUNE_MIN_ROWS = 1024;
/** Below 64 rows a batch's own costs on the host (feeds, output tensors, a unit's bookkeeping) start to show, which bare runs do not see. */
export const TUNE_MIN_CANDIDATE = 64;
export const TUNE_MAX_ROWS = 4096;
/** Each timed measurement covers at least this many rows (small sizes run several batches). */
export const TUNE_MEASURE_ROWS = 256;
/** A smaller size must be this much faster than every larger one: the tuner's own noise, and fewer batches to plan. */
export const TUNE_MARGIN = 0.05;
export const TUNE_BUDGET_MS = { cpu: 1000, device: 2000 };

/** What a preflight or a tuning depends on besides the session: the request's input signature. */
function signature(resolved: ResolvedRequest): string {
  return JSON.stringify([
    resolved.wrt.name,
    resolved.latentShape,
    resolved.layers,
    resolved.fixedBatch,
    resolved.extras.map((e) => [e.name, e.perSample, e.array.shape.slice(e.perSample ? 1 : 0)]),
  ]);
}

/** Run one batch on a session, adding the time spent inside onnxruntime to `timing`. */
export async function timedRun(
  open: OpenSession,
  layers: readonly string[],
  feeds: Record<string, ort.Tensor>,
  timing: { forwardMs: number },
): Promise<Record<string, ort.Tensor>> {
  const t = performance.now();
  try {
    return await open.session.run(feeds, layers as string[]);
  } catch (err) {
    throw new AuditError('model_run_failed', `onnxruntime could not run the model: ${withoutSourcePaths((err as Error).message.split('\n')[0])}`);
  } finally {
    timing.forwardMs += performance.now() - t;
  }
}

/**
 * The preflight of a session, once per input signature: shapes and row independence are properties of the
 * model. A model whose outputs changed between two runs is checked again on every request.
 */
async function preflightOnce(open: OpenSession, resolved: ResolvedRequest, run: (rows: Row[]) => Promise<Record<string, ort.Tensor>>): Promise<Preflight> {
  const key = signature(resolved);
  const known = open.facts.get(key) as Preflight | undefined;
  if (known) return known;
  const checked = await preflight(resolved, run);
  if (Object.values(checked.determinism).every((d) => d === 0)) open.facts.set(key, checked);
  return checked;
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
      { nodes: random },
    );
  }
  warnings.push({ code: 'nondeterministic_model', message: `run despite random ops: ${nodes}` });
}

/** Stacked unless rows interact (graph or preflight) or the batch size is fixed: then pass by pass. */
function chooseMode(model: LoadedModel, resolved: ResolvedRequest, checked: Preflight, warnings: Warning[], passes: string): ExecutionMode {
  if (resolved.mode) return resolved.mode;
  if (resolved.fixedBatch !== null) {
    warnings.push({
      code: 'fixed_batch',
      message: `input '${resolved.wrt.name}' has a fixed batch size of ${resolved.fixedBatch}, so ${passes} runs as its own batch`,
    });
    return 'per-pass';
  }
  const mixing = model.description.batchMixingOps;
  if (mixing.length > 0 || checked.rowsInteract) {
    const why = mixing.length > 0
      ? mixing.map((m) => `${m.node} (${m.op}: ${m.why})`).join(', ')
      : 'the preflight changed one row and another row changed too';
    warnings.push({
      code: 'rows_interact',
      message: `rows of a batch influence each other (${why}), so ${passes} runs as its own batch of ${resolved.samples}, as the reference implementations do`,
    });
    return 'per-pass';
  }
  return 'stacked';
}

/** A metric that keeps nothing per element on the host beside the outputs it reads. */
export const NO_HOST_STATE: HostState = { what: 'the accumulators', fixed: 0, perSample: 0 };

/**
 * What the host holds for a batch of `rows` (docs/harden.md): the layers' outputs fetched into
 * JavaScript (`copies` sets of them: the preflight compares two runs), and the metric's state for
 * `samples` samples in flight.
 */
function heldFor(resolved: ResolvedRequest, layers: { elements: number; bytesPerRow: number }[], host: HostState, rows: number, copies: number, samples: number): Held[] {
  const elements = layers.reduce((sum, l) => sum + l.elements, 0);
  const perRow = layers.reduce((sum, l) => sum + l.bytesPerRow, 0);
  const held: Held[] = [{ what: `the outputs of layer${resolved.layers.length > 1 ? 's' : ''} ${resolved.layers.map((l) => `'${l}'`).join(', ')} fetched into JavaScript`, shape: [copies * rows, elements], bytes: copies * rows * perRow }];
  const hostBytes = (host.fixed + samples * host.perSample) * elements;
  if (hostBytes > 0) held.push({ what: `${host.what} for ${samples} sample${samples > 1 ? 's' : ''}`, shape: [samples, elements], bytes: hostBytes });
  return held;
}

/**
 * Bytes one row costs: its input, onnxruntime's largest tensor (at least its outputs), and the
 * outputs fetched into JavaScript, which the accumulators read (the memory check's parts).
 */
function bytesPerRow(resolved: ResolvedRequest, shapes: Record<string, LayerShape>, largestPerRow: number): number {
  const inputBytes = resolved.size * (resolved.latentType === 'float64' ? 8 : 4);
  const outputs = Object.values(shapes).reduce((s, l) => s + l.bytesPerRow, 0);
  return inputBytes + Math.max(largestPerRow, outputs) + outputs;
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

/** A metric's timings: its own wall time since `started`, of which `forwardMs` inside onnxruntime. */
export function timings(started: number, forwardMs: number): { totalMs: number; forwardMs: number; reduceMs: number } {
  const totalMs = performance.now() - started;
  return { totalMs: round(totalMs), forwardMs: round(forwardMs), reduceMs: round(totalMs - forwardMs) };
}
