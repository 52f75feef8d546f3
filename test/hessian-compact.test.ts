/** The d² + d + 1 Hessian stencil: exact on quadratics and cubics (float64), O(ε²) otherwise. */
import t from 'tap';
import {
  axisRow,
  combineCompactHessian,
  compactHessianLayout,
  compactHessianRowsPerSample,
  compactStencilMatrix,
  pairRow,
} from '../dist/math/hessian-compact.js';
import { HessianAccumulator, hessianLayout, hessianRowsPerSample, steppedRows } from '../dist/math/hessian.js';
import { planUnits } from '../dist/run/plan.js';

const D = 4;
const Z = Float64Array.of(0.3, -0.7, 1.1, 0.4);
const A = [
  [2, 0.5, -1, 0.25],
  [0.5, -3, 0.75, 0],
  [-1, 0.75, 1, 2],
  [0.25, 0, 2, -0.5],
];
const a = [1, -2, 0.5, 3];
const b = (i: number, j: number) => 0.1 * (i + 1) - 0.2 * (j + 1);
const c = 1.5;

/** Two outputs: a quadratic ½zᵀAz + linear, and a cubic Σaᵢzᵢ³ + Σ_{i<j} b_ij zᵢ²zⱼ + c·z0z1z2 + ½zᵀAz. */
function g(z: ArrayLike<number>): [number, number] {
  let quad = 0;
  for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) quad += 0.5 * A[i][j] * z[i] * z[j];
  let cubic = quad + c * z[0] * z[1] * z[2];
  for (let i = 0; i < D; i++) {
    cubic += a[i] * z[i] ** 3;
    for (let j = i + 1; j < D; j++) cubic += b(i, j) * z[i] ** 2 * z[j];
  }
  return [quad + 0.3 * z[0] - z[3], cubic];
}

/** The analytic Hessians at z, [d, d, 2] like combineCompactHessian. */
function exact(z: ArrayLike<number>): Float64Array {
  const h = new Float64Array(D * D * 2);
  const add = (i: number, j: number, e: number, x: number) => {
    h[(i * D + j) * 2 + e] += x;
    if (i !== j) h[(j * D + i) * 2 + e] += x;
  };
  for (let i = 0; i < D; i++) for (let j = i; j < D; j++) for (const e of [0, 1]) add(i, j, e, A[i][j]);
  for (let i = 0; i < D; i++) {
    add(i, i, 1, 6 * a[i] * z[i]);
    for (let j = i + 1; j < D; j++) {
      add(i, i, 1, 2 * b(i, j) * z[j]);
      add(i, j, 1, 2 * b(i, j) * z[i]);
    }
  }
  add(0, 1, 1, c * z[2]);
  add(0, 2, 1, c * z[1]);
  add(1, 2, 1, c * z[0]);
  return h;
}

/** A sample's rows of a layout through a function: values[r * 2 + e]. */
function rowsThrough(f: (z: ArrayLike<number>) => number[], steps: any[], epsilon: number, z = Z): Float64Array {
  const rows = steps.map((_: unknown, index: number) => ({ sample: 0, index }));
  const latents = steppedRows(rows, steps, z, epsilon, D, null, new Float64Array(rows.length * D));
  const out = new Float64Array(rows.length * 2);
  rows.forEach((_: unknown, r: number) => out.set(f(latents.subarray(r * D, (r + 1) * D)), r * 2));
  return out;
}

const maxDiff = (x: ArrayLike<number>, y: ArrayLike<number>) => Math.max(...Array.from(x, (v, i) => Math.abs(v - y[i])));

t.test('layout: d² + d + 1 rows, units the unit planner accepts', async (t) => {
  for (const d of [1, 2, 3, 8]) {
    const layout = compactHessianLayout(d);
    t.equal(layout.steps.length, compactHessianRowsPerSample(d));
    t.equal(layout.unitSizes.reduce((x, y) => x + y, 0), d * d + d + 1);
    t.ok(compactHessianRowsPerSample(d) < 2 * d * d + 1 || d === 1, `d = ${d}: fewer rows than 2d² + 1`);
    t.equal(hessianRowsPerSample(d), compactHessianRowsPerSample(d), 'the metric streams this layout');
    const plan = planUnits({ samples: 3, unitSizes: layout.unitSizes, maxRows: 7 });
    t.equal(plan.rows, 3 * (d * d + d + 1));
  }
  const layout = compactHessianLayout(3);
  t.same(layout.steps[axisRow(2)], [{ latent: 2, coefficient: 1 }]);
  t.same(layout.steps[pairRow(1, 2, 3) + 1], [{ latent: 1, coefficient: -1 }, { latent: 2, coefficient: -1 }]);
  t.same([pairRow(0, 1, 3), pairRow(0, 2, 3), pairRow(1, 2, 3)], [7, 9, 11]);
  t.throws(() => pairRow(2, 1, 3), /not i < j/);
  t.throws(() => combineCompactHessian(new Float64Array(5), 2, 1, 0.1), /expected 7 rows/);
});

t.test('exact on a quadratic and a cubic, for several ε', async (t) => {
  const layout = compactHessianLayout(D);
  const truth = exact(Z);
  for (const epsilon of [0.5, 0.1, 0.02]) {
    const h = combineCompactHessian(rowsThrough(g, layout.steps, epsilon), D, 2, epsilon);
    // Rounding only: |g| ≈ 5, so float64 differences divided by ε² carry ≈ 10·2⁻⁵²/ε².
    const bound = (1e-13 * 4) / epsilon ** 2;
    const diff = maxDiff(h, truth);
    t.ok(diff <= bound, `ε = ${epsilon}: max |H − H*| = ${diff.toExponential(2)} ≤ ${bound.toExponential(1)}`);
  }
});

t.test('the stencil matrix W gives the same H as the combination (H = W·G)', async (t) => {
  const epsilon = 0.25;
  const layout = compactHessianLayout(D);
  const G = rowsThrough(g, layout.steps, epsilon);
  const R = compactHessianRowsPerSample(D);
  const W = compactStencilMatrix(D, epsilon);
  const viaMatrix = new Float64Array(D * D * 2);
  for (let p = 0; p < D * D; p++) for (let r = 0; r < R; r++) for (let e = 0; e < 2; e++) viaMatrix[p * 2 + e] += W[p * R + r] * G[r * 2 + e];
  t.ok(maxDiff(viaMatrix, combineCompactHessian(G, D, 2, epsilon)) <= 1e-11);
  t.ok(maxDiff(viaMatrix, exact(Z)) <= 1e-11);
  t.same(Array.from(compactStencilMatrix(1)), [-2, 1, 1], 'd = 1: the second difference');
});

t.test('the streaming HessianAccumulator of hessian.ts gives the Hessian combineCompactHessian gives', async (t) => {
  const epsilon = 0.1;
  const old = hessianLayout(D);
  const rows = rowsThrough(g, old.steps, epsilon);
  const offsets: number[] = [];
  let at = 0;
  for (const size of old.unitSizes) {
    offsets.push(at);
    at += size;
  }
  for (const e of [0, 1]) {
    const accumulator = new HessianAccumulator(1, 2, old, epsilon, e);
    old.units.forEach((_: unknown, u: number) => {
      const rowOffsets = Array.from({ length: old.unitSizes[u] }, (_, r) => (offsets[u] + r) * 2);
      accumulator.unit(0, u, rowOffsets.map(() => rows), rowOffsets);
    });
    const before = accumulator.result('max').elementHessian!;
    const compact = combineCompactHessian(rowsThrough(g, compactHessianLayout(D).steps, epsilon), D, 2, epsilon);
    const now = Float64Array.from({ length: D * D }, (_, p) => compact[p * 2 + e]);
    t.ok(maxDiff(now, before) <= 1e-12, `element ${e}: the same Hessian`);
    t.ok(maxDiff(now, Float64Array.from({ length: D * D }, (_, p) => exact(Z)[p * 2 + e])) <= 1e-10, `element ${e}: exact on the cubic`);
  }
});

t.test('O(ε²) on a smooth non-polynomial function: halving ε quarters the error', async (t) => {
  const f = (z: ArrayLike<number>) => [Math.sin(z[0]) * Math.exp(0.5 * z[1]) + Math.cos(z[2] * z[3]), Math.tanh(z[0] + z[1] * z[2])];
  // Reference Hessian from a much smaller ε (its own error is ~10⁻⁶ of the ones compared).
  const fine = combineCompactHessian(rowsThrough(f, compactHessianLayout(D).steps, 1e-3), D, 2, 1e-3);
  const errorAt = (epsilon: number) => maxDiff(combineCompactHessian(rowsThrough(f, compactHessianLayout(D).steps, epsilon), D, 2, epsilon), fine);
  const ratio = errorAt(0.2) / errorAt(0.1);
  t.ok(ratio > 3.6 && ratio < 4.4, `error ratio ${ratio.toFixed(3)} ≈ 4`);
});
