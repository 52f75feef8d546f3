/**
 * Prometheus metrics (prom-client) on a registry of the app's own, so that several apps in one
 * process (tests) do not collide: requests and latency by route and status, forward rows, queue
 * depth, busy workers and worker restarts, plus the process's default metrics.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { WorkerPool } from '../../pool/pool.js';
import type { JobQueue } from '../jobs.js';

export const metricsPlugin = fp<{ pool: WorkerPool; jobs?: JobQueue }>(async (app: FastifyInstance, { pool, jobs }) => {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'hessian_audit_' });
  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({ name: 'hessian_audit_http_requests_total', help: 'HTTP requests by route and status', labelNames, registers: [registry] });
  const latency = new Histogram({
    name: 'hessian_audit_http_request_duration_seconds',
    help: 'HTTP request latency by route and status',
    labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const rows = new Counter({ name: 'hessian_audit_forward_rows_total', help: 'Forward rows (N·(2k+1) per request) run by the workers', registers: [registry] });
  const rowsPerSecond = new Gauge({
    name: 'hessian_audit_forward_rows_per_second',
    help: 'Forward rows per second of onnxruntime time, last penalty request',
    registers: [registry],
  });
  const batchRows = new Gauge({
    name: 'hessian_audit_batch_rows',
    help: "Rows of the largest batch of the last penalty request, by device (the session's tuned size on large requests)",
    labelNames: ['device'],
    registers: [registry],
  });
  const batched = new Counter({
    name: 'hessian_audit_batched_requests_total',
    help: 'Requests that ran in one worker task with others, their batches shared (dynamic batching)',
    registers: [registry],
  });
  const restarts = new Counter({
    name: 'hessian_audit_worker_restarts_total',
    help: 'Workers replaced after a crash or a time-out',
    labelNames: ['reason'],
    registers: [registry],
  });
  new Gauge({
    name: 'hessian_audit_queue_depth',
    help: 'Tasks waiting for a worker',
    registers: [registry],
    collect() {
      this.set(pool.status().queued);
    },
  });
  new Gauge({
    name: 'hessian_audit_workers_busy',
    help: 'Workers running a task',
    registers: [registry],
    collect() {
      this.set(pool.status().running);
    },
  });
  if (jobs) {
    // Both gauges read one count per scrape (a Redis round trip with --queue); Redis away: no
    // figure rather than a failed scrape (/readyz says queue: down).
    let scrape: Promise<Awaited<ReturnType<typeof jobs.counts>> | null> | undefined;
    const counts = () => {
      scrape ??= jobs.counts().catch(() => null);
      const current = scrape;
      setImmediate(() => {
        if (scrape === current) scrape = undefined;
      });
      return current;
    };
    new Gauge({
      name: 'hessian_audit_jobs',
      help: 'Jobs (Prefer: respond-async) by state: this server\'s in memory, or the whole service\'s with --queue',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        for (const [state, n] of Object.entries((await counts()) ?? {})) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'hessian_audit_jobs_backlog',
      help: "Jobs waiting or running: with --queue, the whole service's (read from Redis, the same on every server), for scaling on the backlog per replica",
      registers: [registry],
      async collect() {
        const now = await counts();
        if (now) this.set(now.queued + now.running);
      },
    });
  }
  restarts.inc({ reason: 'crash' }, 0);
  restarts.inc({ reason: 'timeout' }, 0);
  restarts.inc({ reason: 'memory' }, 0);
  pool.onRestart = (reason) => restarts.inc({ reason });
  pool.onTask = (task) => {
    if (task.ok && task.sharedWith) batched.inc();
    if (task.kind !== 'penalty' || !task.ok || task.rows === undefined) return;
    rows.inc(task.rows);
    if (task.forwardMs) rowsPerSecond.set(task.rows / (task.forwardMs / 1000));
    if (task.batchRows !== undefined && task.device !== undefined) batchRows.set({ device: task.device }, task.batchRows);
  };

  app.addHook('onResponse', async (request, reply) => {
    const labels = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) };
    requests.inc(labels);
    latency.observe(labels, reply.elapsedTime / 1000);
  });

  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });
});
