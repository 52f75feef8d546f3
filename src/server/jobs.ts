/**
 * Long work as jobs (a heavy route called with `Prefer: respond-async`): the client gets 202 and a
 * job id at once, polls or streams its progress, and fetches the result later. The route's work
 * is data (job-work.ts); a `JobQueue` keeps and runs it. Two backends: `MemoryJobs` here (the
 * default: jobs live in this process, a restart loses them) and `RedisJobs` (redis-jobs.ts: BullMQ
 * on Redis, any replica answers and a job outlives its process).
 * Bounded three ways: how many are kept, how large a result may be, how long a finished one stays.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { OnTaskProgress, TaskProgress, WorkerPool } from '../pool/pool.js';
import { AuditError } from '../contract/errors.js';
import type { ErrorBody } from './errors.js';
import type { JobResult, JobSpec } from './job-work.js';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobLimits {
  /** Jobs kept at once, unfinished and finished; one more unfinished gets 503. */
  maxJobs: number;
  /** Largest result (serialized) a job keeps; a larger one fails the job with 507. */
  maxResultBytes: number;
  /** Milliseconds a finished job is kept, then forgotten (404). */
  ttlMs: number;
}

export const JOB_DEFAULTS: JobLimits = { maxJobs: 256, maxResultBytes: 32 * 1024 * 1024, ttlMs: 3_600_000 };

/** What a backend runs: a spec's work, and the removal of the upload a one-shot job owns (`ownFile`). */
export interface JobRunner {
  run(spec: JobSpec, signal: AbortSignal, onProgress: OnTaskProgress): Promise<JobResult>;
  release(ownFile: string): Promise<void>;
}

/** The upload a job owns, if any (a one-shot penalty on a model not in the store). */
export const ownFileOf = (spec: JobSpec): string | undefined => (spec.route === 'gate' ? undefined : spec.ownFile);

/** Where jobs are kept and run. Every method but `close` may answer unknown_job (404). */
export interface JobQueue {
  /** Where jobs live: this process's memory, or Redis (/readyz says which, and whether it is reached). */
  readonly kind: 'memory' | 'redis';
  reachable(): boolean;
  /** Accept `spec` as a job (503 when the queue is full); its view, state queued. */
  submit(spec: JobSpec): Promise<JobView>;
  get(id: string): Promise<JobView>;
  /** The stored result as the synchronous route sent it; 409 before the job has succeeded. */
  result(id: string): Promise<JobResult>;
  /** Stop an unfinished job's work (dropped from the queue, or its worker replaced); a finished one is forgotten. */
  cancel(id: string): Promise<JobView>;
  /** Calls `listener` on every change of the job until it finishes; resolves to the unsubscribe. */
  subscribe(id: string, listener: (job: JobView) => void): Promise<() => void>;
  /** Jobs by state, for /metrics. */
  counts(): Promise<Record<JobState, number>>;
  /** At shutdown: stop taking jobs; those running may finish within `drainMs` where the backend can keep their results. */
  close(drainMs?: number): Promise<void>;
}

/** A job as a backend keeps it; `jobView` makes what clients see. */
export interface JobRecord {
  id: string;
  route: string;
  state: JobState;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  progress?: TaskProgress;
  result?: JobResult;
  error?: ErrorBody['error'];
}

/** What GET /v1/jobs/:id answers (the result inline when it is JSON). */
export interface JobView {
  id: string;
  route: string;
  state: JobState;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  progress: { done: number; total: number; stage?: string; elapsedMs: number; estimatedRemainingMs?: number };
  result?: unknown;
  resultType?: string;
  error?: ErrorBody['error'];
}

const FINISHED: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];
export const isFinished = (state: JobState): boolean => FINISHED.includes(state);

export const unknownJob = (id: string): AuditError =>
  new AuditError('unknown_job', `no job '${id}' on this server: it finished more than its time to live ago, or the server restarted since (jobs are kept in memory only); submit it again`);

export const notDone = (id: string, state: JobState): AuditError =>
  new AuditError('job_not_done', `job '${id}' is ${state}; its result exists once it has succeeded`, { state });

export const tooManyJobs = (held: number, limit: number, where = 'this server already holds'): AuditError =>
  new AuditError('too_many_jobs', `${where} ${held} unfinished jobs (limit ${limit}); retry when some have finished`, { retryAfter: 5 });

export const CANCELLED: ErrorBody['error'] = { code: 'cancelled', message: 'the job was cancelled (DELETE)' };

/** The error envelope a failed job keeps: an AuditError's own, anything else as internal. */
export function jobError(err: unknown): ErrorBody['error'] {
  return err instanceof AuditError
    ? { code: err.code, message: err.message, ...(err.details === undefined ? {} : { details: err.details }) }
    : { code: 'internal', message: `the job failed: ${(err as Error)?.message ?? String(err)}` };
}

/** A result larger than a job keeps: the job fails with this instead. */
export function oversized(result: JobResult, limit: number): ErrorBody['error'] | undefined {
  const bytes = Buffer.byteLength(result.body);
  if (bytes <= limit) return undefined;
  return {
    code: 'result_too_large',
    message: `the job's result is ${bytes} bytes, more than this server keeps for a job (${limit}); ask for fewer layers or samples, or call the route synchronously`,
    details: { bytes, limit },
  };
}

export function jobView(job: JobRecord, clock = Date.now()): JobView {
  const now = job.finishedAt ?? clock;
  const elapsedMs = now - job.createdAt;
  const { done = 0, total = 0, stage } = job.progress ?? {};
  // A linear estimate within the current stage; audits run several stages, each counted anew.
  const running = job.startedAt === undefined ? 0 : now - job.startedAt;
  const remaining = !isFinished(job.state) && done > 0 && total > done ? Math.round((running * (total - done)) / done) : undefined;
  const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString());
  const json = job.result?.contentType.startsWith('application/json');
  return {
    id: job.id,
    route: job.route,
    state: job.state,
    createdAt: iso(job.createdAt) as string,
    ...(job.startedAt === undefined ? {} : { startedAt: iso(job.startedAt) }),
    ...(job.finishedAt === undefined ? {} : { finishedAt: iso(job.finishedAt) }),
    progress: { done, total, ...(stage ? { stage } : {}), elapsedMs, ...(remaining === undefined ? {} : { estimatedRemainingMs: remaining }) },
    ...(job.result ? (json ? { result: JSON.parse(job.result.body) } : { resultType: job.result.contentType }) : {}),
    ...(job.error ? { error: job.error } : {}),
  };
}

interface MemoryJob extends JobRecord {
  controller: AbortController;
  listeners: Set<(job: JobView) => void>;
}

/** Jobs in this process's memory, run by its own worker pool (the default backend). */
export class MemoryJobs implements JobQueue {
  readonly kind = 'memory' as const;
  private readonly jobs = new Map<string, MemoryJob>();
  private readonly limits: JobLimits;

  /** `admit` throws (503) when the work could not even wait for a worker, so a 202 means admitted. */
  constructor(
    private readonly runner: JobRunner,
    limits: Partial<JobLimits> = {},
    private readonly admit: () => void = () => {},
  ) {
    this.limits = { ...JOB_DEFAULTS, ...limits };
  }

  async submit(spec: JobSpec): Promise<JobView> {
    this.sweep();
    this.admit();
    if (this.jobs.size >= this.limits.maxJobs) this.evictOldestFinished();
    if (this.jobs.size >= this.limits.maxJobs) throw tooManyJobs(this.jobs.size, this.limits.maxJobs);
    const job: MemoryJob = { id: randomUUID(), route: spec.route, state: 'queued', createdAt: Date.now(), controller: new AbortController(), listeners: new Set() };
    this.jobs.set(job.id, job);
    const onProgress: OnTaskProgress = (progress) => {
      // A cancelled job's worker may still report a chunk on its way out.
      if (isFinished(job.state)) return;
      if (job.state === 'queued') this.move(job, 'running');
      job.progress = progress;
      this.notify(job);
    };
    void this.runner
      .run(spec, job.controller.signal, onProgress)
      .then(
        (result) => this.succeed(job, result),
        (err: unknown) => this.fail(job, err),
      )
      .finally(() => {
        const own = ownFileOf(spec);
        return own === undefined ? undefined : this.runner.release(own);
      })
      .catch(() => {});
    return jobView(job);
  }

  reachable(): boolean {
    return true;
  }

  async get(id: string): Promise<JobView> {
    return jobView(this.find(id));
  }

  async result(id: string): Promise<JobResult> {
    const job = this.find(id);
    if (!job.result) throw notDone(id, job.state);
    return job.result;
  }

  async cancel(id: string): Promise<JobView> {
    const job = this.find(id);
    if (isFinished(job.state)) {
      this.jobs.delete(id);
      return jobView(job);
    }
    this.finish(job, 'cancelled', { error: CANCELLED });
    job.controller.abort();
    return jobView(job);
  }

  /**
   * At shutdown: jobs do not outlive the process (a result finished now could not be fetched from a
   * closing server), so their work stops at once rather than delaying it; no drain.
   */
  async close(): Promise<void> {
    for (const job of this.jobs.values()) {
      if (isFinished(job.state)) continue;
      this.finish(job, 'cancelled', { error: { code: 'shutting_down', message: 'the server shut down; jobs do not survive a restart, submit it again' } });
      job.controller.abort();
    }
  }

  async subscribe(id: string, listener: (job: JobView) => void): Promise<() => void> {
    const job = this.find(id);
    job.listeners.add(listener);
    return () => job.listeners.delete(listener);
  }

  async counts(): Promise<Record<JobState, number>> {
    this.sweep();
    const counts: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const job of this.jobs.values()) counts[job.state]++;
    return counts;
  }

  private find(id: string): MemoryJob {
    this.sweep();
    const job = this.jobs.get(id);
    if (!job) throw unknownJob(id);
    return job;
  }

  private succeed(job: MemoryJob, result: JobResult): void {
    if (isFinished(job.state)) return;
    const error = oversized(result, this.limits.maxResultBytes);
    this.finish(job, error ? 'failed' : 'succeeded', error ? { error } : { result });
  }

  private fail(job: MemoryJob, err: unknown): void {
    if (isFinished(job.state)) return;
    this.finish(job, 'failed', { error: jobError(err) });
  }

  private finish(job: MemoryJob, state: JobState, outcome: { result?: JobResult; error?: ErrorBody['error'] }): void {
    this.move(job, state);
    job.finishedAt = Date.now();
    if (outcome.result) job.result = outcome.result;
    if (outcome.error) job.error = outcome.error;
    this.notify(job);
    job.listeners.clear();
  }

  /** A job is running from its first progress report: the pool has given it a worker. */
  private move(job: MemoryJob, state: JobState): void {
    if (state === 'running') job.startedAt = Date.now();
    job.state = state;
  }

  private notify(job: MemoryJob): void {
    const view = jobView(job);
    for (const listener of job.listeners) listener(view);
  }

  /** Finished jobs past their time to live are forgotten. */
  private sweep(): void {
    const now = Date.now();
    for (const [id, job] of this.jobs) if (job.finishedAt !== undefined && now - job.finishedAt > this.limits.ttlMs) this.jobs.delete(id);
  }

  private evictOldestFinished(): void {
    for (const [id, job] of this.jobs) {
      if (isFinished(job.state)) {
        this.jobs.delete(id);
        return;
      }
    }
  }
}

/**
 * The pool's own admission rule, asked before a job is accepted: every worker busy and the queue
 * full is the same 503 + Retry-After a synchronous call gets, instead of a job that fails at once.
 */
export function poolAdmission(pool: WorkerPool): () => void {
  return () => {
    const status = pool.status();
    const workers = status.lanes.reduce((n, lane) => n + lane.workers, 0);
    if (status.running < workers || status.queued < pool.options.maxQueue) return;
    throw new AuditError(
      'overloaded',
      `all ${status.running} workers are busy and ${status.queued} requests are waiting (queue limit ${pool.options.maxQueue}); retry later`,
      { retryAfter: pool.retryAfterSeconds() },
    );
  };
}

/** RFC 7240: the client asks for an asynchronous answer with `Prefer: respond-async`. */
export function prefersAsync(request: FastifyRequest): boolean {
  const prefer = request.headers.prefer;
  const values = Array.isArray(prefer) ? prefer : prefer ? [prefer] : [];
  return values.some((v) => v.split(',').some((p) => p.trim().split(/[;=]/)[0].trim().toLowerCase() === 'respond-async'));
}

/**
 * A synchronous call on a server that runs no work itself (`--role api`): the work waits on the
 * queue like a job, and its end is the answer. A failed job is thrown as its own error (same code,
 * status and message as a server running it here); a client that goes away cancels it. The job is
 * forgotten once answered.
 */
export async function awaitJob(jobs: JobQueue, spec: JobSpec, signal: AbortSignal): Promise<JobResult> {
  const { id } = await jobs.submit(spec);
  try {
    const done = await new Promise<JobView>((resolve, reject) => {
      let stop: (() => void) | undefined;
      let settled = false;
      const settle = (view: JobView): void => {
        if (settled || !isFinished(view.state)) return;
        settled = true;
        stop?.();
        resolve(view);
      };
      signal.addEventListener(
        'abort',
        () => {
          if (settled) return;
          settled = true;
          stop?.();
          jobs.cancel(id).then(
            (view) => resolve(view),
            (err: unknown) => reject(err),
          );
        },
        { once: true },
      );
      jobs
        .subscribe(id, settle)
        .then((unsubscribe) => {
          stop = unsubscribe;
          if (settled) unsubscribe();
          return jobs.get(id);
        })
        .then(settle, reject);
    });
    if (done.state === 'succeeded') return await jobs.result(id);
    const error = done.error ?? CANCELLED;
    throw new AuditError(error.code as ConstructorParameters<typeof AuditError>[0], error.message, error.details as ConstructorParameters<typeof AuditError>[2]);
  } finally {
    await jobs.cancel(id).catch(() => undefined);
  }
}

/** Answer 202 for a new job, with where to find it (RFC 7240's Preference-Applied). */
export async function acceptJob(reply: FastifyReply, jobs: JobQueue, spec: JobSpec): Promise<FastifyReply> {
  const job = await jobs.submit(spec);
  return reply
    .code(202)
    .header('location', `/v1/jobs/${job.id}`)
    .header('preference-applied', 'respond-async')
    .type('application/json; charset=utf-8')
    .send(job);
}
