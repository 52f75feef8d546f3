/**
 * Latent traversals (issue 15), the figure disentanglement papers show: for each latent (or group,
 * or basis direction) and a few samples, G at points that move only that direction, laid out as
 * one PNG grid: rows = directions (sorted by a score such as activeness), columns = steps, one
 * block of columns per sample.
 *
 * Points: for latent i, z with z_i set to step·extent (the others unchanged, as activeness sets
 * them); for a group or basis direction b, z + step·extent·b (a group moves along its indicator
 * vector, so every coordinate of the group moves together). Steps default to {−2, −1, 0, 1, 2}
 * times an extent of 1, i.e. z_i ∈ {−2, …, 2}, the range of a standard normal latent.
 *
 * Pure: points in, pixels out. Counts and sizes are bounded before anything runs or is encoded.
 */
import { PNG } from 'pngjs';
import { AuditError } from '../contract/errors.js';
import type { Groups } from '../math/groups.js';
import { displayRange } from './png.js';
import { esc, fmt } from './svg.js';

export const TRAVERSAL_STEPS = [-2, -1, 0, 1, 2];
export const TRAVERSAL_EXTENT = 1;

export interface TraversalLimits {
  directions: number;
  samples: number;
  steps: number;
  /** Rows of G to run: directions × samples × steps. */
  images: number;
  /** Pixels of the encoded grid. */
  pixels: number;
}

export const TRAVERSAL_LIMITS: TraversalLimits = { directions: 128, samples: 8, steps: 11, images: 2048, pixels: 4096 * 4096 };

export type TraversalDirections =
  | { kind: 'axes'; indices?: readonly number[] }
  | { kind: 'groups'; groups: Groups }
  | { kind: 'basis'; rows: number; data: ArrayLike<number> };

export interface TraversalOptions {
  directions?: TraversalDirections;
  /** How many of the given samples to traverse (default 3, at most the number given). */
  samples?: number;
  steps?: readonly number[];
  extent?: number;
  limits?: TraversalLimits;
}

export interface TraversalPlan {
  /** D directions, S samples, T steps; points are D × S × T rows of d values. */
  directions: number;
  samples: number;
  steps: number[];
  extent: number;
  size: number;
  /** One label per direction: 'z3', 'group 2', 'b1'. */
  labels: string[];
  points: Float32Array;
}

/** Row of point (direction, sample, step) in plan.points and in G's outputs. */
export const pointRow = (plan: Pick<TraversalPlan, 'samples' | 'steps'>, direction: number, sample: number, step: number): number =>
  (direction * plan.samples + sample) * plan.steps.length + step;

/** The traversal points for latents z (N × d, flat). */
export function traversalPoints(z: ArrayLike<number>, size: number, options: TraversalOptions = {}): TraversalPlan {
  const limits = options.limits ?? TRAVERSAL_LIMITS;
  const given = z.length / size;
  if (!Number.isInteger(given) || given < 1) throw new AuditError('shape_mismatch', `traversal latents hold ${z.length} values, not a whole number of samples of ${size}`);
  const samples = options.samples ?? Math.min(3, given);
  if (!Number.isSafeInteger(samples) || samples < 1 || samples > given) {
    throw new AuditError('invalid_argument', `traversal samples must be a whole number from 1 to the ${given} samples given, got ${samples}`);
  }
  const steps = [...(options.steps ?? TRAVERSAL_STEPS)];
  if (steps.length === 0 || steps.some((s) => !Number.isFinite(s))) throw new AuditError('invalid_argument', 'traversal steps must be a non-empty list of finite numbers');
  const extent = options.extent ?? TRAVERSAL_EXTENT;
  if (!Number.isFinite(extent) || extent <= 0) throw new AuditError('invalid_argument', `traversal extent must be a finite number greater than 0, got ${extent}`);
  const directions = options.directions ?? { kind: 'axes' };
  const { labels, apply } = directionSetter(directions, size);
  const counts: [keyof TraversalLimits, number][] = [
    ['directions', labels.length],
    ['samples', samples],
    ['steps', steps.length],
    ['images', labels.length * samples * steps.length],
  ];
  for (const [name, value] of counts) checkLimit(name, value, limits[name]);
  const plan = { directions: labels.length, samples, steps, extent, size, labels, points: new Float32Array(labels.length * samples * steps.length * size) };
  for (let d = 0; d < plan.directions; d++) {
    for (let s = 0; s < samples; s++) {
      for (let t = 0; t < steps.length; t++) {
        const row = pointRow(plan, d, s, t) * size;
        for (let e = 0; e < size; e++) plan.points[row + e] = z[s * size + e];
        apply(plan.points, row, d, steps[t] * extent);
      }
    }
  }
  return plan;
}

type Setter = (points: Float32Array, row: number, direction: number, amount: number) => void;

function directionSetter(directions: TraversalDirections, size: number): { labels: string[]; apply: Setter } {
  if (directions.kind === 'axes') {
    const indices = directions.indices ?? Array.from({ length: size }, (_, i) => i);
    for (const i of indices) {
      if (!Number.isSafeInteger(i) || i < 0 || i >= size) throw new AuditError('invalid_argument', `traversal latent ${i} is outside the ${size} latents (0 to ${size - 1})`);
    }
    return { labels: indices.map((i) => `z${i}`), apply: (p, row, d, amount) => (p[row + indices[d]] = amount) };
  }
  if (directions.kind === 'groups') {
    const { groups } = directions;
    if (groups.size !== size) throw new AuditError('shape_mismatch', `traversal groups cover ${groups.size} coordinates, but the latents have ${size}`);
    return {
      labels: Array.from({ length: groups.count }, (_, g) => `group ${g}`),
      apply: (p, row, d, amount) => groups.assignment.forEach((g, e) => g === d && (p[row + e] += amount)),
    };
  }
  const { rows, data } = directions;
  if (data.length !== rows * size) throw new AuditError('shape_mismatch', `traversal basis holds ${data.length} values, not ${rows} rows of ${size}`);
  return {
    labels: Array.from({ length: rows }, (_, r) => `b${r}`),
    apply: (p, row, d, amount) => {
      for (let e = 0; e < size; e++) p[row + e] += amount * data[d * size + e];
    },
  };
}

function checkLimit(name: string, value: number, max: number): void {
  if (value > max) {
    throw new AuditError('limit_exceeded', `the traversal needs ${value} ${name}, above the limit of ${max}; traverse fewer latents, samples or steps`, { [name]: value, limit: max });
  }
}

/** Directions by descending score (NaN and null last, ties in index order). */
export function orderByScore(scores: readonly (number | null)[]): number[] {
  const key = (i: number): number => {
    const s = scores[i];
    return s === null || !Number.isFinite(s) ? -Infinity : s;
  };
  return scores.map((_, i) => i).sort((a, b) => key(b) - key(a) || a - b);
}

/**
 * The image shape of one output sample, or null if it is not image-like: C × H × W with C 1 or 3;
 * H × W (grey); or a flat square (a VAE's 784 values are 28 × 28 grey).
 */
export function imageShapeOf(shape: readonly number[]): [number, number, number] | null {
  if (shape.length === 3 && (shape[0] === 1 || shape[0] === 3)) return [shape[0], shape[1], shape[2]];
  if (shape.length === 2) return [1, shape[0], shape[1]];
  if (shape.length === 1) {
    const side = Math.round(Math.sqrt(shape[0]));
    if (side > 1 && side * side === shape[0]) return [1, side, side];
  }
  return null;
}

export const GRID_GAP = 2;
export const SAMPLE_GAP = 8;
const BACKGROUND = 255;

export interface TraversalGrid {
  png: Buffer;
  width: number;
  height: number;
  /** Directions from top to bottom. */
  order: number[];
  /** Value range shown from black to white (one range for the whole grid, so cells compare). */
  range: [number, number];
  /** One image's size in the grid. */
  cellWidth: number;
  cellHeight: number;
  /** Top-left pixel of the cell of (display row, sample, step). */
  cell: (row: number, sample: number, step: number) => { x: number; y: number };
}

/**
 * One PNG of G's outputs at the plan's points (in plan order, D × S × T images of C × H × W).
 * `order` lists directions top to bottom (default: plan order).
 */
export function traversalGrid(
  outputs: ArrayLike<number>,
  plan: Pick<TraversalPlan, 'directions' | 'samples' | 'steps'>,
  [channels, height, width]: readonly [number, number, number],
  order: readonly number[] = Array.from({ length: plan.directions }, (_, i) => i),
  limits: TraversalLimits = TRAVERSAL_LIMITS,
): TraversalGrid {
  const steps = plan.steps.length;
  const pixels = channels * height * width;
  if (outputs.length !== plan.directions * plan.samples * steps * pixels) {
    throw new AuditError('shape_mismatch', `traversal outputs hold ${outputs.length} values, not ${plan.directions * plan.samples * steps} images of ${channels}×${height}×${width}`);
  }
  const distinct = new Set(order);
  if (distinct.size !== order.length || order.some((d) => !Number.isSafeInteger(d) || d < 0 || d >= plan.directions)) {
    throw new AuditError('invalid_argument', `traversal order must list distinct directions from 0 to ${plan.directions - 1}`);
  }
  const gridWidth = plan.samples * (steps * (width + GRID_GAP) - GRID_GAP) + (plan.samples - 1) * SAMPLE_GAP + 2 * GRID_GAP;
  const gridHeight = order.length * (height + GRID_GAP) + GRID_GAP;
  checkLimit('pixels', gridWidth * gridHeight, limits.pixels);
  const range = displayRange(outputs);
  const [lo, hi] = range;
  const cell = (row: number, sample: number, step: number): { x: number; y: number } => ({
    x: GRID_GAP + sample * (steps * (width + GRID_GAP) - GRID_GAP + SAMPLE_GAP) + step * (width + GRID_GAP),
    y: GRID_GAP + row * (height + GRID_GAP),
  });
  const png = new PNG({ width: gridWidth, height: gridHeight });
  png.data.fill(BACKGROUND);
  order.forEach((direction, row) => {
    for (let s = 0; s < plan.samples; s++) {
      for (let t = 0; t < steps; t++) {
        const base = pointRow(plan, direction, s, t) * pixels;
        const { x, y } = cell(row, s, t);
        for (let py = 0; py < height; py++) {
          for (let px = 0; px < width; px++) {
            const at = ((y + py) * gridWidth + x + px) * 4;
            for (let c = 0; c < 3; c++) {
              const v = outputs[base + (channels === 3 ? c : 0) * height * width + py * width + px];
              png.data[at + c] = Math.round(255 * Math.min(1, Math.max(0, (v - lo) / (hi - lo))));
            }
          }
        }
      }
    }
  });
  return { png: PNG.sync.write(png), width: gridWidth, height: gridHeight, order: [...order], range, cellWidth: width, cellHeight: height, cell };
}

export interface TraversalSectionInput {
  layer: string;
  grid: Pick<TraversalGrid, 'png' | 'width' | 'height' | 'order' | 'cellHeight'>;
  /** Labels of the plan's directions (by direction index, not display order). */
  labels: readonly string[];
  /** The score rows were sorted by, by direction index (e.g. activeness), and its name. */
  scores?: readonly (number | null)[];
  scoreName?: string;
  steps: readonly number[];
  extent: number;
  samples: number;
  /** Cell height to aim for in CSS pixels (the grid is scaled by a whole factor to about this)… */
  cellPixels?: number;
  /** …unless the grid would then be wider than this: then it is scaled to this width. */
  maxWidth?: number;
}

/** The report's traversal section: the grid once, with a label column aligned to its rows. */
export function traversalSection(input: TraversalSectionInput): string {
  const { grid } = input;
  const { cellHeight } = grid;
  const scale = Math.min(Math.max(1, Math.round((input.cellPixels ?? 64) / cellHeight)), (input.maxWidth ?? 900) / grid.width);
  const rowHeight = (cellHeight + GRID_GAP) * scale;
  const labels = grid.order
    .map((d) => {
      const score = input.scores ? ` · ${fmt(input.scores[d])}` : '';
      return `<div class="traversal-label" style="height:${round2(rowHeight)}px;line-height:${round2(cellHeight * scale)}px">${esc(input.labels[d] ?? `#${d}`)}${esc(score)}</div>`;
    })
    .join('');
  const stepText = input.steps.map((s) => fmtStep(s * input.extent)).join(', ');
  const sorted = input.scores ? ` Rows are sorted by ${esc(input.scoreName ?? 'score')}, highest first (the value follows each label).` : '';
  return `<section id="traversal"><h2>Latent traversals — ${esc(input.layer)}</h2>
<p class="note">Each row moves one direction to ${esc(stepText)} with the others unchanged; each block of columns is one of ${input.samples} samples.${sorted}</p>
<div class="traversal" style="display:flex;gap:8px;align-items:flex-start;overflow-x:auto">
<div class="traversal-labels" style="padding-top:${round2(GRID_GAP * scale)}px;font-size:12px;white-space:nowrap;text-align:right">${labels}</div>
<img src="data:image/png;base64,${grid.png.toString('base64')}" width="${round2(grid.width * scale)}" height="${round2(grid.height * scale)}" style="image-rendering:pixelated" alt="latent traversal grid of ${esc(input.layer)}">
</div></section>`;
}

const round2 = (x: number): number => Math.round(x * 100) / 100;
const fmtStep = (x: number): string => (x > 0 ? `+${x}` : x < 0 ? `−${-x}` : '0');
