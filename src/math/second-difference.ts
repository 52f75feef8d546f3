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
  /** The directions folded in so far (q.count of them): per element, the running mean and M2 of q(v). */
  q: Welford;
  /** Directions not yet folded in (at most FOLD_MAX − 1, all from the same output arrays), waiting to share one pass over the state. */
  waiting: OutputRows[];
}

/**
 * Directions folded into a sample's state per pass over its mean and M2 (fewer passes over float64
 * state, which costs more than the arithmetic; four measured fastest on a 2-core EPYC).
 */
const FOLD_MAX = 4;

/** Where one direction's two output rows lie: g(z + εv) and g(z − εv). */
interface OutputRows {
  plus: Activations;
  plusOffset: number;
  minus: Activations;
  minusOffset: number;
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

  /** g(z) for `sample`, at `offset` of `values`: copied once (every direction reads it), its largest |g| noted. */
  center(sample: number, values: Activations, offset: number): void {
    let state = this.inFlight.get(sample);
    if (state === undefined) {
      // No reset: the first fold starts from mean = M2 = 0 without reading them (see fold1, fold2, fold4).
      state = this.spare.pop() ?? { center: new Float64Array(this.size), q: new Welford(this.size), waiting: [] };
      state.q.count = 0;
      this.inFlight.set(sample, state);
    }
    const { center } = state;
    const size = this.size;
    let maxAbs = this.reduction.maxAbsOutput;
    for (let e = 0; e < size; e++) {
      const g = values[offset + e];
      center[e] = g;
      const magnitude = Math.abs(g);
      if (magnitude > maxAbs) maxAbs = magnitude;
    }
    this.reduction.maxAbsOutput = maxAbs;
  }

  /**
   * One direction: g(z + εv) at `plusOffset` and g(z − εv) at `minusOffset`; its sample's center
   * came first. Directions are folded in up to FOLD_MAX at a time, so this one may wait for the
   * next ones of its sample in the same arrays (one batch's outputs): those arrays must stay
   * unchanged until then (the Run's outputs are fresh per batch). A direction from other arrays
   * first folds the waiting ones, so no sample holds more than one batch's outputs.
   */
  direction(sample: number, plus: Activations, plusOffset: number, minus: Activations, minusOffset: number): void {
    const state = this.inFlight.get(sample);
    if (state === undefined) throw new Error(`plan error: direction for sample ${sample} before its center`);
    const { waiting } = state;
    if (waiting.length > 0 && (waiting[0].plus !== plus || waiting[0].minus !== minus)) this.foldWaiting(state);
    waiting.push({ plus, plusOffset, minus, minusOffset });
    if (waiting.length === FOLD_MAX || state.q.count + waiting.length === this.k) this.foldWaiting(state);
    if (state.q.count === this.k) this.finishSample(sample, state);
  }

  /** Fold the waiting directions into the sample's state, in arrival order: four, two or one per pass. */
  private foldWaiting(state: SampleState): void {
    const { waiting } = state;
    let at = 0;
    for (; at + 4 <= waiting.length; at += 4) this.fold4(state, waiting[at], waiting[at + 1], waiting[at + 2], waiting[at + 3]);
    for (; at + 2 <= waiting.length; at += 2) this.fold2(state, waiting[at], waiting[at + 1]);
    if (at < waiting.length) this.fold1(state, waiting[at]);
    waiting.length = 0;
  }

  /*
   * The hot loops of the whole service (elements × directions × samples). Per element, for each
   * direction in order: the second difference q = (g(z + εv) − 2·g(z) + g(z − εv)) / ε², then
   * Welford's update δ = q − mean, mean += δ/count, M2 += δ·(q − mean), in float64. Written out
   * for one, two and four directions on locals and typed arrays, so that V8 keeps them monomorphic
   * and each pass reads and writes the float64 state once. The first pass starts from mean = M2 = 0
   * without reading them (no reset): the same operations in the same order as one direction at a
   * time, so the same figures, bit for bit.
   */

  private fold1({ center, q }: SampleState, a: OutputRows): void {
    const { mean, m2 } = q;
    const fresh = q.count === 0;
    const inverseEpsilonSquared = 1 / (this.epsilon * this.epsilon);
    const wa = 1 / (q.count + 1);
    const { plus: pa, plusOffset: paAt, minus: ma, minusOffset: maAt } = a;
    const size = this.size;
    for (let e = 0; e < size; e++) {
      let mu = fresh ? 0 : mean[e];
      let s = fresh ? 0 : m2[e];
      const qa = (pa[paAt + e] - 2 * center[e] + ma[maAt + e]) * inverseEpsilonSquared;
      const da = qa - mu;
      mu = mu + da * wa;
      s += da * (qa - mu);
      mean[e] = mu;
      m2[e] = s;
    }
    q.count += 1;
  }

  private fold2({ center, q }: SampleState, a: OutputRows, b: OutputRows): void {
    const { mean, m2 } = q;
    const fresh = q.count === 0;
    const inverseEpsilonSquared = 1 / (this.epsilon * this.epsilon);
    const wa = 1 / (q.count + 1);
    const wb = 1 / (q.count + 2);
    const { plus: pa, plusOffset: paAt, minus: ma, minusOffset: maAt } = a;
    const { plus: pb, plusOffset: pbAt, minus: mb, minusOffset: mbAt } = b;
    const size = this.size;
    for (let e = 0; e < size; e++) {
      let mu = fresh ? 0 : mean[e];
      let s = fresh ? 0 : m2[e];
      const twiceCenter = 2 * center[e];
      const qa = (pa[paAt + e] - twiceCenter + ma[maAt + e]) * inverseEpsilonSquared;
      const da = qa - mu;
      mu = mu + da * wa;
      s += da * (qa - mu);
      const qb = (pb[pbAt + e] - twiceCenter + mb[mbAt + e]) * inverseEpsilonSquared;
      const db = qb - mu;
      mu = mu + db * wb;
      s += db * (qb - mu);
      mean[e] = mu;
      m2[e] = s;
    }
    q.count += 2;
  }

  private fold4({ center, q }: SampleState, a: OutputRows, b: OutputRows, c: OutputRows, d: OutputRows): void {
    const { mean, m2 } = q;
    const fresh = q.count === 0;
    const inverseEpsilonSquared = 1 / (this.epsilon * this.epsilon);
    const wa = 1 / (q.count + 1);
    const wb = 1 / (q.count + 2);
    const wc = 1 / (q.count + 3);
    const wd = 1 / (q.count + 4);
    const { plus: pa, plusOffset: paAt, minus: ma, minusOffset: maAt } = a;
    const { plus: pb, plusOffset: pbAt, minus: mb, minusOffset: mbAt } = b;
    const { plus: pc, plusOffset: pcAt, minus: mc, minusOffset: mcAt } = c;
    const { plus: pd, plusOffset: pdAt, minus: md, minusOffset: mdAt } = d;
    const size = this.size;
    for (let e = 0; e < size; e++) {
      let mu = fresh ? 0 : mean[e];
      let s = fresh ? 0 : m2[e];
      const twiceCenter = 2 * center[e];
      const qa = (pa[paAt + e] - twiceCenter + ma[maAt + e]) * inverseEpsilonSquared;
      const da = qa - mu;
      mu = mu + da * wa;
      s += da * (qa - mu);
      const qb = (pb[pbAt + e] - twiceCenter + mb[mbAt + e]) * inverseEpsilonSquared;
      const db = qb - mu;
      mu = mu + db * wb;
      s += db * (qb - mu);
      const qc = (pc[pcAt + e] - twiceCenter + mc[mcAt + e]) * inverseEpsilonSquared;
      const dc = qc - mu;
      mu = mu + dc * wc;
      s += dc * (qc - mu);
      const qd = (pd[pdAt + e] - twiceCenter + md[mdAt + e]) * inverseEpsilonSquared;
      const dd = qd - mu;
      mu = mu + dd * wd;
      s += dd * (qd - mu);
      mean[e] = mu;
      m2[e] = s;
    }
    q.count += 4;
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
