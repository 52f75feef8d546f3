/**
 * The d² + d + 1-row Hessian stencil of hessian.ts (whose HessianAccumulator streams it), as pure
 * functions on a sample's stacked rows: row numbers of the layout, one sample's full Hessians
 * (combineCompactHessian), and the stencil as one constant matrix W with H = W·G (G a sample's rows
 * stacked [R, E]) for the in-graph suffix's MatMul (src/onnx/suffix.ts), and the host side of that
 * suffix (SuffixHessianAccumulator).
 */
import { compactDiagonal, compactPair, type HessianFigures, hessianLayout, hessianRowsPerSample, RATIO_GUARD } from './hessian.js';
import { type Reduction, reduceSamples, SampleStats } from './reduction.js';

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
 * sample's rows G [R, E]. The in-graph suffix's MatMul; 1/ε² is a factor so ε can stay an input
 * (W(ε) = W(1)/ε²).
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

/** One chunk's in-graph Hessian figures for one layer (src/onnx/suffix.ts, appendHessianSuffix). */
export interface HessianSuffixOutputs {
  offSquares: ArrayLike<number>;
  interaction: ArrayLike<number>;
  maxDiagonal: ArrayLike<number>;
  maxOff: ArrayLike<number>;
  sumDiagonal: ArrayLike<number>;
  sumOff: ArrayLike<number>;
  maxAbs: ArrayLike<number>;
}

/**
 * The host side of the Hessian suffix: folds each slot's per-element figures into the figures
 * HessianAccumulator (hessian.ts) reports, by the same rules (exact penalty 2·Σ_{i≠j} H_ij²,
 * diagonal fraction with ties counted as diagonal, diagonal ratio with RATIO_GUARD).
 * `elementHessian` is not produced in the graph.
 */
export class SuffixHessianAccumulator {
  private readonly stats: SampleStats[];
  private readonly elementSum: Float64Array;
  private readonly interactionSum: Float64Array;
  private readonly done = new Set<number>();
  private diagonalCount = 0;
  private ratioSum = 0;
  private counted = 0;
  private nonFinite = 0;
  private maxAbsOutput = 0;

  constructor(
    readonly samples: number,
    readonly size: number,
    readonly latents: number,
  ) {
    this.stats = Array.from({ length: samples }, () => new SampleStats());
    this.elementSum = new Float64Array(size);
    this.interactionSum = new Float64Array(latents * latents);
  }

  chunk(samples: readonly number[], out: HessianSuffixOutputs): void {
    const d = this.latents;
    const offCount = d * (d - 1);
    samples.forEach((sample, s) => {
      if (this.done.has(sample)) throw new Error(`plan error: sample ${sample} came twice`);
      this.done.add(sample);
      if (out.maxAbs[s] > this.maxAbsOutput) this.maxAbsOutput = out.maxAbs[s];
      for (let p = 0; p < d * d; p++) this.interactionSum[p] += out.interaction[s * d * d + p];
      const stats = this.stats[sample];
      for (let e = 0; e < this.size; e++) {
        const at = s * this.size + e;
        const penalty = 2 * out.offSquares[at];
        if (!Number.isFinite(penalty) || !Number.isFinite(out.sumDiagonal[at])) {
          this.nonFinite++;
          continue;
        }
        stats.add(penalty);
        this.elementSum[e] += penalty;
        if (out.maxDiagonal[at] >= out.maxOff[at]) this.diagonalCount++;
        const meanOff = offCount > 0 ? out.sumOff[at] / offCount : 0;
        this.ratioSum += out.sumDiagonal[at] / d / (meanOff + RATIO_GUARD);
        this.counted++;
      }
    });
  }

  result(reduction: Reduction): HessianFigures {
    if (this.done.size < this.samples) throw new Error(`plan error: ${this.samples - this.done.size} samples did not come`);
    const perSample = Float64Array.from(this.stats, (s) => (s.count === 0 ? NaN : s.value(reduction)));
    const cells = this.samples * this.size;
    return {
      penalty: this.nonFinite === 0 ? reduceSamples(perSample, reduction) : null,
      perSample,
      elementMean: this.elementSum.map((x) => x / this.samples),
      interaction: this.interactionSum.map((x) => x / cells),
      diagonalFraction: this.diagonalCount / this.counted,
      diagonalRatio: this.ratioSum / this.counted,
      nonFinite: this.nonFinite,
      maxAbsOutput: this.maxAbsOutput,
    };
  }
}
