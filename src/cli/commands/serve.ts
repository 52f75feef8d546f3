import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { type Command, Option } from 'commander';
import { type ConvAlgoSearch, cudaEnvironment, describeCudaSettings, resolveCudaSettings } from '../../runtime/cuda.js';
import { type Device, parseDevice, parseDeviceList } from '../../runtime/device.js';
import { defaultWorkers } from '../../pool/pool.js';
import { DEFAULT_LIMITS } from '../../contract/request.js';
import { DEFAULT_SAFETY } from '../../onnx/safety.js';
import { DEFAULT_MAX_BOOTSTRAP_DRAWS } from '../../gate/gate.js';
import { invalid } from '../../contract/errors.js';
import { buildApp } from '../../server/app.js';
import { SERVER_DEFAULTS, serverConfig, type ServerConfig, type ServerRole } from '../../server/config.js';
import { registerModelFile } from '../../server/register-model.js';
import { checkQueue, parseQueueUrl, QUEUE_NAME } from '../../server/redis-queue.js';
import { collect, type Io, num } from '../common.js';

/** What the start-up line says of each role. */
const ROLES: Record<ServerRole, string> = {
  all: ': answers the API and runs jobs',
  api: ': answers the API, runs no job (synchronous calls wait on the queue)',
  worker: ': runs jobs; only /healthz, /readyz and /metrics answer',
};

const MiB = 1024 * 1024;

/** Each setting is a flag and an environment variable (flags win); docs/server.md lists them. */
const env = (name: string): string => `HESSIAN_AUDIT_${name}`;

function parseDevices(text: string): Device[] {
  const devices = text.split(',').map((s) => parseDevice(s.trim()));
  if (devices.length === 0) throw invalid('--device needs at least one device');
  return devices;
}

const onOff = (flag: string) => (value: string): boolean => {
  if (['on', 'true', '1'].includes(value.toLowerCase())) return true;
  if (['off', 'false', '0'].includes(value.toLowerCase())) return false;
  throw invalid(`${flag} takes on or off, got '${value}'`);
};

const whole = (flag: string, min: number) => (value: string): number => {
  const x = num(flag)(value);
  if (!Number.isSafeInteger(x) || x < min) throw invalid(`${flag} must be a whole number of at least ${min}, got '${value}'`);
  return x;
};

const nonNegative = (flag: string) => (value: string): number => {
  const x = num(flag)(value);
  if (!(x >= 0)) throw invalid(`${flag} must be a number of at least 0, got '${value}'`);
  return x;
};

/** A short bounded wait: a batch delay beyond a second would hold every lone request that long. */
const batchDelay = (value: string): number => {
  const x = num('--batch-delay-ms')(value);
  if (!(x >= 0 && x <= 1000)) throw invalid(`--batch-delay-ms must be a number from 0 to 1000, got '${value}'`);
  return x;
};

const positive = (flag: string) => (value: string): number => {
  const x = num(flag)(value);
  if (!(x > 0)) throw invalid(`${flag} must be a number greater than 0, got '${value}'`);
  return x;
};

async function listen(app: Awaited<ReturnType<typeof buildApp>>['app'], config: ServerConfig): Promise<void> {
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw invalid(`port ${config.port} on ${config.host} is already in use; choose another --port`);
    if (code === 'EACCES') throw invalid(`no permission to listen on ${config.host}:${config.port}; use a port above 1023`);
    if (code === 'EADDRNOTAVAIL') throw invalid(`${config.host} is not an address of this machine; use --host 127.0.0.1 or 0.0.0.0`);
    throw err;
  }
}

export function registerServe(program: Command, io: Io): void {
  const option = (flags: string, description: string, envName: string, parse?: (v: string) => unknown, fallback?: unknown): Option => {
    const o = new Option(flags, description).env(env(envName));
    if (parse) o.argParser(parse as (v: string, previous: unknown) => unknown);
    if (fallback !== undefined) o.default(fallback);
    return o;
  };
  program
    .command('serve')
    .description('run the HTTP service: model registry, penalty routes, /metrics, /docs')
    .addOption(option('--port <port>', 'TCP port (0: any free port)', 'PORT', whole('--port', 0), SERVER_DEFAULTS.port))
    .addOption(option('--host <host>', 'address to listen on', 'HOST', undefined, SERVER_DEFAULTS.host))
    .addOption(option('--device <device>', 'auto, cpu, cuda, cuda:N or webgpu; a comma list gives one worker lane per device', 'DEVICE', undefined, SERVER_DEFAULTS.device))
    .addOption(option('--devices <ids>', 'GPU ordinals, one worker lane per GPU (0,1 = --device cuda:0,cuda:1)', 'DEVICES'))
    .addOption(option('--cuda-memory-limit <mib>', 'cap on the CUDA memory arena per worker, MiB (0: no cap)', 'CUDA_MEMORY_LIMIT_MIB', num('--cuda-memory-limit'), 0))
    .addOption(
      option('--cuda-conv-algo-search <how>', 'cuDNN convolution algorithm search', 'CUDA_CONV_ALGO_SEARCH', undefined, 'exhaustive').choices(['exhaustive', 'heuristic', 'default']),
    )
    .addOption(option('--cuda-tf32 <on|off>', 'TensorFloat-32 in matmul and conv (off: full float32 second differences)', 'CUDA_TF32', onOff('--cuda-tf32'), false))
    .addOption(option('--model-dir <dir>', 'model store folder (created if missing)', 'MODEL_DIR', undefined, SERVER_DEFAULTS.modelDir))
    .addOption(option('--store-quota-mib <mib>', 'MiB the model store may hold (0: no quota); uploads past it get 507', 'STORE_QUOTA_MIB', nonNegative('--store-quota-mib'), 0))
    .addOption(option('--workers <n>', 'worker processes per device (default: half the cores for cpu, 1 per GPU)', 'WORKERS', whole('--workers', 1)))
    .addOption(option('--max-queue <n>', 'requests that may wait for a worker before 503', 'MAX_QUEUE', whole('--max-queue', 0), SERVER_DEFAULTS.maxQueue))
    .addOption(option('--max-per-client <n>', 'requests one client address may have queued or running before 503 (0: no limit)', 'MAX_PER_CLIENT', whole('--max-per-client', 0), SERVER_DEFAULTS.maxPerClient))
    .addOption(option('--batch-max-requests <n>', 'small penalty requests on one model a worker runs together, sharing batches (1: no batching across requests)', 'BATCH_MAX_REQUESTS', whole('--batch-max-requests', 1), SERVER_DEFAULTS.batchMaxRequests))
    .addOption(option('--batch-delay-ms <ms>', 'milliseconds a free worker waits for more requests to batch with the first (0: none)', 'BATCH_DELAY_MS', batchDelay, SERVER_DEFAULTS.batchDelayMs))
    .addOption(option('--max-worker-rss-mib <mib>', 'replace a worker whose resident memory passes this after a task (0: never)', 'MAX_WORKER_RSS_MIB', nonNegative('--max-worker-rss-mib'), SERVER_DEFAULTS.maxWorkerRssMiB))
    .addOption(option('--max-large-bodies <n>', 'large request bodies (--large-body-mib) read and parsed at once before 503 (0: no limit)', 'MAX_LARGE_BODIES', whole('--max-large-bodies', 0), SERVER_DEFAULTS.maxLargeBodies))
    .addOption(option('--large-body-mib <mib>', 'request bodies over this are large: parsed in a worker thread, off the event loop, and counted by --max-large-bodies', 'LARGE_BODY_MIB', num('--large-body-mib'), SERVER_DEFAULTS.largeBodyMiB))
    .addOption(option('--request-timeout <s>', 'seconds a request may run on a worker before it is cancelled', 'REQUEST_TIMEOUT', num('--request-timeout'), SERVER_DEFAULTS.requestTimeoutMs / 1000))
    .addOption(option('--headers-timeout <s>', 'seconds a client may take to send the request headers (then 408)', 'HEADERS_TIMEOUT', positive('--headers-timeout'), SERVER_DEFAULTS.headersTimeoutMs / 1000))
    .addOption(option('--receive-timeout <s>', 'seconds a client may take to send a whole request, body included (then 408; 0: none)', 'RECEIVE_TIMEOUT', nonNegative('--receive-timeout'), SERVER_DEFAULTS.receiveTimeoutMs / 1000))
    .addOption(option('--body-idle-timeout <s>', 'seconds of silence while a body is arriving before the connection is closed (0: none)', 'BODY_IDLE_TIMEOUT', nonNegative('--body-idle-timeout'), SERVER_DEFAULTS.bodyIdleTimeoutMs / 1000))
    .addOption(option('--max-upload-mib <mib>', 'largest model or .npy upload', 'MAX_UPLOAD_MIB', num('--max-upload-mib'), SERVER_DEFAULTS.maxUploadMiB))
    .addOption(option('--max-body-mib <mib>', 'largest JSON body', 'MAX_BODY_MIB', num('--max-body-mib'), SERVER_DEFAULTS.maxBodyMiB))
    .addOption(option('--max-samples <n>', 'largest N per request', 'MAX_SAMPLES', whole('--max-samples', 1), DEFAULT_LIMITS.maxSamples))
    .addOption(option('--max-k <n>', 'largest k per request', 'MAX_K', whole('--max-k', 2), DEFAULT_LIMITS.maxK))
    .addOption(option('--max-rows <n>', 'largest N·(2k+1) per request', 'MAX_ROWS', whole('--max-rows', 1), DEFAULT_LIMITS.maxRows))
    .addOption(option('--memory-budget <mib>', 'MiB of layer outputs per batch', 'MEMORY_BUDGET_MIB', num('--memory-budget'), DEFAULT_LIMITS.memoryBudget / MiB))
    .addOption(option('--max-bootstrap-draws <n>', 'release gate: largest samples × resamples', 'MAX_BOOTSTRAP_DRAWS', whole('--max-bootstrap-draws', 1), DEFAULT_MAX_BOOTSTRAP_DRAWS))
    .addOption(option('--token <token>', 'require "Authorization: Bearer <token>" on /v1 routes', 'TOKEN'))
    .addOption(option('--max-nodes <n>', 'upload check: most nodes a model may have (subgraphs and functions count)', 'MAX_NODES', whole('--max-nodes', 1), DEFAULT_SAFETY.maxNodes))
    .addOption(option('--max-weights-mib <mib>', 'upload check: most MiB of weights (initializers and constants) a model may declare', 'MAX_WEIGHTS_MIB', nonNegative('--max-weights-mib'), DEFAULT_SAFETY.maxInitializerBytes / MiB))
    .addOption(option('--max-graph-depth <n>', 'upload check: deepest nesting of subgraphs (If, Loop, Scan bodies)', 'MAX_GRAPH_DEPTH', whole('--max-graph-depth', 0), DEFAULT_SAFETY.maxGraphDepth))
    .addOption(option('--session-cache <n>', 'onnxruntime sessions each worker keeps open', 'SESSION_CACHE', whole('--session-cache', 1), SERVER_DEFAULTS.sessionCacheSize))
    .addOption(option('--threads <n>', 'onnxruntime threads per worker (default: the cores shared out among the CPU workers; 0: onnxruntime decides)', 'THREADS', whole('--threads', 0)))
    .addOption(option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'LOG_LEVEL', undefined, SERVER_DEFAULTS.logLevel))
    .addOption(option('--preload <model.onnx>', 'register a model file at startup (repeatable)', 'PRELOAD', collect))
    .addOption(option('--role <role>', 'with --queue: all (answer the API and run jobs), api (answer the API; every heavy call goes through the queue) or worker (run jobs; only health and metrics routes)', 'ROLE', undefined, 'all'))
    .addOption(option('--drain-timeout <s>', 'with --queue, at SIGTERM: seconds the jobs running here may take to finish before they are handed back to the queue', 'DRAIN_TIMEOUT', nonNegative('--drain-timeout'), SERVER_DEFAULTS.drainTimeoutMs / 1000))
    .addOption(option('--queue <url>', 'jobs on Redis with BullMQ, shared by every server given the same URL: redis://HOST:PORT[/DB] (rediss:// for TLS)', 'QUEUE'))
    .action(async (options: Record<string, unknown>, command: Command) => {
      if (options.devices !== undefined && command.getOptionValueSource('device') !== 'default') {
        throw invalid('give --device or --devices, not both');
      }
      const devices = options.devices !== undefined ? parseDeviceList(options.devices as string) : parseDevices(options.device as string);
      // Before anything starts: a bad URL or an unreachable Redis is one line and exit 2.
      const queue = options.queue !== undefined ? parseQueueUrl(options.queue as string) : null;
      const role = options.role as string;
      if (!['all', 'api', 'worker'].includes(role)) throw invalid(`--role ${role}: give all, api or worker`);
      if (role !== 'all' && !queue) throw invalid(`--role ${role} needs --queue: the API and the workers share their jobs through Redis`);
      const reached = queue ? await checkQueue(queue) : null;
      const cuda = resolveCudaSettings({
        memoryLimitMiB: options.cudaMemoryLimit as number,
        convAlgoSearch: options.cudaConvAlgoSearch as ConvAlgoSearch,
        tf32: options.cudaTf32 as boolean,
      });
      // The workers' sessions read these (and set NVIDIA_TF32_OVERRIDE before CUDA loads).
      const workerEnv = {
        HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB: String(cuda.memoryLimitMiB),
        HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH: cuda.convAlgoSearch,
        HESSIAN_AUDIT_CUDA_TF32: cuda.tf32 ? 'on' : 'off',
      };
      const workers = (options.workers as number | undefined) ?? defaultWorkers(devices[0]);
      const seconds = (name: string): number => Math.round((options[name] as number) * 1000);
      const [headersTimeoutMs, receiveTimeoutMs] = [seconds('headersTimeout'), seconds('receiveTimeout')];
      if (receiveTimeoutMs > 0 && headersTimeoutMs > receiveTimeoutMs) throw invalid('--headers-timeout must not be longer than --receive-timeout');
      const config: ServerConfig = serverConfig({
        host: options.host as string,
        port: options.port as number,
        devices,
        modelDir: options.modelDir as string,
        storeQuotaBytes: Math.round((options.storeQuotaMib as number) * MiB),
        workers,
        maxQueue: options.maxQueue as number,
        maxPerClient: options.maxPerClient as number,
        maxLargeBodies: options.maxLargeBodies as number,
        largeBodyBytes: Math.round((options.largeBodyMib as number) * MiB),
        maxWorkerRssBytes: Math.round((options.maxWorkerRssMib as number) * MiB),
        batchMaxRequests: options.batchMaxRequests as number,
        batchDelayMs: options.batchDelayMs as number,
        requestTimeoutMs: (options.requestTimeout as number) * 1000,
        headersTimeoutMs,
        receiveTimeoutMs,
        bodyIdleTimeoutMs: seconds('bodyIdleTimeout'),
        drainTimeoutMs: seconds('drainTimeout'),
        maxUploadBytes: Math.round((options.maxUploadMib as number) * MiB),
        maxBodyBytes: Math.round((options.maxBodyMib as number) * MiB),
        limits: {
          maxSamples: options.maxSamples as number,
          maxK: options.maxK as number,
          maxRows: options.maxRows as number,
          memoryBudget: Math.round((options.memoryBudget as number) * MiB),
          maxBootstrapDraws: options.maxBootstrapDraws as number,
        },
        ...(options.token ? { token: options.token as string } : {}),
        sessionCacheSize: options.sessionCache as number,
        safety: {
          maxNodes: options.maxNodes as number,
          maxInitializerBytes: Math.round((options.maxWeightsMib as number) * MiB),
          maxGraphDepth: options.maxGraphDepth as number,
        },
        // onnxruntime's default takes every core for each worker; several workers would then fight.
        intraOpThreads: (options.threads as number | undefined) ?? Math.max(1, Math.floor(availableParallelism() / (workers * devices.length))),
        logLevel: options.logLevel as string,
        workerEnv,
        ...(queue ? { queue } : {}),
        role: role as ServerRole,
        ...(process.env.HESSIAN_AUDIT_JOB_LOCK_MS ? { jobLockMs: Number(process.env.HESSIAN_AUDIT_JOB_LOCK_MS) } : {}),
      });
      const { app, context } = await buildApp(config);
      const stopped = new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          const drain = queue ? ` and, for up to ${config.drainTimeoutMs / 1000} s, the jobs running here (the rest go back to the queue)` : '';
          io.stderr(`${signal}: finishing requests in flight${drain}, then exiting`);
          app.close().then(resolve, resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      try {
        await context.pool.openProviders();
        const preload = ((options.preload as string[] | string | undefined) ?? []);
        const files = (Array.isArray(preload) ? preload : [preload]).flatMap((p) => p.split(',')).filter(Boolean);
        const models = [];
        for (const path of files) models.push({ path, ...(await registerModelFile(context, path)) });
        await listen(app, config);
        const address = app.server.address();
        const port = typeof address === 'object' && address ? address.port : config.port;
        const base = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`;
        const lanes = context.pool.status().lanes.map((l) => `${l.device}: ${l.workers} worker(s) on ${l.executionProvider ?? `no provider (${l.probeError})`}`);
        if (devices.some((d) => d.kind === 'cuda' || d.kind === 'auto')) {
          const c = describeCudaSettings(cuda, { ...process.env, ...cudaEnvironment(cuda) });
          io.stderr(`CUDA provider settings: TF32 ${c.tf32}; memory limit ${c.memoryLimit}; cuDNN algorithm search ${c.convAlgoSearch}`);
        }
        if (queue && reached) io.stderr(`queue: jobs on Redis ${reached.version} at ${queue.display} (BullMQ queue ${QUEUE_NAME}); role ${role}${ROLES[role as ServerRole]}`);
        io.stderr(`hessian-audit listening on ${base} (${lanes.join('; ')}; models in ${config.modelDir}); API docs at ${base}/docs`);
        // Never the token itself: it may have come from the environment, and logs are read by many.
        const auth = config.token ? ` -H "authorization: Bearer $HESSIAN_AUDIT_TOKEN"` : '';
        for (const m of models) {
          io.stderr(`model ${basename(m.path)} registered as ${m.id}`);
          io.stderr(
            `  curl -s -X POST ${base}/v1/models/${m.id}/penalty -H 'content-type: application/json'${auth} -d '{"latents": {"samples": 8}, "k": 4, "seed": 1}'`,
          );
        }
      } catch (err) {
        await app.close();
        throw err;
      }
      await stopped;
    });
}
