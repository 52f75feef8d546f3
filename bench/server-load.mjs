#!/usr/bin/env node
/**
 * Load on the HTTP service: `hessian-audit serve` as a child process on 127.0.0.1, penalty requests
 * from autocannon at concurrency 8 and 32 for a fixed time each, and /healthz probed alongside to
 * show that the event loop stays free (target: p99 < 50 ms). Then one request end to end over HTTP
 * against the same evaluatePenalty call in process (target: ratio <= 1.2).
 *
 * Many small requests (issue 13, dynamic batching): two servers, one batching across requests (the
 * default) and one not (--batch-max-requests 1), loaded in turn at each concurrency, REPEATS times
 * (default 3), medians; rows/s against the floor: the fastest bare onnxruntime rows/s over batch
 * sizes 16…1,024 of one session with the workers' thread setting on --device (measured first, nothing else
 * running), times the number of workers (what they could reach side by side at best). Then
 * eight different concurrent requests on the batching server must give exactly the figures the
 * other server gives each alone.
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
import * as ort from 'onnxruntime-node';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { openSession, SessionCache } from '../dist/runtime/session.js';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    workers: { type: 'string' },
    threads: { type: 'string' },
    samples: { type: 'string', default: '8' },
    k: { type: 'string', default: '4' },
    model: { type: 'string', default: 'models/dcgan.onnx' },
    repeats: { type: 'string', default: '3' },
    device: { type: 'string', default: 'cpu' },
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

async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), 'ha-bench-'));
  const args = ['dist/cli/main.js', 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--preload', opts.model, '--log-level', 'warn'];
  args.push('--workers', opts.workers, '--threads', opts.threads, '--device', opts.device);
  if (opts['batch-delay-ms']) args.push('--batch-delay-ms', opts['batch-delay-ms']);
  args.push(...extra);
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
  const context = { device: parseDevice(opts.device), sessions };
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

/** The floor's rows/s: bare session.run of ROWS rows at each batch size, alternating, medians, the best size. */
async function floor() {
  const bytes = new Uint8Array(readFileSync(opts.model));
  const { session } = await openSession(bytes, [], parseDevice(opts.device), { intraOpThreads: Number(opts.threads) });
  const input = session.inputNames[0];
  const width = latentWidth(bytes);
  const rows = 1152;
  const data = new Float32Array(rows * width).map(() => Math.random() - 0.5);
  const sizes = [16, 32, 64, 128, 256, 512, 1024];
  const times = new Map(sizes.map((b) => [b, []]));
  for (let rep = 0; rep < 5; rep++) {
    for (const b of sizes) {
      const t = performance.now();
      for (let first = 0; first < rows; first += b) {
        const n = Math.min(b, rows - first);
        await session.run({ [input]: new ort.Tensor('float32', data.subarray(first * width, (first + n) * width), [n, width]) });
      }
      times.get(b).push(performance.now() - t);
    }
  }
  await session.release();
  const best = sizes.map((b) => ({ b, ms: median(times.get(b)) })).sort((x, y) => x.ms - y.ms)[0];
  // W workers of T threads each could at best run W such sessions side by side.
  return { rowsPerSecond: ((rows / best.ms) * 1000) * Number(opts.workers), batchRows: best.b, perSession: (rows / best.ms) * 1000 };
}

/** The latent width from the model's description (the first input's last dimension). */
function latentWidth(bytes) {
  return loadModel(bytes).description.inputs[0].shape.at(-1);
}

/** Eight different requests at once on `on`, each alone on `off`: the figures must be the same. */
async function identical(on, off) {
  // noise: false: the measured noise is the session's (a worker replaced when a load level's last
  // requests were cut off measures it again), not a figure of the request.
  const asks = Array.from({ length: 8 }, (_, i) => ({ latents: { samples: 2 + i }, k: 2 + (i % 4), epsilon: 0.05 * (1 + (i % 3)), seed: 100 + i, noise: false }));
  const strip = ({ timings, batches, batchRows, batchRowsFrom, noise, ...rest }) => JSON.stringify(rest);
  const post = (server, ask) => fetch(`${server.base}/v1/models/${server.id}/penalty`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ask) }).then((r) => r.json());
  const together = await Promise.all(asks.map((a) => post(on, a)));
  let same = 0;
  const differ = [];
  for (const [i, a] of asks.entries()) {
    const alone = await post(off, a);
    if (strip(alone) === strip(together[i])) same++;
    else differ.push(Object.keys(alone).find((k) => JSON.stringify(alone[k]) !== JSON.stringify(together[i][k])));
  }
  return { requests: asks.length, same, ...(differ.length ? { differ } : {}) };
}

const floorRate = await floor();
const on = await startServer();
const off = await startServer(['--batch-max-requests', '1']);
try {
  console.log(
    `hessian-audit server load: ${opts.model}, N=${request.latents.samples} k=${request.k} (${request.latents.samples * (2 * request.k + 1)} rows/request), ${on.workers} worker(s), onnxruntime threads ${opts.threads === '0' ? 'auto' : opts.threads}, ${cores} cores, load average ${loadavg()[0].toFixed(1)}, ${seconds} s per level, ${opts.repeats} repeats`,
  );
  console.log(`floor: ${Math.round(floorRate.rowsPerSecond)} rows/s (bare onnxruntime, best batch ${floorRate.batchRows} rows, ${Math.round(floorRate.perSession)} rows/s per session × ${opts.workers} worker(s))`);
  const one = await single(off);
  const rowsPerRequest = request.latents.samples * (2 * request.k + 1);
  one.httpOverFloor = one.httpMs / ((rowsPerRequest / floorRate.perSession) * 1000);
  console.log(
    `single request: HTTP ${ms(one.httpMs)} (evaluatePenalty inside the worker ${ms(one.workerMs)}) vs in-process ${ms(one.inProcessMs)} (medians of 30, interleaved) -> ratio ${one.ratio.toFixed(2)} (target <= 1.2); ` +
      `HTTP = ${one.httpOverFloor.toFixed(2)}x the floor of its ${rowsPerRequest} rows`,
  );
  // Warm-up, not counted: the batching server's session tunes its batch size on its first shared batch.
  for (const server of [on, off]) await autocannon({ url: `${server.base}/v1/models/${server.id}/penalty`, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections: 8, duration: 2 });
  const runs = { on: { 8: [], 32: [] }, off: { 8: [], 32: [] } };
  for (let rep = 0; rep < Number(opts.repeats); rep++) {
    for (const c of [8, 32]) {
      for (const [name, server] of rep % 2 === 0 ? [['on', on], ['off', off]] : [['off', off], ['on', on]]) runs[name][c].push(await load(server, c));
    }
  }
  const levels = [];
  for (const c of [8, 32]) {
    for (const name of ['on', 'off']) {
      const rs = runs[name][c];
      const r = {
        batching: name,
        connections: c,
        rowsPerSecond: median(rs.map((x) => x.rowsPerSecond)),
        overFloor: median(rs.map((x) => x.rowsPerSecond)) / floorRate.rowsPerSecond,
        latencyP99: median(rs.map((x) => x.latency.p99)),
        healthzP99: median(rs.map((x) => x.healthz.p99)),
        non2xx: rs.reduce((n, x) => n + x.non2xx + x.errors, 0),
      };
      levels.push(r);
      console.log(
        `concurrency ${String(c).padStart(2)}, batching ${name.padEnd(3)}: ${Math.round(r.rowsPerSecond)} rows/s = ${r.overFloor.toFixed(2)}x the floor (target >= 0.8), ` +
          `latency p99 ${r.latencyP99} ms, /healthz p99 ${ms(r.healthzP99)} (target < 50 ms), non-2xx or errors ${r.non2xx} (medians of ${rs.length})`,
      );
    }
  }
  const check = await identical(on, off);
  console.log(`identical figures: ${check.same} of ${check.requests} concurrent requests on the batching server equal the same request alone${check.differ ? ` (fields that differ: ${check.differ.join(', ')})` : ''}`);
  console.log(JSON.stringify({ floor: floorRate, single: one, levels, identical: check, loadAverage: loadavg() }));
} finally {
  agent.destroy();
  await on.stop();
  await off.stop();
}
