/**
 * Activeness with its reduction in the graph (issue 13, item 1): G plus the activeness suffix
 * (onnx/suffix.ts), per unit (one latent of one sample, its three rows) Σ over elements of the
 * variance of the three outputs; the sums folded by the same ActivenessAccumulator as the host's
 * rows (math/activeness.ts, `unitSums`). What leaves onnxruntime is one value per unit and layer
 * (and the layer's [rows, E], 16 bytes per batch), instead of three rows.
 */
import * as ort from 'onnxruntime-node';
import type { AuditError } from '../contract/errors.js';
import { type ActivenessAccumulator, activenessUnitSizes } from '../math/activeness.js';
import { type ActivenessSuffix, appendActivenessSuffix } from '../onnx/suffix.js';
import type { FillRows } from './feeds.js';
import { checkShape, graphBatchRows, layerElements, opsetRefusal, runSuffix, type SuffixDone } from './graph-suffix.js';
import type { Run } from './run.js';

export interface GraphActivenessWork {
  fill: FillRows;
  stage: string;
  tooMany: (rows: number) => AuditError;
  accumulators: Record<string, ActivenessAccumulator>;
}

/** Why the activeness suffix cannot serve this Run (null: it can): the host reduces instead. */
export function activenessGraphRefusal(run: Run): string | null {
  const opset = opsetRefusal(run, 11, 'activeness');
  if (opset !== null) return opset;
  const fits = graphBatchRows(run, activenessSuffixBytesPerRow(run));
  return fits < 3 ? `the suffix needs a unit's 3 rows in one batch, and batches hold ${fits} rows (memory budget or batchRows)` : null;
}

/** Per row, the suffix's float64 tensors: about 16 × E per unit of 3 rows (cast, gathered, the three points, their differences and squares). */
function activenessSuffixBytesPerRow(run: Run): number {
  return (8 * 16 * layerElements(run)) / 3;
}

/** Every unit's variance sums through G plus the suffix, into `work.accumulators`. */
export async function activenessInGraph(run: Run, work: GraphActivenessWork): Promise<SuffixDone> {
  const { resolved } = run;
  return runSuffix<ActivenessSuffix, { latents: number[]; rows: BigInt64Array }>(run, {
    name: 'activeness-suffix',
    build: (bytes, opset) => appendActivenessSuffix(bytes, { layers: resolved.layers, opset }),
    stage: work.stage,
    unitSizes: activenessUnitSizes(resolved.size),
    tooMany: work.tooMany,
    suffixBytesPerRow: activenessSuffixBytesPerRow(run),
    fill: work.fill,
    // A unit's number is its latent (one unit per latent, math/activeness.ts).
    layout: (chunk) => ({
      latents: chunk.units.map((u) => u.unit),
      rows: BigInt64Array.from(chunk.units.flatMap((u) => u.rows.map((r) => BigInt(r.row)))),
    }),
    feeds: (suffix, layout) => ({ [suffix.inputs.rows]: new ort.Tensor('int64', layout.rows, [layout.latents.length, 3]) }),
    fetches: (suffix) => suffix.fetches,
    consume: (suffix, layout, outputs) => {
      for (const name of resolved.layers) {
        checkShape(name, outputs[suffix.outputs[name].shape] as ort.Tensor, run.shapes[name].size, suffix.outputs[name].shape);
        work.accumulators[name].unitSums(layout.latents, (outputs[suffix.outputs[name].varianceSum] as ort.Tensor).data as Float64Array);
      }
    },
  });
}
