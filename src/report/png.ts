/**
 * Generated samples and penalty overlays as PNG data URLs (pngjs), so the report stays one file
 * with no fetches. A sample is C × H × W (C = 1 or 3) in the model's range: [−1, 1] (tanh) or
 * [0, 1] (sigmoid) are shown as is, anything else is stretched from its min to its max.
 */
import { PNG } from 'pngjs';
import { inferno } from './color.js';

function dataUrl(png: PNG): string {
  return `data:image/png;base64,${PNG.sync.write(png).toString('base64')}`;
}

/** The range a sample is displayed in. */
export function displayRange(values: ArrayLike<number>): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (values[i] < lo) lo = values[i];
    if (values[i] > hi) hi = values[i];
  }
  if (lo >= 0 && hi <= 1) return [0, 1];
  if (lo >= -1 && hi <= 1) return [-1, 1];
  return hi > lo ? [lo, hi] : [lo - 1, lo + 1];
}

export function imagePng(values: ArrayLike<number>, [channels, height, width]: number[]): string {
  const png = new PNG({ width, height });
  const [lo, hi] = displayRange(values);
  const pixels = height * width;
  for (let p = 0; p < pixels; p++) {
    for (let c = 0; c < 3; c++) {
      const v = values[(channels === 3 ? c : 0) * pixels + p];
      png.data[p * 4 + c] = Math.round(255 * Math.min(1, Math.max(0, (v - lo) / (hi - lo))));
    }
    png.data[p * 4 + 3] = 255;
  }
  return dataUrl(png);
}

/** The H × W penalty map in inferno, opaque where the penalty is high, clear where it is 0. */
export function overlayPng(map: readonly (readonly number[])[], max: number): string {
  const height = map.length;
  const width = map[0]?.length ?? 0;
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = max > 0 ? map[y][x] / max : 0;
      const [r, g, b] = inferno(t);
      const at = (y * width + x) * 4;
      png.data[at] = r;
      png.data[at + 1] = g;
      png.data[at + 2] = b;
      png.data[at + 3] = Math.round(255 * Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * 0.85);
    }
  }
  return dataUrl(png);
}
