/**
 * Every setting of the service, with its default. The serve command fills it from flags and
 * environment variables (docs/server.md lists them); tests build it directly.
 */
import type { Device } from '../runtime/device.js';
import { DEFAULT_LIMITS, type Limits } from '../contract/request.js';
import type { SafetySettings } from '../onnx/safety.js';
import type { StoreOptions } from '../store/index.js';
import type { JobLimits } from './jobs.js';
import type { QueueTarget } from './redis-queue.js';

export interface ServerConfig {
  host: string;
  port: number;
  /** One worker lane per device. */
  devices: Device[];
  /** Content-addressed model store (created if missing). */
  modelDir: string;
  /** Bytes the store may hold (models and descriptions); 0: no quota. Past it, uploads get 507. */
  storeQuotaBytes?: number;
  /** Worker processes per device. */
  workers: number;
  /** Requests that may wait for a worker; one more gets 503 with Retry-After. */
  maxQueue: number;
  /** Requests one client (address) may have queued or running; one more gets 503 client_limit. 0: no limit. */
  maxPerClient: number;
  /** A worker whose resident memory passes this after a task is replaced, bytes; 0: never. */
  maxWorkerRssBytes: number;
  /** Small penalty requests on one model that one worker runs together, their batches shared (1: none). */
  batchMaxRequests: number;
  /** Milliseconds a free worker waits for more requests to batch with the first (0: none). */
  batchDelayMs: number;
  /** Request bodies over largeBodyBytes read and parsed at once; one more gets 503. 0: no limit. */
  maxLargeBodies: number;
  largeBodyBytes: number;
  /** Time one request may run on a worker before it is cancelled (the worker is replaced), ms. */
  requestTimeoutMs: number;
  /** Time a client may take to send the request headers, ms (Node answers 408). */
  headersTimeoutMs: number;
  /** Time a client may take to send the whole request, body included, ms (408); 0: none. */
  receiveTimeoutMs: number;
  /** Longest silence while a request body is arriving, ms; then the connection is closed. 0: none. */
  bodyIdleTimeoutMs: number;
  /** Largest model or .npy upload, bytes. */
  maxUploadBytes: number;
  /** Largest JSON body (and multipart "request" field), bytes. */
  maxBodyBytes: number;
  limits: Limits;
  /** When set, every /v1 route needs `Authorization: Bearer <token>`. */
  token?: string;
  /** Sessions each worker keeps open. */
  sessionCacheSize: number;
  /** Limits of the upload checks (nodes, weight bytes, subgraph depth); DEFAULT_SAFETY where absent. */
  safety?: Partial<SafetySettings>;
  /** onnxruntime intra-op threads per worker (0: onnxruntime decides). */
  intraOpThreads: number;
  /** pino level, or false for no log. */
  logLevel: string | false;
  /** Bounds of the jobs store (count, result size, time to live); JOB_DEFAULTS where absent. */
  jobs?: Partial<JobLimits>;
  /** Jobs on Redis with BullMQ (--queue); in this process's memory when absent. */
  queue?: QueueTarget;
  /** BullMQ's lock on a running job, ms: a server silent this long has its jobs taken by another. */
  jobLockMs?: number;
  /**
   * What this server does with --queue: `all` answers the API and runs jobs; `api` answers the API
   * and leaves every heavy call (synchronous ones too) to the queue; `worker` runs jobs and answers
   * only the health and metrics routes.
   */
  role: ServerRole;
  /** At shutdown with --queue: how long jobs running here may take to finish before they are handed back, ms. */
  drainTimeoutMs: number;
  /** Extra environment for workers (tests inject faults this way). */
  workerEnv?: Record<string, string>;
  /** Test hook: called before each store write; throwing from it stands for that write failing. */
  storeBeforeWrite?: StoreOptions['beforeWrite'];
}

export type ServerRole = 'all' | 'api' | 'worker';

export const SERVER_DEFAULTS = {
  host: '0.0.0.0',
  port: 8080,
  device: 'cpu',
  modelDir: 'store',
  maxQueue: 64,
  maxPerClient: 16,
  maxWorkerRssMiB: 2048,
  batchMaxRequests: 16,
  batchDelayMs: 0,
  maxLargeBodies: 2,
  largeBodyMiB: 1,
  requestTimeoutMs: 120_000,
  // A real deployment's figures: headers come in one packet; 30 s of silence mid-body is a dead or
  // hostile client; 10 min moves the largest upload (256 MiB) at 3.5 Mbit/s.
  headersTimeoutMs: 30_000,
  receiveTimeoutMs: 600_000,
  bodyIdleTimeoutMs: 30_000,
  // Below Kubernetes' default 30 s terminationGracePeriodSeconds, leaving time to close.
  drainTimeoutMs: 25_000,
  maxUploadMiB: 256,
  maxBodyMiB: 64,
  sessionCacheSize: 8,
  intraOpThreads: 0,
  logLevel: 'info',
} as const;

export function serverConfig(overrides: Partial<ServerConfig> & Pick<ServerConfig, 'modelDir' | 'devices'>): ServerConfig {
  return {
    host: SERVER_DEFAULTS.host,
    port: SERVER_DEFAULTS.port,
    workers: 1,
    maxQueue: SERVER_DEFAULTS.maxQueue,
    maxPerClient: SERVER_DEFAULTS.maxPerClient,
    maxWorkerRssBytes: SERVER_DEFAULTS.maxWorkerRssMiB * 1024 * 1024,
    batchMaxRequests: SERVER_DEFAULTS.batchMaxRequests,
    batchDelayMs: SERVER_DEFAULTS.batchDelayMs,
    maxLargeBodies: SERVER_DEFAULTS.maxLargeBodies,
    largeBodyBytes: SERVER_DEFAULTS.largeBodyMiB * 1024 * 1024,
    requestTimeoutMs: SERVER_DEFAULTS.requestTimeoutMs,
    headersTimeoutMs: SERVER_DEFAULTS.headersTimeoutMs,
    receiveTimeoutMs: SERVER_DEFAULTS.receiveTimeoutMs,
    bodyIdleTimeoutMs: SERVER_DEFAULTS.bodyIdleTimeoutMs,
    drainTimeoutMs: SERVER_DEFAULTS.drainTimeoutMs,
    role: 'all',
    maxUploadBytes: SERVER_DEFAULTS.maxUploadMiB * 1024 * 1024,
    maxBodyBytes: SERVER_DEFAULTS.maxBodyMiB * 1024 * 1024,
    limits: { ...DEFAULT_LIMITS },
    sessionCacheSize: SERVER_DEFAULTS.sessionCacheSize,
    intraOpThreads: SERVER_DEFAULTS.intraOpThreads,
    logLevel: SERVER_DEFAULTS.logLevel,
    ...overrides,
  };
}

/** "1048576" → 1 MiB as text, for messages that name a limit. */
export const formatBytes = (bytes: number): string =>
  bytes >= 1024 * 1024 ? `${+(bytes / 1024 / 1024).toFixed(2)} MiB` : bytes >= 1024 ? `${+(bytes / 1024).toFixed(2)} KiB` : `${bytes} bytes`;
