/**
 * The full Hessian of every output element by central differences (docs/design.md, "Audit metrics"),
 * with b_i the i-th latent direction (e_i, or row i of a basis Q), in d² + d + 1 rows per sample:
 *
 *   H_ii = (g(z+εb_i) − 2g(z) + g(z−εb_i)) / ε²
 *   H_ij = (g(z+εb_i+εb_j) + g(z−εb_i−εb_j) − g(z+εb_i) − g(z−εb_i) − g(z+εb_j) − g(z−εb_j) + 2g(z)) / (2ε²)
 *
 * The pair formula: g(z+h) + g(z−h) = 2g(z) + hᵀHh + O(|h|⁴) (odd terms cancel), and for
 * h = ε(b_i+b_j), hᵀHh = ε²(H_ii + 2H_ij + H_jj); the axis points supply ε²H_ii and ε²H_jj. Both
 * are O(ε²) and exact on quadratics and cubics (fourth derivatives vanish). Rows per sample: 1
 * (the center) + 2d (the axis points, shared by the diagonal and every pair) + 2·d(d−1)/2 (one
 * symmetric pair per i < j) = d² + d + 1 (the mixed differences of four points per pair it
 * replaced needed 2d² + 1: d = 12 gives 157 rows instead of 289).
 *
 * Rounding: a diagonal entry sums 4·u|g| over ε², a pair 8·u|g| over 2ε², so either is off by
 * about 4u|g|/ε² (the four-point stencil, at steps 2ε and ε, had u|g|/ε²): the same ε gives a
 * smaller truncation error and a larger rounding floor (metrics/hessian.ts, noiseFloor).
 *
 * Units of a sample, in plan order: the center; per latent i one `diagonal` unit (z ± εb_i); per
 * pair i < j one `pair` unit (z ± ε(b_i+b_j)). A pair needs its two axis units and the center, which
 * came earlier in the sample's order, so the accumulator keeps per sample in flight g(z) and the d
 * axis sums g(z+εb_i)+g(z−εb_i): (d + 1)·elements values, beside the five per-element figures
 * (d + 6 float64 per element and sample in flight; every sample at once in per-pass mode).
 *
 * Reduced as it streams, per element and sample, never holding N × elements × d²:
 *   exact penalty    2·Σ_{i≠j} H_ij², reduced over elements and samples like the estimator
 *   interaction      d×d mean over elements and samples of H_ij²
 *   diagonal fraction  share of elements whose largest |H_ij| lies on the diagonal (ties count as diagonal)
 *   diagonal ratio   mean over elements of mean|H_ii| / (mean_{i≠j}|H_ij| + 1e-8)
 */
import type { UnitRow } from './rows.js';
import { type Reduction, reduceSamples, SampleStats } from './reduction.js';
import type { Activations } from './second-difference.js';

/** The reference's guard against dividing by an all-zero off-diagonal. */
export const RATIO_GUARD = 1e-8;

export type HessianUnit = { kind: 'center' } | { kind: 'diagonal'; i: number } | { kind: 'pair'; i: number; j: number };

/** One row's displacement: z + ε·Σ coefficient·b_latent. */
export type Step = { latent: number; coefficient: number }[];

export interface HessianLayout {
  latents: number;
  units: HessianUnit[];
  unitSizes: number[];
  /** Per row of a sample (d² + d + 1 of them), its displacement. */
  steps: Step[];
}

export const hessianRowsPerSample = (d: number): number => d * d + d + 1;

export function hessianLayout(d: number): HessianLayout {
  const units: HessianUnit[] = [{ kind: 'center' }];
  const steps: Step[] = [[]];
  for (let i = 0; i < d; i++) {
    units.push({ kind: 'diagonal', i });
    steps.push([{ latent: i, coefficient: 1 }], [{ latent: i, coefficient: -1 }]);
  }
  for (let i = 0; i < d; i++) {
    for (let j = i + 1; j < d; j++) {
      units.push({ kind: 'pair', i, j });
      steps.push(
        [{ latent: i, coefficient: 1 }, { latent: j, coefficient: 1 }],
        [{ latent: i, coefficient: -1 }, { latent: j, coefficient: -1 }],
      );
    }
  }
  const unitSizes = units.map((u) => (u.kind === 'center' ? 1 : 2));
  return { latents: d, units, unitSizes, steps };
}

/**
 * The latent rows of one batch: z_n + ε·Σ c·b_latent for each row's step. `basis` holds the
 * directions b_i as rows (d × size); without one, b_i = e_i.
 */
export function steppedRows(
  rows: readonly UnitRow[],
  steps: readonly Step[],
  z: ArrayLike<number>,
  epsilon: number,
  size: number,
  basis: ArrayLike<number> | null,
  out: Float32Array | Float64Array,
): Float32Array | Float64Array {
  rows.forEach(({ sample, index }, r) => {
    const row = r * size;
    for (let e = 0; e < size; e++) out[row + e] = z[sample * size + e];
    for (const { latent, coefficient } of steps[index]) {
      const step = coefficient * epsilon;
      if (basis === null) {
        out[row + latent] += step;
      } else {
        for (let e = 0; e < size; e++) out[row + e] += step * basis[latent * size + e];
      }
    }
  });
  return out;
}

export function compactDiagonal(plus: number, center: number, minus: number, epsilon: number): number {
  return (plus - 2 * center + minus) / (epsilon * epsilon);
}

/** H_ij from the pair's two points, the two axis sums g(z+εb_i)+g(z−εb_i) and g(z+εb_j)+g(z−εb_j), and g(z). */
export function compactPair(pp: number, mm: number, axisSumI: number, axisSumJ: number, center: number, epsilon: number): number {
  return (pp + mm - axisSumI - axisSumJ + 2 * center) / (2 * epsilon * epsilon);
}

export interface HessianFigures {
  /** Exact penalty 2·Σ_{i≠j} H_ij² under the reduction; null when any value was NaN or infinite. */
  penalty: number | null;
  perSample: Float64Array;
  /** Per element: the mean over samples of the exact penalty (penalty heatmaps). */
  elementMean: Float64Array;
  /** d×d, row-major: mean over elements and samples of H_ij². */
  interaction: Float64Array;
  diagonalFraction: number;
  diagonalRatio: number;
  nonFinite: number;
  maxAbsOutput: number;
  /** N × d × d: the Hessian of the one element asked for, when one was. */
  elementHessian?: Float64Array;
}

/**
 * One chunk's in-graph Hessian figures for one layer (src/onnx/suffix.ts, appendHessianSuffix), per
 * slot s of the chunk: the per-element figures at s·size, the interaction at s·d², max |g(z)| at s.
 */
export interface HessianSuffixOutputs extends ElementFigures {
  interaction: ArrayLike<number>;
  maxAbs: ArrayLike<number>;
  /** [S, d², 1]: the Hessian of the element asked for, when it was fetched. */
  element?: ArrayLike<number>;
}

/** Per element of one sample: Σ_{i≠j} H_ij², max |H_ii|, max_{i≠j} |H_ij|, Σ |H_ii|, Σ_{i≠j} |H_ij|. */
export interface ElementFigures {
  offSquares: ArrayLike<number>;
  maxDiagonal: ArrayLike<number>;
  maxOff: ArrayLike<number>;
  sumDiagonal: ArrayLike<number>;
  sumOff: ArrayLike<number>;
}

interface SampleState {
  center: Float64Array;
  /** d × size: g(z+εb_i) + g(z−εb_i), for the pairs. */
  axisSums: Float64Array;
  figures: { [K in keyof ElementFigures]: Float64Array };
  unitsLeft: number;
}

/**
 * One layer's Hessian figures, fed either unit by unit as the plan's batches come back (`unit`:
 * raw rows, the host estimator) or a chunk's per-element figures computed in the session
 * (`slots`: the Hessian suffix). Both end in the one fold of a sample's per-element figures.
 */
export class HessianAccumulator {
  private readonly inFlight = new Map<number, SampleState>();
  private readonly folded = new Set<number>();
  private readonly stats: SampleStats[];
  private readonly elementSum: Float64Array;
  private readonly interactionSum: Float64Array;
  private readonly elementHessian?: Float64Array;
  private diagonalCount = 0;
  private ratioSum = 0;
  private counted = 0;
  private nonFinite = 0;
  private maxAbsOutput = 0;

  constructor(
    readonly samples: number,
    readonly size: number,
    readonly layout: HessianLayout,
    readonly epsilon: number,
    /** Keep the full Hessian of this element (flat index within a sample). */
    readonly element?: number,
  ) {
    this.stats = Array.from({ length: samples }, () => new SampleStats());
    this.elementSum = new Float64Array(size);
    const d = layout.latents;
    this.interactionSum = new Float64Array(d * d);
    if (element !== undefined) this.elementHessian = new Float64Array(samples * d * d);
  }

  /** A unit's outputs: `values[r]` at `offsets[r]` for each of its rows. */
  unit(sample: number, unit: number, values: Activations[], offsets: number[]): void {
    const u = this.layout.units[unit];
    if (u.kind === 'center') return this.center(sample, values[0], offsets[0]);
    const state = this.inFlight.get(sample);
    if (state === undefined) throw new Error(`plan error: unit ${unit} of sample ${sample} before its center`);
    const d = this.layout.latents;
    const [a, b] = values;
    const [oa, ob] = offsets;
    const { center, axisSums } = state;
    const { sumDiagonal, maxDiagonal, offSquares, sumOff, maxOff } = state.figures;
    const size = this.size;
    const epsilon = this.epsilon;
    // Hot loops: one per unit kind, the unit's sum of squares kept in a local.
    let squares = 0;
    if (u.kind === 'diagonal') {
      const at = u.i * size;
      for (let e = 0; e < size; e++) {
        const plus = a[oa + e];
        const minus = b[ob + e];
        axisSums[at + e] = plus + minus;
        const h = compactDiagonal(plus, center[e], minus, epsilon);
        const abs = Math.abs(h);
        sumDiagonal[e] += abs;
        if (abs > maxDiagonal[e]) maxDiagonal[e] = abs;
        squares += h * h;
      }
      this.interactionSum[u.i * d + u.i] += squares;
    } else {
      const atI = u.i * size;
      const atJ = u.j * size;
      for (let e = 0; e < size; e++) {
        const h = compactPair(a[oa + e], b[ob + e], axisSums[atI + e], axisSums[atJ + e], center[e], epsilon);
        const abs = Math.abs(h);
        // H_ij and H_ji: each unordered pair counts twice in the sums over i ≠ j (×2 is exact).
        offSquares[e] += 2 * (h * h);
        sumOff[e] += 2 * abs;
        if (abs > maxOff[e]) maxOff[e] = abs;
        squares += h * h;
      }
      this.interactionSum[u.i * d + u.j] += squares;
      this.interactionSum[u.j * d + u.i] += squares;
    }
    if (this.element !== undefined) this.keep(sample, u, values, offsets, state);
    if (--state.unitsLeft === 0) {
      this.inFlight.delete(sample);
      this.fold(sample, state.figures, 0);
    }
  }

  /** One chunk of the Hessian suffix: slot s holds sample `samples[s]`, all of its rows. */
  slots(samples: readonly number[], out: HessianSuffixOutputs): void {
    const d = this.layout.latents;
    samples.forEach((sample, s) => {
      this.fold(sample, out, s * this.size);
      if (out.maxAbs[s] > this.maxAbsOutput) this.maxAbsOutput = out.maxAbs[s];
      for (let p = 0; p < d * d; p++) this.interactionSum[p] += out.interaction[s * d * d + p];
      if (this.elementHessian && out.element) for (let p = 0; p < d * d; p++) this.elementHessian[sample * d * d + p] = out.element[s * d * d + p];
    });
  }

  private center(sample: number, values: Activations, offset: number): void {
    const size = this.size;
    const center = new Float64Array(size);
    for (let e = 0; e < size; e++) {
      center[e] = values[offset + e];
      if (Math.abs(center[e]) > this.maxAbsOutput) this.maxAbsOutput = Math.abs(center[e]);
    }
    const figures = { offSquares: new Float64Array(size), maxDiagonal: new Float64Array(size), maxOff: new Float64Array(size), sumDiagonal: new Float64Array(size), sumOff: new Float64Array(size) };
    const state: SampleState = { center, axisSums: new Float64Array(this.layout.latents * size), figures, unitsLeft: this.layout.units.length - 1 };
    if (state.unitsLeft === 0) return this.fold(sample, figures, 0);
    this.inFlight.set(sample, state);
  }

  /** The one element asked for: its H entry from this unit, both halves of the symmetric pair. */
  private keep(sample: number, u: HessianUnit, values: Activations[], offsets: number[], state: SampleState): void {
    const e = this.element as number;
    const d = this.layout.latents;
    const at = (r: number): number => values[r][offsets[r] + e];
    const c = state.center[e];
    if (u.kind === 'diagonal') {
      this.elementHessian![(sample * d + u.i) * d + u.i] = compactDiagonal(at(0), c, at(1), this.epsilon);
    } else if (u.kind === 'pair') {
      const h = compactPair(at(0), at(1), state.axisSums[u.i * this.size + e], state.axisSums[u.j * this.size + e], c, this.epsilon);
      this.elementHessian![(sample * d + u.i) * d + u.j] = h;
      this.elementHessian![(sample * d + u.j) * d + u.i] = h;
    }
  }

  /** A finished sample's per-element figures (at `at` of each array) into the layer's figures. */
  private fold(sample: number, f: ElementFigures, at: number): void {
    if (this.folded.has(sample)) throw new Error(`plan error: sample ${sample} came twice`);
    this.folded.add(sample);
    const d = this.layout.latents;
    const offCount = d * (d - 1);
    const stats = this.stats[sample];
    for (let e = 0; e < this.size; e++) {
      const penalty = 2 * f.offSquares[at + e];
      if (!Number.isFinite(penalty) || !Number.isFinite(f.sumDiagonal[at + e])) {
        this.nonFinite++;
        continue;
      }
      stats.add(penalty);
      this.elementSum[e] += penalty;
      if (f.maxDiagonal[at + e] >= f.maxOff[at + e]) this.diagonalCount++;
      const meanOff = offCount > 0 ? f.sumOff[at + e] / offCount : 0;
      this.ratioSum += f.sumDiagonal[at + e] / d / (meanOff + RATIO_GUARD);
      this.counted++;
    }
  }

  result(reduction: Reduction): HessianFigures {
    if (this.inFlight.size > 0) throw new Error(`plan error: ${this.inFlight.size} samples did not receive every unit`);
    if (this.folded.size < this.samples) throw new Error(`plan error: ${this.samples - this.folded.size} samples did not come`);
    const perSample = Float64Array.from(this.stats, (s) => (s.count === 0 ? NaN : s.value(reduction)));
    const valid = this.nonFinite === 0;
    const cells = this.samples * this.size;
    return {
      penalty: valid ? reduceSamples(perSample, reduction) : null,
      perSample,
      elementMean: this.elementSum.map((x) => x / this.samples),
      interaction: this.interactionSum.map((x) => x / cells),
      diagonalFraction: this.diagonalCount / this.counted,
      diagonalRatio: this.ratioSum / this.counted,
      nonFinite: this.nonFinite,
      maxAbsOutput: this.maxAbsOutput,
      ...(this.elementHessian ? { elementHessian: this.elementHessian } : {}),
    };
  }
}
