/**
 * The host side of the in-graph penalty (src/onnx/suffix.ts): the per-chunk layout fed to the
 * suffix, and the exact merge of the partial moments it returns.
 *
 * A sample whose directions are split over chunks comes back as several (count, mean, M2)
 * triples per element; Chan, Golub and LeVeque's pairwise update combines two of them exactly:
 *
 *   n = nₐ + n_b,  δ = mean_b − meanₐ,  mean = meanₐ + δ·n_b/n,  M2 = M2ₐ + M2_b + δ²·nₐ·n_b/n
 *
 * so the merged variance equals the variance over all k directions whatever the split.
 */
import type { RowRef, UnitRow } from './rows.js';
import type { Reduction } from './reduction.js';
import { type LayerPenalty, PenaltyReduction } from './second-difference.js';
import { type VarianceKind, varianceDivisor } from './variance.js';

/** Per-element partial moments of one sample over some of its directions. */
export interface Moments {
  count: number;
  mean: Float64Array;
  m2: Float64Array;
}

/** Folds `b` into `a` (Chan's formula), element by element; `a` is updated in place. */
export function mergeMoments(a: Moments, b: { count: number; mean: ArrayLike<number>; m2: ArrayLike<number> }, offset = 0): void {
  if (b.count === 0) return;
  if (a.count === 0) {
    for (let e = 0; e < a.mean.length; e++) {
      a.mean[e] = b.mean[offset + e];
      a.m2[e] = b.m2[offset + e];
    }
    a.count = b.count;
    return;
  }
  const n = a.count + b.count;
  const share = b.count / n;
  const cross = (a.count * b.count) / n;
  for (let e = 0; e < a.mean.length; e++) {
    const delta = b.mean[offset + e] - a.mean[e];
    a.mean[e] += delta * share;
    a.m2[e] += b.m2[offset + e] + delta * delta * cross;
  }
  a.count = n;
}

/**
 * A stacked chunk of penalty units (run/plan.ts with penaltyUnitSizes and repeatCenter): unit 0 is
 * a sample's center, unit j + 1 its direction j as the rows (+, −).
 */
export interface PenaltyChunk {
  batches: UnitRow[][];
  units: { sample: number; unit: number; rows: RowRef[] }[];
}

/** The suffix's inputs for one chunk, and which sample each slot is. */
export interface ChunkFeeds {
  /** Sample of each slot, in slot order. */
  samples: number[];
  /** Direction columns per slot (the widest slot's count). */
  width: number;
  center: BigInt64Array;
  plus: BigInt64Array;
  minus: BigInt64Array;
  /** 1 for a real direction, 0 for padding. */
  weight: Float64Array;
}

/**
 * The layout of one stacked chunk (a single batch): one slot per center, its pairs as columns,
 * padded with the center row (q = 0 there, weight 0). Per-pass chunks, whose rows span several
 * batches, stay on the host reduction.
 */
export function chunkFeeds(chunk: PenaltyChunk): ChunkFeeds {
  if (chunk.batches.length !== 1) throw new Error('plan error: the in-graph estimator runs single-batch chunks only');
  const centers = chunk.units.filter((u) => u.unit === 0).map((u) => ({ sample: u.sample, at: u.rows[0] }));
  const slotOf = new Map<number, number>();
  centers.forEach(({ sample }, s) => slotOf.set(sample, s));
  const columns: number[][][] = centers.map(() => []);
  for (const { sample, unit, rows } of chunk.units) {
    if (unit === 0) continue;
    const slot = slotOf.get(sample);
    if (slot === undefined) throw new Error(`plan error: a direction of sample ${sample} in a chunk without its center`);
    columns[slot].push([rows[0].row, rows[1].row]);
  }
  const slots = centers.length;
  const width = Math.max(1, ...columns.map((c) => c.length));
  const center = new BigInt64Array(slots);
  const plus = new BigInt64Array(slots * width);
  const minus = new BigInt64Array(slots * width);
  const weight = new Float64Array(slots * width);
  centers.forEach(({ at }, s) => {
    center[s] = BigInt(at.row);
    for (let c = 0; c < width; c++) {
      const pair = columns[s][c];
      plus[s * width + c] = BigInt(pair ? pair[0] : at.row);
      minus[s * width + c] = BigInt(pair ? pair[1] : at.row);
      weight[s * width + c] = pair ? 1 : 0;
    }
  });
  return { samples: centers.map((c) => c.sample), width, center, plus, minus, weight };
}

/** Whether every slot of a chunk holds all k directions of its sample (no merge, so no means needed). */
export function slotsComplete(feeds: ChunkFeeds, k: number): boolean {
  for (let s = 0; s < feeds.samples.length; s++) {
    let count = 0;
    for (let c = 0; c < feeds.width; c++) count += feeds.weight[s * feeds.width + c];
    if (count !== k) return false;
  }
  return true;
}

/** One layer's suffix outputs for one chunk: [S] or [S, E] row-major, as fetched. */
export interface SuffixLayerOutputs {
  count: ArrayLike<number>;
  /** Needed only to merge a split sample: left unfetched when every slot is whole (slotsComplete). */
  mean?: ArrayLike<number>;
  m2: ArrayLike<number>;
  maxAbs: ArrayLike<number>;
  /** Per slot: elements whose partial M2 is not finite (informative; the merge finds them too). */
  nonFinite?: ArrayLike<number>;
}

/**
 * The in-graph counterpart of LayerPenaltyAccumulator: merges each chunk's partial moments per
 * sample, and once a sample has all k directions folds Var_v q(v) into the same reductions, so
 * `result` is a LayerPenalty like the reference's.
 */
export class MomentsPenaltyAccumulator {
  private readonly inFlight = new Map<number, Moments>();
  private readonly reduction: PenaltyReduction;

  constructor(
    readonly samples: number,
    readonly size: number,
    readonly k: number,
    readonly variance: VarianceKind,
  ) {
    this.reduction = new PenaltyReduction(samples, size, varianceDivisor(k, variance));
  }

  /** One chunk's outputs for this layer; `samples[s]` is slot s's sample. */
  chunk(samples: readonly number[], outputs: SuffixLayerOutputs): void {
    samples.forEach((sample, s) => {
      if (outputs.maxAbs[s] > this.reduction.maxAbsOutput) this.reduction.maxAbsOutput = outputs.maxAbs[s];
      let moments = this.inFlight.get(sample);
      if (moments === undefined) {
        moments = { count: 0, mean: new Float64Array(this.size), m2: new Float64Array(this.size) };
        this.inFlight.set(sample, moments);
      }
      if (outputs.mean === undefined) {
        if (moments.count !== 0 || outputs.count[s] !== this.k) throw new Error(`plan error: sample ${sample} is split, so its means are needed`);
        moments.m2.set(Array.prototype.slice.call(outputs.m2, s * this.size, (s + 1) * this.size));
        moments.count = this.k;
      } else {
        mergeMoments(moments, { count: outputs.count[s], mean: outputs.mean, m2: outputs.m2 }, s * this.size);
      }
      if (moments.count > this.k) throw new Error(`plan error: sample ${sample} received more than k directions`);
      if (moments.count === this.k) this.finishSample(sample, moments);
    });
  }

  private finishSample(sample: number, { m2 }: Moments): void {
    this.reduction.finish(sample, m2);
    this.inFlight.delete(sample);
  }

  result(reduction: Reduction): LayerPenalty {
    if (this.inFlight.size > 0) throw new Error(`plan error: ${this.inFlight.size} samples did not receive k directions`);
    return this.reduction.result(reduction);
  }
}

/** Runs G plus the suffix on one chunk's rows with its layout; returns each layer's outputs. */
export type EvaluateChunkInGraph = (rows: UnitRow[], feeds: ChunkFeeds) => Promise<Record<string, SuffixLayerOutputs>>;

/** The penalty with the reduction in the graph: a plan of penalty units (repeatCenter), the same result shape as LayerPenaltyAccumulator's. */
export async function estimatePenaltyInGraph(
  plan: { samples: number; chunks: readonly PenaltyChunk[] },
  k: number,
  layerSizes: Record<string, number>,
  evaluate: EvaluateChunkInGraph,
  settings: { reduction: Reduction; variance: VarianceKind },
  onChunk?: (done: number, total: number) => void,
): Promise<Record<string, LayerPenalty>> {
  const accumulators = Object.fromEntries(
    Object.entries(layerSizes).map(([name, size]) => [name, new MomentsPenaltyAccumulator(plan.samples, size, k, settings.variance)]),
  );
  let done = 0;
  for (const chunk of plan.chunks) {
    const feeds = chunkFeeds(chunk);
    const outputs = await evaluate(chunk.batches[0], feeds);
    for (const [name, accumulator] of Object.entries(accumulators)) accumulator.chunk(feeds.samples, outputs[name]);
    onChunk?.(++done, plan.chunks.length);
  }
  return Object.fromEntries(Object.entries(accumulators).map(([name, a]) => [name, a.result(settings.reduction)]));
}
