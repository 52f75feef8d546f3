/**
 * Jobs on Redis with BullMQ (`serve --queue redis://…`): every server is a producer and a consumer
 * of one BullMQ queue, so any replica answers a job and a job outlives the process that accepted or
 * ran it. What lives where (docs/server.md, "Jobs on Redis"):
 * - BullMQ's job: the route, the client's address, its state, progress, times and error;
 * - `hessian-audit:payload:<id>`: the request (v8-serialized, typed arrays as bytes), until the job ends;
 * - `hessian-audit:result:<id>`: the answer's body, for the time to live (its type is the job's return value);
 * - `hessian-audit:cancelled:<id>`: a cancelled job, for the time to live (a waiting one is removed from BullMQ);
 * - `hessian-audit:client:<address>`: the ids of a client's unfinished jobs (the per-client limit);
 * - a one-shot upload the job runs on: the shared model folder's .jobs/ (store.adopt).
 * A cancel is a pub/sub message: the server running the job aborts it (BullMQ's cancelJob).
 * A server that dies mid-job loses its lock; another takes the job again (stalled-job recovery),
 * once: a job that stalls twice fails with worker_crashed.
 */
import { randomUUID } from 'node:crypto';
import { deserialize, serialize } from 'node:v8';
import type { EventEmitter } from 'node:events';
import { Job, QueueEvents, Queue, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { AuditError } from '../contract/errors.js';
import type { TaskProgress } from '../pool/pool.js';
import type { ErrorBody } from './errors.js';
import type { JobResult, JobSpec } from './job-work.js';
import {
  CANCELLED,
  isFinished,
  JOB_DEFAULTS,
  type JobLimits,
  type JobQueue,
  type JobRecord,
  type JobRunner,
  type JobState,
  type JobView,
  jobError,
  jobView,
  notDone,
  oversized,
  ownFileOf,
  tooManyJobs,
} from './jobs.js';
import { QUEUE_NAME, type QueueTarget, redisOptions } from './redis-queue.js';

export interface RedisJobOptions extends Partial<JobLimits> {
  /** Jobs this server runs at once (its pool's workers). */
  concurrency: number;
  /** Unfinished jobs one client may have in the service; 0: no limit. */
  maxPerClient: number;
  /** Whether this server runs jobs (false for `--role api`: it only adds and reads them). */
  consume?: boolean;
  /** BullMQ's lock: a server silent this long has its jobs taken again by another. */
  lockMs?: number;
  /** Connection problems after start-up (Redis restarting): logged, never thrown. */
  warn?: (message: string) => void;
}

/** What BullMQ keeps in the job itself: small; the request lives under its own key. */
interface JobData {
  route: string;
  client: string;
  ownFile?: string;
}

/** A job's return value: the body is under result:<id>. */
interface Stored {
  contentType: string;
  bytes: number;
}

const KEY = 'hessian-audit';
const CANCEL_CHANNEL = `${KEY}:cancel`;
/** How long an unstarted job's request is kept at most (the job is long gone by then). */
const PAYLOAD_TTL_MS = 7 * 24 * 3_600_000;
/** Progress goes to Redis at most this often (the last chunk of a stage always). */
const PROGRESS_EVERY_MS = 100;
const STALLED = 'job stalled more than allowable limit';
/** ioredis's words for a command refused or cut off while the connection is down. */
const CONNECTION_LOST = /enableOfflineQueue|Connection is closed|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT/;

const unknownJob = (id: string): AuditError =>
  new AuditError('unknown_job', `no job '${id}' in the service's queue: it finished more than its time to live ago, was forgotten (DELETE), or was never submitted; submit it again`);

/** The envelope a failed BullMQ job carries in its failedReason. */
function failure(reason: string | undefined): ErrorBody['error'] {
  if (reason === STALLED) {
    return { code: 'worker_crashed', message: 'the servers that took this job stopped (killed, or out of memory) twice while running it; it is not taken again' };
  }
  try {
    const error = JSON.parse(reason ?? '') as ErrorBody['error'];
    if (typeof error?.code === 'string') return error;
  } catch {
    // BullMQ's own reasons are sentences.
  }
  return { code: 'internal', message: `the job failed: ${reason ?? 'no reason given'}` };
}

const fail = (error: ErrorBody['error']): UnrecoverableError => new UnrecoverableError(JSON.stringify(error));

export class RedisJobs implements JobQueue {
  private readonly limits: JobLimits;
  private readonly listeners = new Map<string, Set<(job: JobView) => void>>();
  private closing = false;

  readonly kind = 'redis' as const;

  private constructor(
    private readonly display: string,
    private readonly queue: Queue,
    private readonly events: QueueEvents,
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly runner: JobRunner,
    private readonly options: RedisJobOptions,
    private worker?: Worker,
  ) {
    this.limits = { ...JOB_DEFAULTS, ...options };
  }

  static async open(target: QueueTarget, runner: JobRunner, options: RedisJobOptions): Promise<RedisJobs> {
    const connection = redisOptions(target);
    const warn = options.warn ?? (() => {});
    // Requests fail at once while Redis is away (503 queue_unreachable, Retry-After); the worker,
    // the event stream and the cancel channel wait for it and reconnect. The Queue shares the
    // requests' connection, so one status says whether they can reach Redis.
    const redis = new Redis({ ...connection, enableOfflineQueue: false });
    const queue = new Queue(QUEUE_NAME, { connection: redis });
    const events = new QueueEvents(QUEUE_NAME, { connection });
    const subscriber = new Redis(connection);
    for (const emitter of [queue, events, redis, subscriber] as unknown as EventEmitter[]) emitter.on('error', (err: Error) => warn(`queue: ${err.message}`));
    const jobs = new RedisJobs(target.display, queue, events, redis, subscriber, runner, options);
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
    await subscriber.subscribe(CANCEL_CHANNEL);
    (subscriber as unknown as EventEmitter).on('message', (_channel: string, id: string) => jobs.cancelled(id));
    for (const name of ['active', 'progress', 'completed', 'failed', 'removed'] as const) {
      events.on(name, ({ jobId }: { jobId: string }) => jobs.changed(jobId));
    }
    if (options.consume === false) return jobs;
    const lockMs = options.lockMs ?? 30_000;
    const worker = new Worker(QUEUE_NAME, (job, token, signal) => jobs.process(job, token, signal), {
      connection,
      concurrency: Math.max(1, options.concurrency),
      lockDuration: lockMs,
      stalledInterval: lockMs,
      maxStalledCount: 1,
    });
    worker.on('error', (err: Error) => warn(`queue worker: ${err.message}`));
    worker.on('completed', (job) => void jobs.finalize(job.id as string, job.data as JobData));
    worker.on('failed', (job, err) => {
      if (job && !(err instanceof WaitingError)) void jobs.finalize(job.id as string, job.data as JobData);
    });
    jobs.worker = worker;
    await worker.waitUntilReady();
    return jobs;
  }

  submit(spec: JobSpec): Promise<JobView> {
    return this.guard(() => this.submitJob(spec));
  }

  get(id: string): Promise<JobView> {
    return this.guard(() => this.getJob(id));
  }

  result(id: string): Promise<JobResult> {
    return this.guard(() => this.resultOf(id));
  }

  cancel(id: string): Promise<JobView> {
    return this.guard(() => this.cancelJob(id));
  }

  subscribe(id: string, listener: (job: JobView) => void): Promise<() => void> {
    return this.guard(() => this.subscribeTo(id, listener));
  }

  counts(): Promise<Record<JobState, number>> {
    return this.guard(() => this.countJobs());
  }

  /** Whether this server reaches Redis now (/readyz). */
  reachable(): boolean {
    return this.redis.status === 'ready';
  }

  /** A failure while Redis is away is 503 queue_unreachable with Retry-After; anything else stays as it is. */
  private async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof AuditError || (this.reachable() && !CONNECTION_LOST.test((err as Error).message))) throw err;
      throw new AuditError('queue_unreachable', `the job queue (Redis at ${this.display}) cannot be reached now: ${(err as Error).message}; retry shortly`, {
        retryAfter: 5,
        queue: this.display,
      });
    }
  }

  private async submitJob(spec: JobSpec): Promise<JobView> {
    const counts = await this.queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    const unfinished = Object.values(counts).reduce((a, b) => a + b, 0);
    if (unfinished >= this.limits.maxJobs) throw tooManyJobs(unfinished, this.limits.maxJobs, 'the service already holds');
    await this.checkClient(spec.client);
    const id = randomUUID();
    const ownFile = ownFileOf(spec);
    const data: JobData = { route: spec.route, client: spec.client, ...(ownFile ? { ownFile } : {}) };
    await this.redis.multi().set(`${KEY}:payload:${id}`, serialize(spec), 'PX', PAYLOAD_TTL_MS).sadd(this.clientKey(spec.client), id).exec();
    const ttl = Math.ceil(this.limits.ttlMs / 1000);
    const job = await this.queue.add(spec.route, data, { jobId: id, attempts: 1, removeOnComplete: { age: ttl }, removeOnFail: { age: ttl } });
    return jobView({ id, route: spec.route, state: 'queued', createdAt: job.timestamp });
  }

  private async getJob(id: string): Promise<JobView> {
    return jobView((await this.record(id, true)).record);
  }

  private async resultOf(id: string): Promise<JobResult> {
    const { record } = await this.record(id, true);
    if (record.state !== 'succeeded' || !record.result) throw notDone(id, record.state);
    const body = record.result.body !== '' ? record.result.body : await this.redis.get(`${KEY}:result:${id}`);
    if (body === null) throw unknownJob(id);
    return { body, contentType: record.result.contentType };
  }

  private async cancelJob(id: string): Promise<JobView> {
    const { record, job } = await this.record(id, false);
    if (isFinished(record.state)) {
      await this.queue.remove(id).catch(() => 0);
      await this.redis.del(`${KEY}:result:${id}`, `${KEY}:cancelled:${id}`);
      return jobView(record);
    }
    const cancelled: JobRecord = { ...record, state: 'cancelled', finishedAt: Date.now(), error: CANCELLED };
    delete cancelled.progress;
    await this.redis.set(`${KEY}:cancelled:${id}`, JSON.stringify(cancelled), 'PX', this.limits.ttlMs);
    // Waiting: gone from the queue now. Running: its server hears this and aborts it.
    const removed = await this.queue.remove(id).catch(() => 0);
    await this.redis.publish(CANCEL_CHANNEL, id);
    if (removed === 1 && job) await this.finalize(id, job.data as JobData);
    return jobView(cancelled);
  }

  private async subscribeTo(id: string, listener: (job: JobView) => void): Promise<() => void> {
    await this.record(id, false);
    const set = this.listeners.get(id) ?? new Set();
    this.listeners.set(id, set);
    set.add(listener);
    // A change between the caller's first view and now has no event left to hear.
    this.changed(id);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(id) === set) this.listeners.delete(id);
    };
  }

  private async countJobs(): Promise<Record<JobState, number>> {
    const c = await this.queue.getJobCounts('waiting', 'delayed', 'prioritized', 'active', 'completed', 'failed');
    return {
      queued: (c.waiting ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0),
      running: c.active ?? 0,
      succeeded: c.completed ?? 0,
      // A cancelled job that had started ends as a failed BullMQ job; one still waiting is removed.
      failed: c.failed ?? 0,
      cancelled: 0,
    };
  }

  /**
   * Stop taking jobs and let those running here finish for `drainMs`; any still running then is
   * aborted and handed back to the queue untouched (another server, or this one restarted, takes
   * it again); then every connection closes.
   */
  async close(drainMs = 0): Promise<void> {
    this.closing = true;
    const handBack = setTimeout(() => this.worker?.cancelAllJobs('shutting_down'), drainMs);
    try {
      await this.worker?.close();
    } finally {
      clearTimeout(handBack);
    }
    await this.events.close();
    await this.queue.close();
    this.subscriber.disconnect();
    this.redis.disconnect();
    this.listeners.clear();
  }

  /** BullMQ's processor: the request from Redis, run by this server's pool. */
  private async process(job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<Stored> {
    const id = job.id as string;
    const abort = signal ?? new AbortController().signal;
    if (await this.redis.exists(`${KEY}:cancelled:${id}`)) throw fail(CANCELLED);
    const payload = await this.redis.getBuffer(`${KEY}:payload:${id}`);
    if (payload === null) throw fail({ code: 'internal', message: `the job's request is no longer in Redis (${KEY}:payload:${id}); submit it again` });
    const spec = deserialize(payload) as JobSpec;
    let last = 0;
    const onProgress = (progress: TaskProgress): void => {
      const now = Date.now();
      if (now - last < PROGRESS_EVERY_MS && progress.done < progress.total) return;
      last = now;
      void job.updateProgress({ done: progress.done, total: progress.total, ...(progress.stage ? { stage: progress.stage } : {}) }).catch(() => {});
    };
    let result: JobResult;
    try {
      result = await this.runner.run(spec, abort, onProgress);
    } catch (err) {
      if (await this.redis.exists(`${KEY}:cancelled:${id}`)) throw fail(CANCELLED);
      if (this.closing && abort.aborted && token) {
        // Aborted by the end of the drain: back to the queue untouched, for another server.
        await job.moveToWait(token);
        throw new WaitingError();
      }
      throw fail(jobError(err));
    }
    const tooLarge = oversized(result, this.limits.maxResultBytes);
    if (tooLarge) throw fail(tooLarge);
    await this.redis.set(`${KEY}:result:${id}`, result.body, 'PX', this.limits.ttlMs);
    return { contentType: result.contentType, bytes: Buffer.byteLength(result.body) };
  }

  /** A job has ended for good: its request, its client's count and its upload go. */
  private async finalize(id: string, data: JobData): Promise<void> {
    await this.redis.multi().del(`${KEY}:payload:${id}`).srem(this.clientKey(data.client), id).exec().catch(() => {});
    if (data.ownFile) await this.runner.release(data.ownFile).catch(() => {});
  }

  /** The job as clients see it: BullMQ's state, a cancellation, the result when asked for. */
  private async record(id: string, withResult: boolean): Promise<{ record: JobRecord; job?: Job }> {
    const tombstone = await this.redis.get(`${KEY}:cancelled:${id}`);
    if (tombstone !== null) return { record: JSON.parse(tombstone) as JobRecord };
    const job = await Job.fromId(this.queue, id);
    if (!job) throw unknownJob(id);
    const bullState = await job.getState();
    const state: JobState =
      bullState === 'completed' ? 'succeeded' : bullState === 'failed' ? 'failed' : bullState === 'active' ? 'running' : 'queued';
    if (bullState === 'unknown') throw unknownJob(id);
    const finished = isFinished(state);
    if (finished && job.finishedOn !== undefined && Date.now() - job.finishedOn > this.limits.ttlMs) throw unknownJob(id);
    const progress = job.progress as Partial<TaskProgress> | number;
    const record: JobRecord = {
      id,
      route: job.name,
      state,
      createdAt: job.timestamp,
      ...(job.processedOn ? { startedAt: job.processedOn } : {}),
      ...(finished && job.finishedOn ? { finishedAt: job.finishedOn } : {}),
      ...(typeof progress === 'object' && progress ? { progress: progress as TaskProgress } : {}),
    };
    if (state === 'failed') {
      record.error = failure(job.failedReason);
      if (record.error.code === 'cancelled') record.state = 'cancelled';
    }
    if (state === 'succeeded' && withResult) {
      // The view inlines a JSON result; any other it only names by its type.
      const { contentType } = job.returnvalue as Stored;
      const body = contentType.startsWith('application/json') ? await this.redis.get(`${KEY}:result:${id}`) : '';
      if (body === null) throw unknownJob(id);
      record.result = { body, contentType };
    }
    return { record, job };
  }

  private clientKey(client: string): string {
    return `${KEY}:client:${client}`;
  }

  /** The per-client limit over the whole service; ids of jobs that ended without finalize (a crash) are pruned. */
  private async checkClient(client: string): Promise<void> {
    const limit = this.options.maxPerClient;
    if (limit <= 0 || client === '') return;
    const key = this.clientKey(client);
    let ids = await this.redis.smembers(key);
    if (ids.length < limit) return;
    for (const id of ids) {
      const state = await this.queue.getJobState(id);
      if (state === 'completed' || state === 'failed' || state === 'unknown') await this.redis.srem(key, id);
    }
    ids = await this.redis.smembers(key);
    if (ids.length < limit) return;
    throw new AuditError(
      'client_limit',
      `this client (${client}) already has ${ids.length} jobs queued or running in the service, the most one client may have (per-client limit ${limit}, --max-per-client); wait for one to finish`,
      { retryAfter: 5, limit },
    );
  }

  /** A job changed somewhere in the service: the listeners here get its new view. */
  private changed(id: string): void {
    const set = this.listeners.get(id);
    if (!set || set.size === 0) return;
    this.getJob(id).then(
      (view) => {
        for (const listener of [...set]) listener(view);
      },
      () => {
        // Gone without a trace (forgotten): nothing more will change.
      },
    );
  }

  /** A cancel was published: abort the job if it runs here, and tell the listeners. */
  private cancelled(id: string): void {
    this.worker?.cancelJob(id, 'cancelled');
    this.changed(id);
  }
}
