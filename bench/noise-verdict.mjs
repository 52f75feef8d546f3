// The noise verdict against float64 truth (issue 20): every point of models/noise_reference.json
// through evaluatePenalty (ECnoise floor + step-halving), max and mean, as a markdown table and
// the counts docs/noise.md quotes. No timing: the table is deterministic on one machine's CPU.
//   npm run build && node bench/noise-verdict.mjs [--no-halving]
import { readFileSync } from 'node:fs';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';

const halving = !process.argv.includes('--no-halving');
const dir = new URL('../models/', import.meta.url);
const ref = JSON.parse(readFileSync(new URL('noise_reference.json', dir), 'utf8'));
const [n, d] = ref.latents.shape;
const latents = { type: 'float32', shape: [n, d], data: Float32Array.from(ref.latents.data) };
const directions = { type: 'float32', shape: [ref.k, n, d], data: Float32Array.from(ref.directions.data) };
const sessions = new SessionCache(16);
const counts = { max: { warn: [0, 0], quiet: [0, 0], kinks: [0, 0] }, mean: { warn: [0, 0], quiet: [0, 0], kinks: [0, 0] } };
const rows = { penalty: 0, halving: 0 };
const show = (x) => x.toPrecision(3);
for (const [name, sweep] of Object.entries(ref.models)) {
  const model = loadModel(readFileSync(new URL(name, dir)));
  console.log(`\n**${name}**\n\n| ε | float64 max | float32 max | off | verdict | float64 mean | float32 mean | off | verdict |\n|---|---|---|---|---|---|---|---|---|`);
  const by = { max: new Map(sweep.map((p) => [p.epsilon, p.max])), mean: new Map(sweep.map((p) => [p.epsilon, p.mean])) };
  for (const p of sweep) {
    const cells = [];
    for (const reduction of ['max', 'mean']) {
      const r = await evaluatePenalty(model, { latents, directions, epsilon: p.epsilon, reduction, halving }, { device: { kind: 'cpu' }, sessions });
      rows.penalty += r.rows;
      rows.halving += r.halving?.rows ?? 0;
      const f = r.layers[0].penalty;
      const rel = Math.abs(f - p[reduction]) / p[reduction];
      const warn = r.warnings.some((w) => w.code === 'below_noise_floor');
      const kinks = r.warnings.some((w) => w.code === 'kinks');
      const c = counts[reduction];
      if (rel > 1) c.warn[warn ? 0 : 1]++;
      else if (rel <= 0.02) c.quiet[warn ? 1 : 0]++;
      const up = by[reduction].get(2 * p.epsilon);
      const down = by[reduction].get(p.epsilon / 2);
      if (up !== undefined && down !== undefined && p[reduction] / up >= 1.5 && down / p[reduction] >= 1.5) c.kinks[kinks || warn ? 0 : 1]++;
      const truth = rel > 1 ? ' (must warn)' : rel <= 0.02 ? ' (must be silent)' : '';
      cells.push(show(p[reduction]), show(f), `${show(100 * rel)}%${truth}`, warn ? '**below_noise_floor**' : kinks ? 'kinks' : '—');
    }
    console.log(`| ${p.epsilon.toPrecision(3)} | ${cells.join(' | ')} |`);
  }
}
console.log(`\nhalving ${halving ? 'on' : 'off'}; [agree, disagree] per class:`, JSON.stringify(counts));
console.log(`rows: penalty ${rows.penalty}, halving ${rows.halving} (${((100 * rows.halving) / rows.penalty).toFixed(1)}% on top: every ε is a new cache key)`);
sessions.clear();
