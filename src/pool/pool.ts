/**
 * The worker pool: one tinypool per device (a "lane"), each running its workers as child
 * processes. A native crash in onnxruntime then ends one process, not the server: the task fails
 * with `worker_crashed` and tinypool starts a replacement. A task is handed to a lane only when
 * one of its workers is free, so the one queue is here, shared by all lanes and bounded (503
 * beyond it), and a task's time limit counts from when a worker takes it: past it, the task is
 * cancelled and its worker replaced.
 *
 * Fair share: each task belongs to a client (its address). A client may have at most
 * `maxPerClient` tasks queued or running (503 client_limit beyond), and a freed worker goes to the
 * waiting task whose client has the fewest running, so one client's backlog of slow requests
 * does not hold the workers for everyone (first come first served among equals).
 *
 * A request over several lanes: a hessian, orthogonality or activeness request with at least
 * `splitMinSamples` samples per lane, arriving while more than one lane has a free worker, is
 * split by samples over those lanes. Every part resolves the whole request with one seed (drawn
 * here when the request has none) and runs only its samples (run/sample-range.ts); the parts'
 * results are merged (metrics/merge.ts) and say `lanes`. A part that cannot run as a part (rows
 * interact, a limit scaled to its share) makes the pool run the request whole on one lane, so
 * refusals and results are always those of one lane.
 *
 * Dynamic batching: small penalty requests on the same model (at most `batchMaxRows` rows each)
 * that wait for a worker together go to it as one batch task, up to `batchMaxRequests`; a worker
 * that is free when one arrives holds it `batchDelayMs` for others. In the worker their stacked
 * batches share runs (runtime/shared-batches.ts), and each request gets its own outcome: the
 * figures it would have got alone. A batch counts as one running task on its lane; each of its
 * requests counts for its own client.
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import Tinypool from 'tinypool';
import { AuditError } from '../contract/errors.js';
import type { ModelDescription } from '../onnx/describe.js';
import type { SafetySettings } from '../onnx/safety.js';
import type { CompareInput, CompareOutput } from '../gate/compare.js';
import type { MetricResults } from '../metrics/evaluate.js';
import type { MetricName } from '../metrics/registry.js';
import { DEFAULTS, type MetricRequest } from '../contract/request.js';
import { mergeParts, SPLIT_METRICS, type SplitMetric } from '../metrics/merge.js';
import { randomSeed } from '../math/sampling.js';
import { type Device, deviceName } from '../runtime/device.js';
import { type BatchOutcome, type BatchOutcomeMessage, type BatchValue, type MetricTask, type MetricValue, type Outcome, type ProviderValue, type Task, type TaskValue, WORKER_ENV, type WorkerState } from './protocol.js';

/** Chunks of a task done so far, as the worker reports them (stage: which pass of an audit). */
export interface TaskProgress {
  done: number;
  total: number;
  stage?: string;
}
export type OnTaskProgress = (progress: TaskProgress) => void;

/** Worker → pool progress message, sent with process.send beside tinypool's own messages. */
const isOutcome = (message: unknown): message is BatchOutcomeMessage =>
  typeof message === 'object' && message !== null && (message as { kind?: unknown }).kind === 'batch-outcome';

const isProgress = (message: unknown): message is { kind: 'progress' } & TaskProgress =>
  typeof message === 'object' && message !== null && (message as { kind?: unknown }).kind === 'progress';

export interface PoolOptions {
  /** One lane per device; `--device cuda:0,cuda:1` gives two. */
  devices: Device[];
  /** Worker processes per device. */
  workersPerDevice: number;
  /** Tasks that may wait for a worker, over all lanes; one more gets 503. */
  maxQueue: number;
  /** Tasks one client may have queued or running at once; 0: no limit. */
  maxPerClient?: number;
  /** A worker whose resident memory passes this after a task is replaced (bytes; 0: never). */
  maxWorkerRss?: number;
  /** Milliseconds a task may run once a worker has it. */
  taskTimeoutMs: number;
  /** Sessions each worker keeps open. */
  sessionCacheSize?: number;
  /** Limits of the upload checks (onnx/safety.ts); defaults where absent. */
  safety?: Partial<SafetySettings>;
  /** onnxruntime threads per run (0: onnxruntime decides). */
  intraOpThreads?: number;
  /** Extra environment for the workers. */
  env?: Record<string, string>;
  /** Split a request over idle lanes only when each gets at least this many samples (default 8; 0: never split). */
  splitMinSamples?: number;
  /** Requests one batch task may hold (default 16; 1: no batching across requests). */
  batchMaxRequests?: number;
  /** Milliseconds a free worker waits for more requests to batch with the first (default 0). */
  batchDelayMs?: number;
  /** Only requests of at most this many forward rows are batched (default 1,024: larger ones fill batches alone). */
  batchMaxRows?: number;
}

/** A request that may share a batch task, waiting to be dispatched or running in one. */
interface Member {
  task: MetricTask;
  client: string;
  resolve: (value: TaskValue) => void;
  reject: (err: unknown) => void;
  /** The member left (its client went away): its outcome is dropped. */
  gone?: boolean;
  /** Once dispatched: aborts the batch task when every member has left (its worker is replaced, as for one task). */
  left?: () => void;
  /** Its outcome has come (or the batch failed): counted and settled once. */
  answered?: boolean;
}

/** Requests on one model gathered for one worker: open until `dispatch`. */
interface Gathering {
  key: string;
  lane: Lane;
  members: Member[];
  timer?: NodeJS.Timeout;
}

export interface LaneStatus {
  device: string;
  workers: number;
  pids: number[];
  executionProvider: string | null;
  fallback?: string;
  probeError?: string;
  running: number;
  sessions: Record<number, number>;
}

export interface PoolStatus {
  lanes: LaneStatus[];
  queued: number;
  running: number;
  restarts: number;
  completed: number;
}

interface Lane {
  device: Device;
  pool: Tinypool;
  workers: number;
  running: number;
  executionProvider: string | null;
  fallback?: string;
  probeError?: string;
  /** Sessions cached, by worker pid, as last reported. */
  sessions: Map<number, number>;
  /** Every worker pid this lane has had: more pids than workers means replacements. */
  seen: Set<number>;
  /** A worker is being replaced for its memory: its exit is no crash. */
  recycling?: boolean;
}

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

const cancelled = (task: Task): AuditError =>
  new AuditError('cancelled', `the client closed the connection, so its ${task.kind} task was cancelled`);

export const defaultWorkers = (device: Device): number =>
  device.kind === 'cpu' || device.kind === 'auto' ? Math.max(1, Math.floor(availableParallelism() / 2)) : 1;

export class WorkerPool {
  private readonly lanes: Lane[];
  private restartCount = 0;
  private completedCount = 0;
  /** Moving average of task time, for Retry-After. */
  private averageMs = 1000;
  private closed = false;
  /** Tasks waiting for a free worker, in arrival order; release() picks among them fairly. */
  private readonly waiting: Waiting[] = [];
  /** Batches gathering on a free worker (batchDelayMs), by model. */
  private readonly gathering = new Map<string, Gathering>();
  /** Requests run in batch tasks of more than one, and those tasks (/metrics, bench/). */
  readonly batching = { requests: 0, batches: 0, runs: 0, packedRuns: 0 };
  /** Tasks queued or running, and running only, per client. */
  private readonly inFlight = new Map<string, number>();
  private readonly runningBy = new Map<string, number>();
  /** When each client last got a worker (a counter), to break ties in its disfavour. */
  private readonly servedAt = new Map<string, number>();
  private served = 0;
  /** Called after each finished task (metrics). */
  onTask?: (info: { kind: Task['kind']; ms: number; ok: boolean; rows?: number; forwardMs?: number; batchRows?: number; device?: string; sharedWith?: number }) => void;
  onRestart?: (reason: 'crash' | 'timeout' | 'cancelled' | 'memory') => void;

  constructor(readonly options: PoolOptions) {
    if (options.devices.length === 0) throw new Error('the pool needs at least one device');
    this.lanes = options.devices.map((device) => {
      const workers = options.workersPerDevice;
      const pool = new Tinypool({
        filename: WORKER,
        runtime: 'child_process',
        serialization: 'advanced',
        minThreads: workers,
        maxThreads: workers,
        concurrentTasksPerWorker: 1,
        // Plain node workers: not the parent's loaders or inspector flags (a test runner's, say).
        execArgv: [],
        env: {
          ...(process.env as Record<string, string>),
          ...options.env,
          [WORKER_ENV.device]: deviceName(device),
          [WORKER_ENV.intraOpThreads]: String(options.intraOpThreads ?? 0),
          [WORKER_ENV.sessionCache]: String(options.sessionCacheSize ?? 8),
          [WORKER_ENV.safety]: JSON.stringify(options.safety ?? {}),
        },
      });
      const lane: Lane = { device, pool, workers, running: 0, executionProvider: null, sessions: new Map(), seen: new Set() };
      // A worker that dies while idle is replaced by tinypool; without a listener the event would throw.
      pool.on('error', () => this.countRestarts(lane, lane.recycling ? 'memory' : 'crash'));
      this.countRestarts(lane, 'crash');
      return lane;
    });
  }

  /** Open a tiny model on every lane: which execution provider each device really gets. */
  async openProviders(): Promise<void> {
    await Promise.all(
      this.lanes.map(async (lane) => {
        try {
          lane.running++;
          const value = (await this.runOn(lane, { kind: 'provider' })) as ProviderValue;
          lane.executionProvider = value.executionProvider;
          if (value.fallback) lane.fallback = value.fallback;
          delete lane.probeError;
        } catch (err) {
          lane.probeError = (err as Error).message;
        }
      }),
    );
  }

  describe(path: string): Promise<ModelDescription> {
    return this.run({ kind: 'describe', path }) as Promise<ModelDescription>;
  }

  /**
   * A metric of the registry: its result, or with format 'html' its report. `client` is the
   * fair-share key; `onProgress` hears the chunks the worker reports done.
   */
  evaluate<N extends MetricName>(
    task: MetricTask & { kind: N; format?: 'json' },
    cancel?: AbortSignal,
    client?: string,
    onProgress?: OnTaskProgress,
  ): Promise<MetricResults[N]>;
  evaluate(task: MetricTask, cancel?: AbortSignal, client?: string, onProgress?: OnTaskProgress): Promise<MetricValue>;
  evaluate(task: MetricTask, cancel?: AbortSignal, client?: string, onProgress?: OnTaskProgress): Promise<MetricValue> {
    const split = this.splitLanes(task);
    if (split) return this.evaluateSplit(task, split.samples, split.lanes, cancel, client, onProgress);
    const key = onProgress ? null : this.batchKey(task);
    if (key !== null) return this.runBatched(task, key, cancel, client) as Promise<MetricValue>;
    // The worker's outcome crosses the process boundary as data: its shape is the metric's result.
    return this.run(task, cancel, client, onProgress) as Promise<MetricValue>;
  }

  /** How many idle lanes a request is split over, if it is (see the header); null: one lane. */
  private splitLanes(task: MetricTask): { samples: number; lanes: number } | null {
    const perLane = this.options.splitMinSamples ?? 8;
    if (perLane <= 0 || this.lanes.length < 2 || this.closed || task.sampleRange || task.format === 'html') return null;
    if (!(SPLIT_METRICS as readonly string[]).includes(task.kind)) return null;
    const samples = requestSamples(task.request);
    if (samples === null) return null;
    const idle = this.lanes.filter((l) => l.running < l.workers).length;
    const lanes = Math.min(idle, Math.floor(samples / perLane));
    return lanes >= 2 ? { samples, lanes } : null;
  }

  /**
   * The parts on `count` free lanes at once (one admission for the client), merged; any part that
   * fails for its own reasons makes the request run whole on one lane instead.
   */
  private async evaluateSplit(task: MetricTask, samples: number, count: number, cancel?: AbortSignal, client = '', onProgress?: OnTaskProgress): Promise<MetricValue> {
    if (cancel?.aborted) throw cancelled(task);
    // One seed for every part: the same latents and directions as one lane would draw.
    const whole: MetricTask = { ...task, request: { ...task.request, seed: task.request.seed ?? randomSeed() } };
    this.admit(client);
    let failure: unknown = null;
    try {
      const lanes = this.lanes.filter((l) => l.running < l.workers).slice(0, count);
      for (const lane of lanes) lane.running++;
      bump(this.runningBy, client, 1);
      this.servedAt.set(client, ++this.served);
      const progress = partProgress(lanes.length, onProgress);
      try {
        const settled = await Promise.allSettled(
          splitSamples(samples, lanes.length).map((range, i) => {
            const n = range.to - range.from;
            // A part's share of the row limit: it refuses whenever the whole would (and then the whole runs).
            const limits = { ...whole.limits, maxRows: Math.max(1, Math.floor((whole.limits.maxRows * n) / samples)) };
            return this.runOn(lanes[i], { ...whole, limits, sampleRange: range }, cancel, progress(i));
          }),
        );
        if (settled.every((s) => s.status === 'fulfilled')) {
          const parts = settled.map((s) => (s as PromiseFulfilledResult<TaskValue>).value);
          return mergeParts(task.kind as SplitMetric, parts as never[]) as MetricValue;
        }
        const reasons = settled.filter((s) => s.status === 'rejected').map((s) => (s as PromiseRejectedResult).reason as AuditError);
        // The part's own limits or mode refuse: the whole request decides. Anything else is the request's failure.
        failure = reasons.find((e) => !(e instanceof AuditError) || !WHOLE_DECIDES.has(e.code)) ?? null;
      } finally {
        bump(this.runningBy, client, -1);
      }
    } finally {
      if (bump(this.inFlight, client, -1) === 0) this.servedAt.delete(client);
    }
    if (cancel?.aborted) throw cancelled(task);
    if (failure) throw failure;
    return this.run(whole, cancel, client, onProgress) as Promise<MetricValue>;
  }

  /** A release gate's bootstrap, off the event loop. */
  compare(modelId: string, input: CompareInput, cancel?: AbortSignal, client?: string, onProgress?: OnTaskProgress): Promise<CompareOutput> {
    return this.run({ kind: 'compare', modelId, input }, cancel, client, onProgress) as Promise<CompareOutput>;
  }

  /**
   * Run a task on the first free worker; AuditError 503 when the queue is full. `cancel` (the
   * client went away) drops a waiting task, or stops a running one and replaces its worker.
   * `client` (an address) gets a fair share of the workers; tasks without one share a client.
   * `onProgress` hears the chunks the worker reports done.
   */
  async run(task: Task, cancel?: AbortSignal, client = '', onProgress?: OnTaskProgress): Promise<TaskValue> {
    if (cancel?.aborted) throw cancelled(task);
    this.admit(client);
    try {
      const lane = await this.acquire(task, client, cancel);
      bump(this.runningBy, client, 1);
      this.servedAt.set(client, ++this.served);
      try {
        return await this.runOn(lane, task, cancel, onProgress);
      } finally {
        bump(this.runningBy, client, -1);
      }
    } finally {
      if (bump(this.inFlight, client, -1) === 0) this.servedAt.delete(client);
    }
  }

  /** The per-client limit: counted from admission to the end of the task, queued or running. */
  private admit(client: string): void {
    const limit = this.options.maxPerClient ?? 0;
    const mine = this.inFlight.get(client) ?? 0;
    if (limit > 0 && client !== '' && mine >= limit) {
      throw new AuditError(
        'client_limit',
        `this client (${client}) already has ${mine} requests queued or running, the most one client may have (per-client limit ${limit}, --max-per-client); wait for one to finish`,
        { retryAfter: this.retryAfterSeconds(), limit },
      );
    }
    bump(this.inFlight, client, 1);
  }

  private acquire(task: Task, client: string, cancel?: AbortSignal): Promise<Lane> {
    if (this.closed) throw new AuditError('shutting_down', 'the server is shutting down');
    const free = this.freeLane();
    if (free) {
      free.running++;
      return Promise.resolve(free);
    }
    if (this.waiting.length >= this.options.maxQueue) throw this.overloaded();
    return new Promise((resolve, reject) => {
      const leave = (): void => {
        this.waiting.splice(this.waiting.indexOf(entry), 1);
        reject(cancelled(task));
      };
      const entry: Waiting = {
        client,
        member: null,
        take: (lane: Lane): void => {
          cancel?.removeEventListener('abort', leave);
          resolve(lane);
        },
      };
      cancel?.addEventListener('abort', leave, { once: true });
      this.waiting.push(entry);
    });
  }

  /**
   * A worker is free again: hand it to the waiting task whose client has the fewest running; among
   * those, the client served longest ago; among its tasks, the earliest.
   */
  private release(lane: Lane): void {
    if (this.waiting.length === 0) {
      lane.running--;
      return;
    }
    const rank = (client: string): [number, number] => [this.runningBy.get(client) ?? 0, this.servedAt.get(client) ?? 0];
    let best = 0;
    for (let i = 1; i < this.waiting.length; i++) {
      const [running, served] = rank(this.waiting[i].client);
      const [bestRunning, bestServed] = rank(this.waiting[best].client);
      if (running < bestRunning || (running === bestRunning && served < bestServed)) best = i;
    }
    const [next] = this.waiting.splice(best, 1);
    if (next.member === null) return next.take(lane);
    // A request that may be batched takes with it the others waiting on the same model.
    const { key } = next;
    const members = [next.member];
    const max = this.options.batchMaxRequests ?? 16;
    for (let i = 0; i < this.waiting.length && members.length < max; ) {
      const other = this.waiting[i];
      if (other.member !== null && other.key === key) {
        this.waiting.splice(i, 1);
        members.push(other.member);
      } else i++;
    }
    this.dispatch({ key, lane, members });
  }

  /**
   * Which requests may share a batch task: a penalty as JSON, small enough that it would not fill
   * batches alone, stacked unless the model says otherwise; the key is its session. Null: alone.
   */
  private batchKey(task: MetricTask): string | null {
    if ((this.options.batchMaxRequests ?? 16) <= 1 || task.kind !== 'penalty' || task.format === 'html' || task.sampleRange) return null;
    const samples = requestSamples(task.request);
    if (samples === null) return null;
    const k = task.request.k ?? DEFAULTS.k;
    const rows = samples * (2 * k + 1) * (1 + (task.request.epsilons?.length ?? 0));
    if (rows > (this.options.batchMaxRows ?? 1024)) return null;
    // One session per batch task: the same model, layers and wrt (a worker's session cache could
    // otherwise evict a session another request of the batch still runs on).
    const { layers, wrt } = task.request;
    return JSON.stringify([task.modelId, layers ?? null, wrt ?? null]);
  }

  /**
   * A request that may share a batch task (see the header): it joins the batch gathering on its
   * model, or gathers one on a free worker, or waits for a worker in the one queue, where a
   * freed worker takes it with the others waiting on the same model.
   */
  private async runBatched(task: MetricTask, key: string, cancel?: AbortSignal, client = ''): Promise<TaskValue> {
    if (cancel?.aborted) throw cancelled(task);
    if (this.closed) throw new AuditError('shutting_down', 'the server is shutting down');
    this.admit(client);
    try {
      return await new Promise<TaskValue>((resolve, reject) => {
        const member: Member = { task, client, resolve, reject };
        const max = this.options.batchMaxRequests ?? 16;
        const leave = (): void => {
          member.gone = true;
          const at = this.waiting.findIndex((w) => w.member === member);
          if (at >= 0) this.waiting.splice(at, 1);
          const open = this.gathering.get(key);
          if (open && open.members.includes(member)) open.members.splice(open.members.indexOf(member), 1);
          member.left?.();
          reject(cancelled(task));
        };
        cancel?.addEventListener('abort', leave, { once: true });
        const done = (settle: () => void): void => {
          cancel?.removeEventListener('abort', leave);
          settle();
        };
        member.resolve = (value) => done(() => resolve(value));
        member.reject = (err) => done(() => reject(err));
        const open = this.gathering.get(key);
        if (open) {
          open.members.push(member);
          if (open.members.length >= max) this.dispatch(open);
          return;
        }
        const lane = this.freeLane();
        if (lane) {
          lane.running++;
          const gathering: Gathering = { key, lane, members: [member] };
          const delay = this.options.batchDelayMs ?? 0;
          if (delay <= 0) return this.dispatch(gathering);
          this.gathering.set(key, gathering);
          gathering.timer = setTimeout(() => this.dispatch(gathering), delay);
          return;
        }
        if (this.waiting.length >= this.options.maxQueue) {
          cancel?.removeEventListener('abort', leave);
          return reject(this.overloaded());
        }
        this.waiting.push({ client, member, key });
      });
    } finally {
      if (bump(this.inFlight, client, -1) === 0) this.servedAt.delete(client);
    }
  }

  /** Run a gathered batch on its lane (whose `running` already counts it): alone when it holds one request. */
  private dispatch(gathering: Gathering): void {
    clearTimeout(gathering.timer);
    if (this.gathering.get(gathering.key) === gathering) this.gathering.delete(gathering.key);
    const { lane } = gathering;
    const members = gathering.members.filter((m) => !m.gone);
    if (members.length === 0) return this.release(lane);
    for (const m of members) {
      bump(this.runningBy, m.client, 1);
      this.servedAt.set(m.client, ++this.served);
    }
    const finished = (m: Member): void => void bump(this.runningBy, m.client, -1);
    // Nobody left to answer: stop the task and replace its worker, as for a task alone.
    const abandoned = new AbortController();
    for (const m of members) m.left = () => members.every((x) => x.gone) && abandoned.abort();
    if (members.length === 1) {
      const [m] = members;
      this.runOn(lane, m.task, abandoned.signal).then(m.resolve, m.reject).finally(() => finished(m));
      return;
    }
    this.batching.requests += members.length;
    this.batching.batches++;
    // Each request is answered when its own outcome arrives; the batch ends when all have.
    const answer = (i: number, outcome: BatchOutcome, ms: number): void => {
      const m = members[i];
      if (m.answered) return;
      m.answered = true;
      finished(m);
      this.taskDone(m.task.kind, ms, outcome.ok ? outcome.value : null, lane, members.length - 1);
      if (outcome.ok) m.resolve(outcome.value);
      else m.reject(AuditError.relayed(outcome.error));
    };
    const started = performance.now();
    this.runOn(lane, { kind: 'batch', tasks: members.map((m) => m.task) }, abandoned.signal, undefined, answer).then(
      (value) => {
        const batch = value as BatchValue;
        this.batching.runs += batch.runs;
        this.batching.packedRuns += batch.packed;
        batch.outcomes.forEach((outcome, i) => outcome && answer(i, outcome, performance.now() - started));
      },
      (err: unknown) =>
        members.forEach((m) => {
          if (m.answered) return;
          m.answered = true;
          finished(m);
          m.reject(err);
        }),
    );
  }

  private freeLane(): Lane | undefined {
    return this.lanes.filter((l) => l.running < l.workers).sort((a, b) => a.running / a.workers - b.running / b.workers)[0];
  }

  private overloaded(): AuditError {
    const busy = this.lanes.reduce((n, l) => n + l.running, 0);
    return new AuditError(
      'overloaded',
      `all ${busy} workers are busy and ${this.waiting.length} requests are waiting (queue limit ${this.options.maxQueue}); retry later`,
      { retryAfter: this.retryAfterSeconds() },
    );
  }

  /** Runs on a lane whose `running` count already includes this task. */
  private async runOn(
    lane: Lane,
    task: Task,
    cancel?: AbortSignal,
    onProgress?: OnTaskProgress,
    onOutcome?: (index: number, outcome: BatchOutcome, ms: number) => void,
  ): Promise<TaskValue> {
    const started = performance.now();
    let outcome: Outcome<TaskValue>;
    const timeout = AbortSignal.timeout(this.options.taskTimeoutMs);
    try {
      const signal = cancel ? AbortSignal.any([timeout, cancel]) : timeout;
      // Nothing done yet, but a worker has the task: for a caller that tells queued from running.
      onProgress?.({ done: 0, total: 0 });
      // Always a channel of this task's own, so a worker's messages never reach an earlier task's listener.
      const channel = {
        postMessage: (message: unknown) => {
          if (isProgress(message)) onProgress?.({ done: message.done, total: message.total, ...(message.stage ? { stage: message.stage } : {}) });
          else if (isOutcome(message)) onOutcome?.(message.index, message.outcome, performance.now() - started);
        },
      };
      outcome = (await lane.pool.run(task, { signal, channel })) as Outcome<TaskValue>;
    } catch (err) {
      let error: AuditError;
      if (cancel?.aborted && !timeout.aborted) {
        this.countRestarts(lane, 'cancelled');
        error = cancelled(task);
      } else {
        error = this.failure(lane, task, err as Error);
      }
      this.release(lane);
      throw error;
    }
    // Before the worker takes another task: onnxruntime's native memory does not always go back.
    if (this.options.maxWorkerRss && outcome.worker.rss > this.options.maxWorkerRss) await this.recycle(lane, outcome.worker.pid);
    this.release(lane);
    const ms = performance.now() - started;
    this.completedCount++;
    this.averageMs = 0.8 * this.averageMs + 0.2 * ms;
    lane.sessions.set(outcome.worker.pid, outcome.worker.sessions);
    if (!outcome.ok) {
      this.onTask?.({ kind: task.kind, ms, ok: false });
      throw AuditError.relayed(outcome.error);
    }
    // A batch's requests are counted as their outcomes arrive (dispatch).
    if (task.kind !== 'batch') this.taskDone(task.kind, ms, outcome.value, lane, 0);
    return outcome.value;
  }

  private taskDone(kind: Task['kind'], ms: number, value: TaskValue | null, lane: Lane, sharedWith: number): void {
    if (value === null) return this.onTask?.({ kind, ms, ok: false });
    const result = value as { rows?: number; batchRows?: number; timings?: { forwardMs?: number } };
    this.onTask?.({ kind, ms, ok: true, rows: result.rows, forwardMs: result.timings?.forwardMs, batchRows: result.batchRows, device: deviceName(lane.device), sharedWith });
  }

  /** Replace one idle worker (its slot is still held, so no task can reach it meanwhile). */
  private async recycle(lane: Lane, pid: number): Promise<void> {
    const pids = (): number[] => lane.pool.threads.map((t) => (t as unknown as { threadId: number }).threadId);
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return; // already gone
    }
    lane.recycling = true;
    const started = Date.now();
    // Bounded: tinypool replaces a dead idle worker within milliseconds.
    while ((pids().includes(pid) || pids().length < lane.workers) && Date.now() - started < 10_000) await new Promise((r) => setTimeout(r, 10));
    this.countRestarts(lane, 'memory');
    lane.recycling = false;
  }

  /** New pids replace workers that died or were killed; the first `workers` pids are the originals. */
  private countRestarts(lane: Lane, reason: 'crash' | 'timeout' | 'cancelled' | 'memory'): void {
    for (const thread of lane.pool.threads) {
      const pid = (thread as unknown as { threadId: number }).threadId;
      if (lane.seen.has(pid)) continue;
      lane.seen.add(pid);
      if (lane.seen.size > lane.workers) {
        this.restartCount++;
        this.onRestart?.(reason);
      }
    }
  }

  private failure(lane: Lane, task: Task, err: Error): AuditError {
    if (err.name === 'AbortError') {
      this.countRestarts(lane, 'timeout');
      return new AuditError(
        'timeout',
        `the ${task.kind} task ran past this server's time limit of ${this.options.taskTimeoutMs} ms and was cancelled; ask for fewer samples or a smaller k, or raise --request-timeout`,
        { limitMs: this.options.taskTimeoutMs },
      );
    }
    if (/exited unexpectedly/.test(err.message)) {
      this.countRestarts(lane, 'crash');
      return new AuditError(
        'worker_crashed',
        `the worker running this ${task.kind} task died (onnxruntime crashed or aborted on this model); the worker was replaced and other requests are unaffected`,
      );
    }
    if (/Terminating worker/.test(err.message)) return new AuditError('shutting_down', 'the server is shutting down');
    return new AuditError('internal', `the worker pool failed: ${err.message}`);
  }

  retryAfterSeconds(): number {
    const workers = this.lanes.reduce((n, l) => n + l.workers, 0);
    const waiting = this.waiting.length + 1;
    return Math.min(60, Math.max(1, Math.ceil((this.averageMs * waiting) / workers / 1000)));
  }

  status(): PoolStatus {
    const lanes = this.lanes.map((lane): LaneStatus => {
      const pids = lane.pool.threads.map((t) => (t as unknown as { threadId: number }).threadId);
      return {
        device: deviceName(lane.device),
        workers: pids.length,
        pids,
        executionProvider: lane.executionProvider,
        ...(lane.fallback ? { fallback: lane.fallback } : {}),
        ...(lane.probeError ? { probeError: lane.probeError } : {}),
        running: lane.running,
        sessions: Object.fromEntries([...lane.sessions].filter(([pid]) => pids.includes(pid))),
      };
    });
    return {
      lanes,
      queued: this.waiting.length,
      running: lanes.reduce((n, l) => n + l.running, 0),
      restarts: this.restartCount,
      completed: this.completedCount,
    };
  }

  /** Ready: every lane has its workers and a provider that opened. */
  ready(): boolean {
    return !this.closed && this.lanes.every((l) => l.executionProvider !== null && l.pool.threads.length > 0);
  }

  async destroy(): Promise<void> {
    this.closed = true;
    // Nothing new starts; tasks still waiting were accepted, so they run before the workers stop.
    while (this.waiting.length > 0 || this.lanes.some((l) => l.running > 0)) await new Promise((r) => setTimeout(r, 20));
    await Promise.all(this.lanes.map((l) => l.pool.destroy()));
  }
}

export type { WorkerState };

/** A task waiting for a worker: one that runs alone (`take`), or a request that may be batched (`member`, by `key`). */
type Waiting = { client: string } & ({ member: null; take: (lane: Lane) => void } | { member: Member; key: string });

/** Refusals of a part that the whole request may not share: it runs whole on one lane to find out. */
const WHOLE_DECIDES = new Set(['split_refused', 'limit_exceeded', 'hessian_too_large', 'memory_budget_exceeded']);

/** Samples of a request, when the server can tell without the model; null: do not split. */
export function requestSamples(request: MetricRequest): number | null {
  if (request.mode === 'per-pass') return null;
  let samples: number;
  const latents = request.latents;
  if (latents === undefined) {
    // Latents drawn from the defaults, unless inputs or a cut could decide N.
    if (request.inputs !== undefined || request.wrt !== undefined) return null;
    samples = DEFAULTS.samples;
  } else {
    samples = 'samples' in latents ? latents.samples : latents.shape[0];
  }
  return request.maxSamples !== undefined ? Math.min(samples, request.maxSamples) : samples;
}

/** [from, to) ranges of `samples` over `parts` lanes, in order, sizes differing by at most one. */
export function splitSamples(samples: number, parts: number): { from: number; to: number; of: number }[] {
  return Array.from({ length: parts }, (_, i) => ({
    from: Math.floor((i * samples) / parts),
    to: Math.floor(((i + 1) * samples) / parts),
    of: samples,
  }));
}

/** The parts' progress as one: chunks done and to do, summed over the parts. */
function partProgress(parts: number, onProgress?: OnTaskProgress): (i: number) => OnTaskProgress | undefined {
  if (!onProgress) return () => undefined;
  const done = new Array<number>(parts).fill(0);
  const total = new Array<number>(parts).fill(0);
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  return (i) => (p) => {
    done[i] = p.done;
    total[i] = p.total;
    onProgress({ done: sum(done), total: sum(total), ...(p.stage ? { stage: p.stage } : {}) });
  };
}

function bump(counts: Map<string, number>, key: string, by: number): number {
  const n = (counts.get(key) ?? 0) + by;
  if (n > 0) counts.set(key, n);
  else counts.delete(key);
  return n;
}
