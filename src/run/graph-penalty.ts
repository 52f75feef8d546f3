/**
 * The penalty with its reduction in the graph (issue 13, item 1): the Run's model plus the
 * penalty suffix (onnx/suffix.ts) in a second cached session, one stacked chunk per run, and the
 * partial moments merged on the host (math/moments.ts). What leaves onnxruntime per chunk is
 * O(samples × elements), independent of k; the host reduction (run.units with
 * LayerPenaltyAccumulator) stays the reference and the CPU's default.
 */
import { AuditError } from '../contract/errors.js';
import { chunkFeeds, MomentsPenaltyAccumulator, type PenaltyChunk } from '../math/moments.js';
import type { Reduction } from '../math/reduction.js';
import { type LayerPenalty, penaltyUnitSizes } from '../math/second-difference.js';
import type { VarianceKind } from '../math/variance.js';
import { appendPenaltySuffix, type PenaltySuffix } from '../onnx/suffix.js';
import { checkRunMemory } from '../runtime/memory-check.js';
import { openSession } from '../runtime/session.js';
import { fetchedBytes, suffixFeeds, suffixFetches, suffixOutputs } from '../runtime/suffix-run.js';
import { type FillRows, unitFeeds } from './feeds.js';
import { type Run, timedRun, type UnitsDone } from './run.js';

export type Estimator = 'graph' | 'host';

/**
 * Where the penalty's moments are reduced: as asked, else in the graph on CUDA/WebGPU (the copy
 * out and one JavaScript thread are what a GPU waits on) and on the host on the CPU (measured
 * faster there, bench/RESULTS.md). Per-pass runs (rows interact) stay on the host: a pass's
 * rows are separate batches, and the suffix reduces within one. A small request whose batches
 * are shared with other requests (dynamic batching) is reduced on the host too when its rows are
 * at most SHARED_HOST_BYTES: then its forward can share a run (the suffix's runs are not shared),
 * and copying that little costs less than running alone.
 */
export function chooseEstimator(run: Run, asked: 'auto' | Estimator | undefined): Estimator {
  if (run.executionMode !== 'stacked') return 'host';
  if (asked === 'graph' || asked === 'host') return asked;
  if (!/^(cuda|webgpu)/.test(run.executionProvider)) return 'host';
  return run.context.shared && hostBytes(run) <= SHARED_HOST_BYTES ? 'host' : 'graph';
}

/** Bytes of a shared request's rows below which it is reduced on the host (see chooseEstimator). */
export const SHARED_HOST_BYTES = 16 * 1024 * 1024;

/** Bytes the host reduction would copy out: every row of every ε, every layer. */
function hostBytes(run: Run): number {
  const { resolved, shapes } = run;
  const rows = resolved.samples * (2 * resolved.k + 1) * (1 + (resolved.epsilons?.length ?? 0));
  return rows * resolved.layers.reduce((sum, name) => sum + shapes[name].bytesPerRow, 0);
}

export interface GraphPenaltyWork {
  epsilon: number;
  k: number;
  variance: VarianceKind;
  reduction: Reduction;
  fill: FillRows;
  stage: string;
}

export interface GraphPenaltyDone {
  penalties: Record<string, LayerPenalty>;
  done: UnitsDone;
  /** Bytes of the suffix's outputs copied out of onnxruntime. */
  fetchedBytes: number;
}

/** The penalty of every layer of the Run through G plus the suffix. */
export async function penaltyInGraph(run: Run, work: GraphPenaltyWork): Promise<GraphPenaltyDone> {
  const { resolved, shapes } = run;
  // One suffix per (model, layers), its session a companion of the Run's own (same device).
  const key = `${run.sessionKey}|penalty-suffix|${JSON.stringify(resolved.layers)}`;
  const suffix = run.context.sessions.derived(key, () => appendPenaltySuffix(run.model.bytes, { layers: resolved.layers }));
  let opening = run.open.companions.get(key);
  if (opening === undefined) {
    opening = openSession(suffix.bytes, [], run.context.device, run.context.sessions.settings);
    run.open.companions.set(key, opening);
    opening.catch(() => run.open.companions.delete(key));
  }
  const open = await opening;
  const planned = await run.plan(resolved.samples, penaltyUnitSizes(work.k), 'stacked', true);
  const accumulators = Object.fromEntries(
    resolved.layers.map((name) => [name, new MomentsPenaltyAccumulator(resolved.samples, shapes[name].size, work.k, work.variance)]),
  );
  const timing = { forwardMs: 0 };
  let bytes = 0;
  let done = 0;
  const { chunks } = planned.plan;
  for (const chunk of chunks as PenaltyChunk[]) {
    const layout = chunkFeeds(chunk);
    const feeds = unitFeeds(resolved, chunk.batches[0], work.fill);
    checkRunMemory(run.model, feeds, run.limits.memoryBudget);
    const outputs = await timedRun(open, suffixFetches(suffix, layout, work.k), { ...feeds, ...suffixFeeds(suffix, layout, work.epsilon) }, timing);
    bytes += fetchedBytes(outputs);
    const layers = suffixOutputs(suffix, outputs);
    for (const name of resolved.layers) {
      checkMoments(suffix, name, layers[name].m2.length, layout.samples.length, shapes[name].size);
      accumulators[name].chunk(layout.samples, layers[name]);
    }
    run.context.onProgress?.(++done, chunks.length, work.stage);
  }
  run.forwardMs += timing.forwardMs;
  return {
    penalties: Object.fromEntries(resolved.layers.map((name) => [name, accumulators[name].result(work.reduction)])),
    done: { ...planned, batches: chunks.length, forwardMs: timing.forwardMs, modeWarnings: [] },
    fetchedBytes: bytes,
  };
}

/**
 * The suffix flattens each row to the elements it has in this batch: a layer whose per-row size
 * depends on the batch size would be reduced over the wrong elements (the host path checks the
 * shapes; here only the moments come back, so their count is checked).
 */
function checkMoments(suffix: PenaltySuffix, layer: string, length: number, slots: number, size: number): void {
  if (length === slots * size) return;
  throw new AuditError(
    'output_shape_changed',
    `layer '${layer}' has ${length / slots} elements per row in a stacked batch, but ${size} were expected from the preflight: ` +
      `its per-row output depends on the batch size, so rows cannot be audited independently (suffix output ${suffix.outputs.layers[layer].m2})`,
    { layer },
  );
}
