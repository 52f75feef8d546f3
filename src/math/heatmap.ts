/**
 * Penalty heatmaps (docs/design.md, "Audit metrics"): the per-element penalty of an image-shaped layer,
 * C × H × W per sample, reduced over channels (mean) to one H × W map.
 */
export function channelMean(values: ArrayLike<number>, channels: number, pixels: number): Float64Array {
  const map = new Float64Array(pixels);
  for (let c = 0; c < channels; c++) {
    for (let p = 0; p < pixels; p++) map[p] += values[c * pixels + p];
  }
  for (let p = 0; p < pixels; p++) map[p] /= channels;
  return map;
}

/** A layer looks like an image when its per-sample shape is [1 or 3, H, W]. */
export const isImageShape = (shape: readonly number[]): boolean => shape.length === 3 && (shape[0] === 1 || shape[0] === 3);
