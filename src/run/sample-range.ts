/**
 * A request split over several lanes (pool.ts): every part resolves the whole request with the
 * same seed (the same latents, directions and inputs as one lane would draw), then keeps only its
 * samples [from, to). Its figures for those samples are then exactly the one-lane figures of those
 * samples, and metrics/merge.ts puts the parts together.
 */
import { AuditError } from '../contract/errors.js';
import type { NDArray } from '../io/ndarray.js';
import type { ResolvedRequest } from './resolve.js';

export interface SampleRange {
  from: number;
  to: number;
  /** Samples of the whole request: a part refuses when its resolve finds another count. */
  of: number;
}

export function onlySamples(resolved: ResolvedRequest, range: SampleRange | undefined): ResolvedRequest {
  if (range === undefined) return resolved;
  const { from, to, of } = range;
  if (resolved.samples !== of || !(0 <= from && from < to && to <= of)) {
    throw new AuditError('split_refused', `samples ${from}..${to} of ${of} do not fit a request of ${resolved.samples} samples`);
  }
  const n = to - from;
  const { size, samples } = resolved;
  const latents = resolved.latents.slice(from * size, to * size);
  // Directions are k × N × size: each direction keeps its rows of these samples.
  const directions = new Float32Array(resolved.k * n * size);
  for (let k = 0; k < resolved.k; k++) directions.set(resolved.directions.subarray((k * samples + from) * size, (k * samples + to) * size), k * n * size);
  const extras = resolved.extras.map((e) => (e.perSample ? { ...e, array: rowsOf(e.array, e.size, from, to) } : e));
  return { ...resolved, latents, directions, extras, samples: n };
}

function rowsOf(array: NDArray, size: number, from: number, to: number): NDArray {
  return { ...array, shape: [to - from, ...array.shape.slice(1)], data: array.data.slice(from * size, to * size) as NDArray['data'] };
}
