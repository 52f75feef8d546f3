// The host reduction as Run.units runs it (src/run/run.ts), for the bench scripts that drive
// sessions themselves: each chunk's batches through `run`, then every unit to its layer's
// LayerPenaltyAccumulator (the reference the in-graph estimator is compared with).
import { LayerPenaltyAccumulator } from '../dist/math/second-difference.js';

export async function estimateOnHost(plan, layerSizes, { k, epsilon, reduction = 'max', variance = 'unbiased' }, run) {
  const layers = Object.keys(layerSizes);
  const accumulators = Object.fromEntries(layers.map((l) => [l, new LayerPenaltyAccumulator(plan.samples, layerSizes[l], k, epsilon, variance)]));
  for (const chunk of plan.chunks) {
    const outputs = [];
    for (const rows of chunk.batches) outputs.push(await run(rows));
    for (const { sample, unit, rows } of chunk.units) {
      for (const l of layers) accumulators[l].unit(sample, unit, rows.map((r) => outputs[r.batch][l]), rows.map((r) => r.row * layerSizes[l]));
    }
  }
  return Object.fromEntries(layers.map((l) => [l, accumulators[l].result(reduction)]));
}
