/**
 * The penalty with its reduction in the graph (issue 13, item 1): the Run's model plus the
 * penalty suffix (onnx/suffix.ts) in a second cached session, one stacked chunk per run, and the
 * partial moments merged on the host (math/moments.ts). What leaves onnxruntime per chunk is
 * O(samples × elements), independent of k; the host reduction (run.units with
 * LayerPenaltyAccumulator) stays the reference and the CPU's default. The session and chunk
 * plumbing is graph-suffix.ts's, shared with the Hessian's and activeness's suffixes.
 */
import type { AuditError } from '../contract/errors.js';
import { type ChunkFeeds, chunkFeeds, MomentsPenaltyAccumulator } from '../math/moments.js';
import type { Reduction } from '../math/reduction.js';
import { type LayerPenalty, penaltyUnitSizes } from '../math/second-difference.js';
import type { VarianceKind } from '../math/variance.js';
import { appendPenaltySuffix, type PenaltySuffix } from '../onnx/suffix.js';
import { suffixFeeds, suffixFetches, suffixOutputs } from '../runtime/suffix-run.js';
import type { FillRows } from './feeds.js';
import { checkSlots, runSuffix, type SuffixDone } from './graph-suffix.js';
import type { Run } from './run.js';

export interface GraphPenaltyWork {
  epsilon: number;
  k: number;
  variance: VarianceKind;
  reduction: Reduction;
  fill: FillRows;
  stage: string;
  tooMany: (rows: number) => AuditError;
}

export interface GraphPenaltyDone extends SuffixDone {
  penalties: Record<string, LayerPenalty>;
}

/** The penalty of every layer of the Run through G plus the suffix. */
export async function penaltyInGraph(run: Run, work: GraphPenaltyWork): Promise<GraphPenaltyDone> {
  const { resolved, shapes } = run;
  const accumulators = Object.fromEntries(
    resolved.layers.map((name) => [name, new MomentsPenaltyAccumulator(resolved.samples, shapes[name].size, work.k, work.variance)]),
  );
  const graph = await runSuffix<PenaltySuffix, ChunkFeeds>(run, {
    name: 'penalty-suffix',
    build: (bytes, opset) => appendPenaltySuffix(bytes, { layers: resolved.layers, opset }),
    stage: work.stage,
    // A split sample repeats its center: the suffix needs g(z) in each batch with its directions.
    unitSizes: penaltyUnitSizes(work.k),
    repeatCenter: true,
    tooMany: work.tooMany,
    fill: work.fill,
    layout: (chunk) => chunkFeeds(chunk),
    feeds: (suffix, layout) => suffixFeeds(suffix, layout, work.epsilon),
    fetches: (suffix, layout) => suffixFetches(suffix, layout, work.k),
    consume: (suffix, layout, outputs) => {
      const layers = suffixOutputs(suffix, outputs);
      for (const name of resolved.layers) {
        checkSlots(name, layers[name].m2.length, layout.samples.length, shapes[name].size, suffix.outputs.layers[name].m2);
        accumulators[name].chunk(layout.samples, layers[name]);
      }
    },
  });
  return { ...graph, penalties: Object.fromEntries(resolved.layers.map((name) => [name, accumulators[name].result(work.reduction)])) };
}
