/**
 * The batch plan of the audit metrics. Each metric asks for the same list of *units* per sample
 * (a unit is a few rows whose outputs are combined together: the center g(z), one mixed second
 * difference, the three settings of one latent, …). Units are independent, so they are stacked
 * into batches of rows like the penalty's plan and cut to fit the memory budget; a unit never
 * straddles two batches, and a sample's units arrive in order (its center first).
 *
 * `stacked`: sample-major rows, as many whole units per batch as fit; one batch per chunk.
 * `per-pass`: for models whose rows interact (batch statistics): every row of a unit is a batch of
 *   exactly N rows (the same row for every sample), as the reference implementations run it.
 */
import { batchStats, budgetTooSmall, type ExecutionMode, type RowRef } from './plan.js';

/** One row: sample n's row number `index` in the metric's per-sample row list. */
export interface UnitRow {
  sample: number;
  index: number;
}

export interface UnitChunk {
  batches: UnitRow[][];
  /** In feeding order; `rows[r]` says where the unit's r-th row lies. */
  units: { sample: number; unit: number; rows: RowRef[] }[];
}

export interface UnitPlan {
  mode: ExecutionMode;
  samples: number;
  rowsPerSample: number;
  chunks: UnitChunk[];
  rows: number;
  largestBatch: number;
}

export interface UnitPlanOptions {
  samples: number;
  /** Rows of each unit, the same for every sample. */
  unitSizes: readonly number[];
  /** Rows that fit the memory budget in one batch. */
  maxRows: number;
  mode?: ExecutionMode;
}

/** First row number of each unit within a sample's row list. */
export function unitOffsets(unitSizes: readonly number[]): number[] {
  const offsets: number[] = [];
  let at = 0;
  for (const size of unitSizes) {
    offsets.push(at);
    at += size;
  }
  return offsets;
}

export function planUnits({ samples, unitSizes, maxRows, mode = 'stacked' }: UnitPlanOptions): UnitPlan {
  const offsets = unitOffsets(unitSizes);
  const rowsPerSample = unitSizes.reduce((a, b) => a + b, 0);
  const chunks = mode === 'stacked' ? stacked(samples, unitSizes, offsets, maxRows) : perPass(samples, unitSizes, offsets, maxRows);
  return { mode, samples, rowsPerSample, chunks, ...batchStats(chunks) };
}

function stacked(samples: number, unitSizes: readonly number[], offsets: number[], maxRows: number): UnitChunk[] {
  const largest = Math.max(...unitSizes);
  if (maxRows < largest) throw budgetTooSmall(maxRows, largest, `one unit of work (${largest} rows)`);
  const chunks: UnitChunk[] = [];
  let chunk: UnitChunk = { batches: [[]], units: [] };
  for (let sample = 0; sample < samples; sample++) {
    unitSizes.forEach((size, unit) => {
      if (chunk.batches[0].length + size > maxRows) {
        chunks.push(chunk);
        chunk = { batches: [[]], units: [] };
      }
      const batch = chunk.batches[0];
      const rows: RowRef[] = [];
      for (let r = 0; r < size; r++) {
        rows.push({ batch: 0, row: batch.length });
        batch.push({ sample, index: offsets[unit] + r });
      }
      chunk.units.push({ sample, unit, rows });
    });
  }
  if (chunk.units.length > 0) chunks.push(chunk);
  return chunks;
}

function perPass(samples: number, unitSizes: readonly number[], offsets: number[], maxRows: number): UnitChunk[] {
  if (maxRows < samples) {
    throw budgetTooSmall(maxRows, samples, `one pass of all ${samples} samples (rows interact, so a pass cannot be split)`);
  }
  return unitSizes.map((size, unit) => ({
    batches: Array.from({ length: size }, (_, r) => Array.from({ length: samples }, (_, sample) => ({ sample, index: offsets[unit] + r }))),
    units: Array.from({ length: samples }, (_, sample) => ({
      sample,
      unit,
      rows: Array.from({ length: size }, (_, r) => ({ batch: r, row: sample })),
    })),
  }));
}
