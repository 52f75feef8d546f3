/**
 * Activeness of latent i (docs/design.md, "Audit metrics"): set z_i to −extent, 0 and +extent with the
 * other components as sampled, take the unbiased variance of the three outputs per element, and
 * average over elements and samples. A latent the generator ignores scores exactly 0.
 *
 * One unit per latent, three rows each: 3d rows per sample.
 */
import type { UnitRow } from './rows.js';
import type { Activations } from './second-difference.js';

export const DEFAULT_EXTENT = 2;
export const DEFAULT_THRESHOLD = 1e-6;

export const activenessUnitSizes = (d: number): number[] => new Array<number>(d).fill(3);

/** Value of latent ⌊index/3⌋ in row `index`: −extent, 0, +extent. */
export const activenessSetting = (index: number, extent: number): number => ((index % 3) - 1) * extent;

/** The latent rows of one batch: z_n with component ⌊index/3⌋ replaced by its setting. */
export function activenessRows(
  rows: readonly UnitRow[],
  z: ArrayLike<number>,
  extent: number,
  size: number,
  out: Float32Array | Float64Array,
): Float32Array | Float64Array {
  rows.forEach(({ sample, index }, r) => {
    for (let e = 0; e < size; e++) out[r * size + e] = z[sample * size + e];
    out[r * size + Math.floor(index / 3)] = activenessSetting(index, extent);
  });
  return out;
}

/**
 * Unbiased variance of three values, Σ(x − m)²/(3 − 1), written as Σ_{i<j}(x_i − x_j)²/6 so that
 * three equal outputs (an ignored latent) give exactly 0 rather than the rounding of their mean.
 */
export function varianceOfThree(a: number, b: number, c: number): number {
  return ((a - b) ** 2 + (b - c) ** 2 + (a - c) ** 2) / 6;
}

export class ActivenessAccumulator {
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;

  constructor(
    readonly size: number,
    readonly latents: number,
  ) {
    this.sums = new Float64Array(latents);
    this.counts = new Float64Array(latents);
  }

  /** Latent `unit`'s three outputs for one sample. */
  unit(_sample: number, unit: number, values: Activations[], offsets: number[]): void {
    const [a, b, c] = values;
    const [oa, ob, oc] = offsets;
    let sum = 0;
    for (let e = 0; e < this.size; e++) sum += varianceOfThree(a[oa + e], b[ob + e], c[oc + e]);
    this.add(unit, sum);
  }

  /** One chunk of the activeness suffix (src/onnx/suffix.ts): unit u of latent `latents[u]` summed to `sums[u]` over the elements. */
  unitSums(latents: readonly number[], sums: ArrayLike<number>): void {
    latents.forEach((latent, u) => this.add(latent, sums[u]));
  }

  /** One unit's Σ_e of the variance: the one fold of both feeds. */
  private add(latent: number, sum: number): void {
    this.sums[latent] += sum;
    this.counts[latent] += this.size;
  }

  /** Per latent: mean over elements and samples (NaN if the layer produced NaN). */
  result(): Float64Array {
    return this.sums.map((s, i) => s / this.counts[i]);
  }
}

/** Latents whose activeness is below the threshold (NaN counts as not unused). */
export const unusedLatents = (activeness: ArrayLike<number>, threshold: number): number[] =>
  Array.from(activeness, (a, i) => [a, i] as const)
    .filter(([a]) => a < threshold)
    .map(([, i]) => i);
