/**
 * Jacobian orthogonality, the OroJaR measure (Wei et al., ICCV 2021): with J = dg/dz, the
 * columns of J are orthogonal exactly when JᵀJ is diagonal, and for Rademacher v
 * Var_v(‖Jv‖²) = Var_v(vᵀ JᵀJ v) = 2·Σ_{i≠j} (JᵀJ)_ij² in expectation (the identity behind the
 * Hessian Penalty, applied to JᵀJ). Jv comes from a forward difference,
 *
 *   Jv ≈ (G(z + εv) − G(z)) / ε,
 *
 * with ‖·‖² over all elements of the layer. Per sample: the variance over k directions of ‖Jv‖²;
 * then a reduction over samples. Rows per sample: 1 + k. The directions are the penalty's (the
 * same k × N × … array, seeded or explicit, along a basis when one is given).
 */
import type { Row } from './rows.js';
import { type Reduction, reduceSamples } from './reduction.js';
import type { Activations } from './second-difference.js';
import type { UnitRow } from './rows.js';
import { type VarianceKind, Welford } from './variance.js';

export const orthogonalityUnitSizes = (k: number): number[] => new Array<number>(k + 1).fill(1);

/** Row 0 of a sample is its center; row j + 1 is z + εv_j (the penalty's Row, for perturbedRows). */
export const orthogonalityRow = ({ sample, index }: UnitRow): Row =>
  index === 0 ? { sample, direction: -1, sign: 0 } : { sample, direction: index - 1, sign: 1 };

/** ‖Jv‖² by the forward difference, over the layer's `size` elements. */
export function squaredJvp(plus: Activations, plusOffset: number, center: ArrayLike<number>, size: number, epsilon: number): number {
  let sum = 0;
  for (let e = 0; e < size; e++) {
    const jv = (plus[plusOffset + e] - center[e]) / epsilon;
    sum += jv * jv;
  }
  return sum;
}

export interface OrthogonalityFigures {
  /** The layer's score under the reduction; null when any value was NaN or infinite. */
  score: number | null;
  perSample: Float64Array;
}

/**
 * One layer's orthogonality, fed either unit by unit with raw rows (`unit`, the host estimator) or
 * a sample's ‖Jv‖² values computed in the session (`norms`, the orthogonality suffix); both end in
 * the one fold of a sample's k norms into its variance.
 */
export class OrthogonalityAccumulator {
  /** Per sample in flight: its center (host rows only) and the norms so far. */
  private readonly centers = new Map<number, Float64Array>();
  private readonly inFlight = new Map<number, Welford>();
  private readonly perSample: Float64Array;

  constructor(
    readonly samples: number,
    readonly size: number,
    readonly k: number,
    readonly epsilon: number,
    readonly variance: VarianceKind,
  ) {
    this.perSample = new Float64Array(samples).fill(NaN);
  }

  unit(sample: number, unit: number, values: Activations[], offsets: number[]): void {
    if (unit === 0) {
      this.centers.set(sample, Float64Array.from({ length: this.size }, (_, e) => values[0][offsets[0] + e]));
      return;
    }
    const center = this.centers.get(sample);
    if (center === undefined) throw new Error(`plan error: direction for sample ${sample} before its center`);
    this.norm(sample, squaredJvp(values[0], offsets[0], center, this.size, this.epsilon));
    if (!this.inFlight.has(sample)) this.centers.delete(sample);
  }

  /** ‖Jv‖² of a sample's directions, in direction order (a sample split over chunks comes in parts). */
  norms(sample: number, values: ArrayLike<number>, offset: number, count: number): void {
    for (let j = 0; j < count; j++) this.norm(sample, values[offset + j]);
  }

  /** One direction's ‖Jv‖²; the k-th finishes the sample. */
  private norm(sample: number, value: number): void {
    let norms = this.inFlight.get(sample);
    if (norms === undefined) {
      if (!Number.isNaN(this.perSample[sample])) throw new Error(`plan error: sample ${sample} came twice`);
      norms = new Welford(1);
      this.inFlight.set(sample, norms);
    }
    norms.next();
    norms.add(0, value);
    if (norms.count === this.k) {
      this.perSample[sample] = norms.variance(0, this.variance);
      this.inFlight.delete(sample);
    }
  }

  result(reduction: Reduction): OrthogonalityFigures {
    if (this.inFlight.size > 0) throw new Error(`plan error: ${this.inFlight.size} samples did not receive k directions`);
    const valid = this.perSample.every(Number.isFinite);
    return { score: valid ? reduceSamples(this.perSample, reduction) : null, perSample: this.perSample };
  }
}
