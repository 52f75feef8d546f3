/**
 * Every setting of the service, with its default. The serve command fills it from flags and
 * environment variables (docs/server.md lists them); tests build it directly.
 */
import type { Device } from '../engine/device.js';
import { DEFAULT_LIMITS, type Limits } from '../engine/request.js';
import type { SafetySettings } from '../onnx/safety.js';
import type { JobLimits } from './jobs.js';

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
  /** Time one request may run on a worker before it is cancelled (the worker is replaced), ms. */
  requestTimeoutMs: number;
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
  /** Extra environment for workers (tests inject faults this way). */
  workerEnv?: Record<string, string>;
}

export const SERVER_DEFAULTS = {
  host: '0.0.0.0',
  port: 8080,
  device: 'cpu',
  modelDir: 'store',
  maxQueue: 64,
  requestTimeoutMs: 120_000,
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
    requestTimeoutMs: SERVER_DEFAULTS.requestTimeoutMs,
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
