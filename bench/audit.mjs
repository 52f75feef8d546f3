// Overhead of `audit` on the conv example (dcgan.onnx, d = 12): the whole audit (stochastic
// penalty, full Hessian, activeness, orthogonality, shape probes) against bare onnxruntime runs of
// the same number of rows in the same batch sizes. Prints the ratio; figures go in
// bench/RESULTS.md. Run: npm run build && node bench/audit.mjs [N] [k]
import { readFileSync } from 'node:fs';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { evaluateAudit, evaluateHessian } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const samples = Number(process.argv[2] ?? 16);
const k = Number(process.argv[3] ?? 8);
const REPEATS = 5;
const bytes = new Uint8Array(readFileSync(new URL('../models/dcgan.onnx', import.meta.url)));
const model = loadModel(bytes);
const sessions = new SessionCache(2);
const context = { device: { kind: 'cpu' }, sessions };
const request = { latents: { samples }, seed: 1, k };

// A shared 2-core machine is noisy: the two sides alternate, and the best of REPEATS runs is
// compared (the least-disturbed run of each).
async function compare(a, b) {
  await a();
  await b(); // warm-up: sessions open, allocators grown
  const best = [Infinity, Infinity];
  for (let i = 0; i < REPEATS; i++) {
    for (const [side, fn] of [a, b].entries()) {
      const t = performance.now();
      await fn();
      best[side] = Math.min(best[side], performance.now() - t);
    }
  }
  return best;
}

// The batches the audit runs, read from its own result: each metric's rows cut to its largest batch
// (a tuned or budget size), the last one partial.
const probe = await evaluateAudit(model, request, context);
const cut = (m) => {
  const size = m.batchRows ?? Math.ceil(m.rows / m.batches);
  return Array.from({ length: Math.ceil(m.rows / size) }, (_, i) => Math.min(size, m.rows - i * size));
};
const perMetric = ['penalty', 'hessian', 'activeness', 'orthogonality'].map((name) => cut(probe[name]));
const batches = perMetric.flat();
const rows = batches.reduce((a, b) => a + b, 0);

const bare = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 0 });
const inputs = batches.map((n) => new ort.Tensor('float32', Float32Array.from({ length: n * 12 }, () => Math.random() * 2 - 1), [n, 12]));
const [auditMs, bareMs] = await compare(
  () => evaluateAudit(model, request, context),
  async () => {
    for (const z of inputs) await bare.run({ z });
  },
);
const hessianRows = probe.hessian.rows;
const bareHessian = inputs.slice(perMetric[0].length, perMetric[0].length + perMetric[1].length);
const [hessianMs, bareHessianMs] = await compare(
  () => evaluateHessian(model, request, context),
  async () => {
    for (const z of bareHessian) await bare.run({ z });
  },
);

console.log(`machine      ${os.cpus().length} x ${os.cpus()[0].model}, node ${process.version}, onnxruntime-node CPU`);
console.log(`workload     dcgan.onnx d=12, N=${samples}, k=${k}: ${rows} rows; batches per metric ${perMetric.map((b) => `${b.length}×≤${Math.max(...b)}`).join(', ')}`);
console.log(`audit        ${auditMs.toFixed(0)} ms   bare onnxruntime, same rows: ${bareMs.toFixed(0)} ms   ratio ${(auditMs / bareMs).toFixed(2)}`);
console.log(`hessian      ${hessianMs.toFixed(0)} ms   bare onnxruntime, ${hessianRows} rows: ${bareHessianMs.toFixed(0)} ms   ratio ${(hessianMs / bareHessianMs).toFixed(2)}`);
await bare.release();
await sessions.clear();
