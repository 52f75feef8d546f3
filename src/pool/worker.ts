/**
 * The worker entry: runs inside a tinypool child process, so every onnxruntime call and every
 * reduction happens off the server's event loop, and a native crash takes down only this process.
 * Outcomes are returned as data ({ok, value | error}) because an AuditError thrown across the
 * process boundary would lose its code and status.
 */
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import { compareAll } from '../gate/compare.js';
import { describeModel } from '../onnx/describe.js';
import type { SafetySettings } from '../onnx/safety.js';
import { type Device, parseDevice } from '../runtime/device.js';
import type { LoadedModel } from '../runtime/model.js';
import { evaluateMetric } from '../metrics/evaluate.js';
import { metric } from '../metrics/registry.js';
import { renderReport } from '../report/index.js';
import { providerCheckModel } from '../runtime/provider-check.js';
import { type BatchOutcome, type BatchOutcomeMessage, type BatchValue, type ErrorData, type MetricTask, type MetricValue, type Outcome, type Task, type TaskValue, WORKER_ENV, type WorkerState } from './protocol.js';
import { SharedBatches } from '../runtime/shared-batches.js';
import { type OpenSession, SessionCache, type SessionSettings } from '../runtime/session.js';
import { watchParent } from '../runtime/watchdog.js';

// Exit with the server, even in the middle of a blocking session.run (watchdog.ts).
watchParent();

const device: Device = parseDevice(process.env[WORKER_ENV.device] ?? 'cpu');
// No CPU memory arena: memory a large run took goes back after it, instead of staying with the worker.
const settings: SessionSettings = { intraOpThreads: Number(process.env[WORKER_ENV.intraOpThreads] ?? 0), cpuMemArena: false };

/** SessionCache with this worker's settings (a Run does not pass any). */
class WorkerSessions extends SessionCache {
  override get(id: string, bytes: Uint8Array, layers: readonly string[], d: Device): Promise<OpenSession> {
    return super.get(id, bytes, layers, d, settings);
  }
}

/** The same limits at upload and when a stored model is loaded again for a penalty. */
const safety: Partial<SafetySettings> = JSON.parse(process.env[WORKER_ENV.safety] || '{}');
const sessions = new WorkerSessions(Number(process.env[WORKER_ENV.sessionCache] ?? 8));
/** Loaded models by id, as many as there are sessions; bytes are read from the store on a miss. */
const models = new Map<string, LoadedModel>();

async function loaded(id: string, path: string): Promise<LoadedModel> {
  let model = models.get(id);
  if (model) {
    models.delete(id);
  } else {
    const bytes = new Uint8Array(await readFile(path).catch((err: NodeJS.ErrnoException) => {
      // Deleted while the request waited in the queue: the model is gone, which is the client's 404.
      if (err.code === 'ENOENT') throw new AuditError('unknown_model', `model '${id}' was deleted before its request ran; upload it again with POST /v1/models`);
      throw err;
    }));
    model = { id, bytes, description: describeModel(bytes, safety) };
  }
  models.set(id, model);
  while (models.size > sessions.capacity) models.delete(models.keys().next().value as string);
  return model;
}

function faults(): Record<string, string> {
  const spec = process.env[WORKER_ENV.faults];
  if (!spec) return {};
  return Object.fromEntries(spec.split(',').map((pair) => pair.split('=') as [string, string]));
}

function injectFault(modelId: string): void {
  const f = faults();
  if (f.abort === modelId) process.abort();
  // Blocks like a native call that never returns; only killing the process ends it.
  if (f.hang === modelId) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  // A slow model: two seconds of blocked worker, then the normal run.
  if (f.delay === modelId) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000);
}

/** Chunks done, to the pool (which forwards them to the task's onProgress); a no-op outside a child process. */
const reportProgress = (done: number, total: number, stage?: string): void => {
  process.send?.({ kind: 'progress', done, total, ...(stage ? { stage } : {}) });
};

async function execute(task: Task): Promise<TaskValue> {
  switch (task.kind) {
    case 'provider': {
      const open = await sessions.get('provider-check', providerCheckModel(), [], device);
      await open.session.run({ x: new ort.Tensor('float32', new Float32Array([1]), [1]) });
      return { executionProvider: open.executionProvider, ...(open.fallback ? { fallback: open.fallback } : {}) };
    }
    case 'describe':
      return describeModel(new Uint8Array(await readFile(task.path)), safety);
    case 'compare':
      injectFault(`compare:${task.modelId}`);
      return compareAll(task.input);
    case 'batch':
      return runBatch(task.tasks);
    default:
      return runMetric(task);
  }
}

async function runMetric(task: MetricTask, shared?: SharedBatches): Promise<MetricValue> {
  injectFault(task.modelId);
  const model = await loaded(task.modelId, task.modelPath);
  const html = task.format === 'html';
  const result = await evaluateMetric(task.kind, model, task.request, {
    device,
    sessions,
    limits: task.limits,
    previews: html,
    onProgress: reportProgress,
    ...(task.sampleRange ? { sampleRange: task.sampleRange } : {}),
    ...(shared ? { shared } : {}),
  });
  // Rows that interact (batch statistics) make a part's figures depend on the other samples: the pool runs it whole.
  if (task.sampleRange && (result as { mode?: string }).mode !== 'stacked') {
    throw new AuditError('split_refused', `the ${task.kind} task runs pass by pass (rows interact), so its samples cannot be split over lanes`);
  }
  // Rendered here, so the preview images never cross the process boundary and the event loop never builds PNGs.
  if (!html) return { ...result };
  return { html: renderReport({ ...(task.modelName ? { modelName: task.modelName } : {}), ...metric(task.kind).report(result) }) };
}

/**
 * Every task at once, their stacked batches shared; one task's failure is its own outcome. Each
 * outcome goes to the pool as soon as its task ends (BatchOutcomeMessage); only where there is
 * no parent to send to does the value carry them.
 */
async function runBatch(tasks: MetricTask[]): Promise<BatchValue> {
  const shared = new SharedBatches();
  const outcomes = await Promise.all(
    tasks.map(async (task, index): Promise<BatchOutcome | null> => {
      const outcome: BatchOutcome = await runMetric(task, shared).then(
        (value) => ({ ok: true as const, value }),
        (err: unknown) => ({ ok: false as const, error: errorData(err) }),
      );
      if (!process.send) return outcome;
      process.send({ kind: 'batch-outcome', index, outcome } satisfies BatchOutcomeMessage);
      return null;
    }),
  );
  return { outcomes, runs: shared.stats.runs, packed: shared.stats.packed };
}

function errorData(err: unknown): ErrorData {
  return err instanceof AuditError
    ? { code: err.code, message: err.message, status: err.status, ...(err.details === undefined ? {} : { details: err.details }) }
    : { code: 'internal', message: `the worker failed: ${(err as Error).message ?? String(err)}`, status: 500 };
}

export default async function handle(task: Task): Promise<Outcome<TaskValue>> {
  const worker = (): WorkerState => ({
    pid: process.pid,
    device: process.env[WORKER_ENV.device] ?? 'cpu',
    sessions: sessions.size,
    rss: process.memoryUsage.rss(),
  });
  try {
    return { ok: true, value: await execute(task), worker: worker() };
  } catch (err) {
    return { ok: false, error: errorData(err), worker: worker() };
  }
}
