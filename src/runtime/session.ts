/**
 * onnxruntime sessions: one per (model, exposed layers, device), created once and reused, never
 * one per request (the seed tips: reuse the same network).
 */
import * as ort from 'onnxruntime-node';
import { AuditError, invalid } from '../contract/errors.js';
import { exposeTensors } from '../onnx/expose.js';
import { applyCudaEnvironment, type CudaSettings, cudaSettingsFromEnv } from './cuda.js';
import { type Device, deviceName, providerChoices, providerError } from './device.js';

export interface OpenSession {
  session: ort.InferenceSession;
  /** The provider that really runs: `cpu`, `cuda:0`, … */
  executionProvider: string;
  /** Why a preferred provider was skipped (auto mode), for the result's warnings. */
  fallback?: string;
  /** Facts learned by probing this session (shapes, row independence), by input signature. */
  facts: Map<string, unknown>;
  /**
   * Sessions derived from this one's model (the estimator suffixes, run/graph-suffix.ts), by key:
   * they live and go with it, so opening one never evicts the session a run is using.
   */
  companions: Map<string, Promise<OpenSession>>;
}

/** Release a session and its companions. */
export async function releaseSession(open: OpenSession): Promise<void> {
  const companions = [...open.companions.values()];
  open.companions.clear();
  await Promise.all(companions.map((c) => c.then(releaseSession).catch(() => undefined)));
  await open.session.release();
}

export interface SessionSettings {
  /** Threads inside one run; 0 lets onnxruntime choose. */
  intraOpThreads?: number;
  /** onnxruntime's CPU memory arena (its default: on); the server's workers turn it off. */
  cpuMemArena?: boolean;
  /** CUDA provider settings (cuda.ts); from HESSIAN_AUDIT_CUDA_* or the defaults when absent. */
  cuda?: CudaSettings;
}

export async function openSession(
  bytes: Uint8Array,
  layers: readonly string[],
  device: Device,
  settings: SessionSettings = {},
): Promise<OpenSession> {
  const model = exposeTensors(bytes, layers);
  const cuda = settings.cuda ?? cudaSettingsFromEnv();
  const choices = providerChoices(device, cuda);
  // Before the CUDA libraries load (they load with the first CUDA session): TF32 off unless asked.
  // This reaches them from a process's main thread (the CLI, the pool's child-process workers).
  if (choices.some((c) => c.name.startsWith('cuda'))) applyCudaEnvironment(cuda);
  let fallback: string | undefined;
  for (const [i, choice] of choices.entries()) {
    const last = i === choices.length - 1;
    try {
      const session = await ort.InferenceSession.create(model, {
        executionProviders: choice.providers,
        graphOptimizationLevel: 'all',
        intraOpNumThreads: settings.intraOpThreads ?? 0,
        ...(settings.cpuMemArena === false ? { enableCpuMemArena: false } : {}),
        // A provider that may fail (auto mode) must not spray native errors on stderr.
        logSeverityLevel: last ? 2 : 4,
      });
      return { session, executionProvider: choice.name, facts: new Map(), companions: new Map(), ...(fallback ? { fallback } : {}) };
    } catch (err) {
      const cause = err as Error;
      if (!last) {
        fallback = `${providerError(choice, cause).message}; ran on ${choices[i + 1].name} instead`;
        continue;
      }
      if (choices.length === 1 && choice.name !== 'cpu') throw providerError(choice, cause);
      throw new AuditError('invalid_model', `onnxruntime cannot load the model: ${cause.message.split('\n')[0]}`);
    }
  }
  throw new Error(`no execution provider for device ${deviceName(device)}`);
}

/** Sessions one process keeps open by default (the server's sessionCacheSize setting). */
export const DEFAULT_MAX_SESSIONS = 8;

/**
 * Least-recently-used cache of open sessions. `capacity` caps how many (model, layers, device)
 * sessions, hence how many distinct models, hold onnxruntime memory at once; the least recently
 * used is released when one more is opened. One evaluation at a time per cache (a worker process
 * runs one task at a time), so an evicted session is never in use.
 */
export class SessionCache {
  private readonly entries = new Map<string, Promise<OpenSession>>();
  /** Values derived from models (graph cuts, learnt shapes), by key; bounded like the sessions. */
  private readonly derivedValues = new Map<string, unknown>();
  /** Sessions released to make room, since the cache was created. */
  evictions = 0;

  /** `settings` apply to every session this cache opens (a deployment's provider settings). */
  constructor(
    readonly capacity = DEFAULT_MAX_SESSIONS,
    readonly settings: SessionSettings = {},
  ) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw invalid(`the session cache capacity must be a whole number of at least 1, got ${capacity}`);
    }
  }

  get(modelId: string, bytes: Uint8Array, layers: readonly string[], device: Device, settings: SessionSettings = this.settings): Promise<OpenSession> {
    const key = `${modelId}|${deviceName(device)}|${[...layers].sort().join('\u0000')}`;
    const cached = this.entries.get(key);
    if (cached) {
      this.entries.delete(key);
      this.entries.set(key, cached);
      return cached;
    }
    // Room is made only once the new session exists: a model onnxruntime refuses evicts nothing.
    const entry = openSession(bytes, layers, device, settings).then(
      (open) => {
        this.evictBeyondCapacity();
        return open;
      },
      (err: unknown) => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
        throw err;
      },
    );
    this.entries.set(key, entry);
    return entry;
  }

  /**
   * A value derived from a model once and reused (a graph cut decodes and re-encodes the model):
   * `make` runs on a miss. Least recently used first out, four per session slot.
   */
  derived<T>(key: string, make: () => T): T {
    if (this.derivedValues.has(key)) {
      const value = this.derivedValues.get(key) as T;
      this.derivedValues.delete(key);
      this.derivedValues.set(key, value);
      return value;
    }
    const value = make();
    this.derivedValues.set(key, value);
    while (this.derivedValues.size > 4 * this.capacity) this.derivedValues.delete(this.derivedValues.keys().next().value as string);
    return value;
  }

  private evictBeyondCapacity(): void {
    while (this.entries.size > this.capacity) {
      const [oldest, session] = this.entries.entries().next().value as [string, Promise<OpenSession>];
      this.entries.delete(oldest);
      this.evictions += 1;
      session.then(releaseSession).catch(() => undefined);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  async clear(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    this.derivedValues.clear();
    await Promise.all(all.map((p) => p.then(releaseSession).catch(() => undefined)));
  }
}
