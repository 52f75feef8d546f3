import { type Reduction, reduceSamples, SampleStats } from './reduction.js';
import type { Row, UnitRow } from './rows.js';
import { type VarianceKind, varianceDivisor, Welford } from './variance.js';

/**
 * The stochastic Hessian Penalty per sample: one center unit g(z), then k units of two rows,
 * g(z + εv_j) and g(z − εv_j): 2k+1 rows, whose central second difference
 * q(v) = (g(z + εv) − 2·g(z) + g(z − εv)) / ε² is vᵀHv up to O(ε²).
 */
export const penaltyUnitSizes = (k: number): number[] => [1, ...new Array<number>(k).fill(2)];

/** Rows per sample: 2k+1. */
export const rowsPerSample = (k: number): number => 2 * k + 1;

/** Row 0 of a sample is its center; rows 2j+1 and 2j+2 are z + εv_j and z − εv_j. */
export const penaltyRow = ({ sample, index }: UnitRow): Row =>
  index === 0 ? { sample, direction: -1, sign: 0 } : { sample, direction: (index - 1) >> 1, sign: index % 2 === 1 ? 1 : -1 };

/** Output values of one layer for a batch of rows: `values[row * size + e]`. */
export type Activations = ArrayLike<number>;

export interface LayerPenalty {
  /** The layer's penalty under the reduction; null when any value was NaN or infinite. */
  penalty: number | null;
  /** Per sample: the max (or mean) over elements of the per-element penalty. */
  perSample: Float64Array;
  /** Per element: the mean over samples of the per-element penalty (penalty heatmaps). */
  elementMean: Float64Array;
  /** How many per-element penalties were NaN or infinite. */
  nonFinite: number;
  /** Largest |g(z)| seen: the scale of the rounding noise floor. */
  maxAbsOutput: number;
}

interface SampleState {
  center: Float64Array;
  q: Welford;
}

/**
 * What every penalty accumulator does once a sample has all k directions (the host's here, the
 * in-graph estimator's merge in moments.ts): the per-element penalty Var_v q(v) = M2 / divisor,
 * folded into the sample's max and sum and the per-element sums for heatmaps; NaN or ±∞ is
 * counted, never a silent max.
 */
export class PenaltyReduction {
  private readonly stats: SampleStats[];
  private readonly elementSum: Float64Array;
  private nonFinite = 0;
  /** Largest |g(z)| seen: the scale of the rounding noise floor. */
  maxAbsOutput = 0;

  constructor(
    readonly samples: number,
    readonly size: number,
    readonly divisor: number,
  ) {
    this.stats = Array.from({ length: samples }, () => new SampleStats());
    this.elementSum = new Float64Array(size);
  }

  /** Sample `sample`'s M2 over all k directions, one value per element. */
  finish(sample: number, m2: ArrayLike<number>): void {
    const { divisor, elementSum } = this;
    let max = -Infinity;
    let sum = 0;
    for (let e = 0; e < this.size; e++) {
      const penalty = m2[e] / divisor;
      if (!Number.isFinite(penalty)) {
        this.nonFinite++;
        continue;
      }
      if (penalty > max) max = penalty;
      sum += penalty;
      elementSum[e] += penalty;
    }
    const stats = this.stats[sample];
    stats.max = max;
    stats.sum = sum;
    stats.count = this.size;
  }

  result(reduction: Reduction): LayerPenalty {
    const perSample = Float64Array.from(this.stats, (s) => (s.count === 0 ? NaN : s.value(reduction)));
    return {
      penalty: this.nonFinite === 0 ? reduceSamples(perSample, reduction) : null,
      perSample,
      elementMean: this.elementSum.map((x) => x / this.samples),
      nonFinite: this.nonFinite,
      maxAbsOutput: this.maxAbsOutput,
    };
  }
}

/**
 * The Hessian Penalty of one layer, fed row by row as the plan's batches come back:
 * per element, the variance over k directions of the second difference q(v); then a reduction
 * over elements and samples. A sample's state is dropped once its k directions are in, so memory
 * is bounded by the samples in flight, never by k.
 */
export class LayerPenaltyAccumulator {
  private readonly inFlight = new Map<number, SampleState>();
  /** Finished samples' buffers, reused: fresh memory per sample costs more than the arithmetic. */
  private readonly spare: SampleState[] = [];
  private readonly reduction: PenaltyReduction;

  constructor(
    readonly samples: number,
    readonly size: number,
    readonly k: number,
    readonly epsilon: number,
    readonly variance: VarianceKind,
  ) {
    this.reduction = new PenaltyReduction(samples, size, varianceDivisor(k, variance));
  }

  /** A unit of penaltyUnitSizes: the center (unit 0), or direction unit − 1 as its (+, −) rows. */
  unit(sample: number, unit: number, values: Activations[], offsets: number[]): void {
    if (unit === 0) this.center(sample, values[0], offsets[0]);
    else this.direction(sample, values[0], offsets[0], values[1], offsets[1]);
  }

  /** g(z) for `sample`, at `offset` of `values`. */
  center(sample: number, values: Activations, offset: number): void {
    let state = this.inFlight.get(sample);
    if (state === undefined) {
      state = this.spare.pop() ?? { center: new Float64Array(this.size), q: new Welford(this.size) };
      state.q.reset();
      this.inFlight.set(sample, state);
    }
    for (let e = 0; e < this.size; e++) {
      const g = values[offset + e];
      state.center[e] = g;
      if (Math.abs(g) > this.reduction.maxAbsOutput) this.reduction.maxAbsOutput = Math.abs(g);
    }
  }

  /** One direction: g(z + εv) at `plusOffset` and g(z − εv) at `minusOffset`; its sample's center came first. */
  direction(sample: number, plus: Activations, plusOffset: number, minus: Activations, minusOffset: number): void {
    const state = this.inFlight.get(sample);
    if (state === undefined) throw new Error(`plan error: direction for sample ${sample} before its center`);
    const { center, q } = state;
    q.next();
    // The hot loop of the whole service (elements × directions × samples): the second difference q
    // and Welford's update, written out so that V8 keeps it on typed arrays.
    const { mean, m2 } = q;
    const weight = 1 / q.count;
    const inverseEpsilonSquared = 1 / (this.epsilon * this.epsilon);
    const size = this.size;
    for (let e = 0; e < size; e++) {
      const x = (plus[plusOffset + e] - 2 * center[e] + minus[minusOffset + e]) * inverseEpsilonSquared;
      const delta = x - mean[e];
      const updated = mean[e] + delta * weight;
      mean[e] = updated;
      m2[e] += delta * (x - updated);
    }
    if (q.count === this.k) this.finishSample(sample, state);
  }

  /** All k directions are in: per-element penalty = Var_v q(v); fold it into the reductions. */
  private finishSample(sample: number, state: SampleState): void {
    this.reduction.finish(sample, state.q.m2);
    this.inFlight.delete(sample);
    this.spare.push(state);
  }

  result(reduction: Reduction): LayerPenalty {
    if (this.inFlight.size > 0) throw new Error(`plan error: ${this.inFlight.size} samples did not receive k directions`);
    return this.reduction.result(reduction);
  }
}
