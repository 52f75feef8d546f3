/** The feeds of one batch: the wrt input's rows as a metric fills them, and the extra inputs. */
import * as ort from 'onnxruntime-node';
import { allocate } from '../io/ndarray.js';
import { perturbedRows, repeatedRows } from '../math/perturb.js';
import type { Row, UnitRow } from '../math/rows.js';
import type { ResolvedRequest } from './resolve.js';

/** Writes the wrt input's values of a batch's rows into `out` (rows × size). */
export type FillRows = (rows: readonly UnitRow[], out: Float32Array | Float64Array) => void;

/** The feeds of one batch of metric rows: `fill` writes the wrt rows, extra inputs follow the samples. */
export function unitFeeds(request: ResolvedRequest, rows: readonly UnitRow[], fill: FillRows): Record<string, ort.Tensor> {
  const { wrt, size, latentShape, latentType } = request;
  const out = latentType === 'float64' ? new Float64Array(rows.length * size) : new Float32Array(rows.length * size);
  fill(rows, out);
  return { [wrt.name]: new ort.Tensor(latentType, out, [rows.length, ...latentShape]), ...extraFeeds(request, rows) };
}

/** The feeds of one batch of perturbed rows (z_n + sign·ε·v_j): the preflight's and the previews' rows. */
export function rowFeeds(request: ResolvedRequest, rows: readonly Row[]): Record<string, ort.Tensor> {
  const { latents, directions, epsilon, size, samples } = request;
  const fill: FillRows = (_, out) => perturbedRows(rows, latents, directions, epsilon, size, samples, out);
  return unitFeeds(request, rows.map(({ sample }, index) => ({ sample, index })), fill);
}

/** The extra inputs of one batch: repeated per row (per-sample inputs) or held as given. */
function extraFeeds(request: ResolvedRequest, rows: readonly { sample: number }[]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const extra of request.extras) {
    const { array } = extra;
    if (!extra.perSample) {
      feeds[extra.name] = new ort.Tensor(array.type, array.data, array.shape);
      continue;
    }
    const data = allocate(array.type, rows.length * extra.size);
    repeatedRows(rows, array.data, extra.size, data as unknown as { [i: number]: unknown });
    feeds[extra.name] = new ort.Tensor(array.type, data, [rows.length, ...array.shape.slice(1)]);
  }
  return feeds;
}
