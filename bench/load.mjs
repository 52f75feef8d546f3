#!/usr/bin/env node
/**
 * Load: autocannon sends penalty requests to `hessian-audit serve` (a child process on 127.0.0.1,
 * bounded queue) and every response is checked: no 5xx, every non-2xx a 503 with Retry-After,
 * every 2xx body with exactly the numbers of one unloaded request with the same seed. Prints
 * throughput, latency percentiles of the 2xx responses, and rows per second under load against
 * the bare onnxruntime rate: session.run alone on the same batch with the workers' thread setting,
 * times the number of workers (what W workers on W free cores could reach at best).
 *
 * usage: npm run build && node bench/load.mjs [--requests 10000] [--connections 64] [--workers 2]
 *        [--threads 1] [--max-queue 32] [--model models/dcgan.onnx] [--samples 4] [--k 2]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import * as ort from 'onnxruntime-node';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '64' },
    workers: { type: 'string', default: '2' },
    threads: { type: 'string', default: '1' },
    'max-queue': { type: 'string', default: '32' },
    model: { type: 'string', default: 'models/dcgan.onnx' },
    samples: { type: 'string', default: '4' },
    k: { type: 'string', default: '2' },
    'time-limit': { type: 'string', default: '600' },
  },
});
const opt = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, k === 'model' ? v : Number(v)]));
const BIN = new URL('../dist/cli/main.js', import.meta.url).pathname;

async function startServer(dir) {
  const args = [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--device', 'cpu', '--log-level', 'silent'];
  args.push('--workers', String(opt.workers), '--threads', String(opt.threads), '--max-queue', String(opt['max-queue']));
  // Every load client shares one address: the per-client limit would turn this into a test of it.
  args.push('--max-per-client', '0');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), 60_000);
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${stderr}`)));
  });
  return { proc, url };
}

const numbers = (body) => JSON.stringify(body.layers.map((l) => [l.name, l.penalty, l.perSample]));
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** session.run alone on batches of `rows` rows: the rate the service is compared with. */
async function bareRows(bytes, inputName, latentSize, rows, threads) {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, graphOptimizationLevel: 'all' });
  const feed = { [inputName]: new ort.Tensor('float32', new Float32Array(rows * latentSize).fill(0.5), [rows, latentSize]) };
  for (let i = 0; i < 5; i++) await session.run(feed);
  let runs = 0;
  const start = performance.now();
  while (performance.now() - start < 3000) {
    await session.run(feed);
    runs++;
  }
  const seconds = (performance.now() - start) / 1000;
  await session.release();
  return (runs * rows) / seconds;
}

const dir = mkdtempSync(join(tmpdir(), 'ha-load-'));
const { proc, url } = await startServer(dir);
try {
  const bytes = readFileSync(opt.model);
  const form = new FormData();
  form.append('model', new Blob([bytes]), 'model.onnx');
  const model = await (await fetch(`${url}/v1/models`, { method: 'POST', body: form })).json();
  const request = { latents: { samples: opt.samples, seed: 1 }, k: opt.k, seed: 1 };
  const body = JSON.stringify(request);
  const endpoint = `${url}/v1/models/${model.id}/penalty`;
  const unloaded = await (await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).json();
  const expected = numbers(unloaded);

  const tally = { status: {}, mismatched: 0, fiveHundreds: 0, otherNon2xx: 0, no503RetryAfter: 0, retryAfter: {} };
  const started = performance.now();
  const result = await autocannon({
    url: endpoint,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    connections: opt.connections,
    amount: opt.requests,
    timeout: 60,
    excludeErrorStats: true,
    maxOverallRequests: opt.requests,
    duration: opt['time-limit'],
    requests: [
      {
        onResponse: (status, text, _context, headers) => {
          tally.status[status] = (tally.status[status] ?? 0) + 1;
          if (status >= 200 && status < 300) {
            if (numbers(JSON.parse(text)) !== expected) tally.mismatched++;
          } else if (status >= 500 && status !== 503) {
            tally.fiveHundreds++;
          } else if (status === 503) {
            const after = headers['retry-after'];
            if (after === undefined) tally.no503RetryAfter++;
            else tally.retryAfter[after] = (tally.retryAfter[after] ?? 0) + 1;
          } else {
            tally.otherNon2xx++;
          }
        },
      },
    ],
  });
  const seconds = (performance.now() - started) / 1000;
  const ok = Object.entries(tally.status).reduce((n, [s, c]) => n + (Number(s) < 300 ? c : 0), 0);
  const rowsPerRequest = unloaded.rows;
  const servedRowsPerSecond = (ok * rowsPerRequest) / seconds;
  const readyz = await (await fetch(`${url}/readyz`)).json();

  const inputName = unloaded.wrt;
  const latentSize = (model.inputs.find((i) => i.name === inputName).shape ?? []).slice(1).reduce((a, b) => a * b, 1);
  // One session with the workers' thread setting; W workers on W cores at best reach W times that.
  const bareOne = await bareRows(bytes, inputName, latentSize, rowsPerRequest, Math.max(1, opt.threads));
  const bare = bareOne * opt.workers;

  const report = {
    setup: {
      model: opt.model,
      request,
      rowsPerRequest,
      requests: opt.requests,
      connections: opt.connections,
      workers: opt.workers,
      threadsPerWorker: opt.threads,
      maxQueue: opt['max-queue'],
      machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}, onnxruntime-node ${ort.env.versions.node}`,
    },
    responses: { sent: result.requests.sent, answered: Object.values(tally.status).reduce((a, b) => a + b, 0), byStatus: tally.status, errors: result.errors, timeouts: result.timeouts },
    checks: {
      fiveHundreds: tally.fiveHundreds,
      otherNon2xx: tally.otherNon2xx,
      status503WithoutRetryAfter: tally.no503RetryAfter,
      retryAfterValues: tally.retryAfter,
      twoHundredsWithOtherNumbers: tally.mismatched,
      workerRestarts: readyz.restarts,
    },
    throughput: {
      seconds: Math.round(seconds * 100) / 100,
      requestsPerSecond: Math.round((result.requests.sent / seconds) * 10) / 10,
      okPerSecond: Math.round((ok / seconds) * 10) / 10,
    },
    latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max },
    rowsPerSecond: {
      underLoad: Math.round(servedRowsPerSecond),
      bareOneSession: Math.round(bareOne),
      bareOnnxruntime: Math.round(bare),
      ratio: Math.round((servedRowsPerSecond / bare) * 1000) / 1000,
    },
  };
  const ok2xx = report.checks;
  report.pass = ok2xx.fiveHundreds === 0 && ok2xx.otherNon2xx === 0 && ok2xx.status503WithoutRetryAfter === 0 && ok2xx.twoHundredsWithOtherNumbers === 0 && result.errors === 0;
  console.log(JSON.stringify(report, null, 2));
  process.exitCode = report.pass ? 0 : 1;
} finally {
  proc.kill('SIGTERM');
  await new Promise((resolve) => proc.once('exit', resolve));
  rmSync(dir, { recursive: true, force: true });
}
