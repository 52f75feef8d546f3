/**
 * Colour scales for the report. Viridis (matplotlib's perceptually uniform default, readable in
 * grey and by most colour-blind readers) for matrices and bars; inferno for the penalty overlay.
 * Both are given by nine anchors of the published tables and interpolated linearly.
 */
export type Rgb = [number, number, number];

const VIRIDIS: Rgb[] = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];
const INFERNO: Rgb[] = [
  [0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
  [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164],
];

function interpolate(anchors: Rgb[], t: number): Rgb {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (anchors.length - 1);
  const i = Math.min(anchors.length - 2, Math.floor(x));
  const f = x - i;
  return anchors[i].map((c, k) => Math.round(c + f * (anchors[i + 1][k] - c))) as Rgb;
}

export const viridis = (t: number): Rgb => interpolate(VIRIDIS, t);
export const inferno = (t: number): Rgb => interpolate(INFERNO, t);

export const css = ([r, g, b]: Rgb): string => `rgb(${r},${g},${b})`;

/** Text that stays readable on a cell of this colour. */
export const textOn = ([r, g, b]: Rgb): string => (0.299 * r + 0.587 * g + 0.114 * b > 140 ? '#111' : '#fff');
