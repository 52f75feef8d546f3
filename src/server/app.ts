/**
 * The Fastify app factory: the same app serves tests through `inject` and users over a socket.
 * It owns its model store and worker pool, and closes them when it closes.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { WorkerPool } from '../pool/pool.js';
import { ModelStore } from '../store/index.js';
import type { ServerConfig } from './config.js';
import type { ServerContext } from './context.js';
import { errorsPlugin } from './errors.js';
import { arrayBoundsPlugin } from './plugins/array-bounds.js';
import { bodyGatePlugin } from './plugins/body-gate.js';
import { jsonBodyPlugin } from './plugins/json-body.js';
import { awaitJob, type JobQueue, type JobRunner, MemoryJobs, poolAdmission } from './jobs.js';
import { execute, type JobSpec, runJob } from './job-work.js';
import { RedisJobs } from './redis-jobs.js';
import { authPlugin } from './plugins/auth.js';
import { metricsPlugin } from './plugins/metrics.js';
import { timeoutsPlugin } from './plugins/timeouts.js';
import { metricRoutes } from './routes/metrics.js';
import { gateRoutes } from './routes/gate.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { modelRoutes } from './routes/models.js';
import { oneShotRoutes } from './routes/one-shot.js';

/** The package's own version, for the OpenAPI document (one source: package.json). */
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/**
 * The OpenAPI document of a route that also runs as a job: the `Prefer` request header, and the
 * 202's `Location` and `Preference-Applied` headers, so generated clients submit and poll a job
 * without a cast. Documentation only: Fastify does not validate these headers.
 */
function asyncDocumented<T extends { schema: object }>(out: T): T {
  const schema = out.schema as Record<string, unknown>;
  const response = schema.response as Record<string, Record<string, unknown>> | undefined;
  if (!response?.['202']) return out;
  const prefer = {
    type: 'object',
    properties: {
      prefer: { type: 'string', description: 'RFC 7240 preferences; "respond-async" answers 202 at once and runs the work as a job (/v1/jobs/{id})' },
    },
  };
  const accepted = {
    ...response['202'],
    description: 'Accepted as a job (Prefer: respond-async): poll or stream it at Location',
    headers: {
      location: { type: 'string', description: 'The job: /v1/jobs/{id}' },
      'preference-applied': { type: 'string', enum: ['respond-async'] },
    },
  };
  return { ...out, schema: { ...schema, headers: prefer, response: { ...response, 202: accepted } } };
}

export interface BuiltApp {
  app: FastifyInstance;
  context: ServerContext;
}

export async function buildApp(config: ServerConfig): Promise<BuiltApp> {
  const store = await ModelStore.open(config.modelDir, {
    quotaBytes: config.storeQuotaBytes ?? 0,
    ...(config.storeBeforeWrite ? { beforeWrite: config.storeBeforeWrite } : {}),
  });
  const pool = new WorkerPool({
    devices: config.devices,
    workersPerDevice: config.workers,
    maxQueue: config.maxQueue,
    maxPerClient: config.maxPerClient,
    maxWorkerRss: config.maxWorkerRssBytes,
    batchMaxRequests: config.batchMaxRequests,
    batchDelayMs: config.batchDelayMs,
    taskTimeoutMs: config.requestTimeoutMs,
    sessionCacheSize: config.sessionCacheSize,
    ...(config.safety ? { safety: config.safety } : {}),
    intraOpThreads: config.intraOpThreads,
    ...(config.workerEnv ? { env: config.workerEnv } : {}),
  });
  /** The queue's connection warnings go to the app's log, once it exists. */
  let log = (_message: string): void => {};
  const runner: JobRunner = {
    run: (spec, signal, onProgress) => runJob(spec, { store, pool, config }, signal, onProgress),
    release: (ownFile) => store.releaseJobFile(ownFile),
  };
  const jobs: JobQueue = config.queue
    ? await RedisJobs.open(config.queue, runner, {
        ...config.jobs,
        concurrency: pool.status().lanes.reduce((n, lane) => n + lane.workers, 0),
        maxPerClient: config.maxPerClient,
        ...(config.jobLockMs ? { lockMs: config.jobLockMs } : {}),
        consume: config.role !== 'api',
        warn: (message) => log(message),
      })
    : new MemoryJobs(runner, config.jobs, poolAdmission(pool));
  // An `api` server runs no heavy work itself: a synchronous call waits on the queue like a job.
  const run = async (spec: JobSpec, signal: AbortSignal): Promise<unknown> => {
    if (config.role !== 'api') return execute(spec, { store, pool, config }, signal);
    const result = await awaitJob(jobs, spec, signal);
    return result.contentType.startsWith('application/json') ? JSON.parse(result.body) : { html: result.body };
  };
  const context: ServerContext = { config, store, pool, jobs, run };

  const app = Fastify({
    logger: config.logLevel === false ? false : { level: config.logLevel },
    bodyLimit: config.maxBodyBytes,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // In-flight requests finish on close; new ones get 503 (Fastify's return503OnClosing).
    return503OnClosing: true,
    // Node answers 408 past these; it checks them every connectionsCheckingInterval.
    requestTimeout: config.receiveTimeoutMs,
    http: {
      headersTimeout: config.headersTimeoutMs,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, config.headersTimeoutMs, config.receiveTimeoutMs || Infinity)),
    },
  }).withTypeProvider<ZodTypeProvider>();
  log = (message) => app.log.warn(message);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  // While closing, answers end their connection: an idle keep-alive socket would hold close() open.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    // In memory, jobs cannot outlive the process: they stop now. On Redis, this server stops taking
    // jobs; those it runs go back to the queue for another (docs/server.md).
    await jobs.close(config.drainTimeoutMs);
  });
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });
  app.addHook('onClose', async () => {
    await pool.destroy();
    // Every request has ended: any temporary file left is an upload the drain cut off.
    await store.removeTemporaries();
  });
  await app.register(timeoutsPlugin, { bodyIdleTimeoutMs: config.bodyIdleTimeoutMs });

  await app.register(errorsPlugin, { maxBodyBytes: config.maxBodyBytes, maxUploadBytes: config.maxUploadBytes });
  await app.register(bodyGatePlugin, { maxLargeBodies: config.maxLargeBodies, largeBodyBytes: config.largeBodyBytes });
  // One core stays with the event loop: parse threads beyond the others would take its CPU time.
  await app.register(jsonBodyPlugin, { largeBodyBytes: config.largeBodyBytes, threads: Math.min(config.maxLargeBodies || Infinity, Math.max(1, availableParallelism() - 1)), limits: config.limits });
  await app.register(arrayBoundsPlugin, { limits: config.limits });
  await app.register(multipart, {
    limits: { fileSize: config.maxUploadBytes, fieldSize: config.maxBodyBytes, files: 16, fields: 8, parts: 24 },
  });
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'hessian-audit',
        description: 'Hessian Penalty audits of ONNX generators: per-layer disentanglement scores',
        version: VERSION,
      },
      ...(config.token ? { components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } }, security: [{ bearer: [] }] } : {}),
    },
    transform: (input) => {
      const out = jsonSchemaTransform(input);
      const form = (input.route.config as { form?: z.ZodType } | undefined)?.form;
      return asyncDocumented(form ? { ...out, schema: { ...out.schema, body: z.toJSONSchema(form, { target: 'openapi-3.0' }) } } : out);
    },
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(authPlugin, config.token ? { token: config.token } : {});
  await app.register(metricsPlugin, { pool, jobs });
  await app.register(healthRoutes, context);
  // A `worker` server takes no client traffic: only probes and scrapes reach it.
  if (config.role !== 'worker') {
    await app.register(modelRoutes, context);
    await app.register(metricRoutes, context);
    await app.register(oneShotRoutes, context);
    await app.register(gateRoutes, context);
    await app.register(jobRoutes, { jobs });
  }
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await app.ready();
  return { app, context };
}
