/**
 * A float64 reference of the Hessian Penalty, written the way the reference implementations run
 * it: 2k+1 separate forward passes of N rows, then the formula in double precision.
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { exposeTensors } from '../../dist/onnx/expose.js';

export const MODELS = new URL('../../models/', import.meta.url);
export const modelPath = (name: string): string => new URL(name, MODELS).pathname;
export const modelBytes = (name: string): Uint8Array => new Uint8Array(readFileSync(modelPath(name)));

export interface ReferenceOptions {
  model: string;
  layers: string[];
  expose?: string[];
  z: Float32Array;
  shape: number[]; // [N, ...]
  directions: Float32Array; // k × N × ...
  k: number;
  epsilon: number;
  variance?: 'unbiased' | 'biased';
  reduction?: 'max' | 'mean';
  extra?: Record<string, ort.Tensor>;
}

/** Per layer: the reduced penalty and the per-element penalties (N × elements), in float64. */
export async function referencePenalty(o: ReferenceOptions): Promise<Record<string, { penalty: number; perElement: Float64Array[] }>> {
  const session = await ort.InferenceSession.create(exposeTensors(modelBytes(o.model), o.expose ?? []));
  const [n] = o.shape;
  const size = o.z.length / n;
  const run = async (sign: number, j: number) => {
    const x = new Float32Array(o.z.length);
    for (let i = 0; i < x.length; i++) x[i] = o.z[i] + (sign === 0 ? 0 : sign * o.epsilon * o.directions[j * n * size + i]);
    const out = await session.run({ z: new ort.Tensor('float32', x, o.shape), ...(o.extra ?? {}) }, o.layers);
    return Object.fromEntries(o.layers.map((l) => [l, out[l].data as Float32Array]));
  };
  const center = await run(0, 0);
  const q: Record<string, Float64Array[]> = Object.fromEntries(o.layers.map((l) => [l, []]));
  for (let j = 0; j < o.k; j++) {
    const plus = await run(1, j);
    const minus = await run(-1, j);
    for (const l of o.layers) {
      q[l].push(Float64Array.from(center[l], (g, e) => (plus[l][e] - 2 * g + minus[l][e]) / (o.epsilon * o.epsilon)));
    }
  }
  await session.release();
  const result: Record<string, { penalty: number; perElement: Float64Array[] }> = {};
  for (const l of o.layers) {
    const elements = center[l].length;
    const divisor = (o.variance ?? 'unbiased') === 'unbiased' ? o.k - 1 : o.k;
    const variance = new Float64Array(elements);
    for (let e = 0; e < elements; e++) {
      let mean = 0;
      for (let j = 0; j < o.k; j++) mean += q[l][j][e];
      mean /= o.k;
      let ss = 0;
      for (let j = 0; j < o.k; j++) ss += (q[l][j][e] - mean) ** 2;
      variance[e] = ss / divisor;
    }
    const per = elements / n;
    const perElement = Array.from({ length: n }, (_, s) => variance.slice(s * per, (s + 1) * per));
    const all = Array.from(variance);
    const penalty = (o.reduction ?? 'max') === 'max' ? Math.max(...all) : all.reduce((a, b) => a + b, 0) / all.length;
    result[l] = { penalty, perElement };
  }
  return result;
}

/** Relative difference, safe at zero. */
export const relative = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
