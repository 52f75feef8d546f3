/**
 * Orthogonality with its reduction in the graph (issue 13, item 1): G plus the orthogonality suffix
 * (onnx/suffix.ts), per slot and direction ‖Jv‖² by the forward difference, folded by the same
 * OrthogonalityAccumulator as the host's rows (math/orthogonality.ts, `norms`). What leaves
 * onnxruntime is k values per sample and layer (and the layer's [rows, E], 16 bytes per batch)
 * instead of 1 + k rows. A sample split over chunks
 * repeats its center in each (plan.ts, repeatCenter), like the penalty's.
 */
import * as ort from 'onnxruntime-node';
import type { AuditError } from '../contract/errors.js';
import { type OrthogonalityAccumulator, orthogonalityUnitSizes } from '../math/orthogonality.js';
import { appendOrthogonalitySuffix, type OrthogonalitySuffix } from '../onnx/suffix.js';
import type { FillRows } from './feeds.js';
import { checkShape, graphBatchRows, layerElements, opsetRefusal, runSuffix, type SuffixDone } from './graph-suffix.js';
import type { UnitChunk } from './plan.js';
import type { Run } from './run.js';

export interface GraphOrthogonalityWork {
  epsilon: number;
  k: number;
  fill: FillRows;
  stage: string;
  tooMany: (rows: number) => AuditError;
  accumulators: Record<string, OrthogonalityAccumulator>;
}

/** A chunk's slots: each sample's center row and its direction rows in order (padded with the center). */
interface OrthogonalityLayout {
  samples: number[];
  counts: number[];
  width: number;
  center: BigInt64Array;
  plus: BigInt64Array;
}

/** Why the orthogonality suffix cannot serve this Run (null: it can): the host reduces instead. */
export function orthogonalityGraphRefusal(run: Run): string | null {
  const opset = opsetRefusal(run, 11, 'orthogonality');
  if (opset !== null) return opset;
  const fits = graphBatchRows(run, orthogonalitySuffixBytesPerRow(run));
  return fits < 2 ? `the suffix needs a center and one direction in one batch, and batches hold ${fits} rows (memory budget or batchRows)` : null;
}

/** Per row, the suffix's float64 tensors: the layers cast, the gathered rows, their difference and its square (4 × E). */
function orthogonalitySuffixBytesPerRow(run: Run): number {
  return 8 * 4 * layerElements(run);
}

/** Every sample's ‖Jv‖² through G plus the suffix, into `work.accumulators`. */
export async function orthogonalityInGraph(run: Run, work: GraphOrthogonalityWork): Promise<SuffixDone> {
  const { resolved } = run;
  const epsilon = new ort.Tensor('float64', Float64Array.of(work.epsilon), []);
  return runSuffix<OrthogonalitySuffix, OrthogonalityLayout>(run, {
    name: 'orthogonality-suffix',
    build: (bytes, opset) => appendOrthogonalitySuffix(bytes, { layers: resolved.layers, opset }),
    stage: work.stage,
    unitSizes: orthogonalityUnitSizes(work.k),
    repeatCenter: true,
    tooMany: work.tooMany,
    suffixBytesPerRow: orthogonalitySuffixBytesPerRow(run),
    fill: work.fill,
    layout: orthogonalityLayout,
    feeds: (suffix, layout) => ({
      [suffix.inputs.center]: new ort.Tensor('int64', layout.center, [layout.samples.length]),
      [suffix.inputs.plus]: new ort.Tensor('int64', layout.plus, [layout.samples.length, layout.width]),
      [suffix.inputs.epsilon]: epsilon,
    }),
    fetches: (suffix) => suffix.fetches,
    consume: (suffix, layout, outputs) => {
      for (const name of resolved.layers) {
        const norms = (outputs[suffix.outputs[name].norms] as ort.Tensor).data as Float64Array;
        checkShape(name, outputs[suffix.outputs[name].shape] as ort.Tensor, run.shapes[name].size, suffix.outputs[name].shape);
        layout.samples.forEach((sample, s) => work.accumulators[name].norms(sample, norms, s * layout.width, layout.counts[s]));
      }
    },
  });
}

function orthogonalityLayout(chunk: UnitChunk): OrthogonalityLayout {
  if (chunk.batches.length !== 1) throw new Error('plan error: the in-graph estimator runs single-batch chunks only');
  const slotOf = new Map<number, number>();
  const centers: number[] = [];
  const directions: number[][] = [];
  const samples: number[] = [];
  for (const { sample, unit, rows } of chunk.units) {
    if (unit === 0) {
      slotOf.set(sample, samples.length);
      samples.push(sample);
      centers.push(rows[0].row);
      directions.push([]);
      continue;
    }
    const slot = slotOf.get(sample);
    if (slot === undefined) throw new Error(`plan error: a direction of sample ${sample} in a chunk without its center`);
    directions[slot].push(rows[0].row);
  }
  const width = Math.max(1, ...directions.map((d) => d.length));
  const plus = new BigInt64Array(samples.length * width);
  directions.forEach((rows, s) => {
    for (let c = 0; c < width; c++) plus[s * width + c] = BigInt(rows[c] ?? centers[s]);
  });
  return { samples, counts: directions.map((d) => d.length), width, center: BigInt64Array.from(centers, BigInt), plus };
}
