/**
 * The batch plan, one for every metric. A metric asks for the same list of *units* per sample (a
 * unit is a few rows whose outputs are combined together: the center g(z), one direction's ±
 * pair, one mixed second difference, the three settings of one latent, …). Units are
 * independent, so they are stacked into batches of rows and cut to the batch size; a unit never
 * straddles two batches, and a sample's units arrive in order (its center first). A sample's
 * units may span chunks: the metric's accumulators keep its state, so no row is run twice.
 *
 * `stacked`: sample-major rows, as many whole units per batch as fit; one batch per chunk.
 * `per-pass`: for models whose rows interact (batch statistics): every row of a unit is a batch of
 *   exactly N rows (the same row for every sample), as the reference implementations run it.
 */
import { AuditError } from '../contract/errors.js';
import type { RowRef, UnitRow } from '../math/rows.js';

export type ExecutionMode = 'stacked' | 'per-pass';

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
  /** Forward rows run over all batches. */
  rows: number;
  /** The largest batch, in rows. */
  largestBatch: number;
}

export interface UnitPlanOptions {
  samples: number;
  /** Rows of each unit, the same for every sample. */
  unitSizes: readonly number[];
  /** Rows one batch may hold. */
  maxRows: number;
  mode?: ExecutionMode;
  /**
   * A sample continued in a new chunk runs its first unit (its center) again there: the in-graph
   * penalty (onnx/suffix.ts) needs g(z) in the same batch as each direction. One extra row per
   * split, and only when a sample does not fit a batch.
   */
  repeatCenter?: boolean;
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

export function planUnits({ samples, unitSizes, maxRows, mode = 'stacked', repeatCenter = false }: UnitPlanOptions): UnitPlan {
  const offsets = unitOffsets(unitSizes);
  const rowsPerSample = unitSizes.reduce((a, b) => a + b, 0);
  const chunks = mode === 'stacked' ? stacked(samples, unitSizes, offsets, maxRows, repeatCenter) : perPass(samples, unitSizes, offsets, maxRows);
  let rows = 0;
  let largestBatch = 0;
  for (const chunk of chunks) {
    for (const batch of chunk.batches) {
      rows += batch.length;
      largestBatch = Math.max(largestBatch, batch.length);
    }
  }
  return { mode, samples, rowsPerSample, chunks, rows, largestBatch };
}

function stacked(samples: number, unitSizes: readonly number[], offsets: number[], maxRows: number, repeatCenter: boolean): UnitChunk[] {
  const largest = Math.max(...unitSizes);
  const smallest = repeatCenter ? unitSizes[0] + Math.max(...unitSizes.slice(1), 0) : largest;
  if (maxRows < smallest) throw budgetTooSmall(maxRows, smallest, repeatCenter ? `a center and one unit of work (${smallest} rows)` : `one unit of work (${largest} rows)`);
  const chunks: UnitChunk[] = [];
  let chunk: UnitChunk = { batches: [[]], units: [] };
  const add = (sample: number, unit: number): void => {
    const batch = chunk.batches[0];
    const rows: RowRef[] = [];
    for (let r = 0; r < unitSizes[unit]; r++) {
      rows.push({ batch: 0, row: batch.length });
      batch.push({ sample, index: offsets[unit] + r });
    }
    chunk.units.push({ sample, unit, rows });
  };
  for (let sample = 0; sample < samples; sample++) {
    unitSizes.forEach((size, unit) => {
      if (chunk.batches[0].length + size > maxRows) {
        chunks.push(chunk);
        chunk = { batches: [[]], units: [] };
        if (repeatCenter && unit > 0) add(sample, 0);
      }
      add(sample, unit);
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

/** The memory budget cannot hold the smallest piece of work a plan can run. */
export function budgetTooSmall(maxRows: number, needed: number, what: string): AuditError {
  return new AuditError(
    'memory_budget_exceeded',
    `the memory budget fits ${maxRows} rows per batch, but ${what} needs ${needed}; ` +
      'raise the memory budget, audit fewer or smaller layers, or use fewer samples',
    { maxRows, needed },
  );
}
