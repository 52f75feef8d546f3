/**
 * The d² + d + 1-row Hessian stencil of hessian.ts (whose HessianAccumulator streams it), as pure
 * functions on a sample's stacked rows: row numbers of the layout, one sample's full Hessians
 * (combineCompactHessian), and the stencil as one constant matrix W with H = W·G (G a sample's rows
 * stacked [R, E]) for the in-graph suffix's MatMul (src/onnx/suffix.ts), whose figures
 * HessianAccumulator.slots (hessian.ts) folds.
 */
import { compactDiagonal, compactPair, hessianLayout, hessianRowsPerSample } from './hessian.js';

export { compactDiagonal, compactPair };

/** The one Hessian layout (hessian.ts): kept under this name for the suffix and its tests. */
export const compactHessianRowsPerSample = hessianRowsPerSample;
export const compactHessianLayout = hessianLayout;

/** Row number of z+εbᵢ within a sample (z−εbᵢ follows it). */
export const axisRow = (i: number): number => 1 + 2 * i;

/** Row number of z+εbᵢ+εbⱼ (i < j) within a sample (z−εbᵢ−εbⱼ follows it). */
export function pairRow(i: number, j: number, d: number): number {
  if (!(0 <= i && i < j && j < d)) throw new Error(`pair (${i}, ${j}) is not i < j < ${d}`);
  // Pairs before (i, j) in row-major i<j order: Σ_{a<i} (d−1−a), then j−i−1 within row i.
  const before = i * (d - 1) - (i * (i - 1)) / 2 + (j - i - 1);
  return 1 + 2 * d + 2 * before;
}

/**
 * One sample's Hessians: `values[r * size + e]` for the d² + d + 1 rows of the layout; returns
 * H as [d, d, size] row-major (symmetric, both halves filled).
 */
export function combineCompactHessian(values: ArrayLike<number>, d: number, size: number, epsilon: number): Float64Array {
  if (values.length !== compactHessianRowsPerSample(d) * size) {
    throw new Error(`expected ${compactHessianRowsPerSample(d)} rows of ${size} values, got ${values.length} values`);
  }
  const h = new Float64Array(d * d * size);
  const at = (row: number, e: number): number => values[row * size + e];
  for (let e = 0; e < size; e++) {
    const c = at(0, e);
    for (let i = 0; i < d; i++) h[(i * d + i) * size + e] = compactDiagonal(at(axisRow(i), e), c, at(axisRow(i) + 1, e), epsilon);
    for (let i = 0; i < d; i++) {
      const sumI = at(axisRow(i), e) + at(axisRow(i) + 1, e);
      for (let j = i + 1; j < d; j++) {
        const sumJ = at(axisRow(j), e) + at(axisRow(j) + 1, e);
        const p = pairRow(i, j, d);
        const x = compactPair(at(p, e), at(p + 1, e), sumI, sumJ, c, epsilon);
        h[(i * d + j) * size + e] = x;
        h[(j * d + i) * size + e] = x;
      }
    }
  }
  return h;
}

/**
 * The stencil as a constant matrix W [d², R] (R = d² + d + 1), row-major: H_flat = W · G for a
 * sample's rows G [R, E]. The in-graph suffix's MatMul takes W(1), whose products are exact, and
 * divides by ε² after it (W(ε) = W(1)/ε²).
 */
export function compactStencilMatrix(d: number, epsilon = 1): Float64Array {
  const rows = compactHessianRowsPerSample(d);
  const w = new Float64Array(d * d * rows);
  const scale = 1 / (epsilon * epsilon);
  const add = (i: number, j: number, row: number, x: number): void => {
    w[(i * d + j) * rows + row] += x * scale;
  };
  for (let i = 0; i < d; i++) {
    add(i, i, axisRow(i), 1);
    add(i, i, axisRow(i) + 1, 1);
    add(i, i, 0, -2);
  }
  for (let i = 0; i < d; i++) {
    for (let j = i + 1; j < d; j++) {
      const p = pairRow(i, j, d);
      for (const [a, b] of [[i, j], [j, i]]) {
        add(a, b, p, 0.5);
        add(a, b, p + 1, 0.5);
        for (const axis of [i, j]) {
          add(a, b, axisRow(axis), -0.5);
          add(a, b, axisRow(axis) + 1, -0.5);
        }
        add(a, b, 0, 1);
      }
    }
  }
  return w;
}
