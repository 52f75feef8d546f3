import type { Chunk, Plan, Row } from './plan.js';
import { type Activations, type LayerPenalty, LayerPenaltyAccumulator } from './second-difference.js';
import type { Reduction } from './reduction.js';
import type { VarianceKind } from './variance.js';

export interface PenaltySettings {
  k: number;
  epsilon: number;
  reduction: Reduction;
  variance: VarianceKind;
}

/** Runs G on one batch of rows and returns each layer's outputs, `values[row * size + e]`. */
export type EvaluateBatch = (rows: Row[]) => Promise<Record<string, Activations>>;

/**
 * The Hessian Penalty of every layer: run the plan's batches through G and stream their outputs
 * into one accumulator per layer. `layerSizes` gives each layer's elements per sample.
 */
export async function estimatePenalty(
  plan: Plan,
  layerSizes: Record<string, number>,
  evaluate: EvaluateBatch,
  settings: PenaltySettings,
  onChunk?: (done: number, total: number) => void,
): Promise<Record<string, LayerPenalty>> {
  const accumulators = Object.fromEntries(
    Object.entries(layerSizes).map(([name, size]) => [
      name,
      new LayerPenaltyAccumulator(plan.samples, size, settings.k, settings.epsilon, settings.variance),
    ]),
  );
  let done = 0;
  for (const chunk of plan.chunks) {
    const outputs: Record<string, Activations>[] = [];
    for (const batch of chunk.batches) outputs.push(await evaluate(batch));
    for (const [name, accumulator] of Object.entries(accumulators)) {
      feedChunk(chunk, accumulator, outputs.map((o) => o[name]));
    }
    onChunk?.(++done, plan.chunks.length);
  }
  return Object.fromEntries(
    Object.entries(accumulators).map(([name, accumulator]) => [name, accumulator.result(settings.reduction)]),
  );
}

/** Each sample's center, then its directions: a sample finishes (and frees its state) early. */
function feedChunk(chunk: Chunk, accumulator: LayerPenaltyAccumulator, batches: Activations[]): void {
  const size = accumulator.size;
  const { pairs } = chunk;
  let p = 0;
  const direction = ({ sample, plus, minus }: Chunk['pairs'][number]): void =>
    accumulator.direction(sample, batches[plus.batch], plus.row * size, batches[minus.batch], minus.row * size);
  for (const { sample, at } of chunk.centers) {
    accumulator.center(sample, batches[at.batch], at.row * size);
    for (; p < pairs.length && pairs[p].sample === sample; p++) direction(pairs[p]);
  }
  for (; p < pairs.length; p++) direction(pairs[p]);
}
