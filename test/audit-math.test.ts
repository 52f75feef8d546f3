import t from 'tap';
import {
  ActivenessAccumulator,
  activenessRows,
  activenessUnitSizes,
  channelMean,
  directionsAlongBasis,
  HessianAccumulator,
  hessianLayout,
  hessianRowsPerSample,
  isImageShape,
  OrthogonalityAccumulator,
  orthogonalityRow,
  orthogonalityUnitSizes,
  perturbedRows,
  RATIO_GUARD,
  steppedRows,
  unusedLatents,
  varianceOfThree,
  type UnitPlan,
  type UnitRow,
} from '../dist/math/index.js';
import { planUnits } from '../dist/run/plan.js';

type G = (z: number[]) => number[];
interface Consumer {
  unit(sample: number, unit: number, values: ArrayLike<number>[], offsets: number[]): void;
}

/** Run a unit plan on a JavaScript function in float64, the way the engine runs G. */
function runPlan(plan: UnitPlan, g: G, size: number, outSize: number, fill: (rows: UnitRow[], out: Float64Array) => void, consumer: Consumer): void {
  for (const chunk of plan.chunks) {
    const outputs = chunk.batches.map((batch) => {
      const x = new Float64Array(batch.length * size);
      fill(batch, x);
      const y = new Float64Array(batch.length * outSize);
      batch.forEach((_, r) => y.set(g(Array.from(x.subarray(r * size, (r + 1) * size))), r * outSize));
      return y;
    });
    for (const { sample, unit, rows } of chunk.units) {
      consumer.unit(sample, unit, rows.map((r) => outputs[r.batch]), rows.map((r) => r.row * outSize));
    }
  }
}

// A cubic with a known Hessian: the mixed and second differences are exact for degree <= 3.
// g0 = z0 z1 + z2^3 + z0^2 z2 / 2  →  H = [[z2, 1, z0], [1, 0, 0], [z0, 0, 6 z2]];  g1 = z1^2 → H = diag(0, 2, 0).
const cubic: G = ([a, b, c]) => [a * b + c ** 3 + 0.5 * a * a * c, b * b];
const cubicHessians = ([a, , c]: number[]): number[][][] => [
  [[c, 1, a], [1, 0, 0], [a, 0, 6 * c]],
  [[0, 0, 0], [0, 2, 0], [0, 0, 0]],
];
const Z = [0.5, -1.25, 2, -0.75, 0.3, 1.5, 1.1, 0.2, 0.1]; // sample 2: off-diagonal |H| dominates

t.test('the Hessian layout has d²+d+1 rows: one shared center, two per axis, two per pair', async (t) => {
  for (const d of [1, 2, 3, 12]) {
    const layout = hessianLayout(d);
    t.equal(layout.steps.length, hessianRowsPerSample(d));
    t.equal(layout.unitSizes.reduce((a, b) => a + b, 0), d * d + d + 1);
    t.ok(hessianRowsPerSample(d) <= 2 * d * d + 1, 'no more than the four-point mixed differences');
  }
  t.equal(hessianRowsPerSample(12), 157);
  const layout = hessianLayout(2);
  t.same(layout.steps, [
    [],
    [{ latent: 0, coefficient: 1 }], [{ latent: 0, coefficient: -1 }],
    [{ latent: 1, coefficient: 1 }], [{ latent: 1, coefficient: -1 }],
    [{ latent: 0, coefficient: 1 }, { latent: 1, coefficient: 1 }],
    [{ latent: 0, coefficient: -1 }, { latent: 1, coefficient: -1 }],
  ]);
  t.same(layout.unitSizes, [1, 2, 2, 2]);
});

for (const mode of ['stacked', 'per-pass'] as const) {
  for (const maxRows of [1000, 20, 5, 4]) {
    if (mode === 'per-pass' && maxRows < 3) continue;
    t.test(`${mode} unit plan with ${maxRows} rows per batch covers every unit once, center first, never split`, async (t) => {
      const samples = 3;
      const unitSizes = hessianLayout(3).unitSizes;
      const plan = planUnits({ samples, unitSizes, maxRows, mode });
      const seen = new Set<string>();
      for (const chunk of plan.chunks) {
        for (const batch of chunk.batches) t.ok(batch.length <= Math.max(maxRows, mode === 'per-pass' ? samples : 0), 'batch fits');
        t.equal(new Set(chunk.units.flatMap((u) => u.rows.map((r) => r.batch))).size <= chunk.batches.length, true);
        for (const { sample, unit, rows } of chunk.units) {
          t.equal(rows.length, unitSizes[unit]);
          if (unit > 0) t.ok(seen.has(`${sample}/0`), 'center before the other units');
          rows.forEach((r, i) => t.same(chunk.batches[r.batch][r.row].sample, sample));
          const indices = rows.map((r) => chunk.batches[r.batch][r.row].index);
          t.same(indices, indices.map((_, i) => indices[0] + i), 'consecutive rows of the sample');
          t.notOk(seen.has(`${sample}/${unit}`));
          seen.add(`${sample}/${unit}`);
        }
      }
      t.equal(seen.size, samples * unitSizes.length);
      t.equal(plan.rows, samples * 13);
    });
  }
}

t.test('a memory budget below one unit or one pass is refused with the numbers', async (t) => {
  t.throws(() => planUnits({ samples: 2, unitSizes: [1, 4], maxRows: 3 }), { code: 'memory_budget_exceeded', message: /fits 3 rows.*needs 4/ });
  t.throws(() => planUnits({ samples: 8, unitSizes: [1, 4], maxRows: 5, mode: 'per-pass' }), { code: 'memory_budget_exceeded', message: /8 samples/ });
});

for (const maxRows of [1000, 4]) {
  t.test(`Hessian figures of a cubic equal the formulas (float64, ${maxRows} rows per batch)`, async (t) => {
    const samples = 3;
    const d = 3;
    const epsilon = 0.25;
    const layout = hessianLayout(d);
    const plan = planUnits({ samples, unitSizes: layout.unitSizes, maxRows });
    const acc = new HessianAccumulator(samples, 2, layout, epsilon, 0);
    runPlan(plan, cubic, d, 2, (rows, out) => steppedRows(rows, layout.steps, Z, epsilon, d, null, out), acc);
    const max = acc.result('max');
    const mean = acc.result('mean');

    const hs = [0, 1, 2].map((n) => cubicHessians(Z.slice(n * 3, n * 3 + 3)));
    const penalty = (h: number[][]) => 2 * h.flatMap((row, i) => row.filter((_, j) => j !== i)).reduce((s, x) => s + x * x, 0);
    const perSampleMax = hs.map((els) => Math.max(...els.map(penalty)));
    const perSampleMean = hs.map((els) => els.map(penalty).reduce((a, b) => a + b) / 2);
    t.ok(Math.abs((max.penalty as number) - Math.max(...perSampleMax)) < 1e-9, `max ${max.penalty}`);
    t.ok(Math.abs((mean.penalty as number) - perSampleMean.reduce((a, b) => a + b) / 3) < 1e-9, `mean ${mean.penalty}`);
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        const expected = hs.flat().reduce((s, h) => s + h[i][j] ** 2, 0) / (samples * 2);
        t.ok(Math.abs(max.interaction[i * d + j] - expected) < 1e-9, `interaction ${i},${j}`);
      }
    }
    // The full Hessian of element 0 in each sample.
    hs.forEach((els, n) => {
      const got = Array.from(max.elementHessian!.subarray(n * 9, n * 9 + 9));
      t.ok(got.every((x, k) => Math.abs(x - els[0].flat()[k]) < 1e-9), `element 0 of sample ${n}`);
    });
    // Diagonal-ness by the definitions, computed from the analytic Hessians.
    let diagonal = 0;
    let ratio = 0;
    for (const h of hs.flat()) {
      const diag = h.map((row, i) => Math.abs(row[i]));
      const off = h.flatMap((row, i) => row.filter((_, j) => j !== i)).map(Math.abs);
      if (Math.max(...diag) >= Math.max(...off)) diagonal++;
      ratio += diag.reduce((a, b) => a + b) / d / (off.reduce((a, b) => a + b) / off.length + RATIO_GUARD);
    }
    t.ok(Math.abs(max.diagonalFraction - diagonal / 6) < 1e-12, `fraction ${max.diagonalFraction}`);
    t.ok(Math.abs(max.diagonalRatio - ratio / 6) / (ratio / 6) < 1e-9, `ratio ${max.diagonalRatio}`);
    t.ok(Math.abs(max.elementMean[0] - hs.map((e) => penalty(e[0])).reduce((a, b) => a + b) / 3) < 1e-9);
    t.ok(Math.abs(max.elementMean[1]) < 1e-20);
    t.ok(Math.abs(max.diagonalFraction - 5 / 6) < 1e-12, "one element in six has its largest entry off the diagonal");
  });
}

t.test('the Hessian along a basis Q is Q H Qᵀ', async (t) => {
  const d = 3;
  const epsilon = 0.5;
  const c = Math.cos(0.4);
  const s = Math.sin(0.4);
  const Q = [c, s, 0, -s, c, 0, 0, 0, 1];
  const layout = hessianLayout(d);
  const plan = planUnits({ samples: 1, unitSizes: layout.unitSizes, maxRows: 100 });
  const acc = new HessianAccumulator(1, 2, layout, epsilon, 0);
  runPlan(plan, cubic, d, 2, (rows, out) => steppedRows(rows, layout.steps, Z, epsilon, d, Q, out), acc);
  const H = cubicHessians(Z.slice(0, 3))[0];
  const q = (i: number, k: number) => Q[i * d + k];
  const got = acc.result('max').elementHessian!;
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let expected = 0;
      for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) expected += q(i, a) * H[a][b] * q(j, b);
      t.ok(Math.abs(got[i * d + j] - expected) < 1e-9, `(QHQᵀ)_${i}${j} = ${expected}, got ${got[i * d + j]}`);
    }
  }
});

t.test('Hessian accumulator: NaN makes the layer undefined; a unit before its center is a plan error', async (t) => {
  const layout = hessianLayout(1);
  const acc = new HessianAccumulator(1, 1, layout, 0.1);
  acc.unit(0, 0, [[NaN]], [0]);
  acc.unit(0, 1, [[1], [1]], [0, 0]);
  const r = acc.result('max');
  t.equal(r.penalty, null);
  t.equal(r.nonFinite, 1);
  const early = new HessianAccumulator(2, 1, hessianLayout(2), 0.1);
  t.throws(() => early.unit(1, 1, [[1], [1]], [0, 0]), /before its center/);
  early.unit(0, 0, [[1]], [0]);
  t.throws(() => early.result('max'), /did not receive every unit/);
});

t.test('activeness: variance over z_i ∈ {−x, 0, +x} per element, mean over elements and samples', async (t) => {
  t.equal(varianceOfThree(-2, 0, 2), 4);
  t.equal(varianceOfThree(5, 5, 5), 0);
  t.equal(varianceOfThree(0.1, 0.1, 0.1), 0, 'equal outputs give exactly 0, not the rounding of their mean');
  // g = [z0^2 + z1, 3 z1], z2 ignored; extent 2.
  const g: G = ([a, b]) => [a * a + b, 3 * b];
  const samples = 3;
  const d = 3;
  const plan = planUnits({ samples, unitSizes: activenessUnitSizes(d), maxRows: 7 });
  const acc = new ActivenessAccumulator(2, d);
  runPlan(plan, g, d, 2, (rows, out) => activenessRows(rows, Z, 2, d, out), acc);
  const a = acc.result();
  // z0 ∈ {−2, 0, 2}: element 0 takes 4, 0, 4 (+ z1) → variance 16/3; element 1 constant.
  t.ok(Math.abs(a[0] - 16 / 3 / 2) < 1e-12, `z0: ${a[0]}`);
  // z1 ∈ {−2, 0, 2}: element 0 variance 4, element 1 variance 36 → mean 20.
  t.ok(Math.abs(a[1] - 20) < 1e-12, `z1: ${a[1]}`);
  t.equal(a[2], 0);
  t.same(unusedLatents(a, 1e-6), [2]);
  t.same(unusedLatents([NaN, 0, 1], 0.5), [1], 'NaN is not reported as unused');
  t.same(Array.from(activenessRows([{ sample: 1, index: 5 }], Z, 3, d, new Float64Array(3))), [Z[3], 3, Z[5]]);
});

t.test('orthogonality of a linear map: Var_v ‖Wv‖² over all sign patterns is 2·Σ_{i≠j} (WᵀW)_ij²', async (t) => {
  const W = [[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]];
  const g: G = (z) => W.map((row) => row.reduce((s, w, i) => s + w * z[i], 0));
  const patterns = [0, 1, 2, 3, 4, 5, 6, 7].map((m) => [0, 1, 2].map((i) => ((m >> i) & 1 ? -1 : 1)));
  const samples = 2;
  const k = patterns.length;
  const directions = Float32Array.from(patterns.flatMap((v) => [...v, ...v]));
  const plan = planUnits({ samples, unitSizes: orthogonalityUnitSizes(k), maxRows: 5 });
  const acc = new OrthogonalityAccumulator(samples, 4, k, 0.5, 'biased');
  runPlan(plan, g, 3, 4, (rows, out) => perturbedRows(rows.map(orthogonalityRow), Z, directions, 0.5, 3, samples, out), acc);
  // WᵀW = [[1,1,0],[1,2,0],[0,0,1]]: 2·(1² + 1²) = 4.
  const r = acc.result('max');
  t.ok(Math.abs((r.score as number) - 4) < 1e-9, `score ${r.score}`);
  t.ok(Math.abs(r.perSample[1] - 4) < 1e-9);
  t.throws(() => new OrthogonalityAccumulator(1, 1, 2, 0.1, 'unbiased').unit(0, 1, [[1]], [0]), /before its center/);
});

t.test('directions along a basis are vQ; heatmaps average channels', async (t) => {
  // v: 2 rows in w-space (m = 2), Q: 2 directions in a 3-d latent space.
  const v = [1, -1, -1, -1];
  const Q = [1, 2, 0, 0, 1, 1];
  t.same(Array.from(directionsAlongBasis(v, Q, 2, 3)), [1, 1, -1, -1, -3, -1]);
  t.same(Array.from(channelMean([1, 2, 3, 4, 3, 4, 5, 6], 2, 4)), [2, 3, 4, 5]);
  t.ok(isImageShape([3, 8, 8]) && isImageShape([1, 8, 8]));
  t.notOk(isImageShape([4, 8, 8]) || isImageShape([3, 8]));
});
