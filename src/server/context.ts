/** What the routes share: settings, the model store and the worker pool. */
import type { WorkerPool } from '../pool/pool.js';
import type { ModelStore } from '../store/index.js';
import type { ServerConfig } from './config.js';
import type { JobQueue } from './jobs.js';
import type { JobSpec } from './job-work.js';

export interface ServerContext {
  config: ServerConfig;
  store: ModelStore;
  pool: WorkerPool;
  /** Work started with `Prefer: respond-async`. */
  jobs: JobQueue;
  /**
   * A synchronous call's work: run here (execute), or, on a server with `--role api`, through the
   * queue like a job; resolves to the route's value either way.
   */
  run: (spec: JobSpec, signal: AbortSignal) => Promise<unknown>;
}
