#!/usr/bin/env node
/**
 * Load on the HTTP service: `hessian-audit serve` as a child process on 127.0.0.1, penalty requests
 * from autocannon at concurrency 8 and 32 for a fixed time each, and /healthz probed alongside to
 * show that the event loop stays free (target: p99 < 50 ms). Then one request end to end over HTTP
 * against the same evaluatePenalty call in process (target: ratio <= 1.2).
 *
 *   npm run build && node bench/server-load.mjs [--seconds 10] [--workers N] [--threads T] [--samples 8] [--k 4]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import autocannon from 'autocannon';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    workers: { type: 'string' },
    threads: { type: 'string' },
    samples: { type: 'string', default: '8' },
    k: { type: 'string', default: '4' },
    model: { type: 'string', default: 'models/dcgan.onnx' },
    'batch-max-requests': { type: 'string' },
    'batch-delay-ms': { type: 'string' },
  },
});
const seconds = Number(opts.seconds);
// The serve command's defaults, made explicit so that the in-process call gets the same settings.
const cores = cpus().length;
opts.workers ??= String(Math.max(1, Math.floor(cores / 2)));
opts.threads ??= String(Math.max(1, Math.floor(cores / Number(opts.workers))));
const request = { latents: { samples: Number(opts.samples) }, k: Number(opts.k), seed: 1 };
const body = JSON.stringify(request);

const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const median = (xs) => percentile(xs, 50);
const ms = (x) => `${x.toFixed(1)} ms`;

async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'ha-bench-'));
  const args = ['dist/cli/main.js', 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--preload', opts.model, '--log-level', 'warn'];
  args.push('--workers', opts.workers, '--threads', opts.threads);
  if (opts['batch-max-requests']) args.push('--batch-max-requests', opts['batch-max-requests']);
  if (opts['batch-delay-ms']) args.push('--batch-delay-ms', opts['batch-delay-ms']);
  // Every load client shares one address: the per-client limit would turn this into a test of it.
  args.push('--max-per-client', '0');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => (err += d));
  const deadline = Date.now() + 60_000;
  while (!/registered as [0-9a-f]{64}/.test(err)) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`serve did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const base = /listening on (http:\/\/[^ ]+)/.exec(err)[1];
  const id = /registered as ([0-9a-f]{64})/.exec(err)[1];
  const workers = /(\d+) worker\(s\)/.exec(err)[1];
  return {
    base,
    id,
    workers,
    stop: async () => {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.on('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function timedRequest(url, method = 'GET', payload) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.request(url, { method, agent, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - started, text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * /healthz every 20 ms while the load runs, from a worker thread with its own event loop and
 * connection, so that autocannon's work in this thread does not count as server latency.
 */
const PROBE = `
  const { parentPort, workerData } = require('node:worker_threads');
  const http = require('node:http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const latencies = [];
  let running = true;
  parentPort.on('message', () => { running = false; });
  const once = () => new Promise((resolve, reject) => {
    const t = performance.now();
    http.get(workerData + '/healthz', { agent }, (res) => { res.resume(); res.on('end', () => resolve(performance.now() - t)); }).on('error', reject);
  });
  (async () => {
    while (running) { latencies.push(await once()); await new Promise((r) => setTimeout(r, 20)); }
    parentPort.postMessage(latencies);
    agent.destroy();
  })();
`;
function probeHealth(base) {
  const worker = new Worker(PROBE, { eval: true, workerData: base });
  const done = new Promise((resolve) => worker.once('message', resolve));
  return async () => {
    worker.postMessage('stop');
    const latencies = await done;
    await worker.terminate();
    return latencies;
  };
}

async function load(server, connections) {
  const stop = probeHealth(server.base);
  const result = await autocannon({
    url: `${server.base}/v1/models/${server.id}/penalty`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    connections,
    duration: seconds,
  });
  const health = await stop();
  const rows = request.latents.samples * (2 * request.k + 1);
  return {
    connections,
    requests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    throughput: result.requests.average,
    rowsPerSecond: result.requests.average * rows,
    latency: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max },
    healthz: { probes: health.length, p50: percentile(health, 50), p99: percentile(health, 99), max: Math.max(...health) },
  };
}

/** One request at a time, HTTP and in-process interleaved so that background load hits both alike. */
async function single(server) {
  const url = `${server.base}/v1/models/${server.id}/penalty`;
  const model = loadModel(new Uint8Array(readFileSync(opts.model)));
  const settings = { intraOpThreads: Number(opts.threads) };
  // The same session settings as the server's workers.
  class Sessions extends SessionCache {
    get(id, bytes, layers, device) {
      return super.get(id, bytes, layers, device, settings);
    }
  }
  const sessions = new Sessions(1);
  const context = { device: parseDevice('cpu'), sessions };
  const viaHttp = [];
  const inWorker = [];
  const local = [];
  for (let i = 0; i < 35; i++) {
    const res = await timedRequest(url, 'POST', body);
    const h = res.ms;
    if (i >= 5) inWorker.push(JSON.parse(res.text).timings.totalMs);
    const t = performance.now();
    await evaluatePenalty(model, { ...request }, context);
    const l = performance.now() - t;
    if (i >= 5) {
      viaHttp.push(h);
      local.push(l);
    }
  }
  await sessions.clear();
  return { httpMs: median(viaHttp), workerMs: median(inWorker), inProcessMs: median(local), ratio: median(viaHttp) / median(local) };
}

const server = await startServer();
try {
  console.log(`hessian-audit server load: ${opts.model}, N=${request.latents.samples} k=${request.k} (${request.latents.samples * (2 * request.k + 1)} rows/request), ${server.workers} worker(s), onnxruntime threads ${opts.threads === '0' ? 'auto' : opts.threads}, ${cores} cores, load average ${loadavg()[0].toFixed(1)}, ${seconds} s per level`);
  const one = await single(server);
  console.log(
    `single request: HTTP ${ms(one.httpMs)} (evaluatePenalty inside the worker ${ms(one.workerMs)}) vs in-process ${ms(one.inProcessMs)} (medians of 30, interleaved) -> ratio ${one.ratio.toFixed(2)} (target <= 1.2)`,
  );
  const levels = [];
  for (const c of [8, 32]) {
    const r = await load(server, c);
    levels.push(r);
    console.log(
      `concurrency ${String(c).padStart(2)}: ${r.throughput.toFixed(1)} req/s (${Math.round(r.rowsPerSecond)} rows/s), ${r.requests} requests, non-2xx ${r.non2xx}, errors ${r.errors}; ` +
        `latency p50 ${r.latency.p50} ms p90 ${r.latency.p90} ms p99 ${r.latency.p99} ms; ` +
        `/healthz p50 ${ms(r.healthz.p50)} p99 ${ms(r.healthz.p99)} max ${ms(r.healthz.max)} over ${r.healthz.probes} probes (target p99 < 50 ms)`,
    );
  }
  console.log(JSON.stringify({ single: one, levels }));
} finally {
  agent.destroy();
  await server.stop();
}
