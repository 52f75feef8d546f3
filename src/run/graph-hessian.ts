/**
 * The full Hessian with its reduction in the graph (issue 13, item 1): G plus the Hessian suffix
 * (onnx/suffix.ts: H = W·G/ε² by one MatMul and a Div, then the per-element figures), whole samples per batch
 * (the stencil combines a sample's d² + d + 1 rows), the figures folded by the same
 * HessianAccumulator as the host's rows (math/hessian.ts, `slots`). What leaves onnxruntime per
 * sample is 5 figures per element, d² interaction sums and max |g(z)|, instead of d² + d + 1 rows.
 */
import * as ort from 'onnxruntime-node';
import type { AuditError } from '../contract/errors.js';
import { compactStencilMatrix } from '../math/hessian-compact.js';
import { type HessianAccumulator, type HessianLayout, hessianRowsPerSample } from '../math/hessian.js';
import { appendHessianSuffix, type HessianSuffix } from '../onnx/suffix.js';
import type { FillRows } from './feeds.js';
import { checkSlots, graphBatchRows, layerElements, opsetRefusal, runSuffix, type SuffixDone } from './graph-suffix.js';
import type { Run } from './run.js';

/** The suffix's ops (MatMul over [S, R, E], ReduceSum with axes as an input) need opset 13. */
const HESSIAN_SUFFIX_OPSET = 13;

export interface GraphHessianWork {
  layout: HessianLayout;
  epsilon: number;
  element: number | undefined;
  fill: FillRows;
  stage: string;
  tooMany: (rows: number) => AuditError;
  accumulators: Record<string, HessianAccumulator>;
}

/** Why the Hessian suffix cannot serve this Run (null: it can): the host reduces instead. */
export function hessianGraphRefusal(run: Run, d: number): string | null {
  const opset = opsetRefusal(run, HESSIAN_SUFFIX_OPSET, 'Hessian');
  if (opset !== null) return opset;
  const rows = hessianRowsPerSample(d);
  const fits = graphBatchRows(run, hessianSuffixBytesPerRow(run, d));
  if (fits < rows) return `the suffix combines a sample's ${rows} rows in one batch, and batches hold ${fits} rows (memory budget or batchRows)`;
  return null;
}

/**
 * Per row, the suffix's float64 tensors: the layers cast and gathered (2 × E per row), and per
 * sample seven [d², E] tensors (W·G, /ε², its squares and absolute values, three masked), over
 * the sample's R rows. E sums the layers: their suffixes run in one session.run.
 */
function hessianSuffixBytesPerRow(run: Run, d: number): number {
  const elements = layerElements(run);
  return 8 * elements * (2 + (7 * d * d) / hessianRowsPerSample(d));
}

/** Every sample's Hessian figures through G plus the suffix, into `work.accumulators`. */
export async function hessianInGraph(run: Run, work: GraphHessianWork): Promise<SuffixDone> {
  const { resolved, shapes } = run;
  const d = work.layout.latents;
  const R = hessianRowsPerSample(d);
  const stencil = new ort.Tensor('float64', compactStencilMatrix(d), [d * d, R]);
  const epsilon = new ort.Tensor('float64', Float64Array.of(work.epsilon), []);
  const element = new ort.Tensor('int64', BigInt64Array.of(BigInt(work.element ?? 0)), [1]);
  return runSuffix<HessianSuffix, { samples: number[]; rows: BigInt64Array }>(run, {
    name: `hessian-suffix|${d}`,
    build: (bytes, opset) => appendHessianSuffix(bytes, { layers: resolved.layers, latents: d, opset }),
    stage: work.stage,
    // One unit of all R rows per sample: a batch holds whole samples.
    unitSizes: [R],
    tooMany: work.tooMany,
    suffixBytesPerRow: hessianSuffixBytesPerRow(run, d),
    fill: work.fill,
    layout: (chunk) => ({
      samples: chunk.units.map((u) => u.sample),
      rows: BigInt64Array.from(chunk.units.flatMap((u) => u.rows.map((r) => BigInt(r.row)))),
    }),
    feeds: (suffix, layout) => ({
      [suffix.inputs.rows]: new ort.Tensor('int64', layout.rows, [layout.samples.length, R]),
      [suffix.inputs.stencil]: stencil,
      [suffix.inputs.epsilon]: epsilon,
      [suffix.inputs.element]: element,
    }),
    fetches: (suffix) => (work.element === undefined ? suffix.fetches : [...suffix.fetches, ...Object.values(suffix.outputs).map((l) => l.element)]),
    consume: (suffix, layout, outputs) => {
      const data = (name: string): Float64Array => (outputs[name] as ort.Tensor).data as Float64Array;
      for (const name of resolved.layers) {
        const names = suffix.outputs[name];
        checkSlots(name, data(names.offSquares).length, layout.samples.length, shapes[name].size, names.offSquares);
        work.accumulators[name].slots(layout.samples, {
          offSquares: data(names.offSquares),
          maxDiagonal: data(names.maxDiagonal),
          maxOff: data(names.maxOff),
          sumDiagonal: data(names.sumDiagonal),
          sumOff: data(names.sumOff),
          interaction: data(names.interaction),
          maxAbs: data(names.maxAbs),
          ...(work.element === undefined ? {} : { element: data(names.element) }),
        });
      }
    },
  });
}
