/**
 * What the server and its workers exchange: tasks, outcomes, and the environment a pool sets.
 * Kept apart from worker.ts so that the server process never loads onnxruntime.
 */
import type { Limits, MetricRequest } from '../contract/request.js';
import type { MetricName } from '../metrics/registry.js';
import type { CompareInput, CompareOutput } from '../gate/compare.js';
import type { ModelDescription } from '../onnx/describe.js';
import type { SampleRange } from '../run/sample-range.js';

/** Environment variables a pool sets for its workers. */
export const WORKER_ENV = {
  device: 'HESSIAN_AUDIT_WORKER_DEVICE',
  intraOpThreads: 'HESSIAN_AUDIT_WORKER_THREADS',
  sessionCache: 'HESSIAN_AUDIT_WORKER_SESSIONS',
  /** The upload checks' limits (onnx/safety.ts), as JSON. */
  safety: 'HESSIAN_AUDIT_WORKER_SAFETY',
  /** Test-only fault injection: `abort=<model id>,hang=<model id>,delay=<model id>` (`compare:<candidate id>` for a gate's bootstrap); unset in production. */
  faults: 'HESSIAN_AUDIT_TEST_FAULTS',
} as const;

/** One metric on a stored model: its JSON result, or the HTML report of it. */
export interface MetricTask {
  kind: MetricName;
  modelId: string;
  modelPath: string;
  request: MetricRequest;
  limits: Limits;
  format?: 'json' | 'html';
  /** How the report names the model (the store has only its id). */
  modelName?: string;
  /** One part of a request split over lanes: run only these samples of the resolved request (run/sample-range.ts). */
  sampleRange?: SampleRange;
}

/**
 * Metric tasks on the same model that run together in one worker (dynamic batching, pool.ts):
 * their stacked batches share runs (runtime/shared-batches.ts); each gets its own outcome.
 */
export interface BatchTask {
  kind: 'batch';
  tasks: MetricTask[];
}

/** One task's outcome in a batch task. */
export type BatchOutcome = { ok: true; value: MetricValue } | { ok: false; error: ErrorData };

/**
 * Sent by the worker (process.send) as each task of a batch ends, so that a request is answered
 * when its own work is done, not when the whole batch is.
 */
export interface BatchOutcomeMessage {
  kind: 'batch-outcome';
  index: number;
  outcome: BatchOutcome;
}

/** A batch task's value: the outcomes the worker could not send as they ended (none in a child process), and its runs. */
export interface BatchValue {
  outcomes: (BatchOutcome | null)[];
  /** session.run calls the batch made for its stacked batches, and how many of them were packed. */
  runs: number;
  packed: number;
}

export type Task =
  | { kind: 'provider' }
  | BatchTask
  | { kind: 'describe'; path: string }
  | MetricTask
  /** The release gate's bootstrap; modelId (the candidate's) only names it for test fault injection. */
  | { kind: 'compare'; modelId: string; input: CompareInput };

export interface WorkerState {
  pid: number;
  device: string;
  sessions: number;
  /** Resident set size after the task, bytes: the pool recycles a worker past its limit. */
  rss: number;
}

export interface ErrorData {
  code: string;
  message: string;
  status: number;
  details?: unknown;
}

export type Outcome<T> = ({ ok: true; value: T } | { ok: false; error: ErrorData }) & { worker: WorkerState };

export interface ProviderValue {
  executionProvider: string;
  fallback?: string;
}

/** A metric's JSON result (typed by the caller), or `{html}` for the report. */
export type MetricValue = { html: string } | Record<string, unknown>;

export type TaskValue = ProviderValue | ModelDescription | MetricValue | CompareOutput | BatchValue;

