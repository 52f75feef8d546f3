/**
 * The worker entry: runs inside a tinypool child process, so every onnxruntime call and every
 * reduction happens off the server's event loop, and a native crash takes down only this process.
 * Outcomes are returned as data ({ok, value | error}) because an AuditError thrown across the
 * process boundary would lose its code and status.
 */
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { AuditError } from '../errors.js';
import { describeModel } from '../onnx/describe.js';
import type { SafetySettings } from '../onnx/safety.js';
import { type Device, parseDevice } from './device.js';
import { evaluatePenalty } from './evaluate.js';
import type { LoadedModel } from './model.js';
import { runAuditTask } from './audit-task.js';
import { probeModel } from './probe.js';
import { type ErrorData, type Outcome, type Task, type TaskValue, WORKER_ENV, type WorkerState } from './worker-protocol.js';
import { type OpenSession, SessionCache, type SessionSettings } from './session.js';

const device: Device = parseDevice(process.env[WORKER_ENV.device] ?? 'cpu');
const settings: SessionSettings = { intraOpThreads: Number(process.env[WORKER_ENV.intraOpThreads] ?? 0) };

/** SessionCache with this worker's settings (evaluatePenalty does not pass any). */
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
    const bytes = new Uint8Array(await readFile(path));
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
    case 'probe': {
      const open = await sessions.get('probe', probeModel(), [], device);
      await open.session.run({ x: new ort.Tensor('float32', new Float32Array([1]), [1]) });
      return { executionProvider: open.executionProvider, ...(open.fallback ? { fallback: open.fallback } : {}) };
    }
    case 'describe':
      return describeModel(new Uint8Array(await readFile(task.path)), safety);
    case 'penalty': {
      injectFault(task.modelId);
      const model = await loaded(task.modelId, task.modelPath);
      return evaluatePenalty(model, task.request, { device, sessions, limits: task.limits, onProgress: reportProgress });
    }
    case 'hessian':
    case 'activeness':
    case 'orthogonality':
    case 'audit': {
      injectFault(task.modelId);
      return runAuditTask(task, await loaded(task.modelId, task.modelPath), { device, sessions, limits: task.limits, onProgress: reportProgress });
    }
  }
}

export default async function handle(task: Task): Promise<Outcome<TaskValue>> {
  const worker = (): WorkerState => ({ pid: process.pid, device: process.env[WORKER_ENV.device] ?? 'cpu', sessions: sessions.size });
  try {
    return { ok: true, value: await execute(task), worker: worker() };
  } catch (err) {
    const error: ErrorData =
      err instanceof AuditError
        ? { code: err.code, message: err.message, status: err.status, ...(err.details === undefined ? {} : { details: err.details }) }
        : { code: 'internal', message: `the worker failed: ${(err as Error).message ?? String(err)}`, status: 500 };
    return { ok: false, error, worker: worker() };
  }
}
