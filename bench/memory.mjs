// Peak memory against k: dcgan.onnx, N = 64, k = 2, 8, 32, 64, each in a fresh process.
// With streaming variance and a fixed memory budget, batches hold the same number of rows
// whatever k is, so peak RSS must not grow with k (target: k = 64 ≤ 1.5 × k = 2).
// The budget (MEMORY_BUDGET_MIB, default 8) is the service's per-batch setting; k = 2 fills one batch.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BUDGET_MIB = Number(process.env.MEMORY_BUDGET_MIB ?? 8);
const child = `
  const { readFileSync } = await import('node:fs');
  const { evaluatePenalty, SessionCache } = await import(${JSON.stringify(new URL('../dist/metrics/evaluate.js', import.meta.url).href)});
  const { loadModel } = await import(${JSON.stringify(new URL('../dist/runtime/model.js', import.meta.url).href)});
  const { DEFAULT_LIMITS } = await import(${JSON.stringify(new URL('../dist/contract/request.js', import.meta.url).href)});
  const model = loadModel(new Uint8Array(readFileSync(${JSON.stringify(fileURLToPath(new URL('../models/dcgan.onnx', import.meta.url)))})));
  const limits = { ...DEFAULT_LIMITS, memoryBudget: ${BUDGET_MIB} * 1024 * 1024 };
  const r = await evaluatePenalty(model, { latents: { samples: 64 }, k: Number(process.argv[1]), seed: 1 }, { device: { kind: 'cpu' }, sessions: new SessionCache(1), limits });
  console.log(JSON.stringify({ k: r.k, rows: r.rows, batches: r.batches, peakRssMiB: process.resourceUsage().maxRSS / 1024, penalty: r.penalty }));
`;
const rows = [];
for (const k of [2, 8, 32, 64]) {
  rows.push(JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', child, String(k)], { encoding: 'utf8' })));
}
const base = rows[0].peakRssMiB;
for (const r of rows) r.ratioToK2 = Number((r.peakRssMiB / base).toFixed(3));
console.log(JSON.stringify({ model: 'dcgan.onnx', samples: 64, memoryBudgetMiB: BUDGET_MIB, runs: rows, target: 'k=64 ≤ 1.5 × k=2' }, null, 2));
