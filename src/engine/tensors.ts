import * as ort from 'onnxruntime-node';
import type { Row } from '../penalty/plan.js';
import { perturbedRows, repeatedRows } from '../penalty/perturb.js';
import { allocate } from '../io/ndarray.js';
import type { ResolvedPenalty } from './resolve.js';

/** The feeds of one batch: z perturbed per row, extra inputs repeated per row or held as given. */
export function batchFeeds(request: ResolvedPenalty, rows: Row[]): Record<string, ort.Tensor> {
  const { wrt, latents, directions, epsilon, size, samples, latentShape, latentType } = request;
  const out = latentType === 'float64' ? new Float64Array(rows.length * size) : new Float32Array(rows.length * size);
  perturbedRows(rows, latents, directions, epsilon, size, samples, out);
  return { [wrt.name]: new ort.Tensor(latentType, out, [rows.length, ...latentShape]), ...extraFeeds(request, rows) };
}

/** The extra inputs of one batch: repeated per row (per-sample inputs) or held as given. */
export function extraFeeds(request: ResolvedPenalty, rows: readonly { sample: number }[]): Record<string, ort.Tensor> {
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

/**
 * A layer's output as numbers. float16 arrives as raw bits (Uint16Array) where the runtime has no
 * Float16Array, and is widened here; on Node ≥ 24 onnxruntime hands out a Float16Array of values,
 * which widen to float32 exactly.
 */
export function outputValues(tensor: ort.Tensor): ArrayLike<number> {
  switch (tensor.type) {
    case 'float32':
    case 'float64':
      return tensor.data as Float32Array | Float64Array;
    case 'float16': {
      const data = tensor.data as Uint16Array | ArrayLike<number>;
      return data instanceof Uint16Array ? halfToFloat(data) : Float32Array.from(data);
    }
    default:
      throw new Error(`unsupported output type ${tensor.type}`);
  }
}

export function halfToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    out[i] =
      exponent === 0 ? sign * 2 ** -14 * (mantissa / 1024)
      : exponent === 31 ? (mantissa ? NaN : sign * Infinity)
      : sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
  }
  return out;
}
