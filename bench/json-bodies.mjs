#!/usr/bin/env node
/**
 * Large JSON bodies and the event loop (issue 26, item 3): `hessian-audit serve` as a child process
 * on 127.0.0.1 with --max-large-bodies 4; four ~60 MiB bodies (latents as nested arrays, refused
 * once parsed, test/helpers/json-sender.mjs) sent at once from another process while /healthz is
 * probed every 20 ms. Two servers in turn,
 * REPEATS times: bodies parsed in a worker thread (the default, --large-body-mib 1) and on the event
 * loop (--large-body-mib 64: no body is large). Prints each round's /healthz p50, p99 and max, and
 * the medians (target: p99 < 100 ms off the loop).
 *
 *   npm run build && node bench/json-bodies.mjs [--repeats 3] [--mib 60]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({ options: { repeats: { type: 'string', default: '3' }, mib: { type: 'string', default: '60' } } });
const BIN = new URL('../dist/cli/main.js', import.meta.url).pathname;
const MODEL = new URL('../models/mlp.onnx', import.meta.url).pathname;

async function serve(largeBodyMib) {
  const dir = mkdtempSync(join(tmpdir(), 'ha-json-bench-'));
  const proc = spawn(process.execPath, [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--device', 'cpu', '--log-level', 'silent', '--threads', '1', '--max-large-bodies', '4', '--large-body-mib', String(largeBodyMib)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.setEncoding('utf8');
  const url = await new Promise((resolve, reject) => {
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  const form = new FormData();
  form.append('model', new Blob([readFileSync(MODEL)]), 'mlp.onnx');
  const { id } = await (await fetch(`${url}/v1/models`, { method: 'POST', body: form })).json();
  return { url, id, stop: () => (proc.kill('SIGKILL'), rmSync(dir, { recursive: true, force: true })) };
}

const SENDER = new URL('../test/helpers/json-sender.mjs', import.meta.url).pathname;

/** One round: the sender's four bodies from a process of its own, /healthz probed every 20 ms here meanwhile. */
async function round({ url, id }) {
  const sender = spawn(process.execPath, [SENDER, `${url}/v1/models/${id}/penalty`, opts.mib], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sender.stdout.setEncoding('utf8');
  sender.stdout.on('data', (chunk) => (out += chunk));
  let running = true;
  sender.on('exit', () => (running = false));
  const latencies = [];
  while (running) {
    const started = performance.now();
    await (await fetch(`${url}/healthz`)).arrayBuffer();
    latencies.push(performance.now() - started);
    await new Promise((r) => setTimeout(r, 20));
  }
  const { bytes, replies } = JSON.parse(out);
  if (replies.some((r) => r.status !== 422)) throw new Error(`expected four 422s, got ${replies.map((r) => r.status)}`);
  const sorted = latencies.sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { bytes, probes: sorted.length, p50: at(0.5), p99: at(0.99), max: at(1) };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`four bodies of ${opts.mib} MiB at once; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const sides = { 'worker thread (--large-body-mib 1)': 1, 'event loop (--large-body-mib 64)': 64 };
const results = Object.fromEntries(Object.keys(sides).map((k) => [k, []]));
for (let r = 0; r < Number(opts.repeats); r++) {
  for (const [name, mib] of Object.entries(sides)) {
    const server = await serve(mib);
    try {
      const res = await round(server);
      results[name].push(res);
      console.log(`round ${r + 1} ${name}: ${res.probes} probes, /healthz p50 ${res.p50.toFixed(1)} ms, p99 ${res.p99.toFixed(1)} ms, max ${res.max.toFixed(1)} ms`);
    } finally {
      server.stop();
    }
  }
}
for (const [name, rounds] of Object.entries(results)) {
  console.log(`median ${name}: /healthz p99 ${median(rounds.map((x) => x.p99)).toFixed(1)} ms, max ${median(rounds.map((x) => x.max)).toFixed(1)} ms`);
}
