#!/usr/bin/env node
/**
 * Issue 11 figures, against `hessian-audit serve` as a child process on 127.0.0.1 (defaults):
 *  1. /healthz latency (p50, p99, max) idle, and while the heaviest allowed gate (samples × resamples
 *     at --max-bootstrap-draws) and bodies at the body limit (--max-body-mib) are in flight;
 *  2. peak worker RSS (VmHWM of the worker process) for each crafted memory-bomb model, which the
 *     server now refuses before allocating.
 * Bounded: a fixed number of requests, 127.0.0.1 only.
 *
 *   npm run build && node bench/admission.mjs
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelProto } from '../dist/onnx/proto.js';

const BIN = new URL('../dist/cli/main.js', import.meta.url).pathname;

async function serve(args = []) {
  const dir = mkdtempSync(join(tmpdir(), 'ha-bench-admission-'));
  const proc = spawn(process.execPath, [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--device', 'cpu', '--log-level', 'silent', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.setEncoding('utf8');
  const url = await new Promise((resolve, reject) => {
    proc.stderr.on('data', (c) => {
      err += c;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)));
  });
  return { url, stop: () => (proc.kill('SIGKILL'), rmSync(dir, { recursive: true, force: true })) };
}

async function upload(url, bytes) {
  const form = new FormData();
  form.append('model', new Blob([bytes]), 'm.onnx');
  const res = await fetch(`${url}/v1/models`, { method: 'POST', body: form });
  return (await res.json()).id;
}

const post = (url, path, body) => fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

/** Probe /healthz every 20 ms until `done` settles; latencies in ms. */
async function probe(url, done) {
  const times = [];
  let finished = false;
  done.finally(() => (finished = true));
  while (!finished) {
    const t = performance.now();
    await (await fetch(`${url}/healthz`)).text();
    times.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 20));
  }
  return times;
}
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const row = (label, xs) => console.log(`| ${label} | ${xs.length} | ${pct(xs, 50).toFixed(1)} | ${pct(xs, 99).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`);

// ---- 1. /healthz under the heaviest gate and the largest bodies ----
{
  const server = await serve();
  const model = (name) => new Uint8Array(readFileSync(new URL(`../models/${name}`, import.meta.url)));
  const baseline = await upload(server.url, model('dcgan.onnx'));
  const candidate = await upload(server.url, model('dcgan_entangled.onnx'));
  const mlp = await upload(server.url, model('mlp.onnx'));
  console.log('| load | probes | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |');
  row('idle', await probe(server.url, new Promise((r) => setTimeout(r, 2000))));
  // samples × resamples = 4096 × 4096 = the default --max-bootstrap-draws (16,777,216).
  const gateBody = JSON.stringify({ candidate, baseline, penalty: { samples: 4096, k: 2, seed: 1 }, resamples: 4096 });
  const gate = post(server.url, '/v1/gate', gateBody).then(async (r) => ({ status: r.status, ms: 0, body: (await r.text()).slice(0, 120) }));
  const gateStart = performance.now();
  const gateTimes = await probe(server.url, gate);
  const g = await gate;
  row(`heaviest gate (4096 samples × 4096 resamples, ${((performance.now() - gateStart) / 1000).toFixed(1)} s, status ${g.status})`, gateTimes);
  // Bodies at the 64 MiB limit: 4 at once (2 read, the others 503 at once), latents too many to accept.
  const rowText = `[${Array(8).fill('0.125').join(',')}]`;
  const rows = Math.floor((63 * 1024 * 1024) / (rowText.length + 1));
  const big = `{"k": 2, "seed": 1, "latents": [${Array(rows).fill(rowText).join(',')}]}`;
  const bodies = Promise.all(Array.from({ length: 4 }, () => post(server.url, `/v1/models/${mlp}/penalty`, big).then((r) => r.status)));
  const bodyStart = performance.now();
  const bodyTimes = await probe(server.url, bodies);
  row(`4 × ${(big.length / 1024 / 1024).toFixed(0)} MiB bodies (${((performance.now() - bodyStart) / 1000).toFixed(1)} s, statuses ${(await bodies).join(' ')})`, bodyTimes);
  server.stop();
}

// ---- 2. Peak worker RSS for the crafted models ----
const type = modelProto();
const encode = (m) => type.encode(type.fromObject(m)).finish();
const float = (name, dims) => ({ name, type: { tensorType: { elemType: 1, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } });
const int64 = (name, values) => ({ name, dims: [values.length], dataType: 7, rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer) });
const wrap = (name, node, initializer, input, output) => encode({ irVersion: 8, opsetImport: [{ domain: '', version: 14 }], graph: { name, node, initializer, input, output } });
const crafted = {
  'Expand to [N, 3, 2^26]': wrap('expand', [{ opType: 'Unsqueeze', input: ['z', 'axes'], output: ['u'] }, { opType: 'Expand', input: ['u', 't'], output: ['y'] }], [int64('axes', [2]), int64('t', [1, 1, 2 ** 26])], [float('z', ['N', 3])], [float('y', ['N', 3, 2 ** 26])]),
  'Tile(z [N, 1024], [1, N]) (grows with the batch)': wrap('tile', [{ opType: 'Shape', input: ['z'], output: ['s'] }, { opType: 'Slice', input: ['s', 'zero', 'one'], output: ['n'] }, { opType: 'Concat', input: ['one', 'n'], output: ['r'], attribute: [{ name: 'axis', type: 2, i: 0 }] }, { opType: 'Tile', input: ['z', 'r'], output: ['y'] }], [int64('zero', [0]), int64('one', [1])], [float('z', ['N', 1024])], [float('y', ['N', 'M'])]),
  'ConstantOfShape [1, 2^30] (folded at session creation)': wrap('cos', [{ opType: 'Identity', input: ['z'], output: ['y'] }, { opType: 'ConstantOfShape', input: ['size'], output: ['c'] }], [int64('size', [1, 2 ** 30])], [float('z', ['N', 3])], [float('y', ['N', 3]), float('c', [1, 2 ** 30])]),
};
console.log('\n| crafted model | status | code | worker VmHWM before MiB | after MiB |\n| --- | --- | --- | --- | --- |');
for (const [name, bytes] of Object.entries(crafted)) {
  const server = await serve(['--workers', '1']);
  const id = await upload(server.url, bytes);
  const pid = (await (await fetch(`${server.url}/readyz`)).json()).lanes[0].pids[0];
  const hwm = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
  const before = hwm();
  const res = await post(server.url, `/v1/models/${id}/penalty`, JSON.stringify({ k: 2, seed: 1, latents: { samples: 256 }, layers: ['y'] }));
  const body = await res.json();
  console.log(`| ${name} | ${res.status} | ${body.error?.code ?? 'ok'} | ${before.toFixed(0)} | ${hwm().toFixed(0)} |`);
  server.stop();
}
