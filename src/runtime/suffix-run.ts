/**
 * onnxruntime plumbing of the in-graph penalty (src/onnx/suffix.ts): the layout tensors of one
 * chunk, and its outputs read back per layer. Only the suffix's outputs are fetched, so the raw
 * rows never leave the session.
 */
import * as ort from 'onnxruntime-node';
import type { PenaltySuffix } from '../onnx/suffix.js';
import { type ChunkFeeds, slotsComplete, type SuffixLayerOutputs } from '../math/moments.js';

/** The suffix's five inputs for one chunk, in its accumulation type. */
export function suffixFeeds(suffix: PenaltySuffix, feeds: ChunkFeeds, epsilon: number): Record<string, ort.Tensor> {
  const slots = feeds.samples.length;
  const { inputs } = suffix;
  const float64 = suffix.accumulation === 'float64';
  const real = (data: Float64Array, dims: number[]): ort.Tensor =>
    float64 ? new ort.Tensor('float64', data, dims) : new ort.Tensor('float32', Float32Array.from(data), dims);
  return {
    [inputs.center]: new ort.Tensor('int64', feeds.center, [slots]),
    [inputs.plus]: new ort.Tensor('int64', feeds.plus, [slots, feeds.width]),
    [inputs.minus]: new ort.Tensor('int64', feeds.minus, [slots, feeds.width]),
    [inputs.weight]: real(feeds.weight, [slots, feeds.width]),
    [inputs.epsilon]: real(Float64Array.of(epsilon), []),
  };
}

/**
 * The outputs to fetch for one chunk: the means only when some sample is split over chunks (the
 * Chan merge needs them); a chunk of whole samples needs M2 alone, half the bytes.
 */
export function suffixFetches(suffix: PenaltySuffix, feeds: ChunkFeeds, k: number): string[] {
  if (!slotsComplete(feeds, k)) return suffix.fetches;
  const means = new Set(Object.values(suffix.outputs.layers).map((l) => l.mean));
  return suffix.fetches.filter((name) => !means.has(name));
}

/** Per layer, the chunk's partial moments as fetched (see suffix.ts for the shapes). */
export function suffixOutputs(suffix: PenaltySuffix, results: ort.InferenceSession.OnnxValueMapType): Record<string, SuffixLayerOutputs> {
  const data = (name: string): ArrayLike<number> => (results[name] as ort.Tensor).data as Float64Array | Float32Array;
  const count = data(suffix.outputs.count);
  return Object.fromEntries(
    Object.entries(suffix.outputs.layers).map(([layer, names]) => [
      layer,
      { count, ...(names.mean in results ? { mean: data(names.mean) } : {}), m2: data(names.m2), maxAbs: data(names.maxAbs), nonFinite: data(names.nonFinite) },
    ]),
  );
}

/** Bytes a run's fetched outputs occupy: what crosses from onnxruntime to JavaScript. */
export function fetchedBytes(results: ort.InferenceSession.OnnxValueMapType): number {
  let bytes = 0;
  for (const value of Object.values(results)) bytes += ((value as ort.Tensor).data as ArrayBufferView).byteLength;
  return bytes;
}
