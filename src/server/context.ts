/** What the routes share: settings, the model store and the worker pool. */
import type { WorkerPool } from '../pool/pool.js';
import type { ModelStore } from '../store/index.js';
import type { ServerConfig } from './config.js';
import type { JobQueue } from './jobs.js';

export interface ServerContext {
  config: ServerConfig;
  store: ModelStore;
  pool: WorkerPool;
  /** Work started with `Prefer: respond-async`. */
  jobs: JobQueue;
}
