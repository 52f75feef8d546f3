// The noise verdict against float64 truth (issues 20 and 27): every point of
// models/noise_reference.json through evaluatePenalty (ECnoise floor + step test), max and mean, as
// a markdown table (r = |float32 − float64| / float64, the measured exponent, the regime, the
// verdict) and the counts docs/noise.md quotes. No timing: the table is deterministic on one
// machine's CPU.
//   npm run build && node bench/noise-verdict.mjs [--no-step-test]
import { readFileSync } from 'node:fs';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';

const stepTest = !process.argv.includes('--no-step-test');
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
  console.log(`\n**${name}**\n\n| ε | float64 max | float32 max | r | a | regime | verdict | float64 mean | float32 mean | r | a | regime | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|`);
  const by = { max: new Map(sweep.map((p) => [p.epsilon, p.max])), mean: new Map(sweep.map((p) => [p.epsilon, p.mean])) };
  for (const p of sweep) {
    const cells = [];
    for (const reduction of ['max', 'mean']) {
      const r = await evaluatePenalty(model, { latents, directions, epsilon: p.epsilon, reduction, stepTest }, { device: { kind: 'cpu' }, sessions });
      rows.penalty += r.rows;
      rows.halving += r.halving?.rows ?? 0;
      const f = r.layers[0].penalty;
      const rel = Math.abs(f - p[reduction]) / p[reduction];
      const warn = r.warnings.some((w) => w.code === 'below_noise_floor');
      const noise = r.layers[0].noise;
      const kinks = noise?.kinks === true;
      const c = counts[reduction];
      if (rel > 1) c.warn[warn ? 0 : 1]++;
      else if (rel <= 0.02) c.quiet[warn ? 1 : 0]++;
      const up = by[reduction].get(2 * p.epsilon);
      const down = by[reduction].get(p.epsilon / 2);
      if (up !== undefined && down !== undefined && p[reduction] / up >= 1.5 && down / p[reduction] >= 1.5) c.kinks[kinks || warn ? 0 : 1]++;
      const truth = rel > 1 ? ' (must warn)' : rel <= 0.02 ? ' (must be silent)' : '';
      const exponent = noise?.exponent === null || noise?.exponent === undefined ? '—' : noise.exponent.toFixed(2);
      cells.push(show(p[reduction]), show(f), `${show(100 * rel)}%${truth}`, exponent, noise?.regime ?? '—', warn ? '**below_noise_floor**' : '—');
    }
    console.log(`| ${p.epsilon.toPrecision(3)} | ${cells.join(' | ')} |`);
  }
}
console.log(`\nstep test ${stepTest ? 'on' : 'off'}; [agree, disagree] per class:`, JSON.stringify(counts));
console.log(`rows: penalty ${rows.penalty}, halving ${rows.halving} (${((100 * rows.halving) / rows.penalty).toFixed(1)}% on top: every ε is a new cache key)`);
sessions.clear();
