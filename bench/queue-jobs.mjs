#!/usr/bin/env node
/**
 * Jobs through Redis against jobs in the server's memory (issue 29), measured in one run on the same
 * small request, the two servers loaded alternately:
 * - jobs per second: CONCURRENCY clients, each submitting a job (Prefer: respond-async) and waiting
 *   for its "done" event, JOBS jobs a round, ROUNDS rounds each, medians;
 * - the latency one job adds: one client, one job at a time, submission to "done" (median, p95),
 *   and the synchronous route for reference;
 * - a worker's cold start: a job waits on an `api` server with no worker; a `worker` server is
 *   started; the time from its start to the job's end (process, Redis, onnxruntime session),
 *   against the same job on a warm worker.
 * Redis runs as deploy/redis.yaml runs it (append-only file fsynced per write, noeviction).
 *
 *   npm run build && node bench/queue-jobs.mjs [--jobs 200] [--rounds 3] [--concurrency 8] [--threads 1]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    jobs: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    threads: { type: 'string', default: '1' },
    latency: { type: 'string', default: '100' },
    model: { type: 'string', default: 'models/dcgan.onnx' },
  },
});
const JOBS = Number(opts.jobs);
const ROUNDS = Number(opts.rounds);
const CONCURRENCY = Number(opts.concurrency);
const LATENCY = Number(opts.latency);
const REQUEST = { k: 2, seed: 1, latents: { samples: 8 } };
const BIN = new URL('../dist/cli/main.js', import.meta.url).pathname;
const children = [];
const folders = [];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const ms = (x) => `${x.toFixed(1)} ms`;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function folder(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  folders.push(dir);
  return dir;
}

async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction', '--dir', folder('ha-bench-redis-')], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(proc);
  await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('Ready to accept connections')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
  });
  return `redis://127.0.0.1:${port}`;
}

async function serve(args, dir) {
  const proc = spawn(process.execPath, [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--device', 'cpu', '--log-level', 'silent', '--workers', '1', '--threads', opts.threads, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(proc);
  let err = '';
  proc.stderr.setEncoding('utf8');
  const started = performance.now();
  const url = await new Promise((resolve, reject) => {
    proc.stderr.on('data', (chunk) => {
      err += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) resolve(m[1]);
    });
    proc.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  return { url, proc, started };
}

async function upload(url, bytes) {
  const form = new FormData();
  form.append('model', new Blob([bytes]), 'model.onnx');
  const r = await fetch(`${url}/v1/models`, { method: 'POST', body: form });
  return (await r.json()).id;
}

/** Submit one job and wait for its "done" event; the milliseconds it took. */
async function job(url, id, request = REQUEST) {
  const t0 = performance.now();
  for (;;) {
    const r = await fetch(`${url}/v1/models/${id}/penalty`, { method: 'POST', headers: { 'content-type': 'application/json', prefer: 'respond-async' }, body: JSON.stringify(request) });
    if (r.status === 503) {
      await r.text();
      await new Promise((res) => setTimeout(res, 50));
      continue;
    }
    if (r.status !== 202) throw new Error(`submit: ${r.status} ${await r.text()}`);
    const location = r.headers.get('location');
    await r.text();
    const events = await (await fetch(`${url}${location}/events`)).text();
    if (!events.includes('"state":"succeeded"')) throw new Error(`job: ${events.slice(-500)}`);
    return performance.now() - t0;
  }
}

async function sync(url, id) {
  const t0 = performance.now();
  const r = await fetch(`${url}/v1/models/${id}/penalty`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(REQUEST) });
  if (r.status !== 200) throw new Error(`sync: ${r.status}`);
  await r.text();
  return performance.now() - t0;
}

async function throughput(url, id) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < JOBS) {
        next++;
        await job(url, id);
      }
    }),
  );
  return JOBS / ((performance.now() - t0) / 1000);
}

async function main() {
  const bytes = readFileSync(opts.model);
  const redisUrl = await startRedis();
  const memory = await serve([], folder('ha-bench-mem-'));
  const redis = await serve(['--queue', `${redisUrl}/0`], folder('ha-bench-redis-store-'));
  const sides = [
    { name: 'in memory', server: memory },
    { name: 'Redis (BullMQ)', server: redis },
  ];
  for (const side of sides) side.id = await upload(side.server.url, bytes);
  // Warm: sessions open, the probe and noise caches filled.
  for (const side of sides) for (let i = 0; i < 5; i++) await job(side.server.url, side.id);

  const rates = { 'in memory': [], 'Redis (BullMQ)': [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const side of round % 2 === 0 ? sides : [...sides].reverse()) rates[side.name].push(await throughput(side.server.url, side.id));
  }
  const latency = { 'in memory': [], 'Redis (BullMQ)': [] };
  const syncMs = [];
  for (let i = 0; i < LATENCY; i++) {
    for (const side of i % 2 === 0 ? sides : [...sides].reverse()) latency[side.name].push(await job(side.server.url, side.id));
    syncMs.push(await sync(memory.url, sides[0].id));
  }

  // Cold start: a job waiting on an api server; a worker started for it.
  const dir = folder('ha-bench-cold-');
  const api = await serve(['--queue', `${redisUrl}/1`, '--role', 'api'], dir);
  const apiId = await upload(api.url, bytes);
  const cold = [];
  const warm = [];
  for (let i = 0; i < 3; i++) {
    const waiting = job(api.url, apiId, { ...REQUEST, seed: 100 + i });
    await new Promise((res) => setTimeout(res, 200));
    const worker = await serve(['--queue', `${redisUrl}/1`, '--role', 'worker'], dir);
    await waiting;
    cold.push(performance.now() - worker.started);
    warm.push(await job(api.url, apiId, { ...REQUEST, seed: 200 + i }));
    worker.proc.kill('SIGTERM');
    await new Promise((res) => worker.proc.once('exit', res));
  }

  const [m, r] = [rates['in memory'], rates['Redis (BullMQ)']];
  console.log(`machine: ${cpus().length} × ${cpus()[0].model}; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ${new Date().toISOString()}`);
  console.log(`request: ${opts.model} ${JSON.stringify(REQUEST)}; one worker of ${opts.threads} thread(s) per server; Redis with appendfsync always`);
  console.log(`\njobs per second, ${CONCURRENCY} clients, ${JOBS} jobs a round, ${ROUNDS} rounds alternating (medians):`);
  console.log(`| queue | rounds | median | Redis / memory |`);
  console.log(`| --- | --- | --- | --- |`);
  console.log(`| in memory | ${m.map((x) => x.toFixed(1)).join(', ')} | **${median(m).toFixed(1)}** | |`);
  console.log(`| Redis (BullMQ) | ${r.map((x) => x.toFixed(1)).join(', ')} | **${median(r).toFixed(1)}** | ${(median(r) / median(m)).toFixed(2)} |`);
  console.log(`\none job at a time, submission to its "done" event, ${LATENCY} each alternating:`);
  console.log(`| queue | median | p95 |`);
  console.log(`| --- | --- | --- |`);
  for (const side of sides) console.log(`| ${side.name} | ${ms(median(latency[side.name]))} | ${ms(pct(latency[side.name], 95))} |`);
  console.log(`| synchronous route (reference) | ${ms(median(syncMs))} | ${ms(pct(syncMs, 95))} |`);
  const extra = (f) => f(latency['Redis (BullMQ)']) - f(latency['in memory']);
  console.log(`extra latency of a Redis job: median ${ms(extra(median))}, p95 ${ms(extra((xs) => pct(xs, 95)))}`);
  console.log(`\ncold start: worker started → the waiting job done: ${cold.map(ms).join(', ')} (median ${ms(median(cold))}); the same job on that warm worker: ${warm.map(ms).join(', ')} (median ${ms(median(warm))})`);
}

try {
  await main();
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of folders) rmSync(d, { recursive: true, force: true });
}
