/**
 * The worker pool: one tinypool per device (a "lane"), each running its workers as child
 * processes. A native crash in onnxruntime then ends one process, not the server: the task fails
 * with `worker_crashed` and tinypool starts a replacement. Tasks go to the least busy lane; the
 * queue across lanes is bounded (503 beyond it) and every task has a time limit, after which it
 * is cancelled and its worker replaced.
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import Tinypool from 'tinypool';
import { AuditError } from '../errors.js';
import type { ModelDescription } from '../onnx/describe.js';
import { type Device, deviceName } from './device.js';
import type { PenaltyResult } from './evaluate.js';
import type { Limits, PenaltyRequest } from './request.js';
import { type Outcome, type ProbeValue, type Task, type TaskValue, WORKER_ENV, type WorkerState } from './worker.js';

export interface PoolOptions {
  /** One lane per device; `--device cuda:0,cuda:1` gives two. */
  devices: Device[];
  /** Worker processes per device. */
  workersPerDevice: number;
  /** Tasks that may wait for a worker, over all lanes; one more gets 503. */
  maxQueue: number;
  /** Milliseconds a task may take, waiting included. */
  taskTimeoutMs: number;
  /** Sessions each worker keeps open. */
  sessionCacheSize?: number;
  /** onnxruntime threads per run (0: onnxruntime decides). */
  intraOpThreads?: number;
  /** Extra environment for the workers. */
  env?: Record<string, string>;
}

export interface LaneStatus {
  device: string;
  workers: number;
  pids: number[];
  executionProvider: string | null;
  fallback?: string;
  probeError?: string;
  running: number;
  queued: number;
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
  pending: number;
  executionProvider: string | null;
  fallback?: string;
  probeError?: string;
  /** Sessions cached, by worker pid, as last reported. */
  sessions: Map<number, number>;
}

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

export const defaultWorkers = (device: Device): number =>
  device.kind === 'cpu' || device.kind === 'auto' ? Math.max(1, Math.floor(availableParallelism() / 2)) : 1;

export class WorkerPool {
  private readonly lanes: Lane[];
  private restartCount = 0;
  private completedCount = 0;
  /** Moving average of task time, for Retry-After. */
  private averageMs = 1000;
  private closed = false;
  /** Called after each finished task (metrics). */
  onTask?: (info: { kind: Task['kind']; ms: number; ok: boolean; rows?: number; forwardMs?: number }) => void;
  onRestart?: (reason: 'crash' | 'timeout') => void;

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
        env: {
          ...(process.env as Record<string, string>),
          ...options.env,
          [WORKER_ENV.device]: deviceName(device),
          [WORKER_ENV.intraOpThreads]: String(options.intraOpThreads ?? 0),
          [WORKER_ENV.sessionCache]: String(options.sessionCacheSize ?? 8),
        },
      });
      // A worker that dies while idle is replaced by tinypool; without a listener the event would throw.
      pool.on('error', () => {
        this.restartCount++;
        this.onRestart?.('crash');
      });
      return { device, pool, workers, pending: 0, executionProvider: null, sessions: new Map() };
    });
  }

  /** Open the probe model on every lane: which provider each device really gets. */
  async probe(): Promise<void> {
    await Promise.all(
      this.lanes.map(async (lane) => {
        try {
          const value = (await this.runOn(lane, { kind: 'probe' })) as ProbeValue;
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

  penalty(modelId: string, modelPath: string, request: PenaltyRequest, limits: Limits): Promise<PenaltyResult> {
    return this.run({ kind: 'penalty', modelId, modelPath, request, limits }) as Promise<PenaltyResult>;
  }

  /** Run a task on the least busy lane; AuditError 503 when every queue is full. */
  run(task: Task): Promise<TaskValue> {
    if (this.closed) throw new AuditError('shutting_down', 'the server is shutting down', 503);
    const lane = this.lanes.reduce((best, l) => (l.pending / l.workers < best.pending / best.workers ? l : best));
    const status = this.status();
    if (lane.pending >= lane.workers && status.queued >= this.options.maxQueue) {
      throw new AuditError(
        'overloaded',
        `all ${status.running} workers are busy and ${status.queued} requests are waiting (queue limit ${this.options.maxQueue}); retry later`,
        503,
        { retryAfter: this.retryAfterSeconds() },
      );
    }
    return this.runOn(lane, task);
  }

  private async runOn(lane: Lane, task: Task): Promise<TaskValue> {
    const started = performance.now();
    lane.pending++;
    let outcome: Outcome<TaskValue>;
    try {
      outcome = (await lane.pool.run(task, { signal: AbortSignal.timeout(this.options.taskTimeoutMs) })) as Outcome<TaskValue>;
    } catch (err) {
      throw this.failure(task, err as Error);
    } finally {
      lane.pending--;
    }
    const ms = performance.now() - started;
    this.completedCount++;
    this.averageMs = 0.8 * this.averageMs + 0.2 * ms;
    lane.sessions.set(outcome.worker.pid, outcome.worker.sessions);
    if (!outcome.ok) {
      this.onTask?.({ kind: task.kind, ms, ok: false });
      const { code, message, status, details } = outcome.error;
      throw new AuditError(code, message, status as AuditError['status'], details);
    }
    const result = outcome.value as Partial<PenaltyResult>;
    this.onTask?.({ kind: task.kind, ms, ok: true, rows: result.rows, forwardMs: result.timings?.forwardMs });
    return outcome.value;
  }

  private failure(task: Task, err: Error): AuditError {
    if (err.name === 'AbortError') {
      this.restartCount++;
      this.onRestart?.('timeout');
      return new AuditError(
        'timeout',
        `the ${task.kind} task ran past this server's time limit of ${this.options.taskTimeoutMs} ms and was cancelled; ask for fewer samples or a smaller k, or raise --request-timeout`,
        503,
        { limitMs: this.options.taskTimeoutMs },
      );
    }
    if (/exited unexpectedly/.test(err.message)) {
      this.restartCount++;
      this.onRestart?.('crash');
      return new AuditError(
        'worker_crashed',
        `the worker running this ${task.kind} task died (onnxruntime crashed or aborted on this model); the worker was replaced and other requests are unaffected`,
        500,
      );
    }
    if (/Terminating worker/.test(err.message)) return new AuditError('shutting_down', 'the server is shutting down', 503);
    return new AuditError('internal', `the worker pool failed: ${err.message}`, 500);
  }

  retryAfterSeconds(): number {
    const workers = this.lanes.reduce((n, l) => n + l.workers, 0);
    const waiting = this.status().queued + 1;
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
        running: Math.min(lane.pending, lane.workers),
        queued: Math.max(0, lane.pending - lane.workers),
        sessions: Object.fromEntries([...lane.sessions].filter(([pid]) => pids.includes(pid))),
      };
    });
    return {
      lanes,
      queued: lanes.reduce((n, l) => n + l.queued, 0),
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
    await Promise.all(this.lanes.map((l) => l.pool.destroy()));
  }
}

export type { WorkerState };
