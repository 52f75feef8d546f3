/**
 * The batch plan: the 2k+1 evaluations of G per sample — g(z), then g(z + εv_j) and g(z − εv_j)
 * for j = 1..k — are independent, so they are stacked into batches of rows and cut into chunks
 * that fit the memory budget.
 *
 * `stacked` (default): sample-major rows [z_n, z_n+εv_1, z_n−εv_1, …], whole samples per chunk
 *   when 2k+1 rows fit; otherwise one sample per chunk with a slice of its directions, and its
 *   center row repeated in each slice (one extra row per slice).
 * `per-pass`: for models whose rows interact (batch statistics): each of the 2k+1 passes is its
 *   own batch of exactly N rows, as the reference implementations run it.
 */
import { AuditError } from '../contract/errors.js';

export type ExecutionMode = 'stacked' | 'per-pass';

/** One row: sample n, direction j (−1 for the center), sign of the step (0 for the center). */
export interface Row {
  sample: number;
  direction: number;
  sign: -1 | 0 | 1;
}

/** Where a row's output lies: batch index within the chunk, row index within the batch. */
export interface RowRef {
  batch: number;
  row: number;
}

export interface Chunk {
  /** Each batch is one forward run of G. */
  batches: Row[][];
  centers: { sample: number; at: RowRef }[];
  pairs: { sample: number; direction: number; plus: RowRef; minus: RowRef }[];
}

export interface Plan {
  mode: ExecutionMode;
  samples: number;
  k: number;
  chunks: Chunk[];
  /** Forward rows actually run (N·(2k+1), plus repeated centers when samples are split). */
  rows: number;
  /** The largest batch, in rows. */
  largestBatch: number;
}

export interface PlanOptions {
  samples: number;
  k: number;
  /** Rows that fit the memory budget in one batch. */
  maxRows: number;
  mode?: ExecutionMode;
}

export function planPenalty({ samples, k, maxRows, mode = 'stacked' }: PlanOptions): Plan {
  const chunks = mode === 'stacked' ? stackedChunks(samples, k, maxRows) : perPassChunks(samples, k, maxRows);
  return { mode, samples, k, chunks, ...batchStats(chunks) };
}

/** Rows run over all batches, and the largest batch: the figures a plan reports. */
export function batchStats(chunks: readonly { batches: readonly unknown[][] }[]): { rows: number; largestBatch: number } {
  let rows = 0;
  let largestBatch = 0;
  for (const chunk of chunks) {
    for (const batch of chunk.batches) {
      rows += batch.length;
      largestBatch = Math.max(largestBatch, batch.length);
    }
  }
  return { rows, largestBatch };
}

/** Rows per sample in the stacked plan. */
export const rowsPerSample = (k: number): number => 2 * k + 1;

function stackedChunks(samples: number, k: number, maxRows: number): Chunk[] {
  const perSample = rowsPerSample(k);
  if (maxRows >= perSample) {
    const samplesPerChunk = Math.min(samples, Math.floor(maxRows / perSample));
    const chunks: Chunk[] = [];
    for (let first = 0; first < samples; first += samplesPerChunk) {
      chunks.push(sampleMajorChunk(first, Math.min(samples, first + samplesPerChunk), 0, k));
    }
    return chunks;
  }
  if (maxRows < 3) throw budgetTooSmall(maxRows, 3, 'one sample with one direction (3 rows)');
  const directionsPerChunk = Math.floor((maxRows - 1) / 2);
  const chunks: Chunk[] = [];
  for (let n = 0; n < samples; n++) {
    for (let j = 0; j < k; j += directionsPerChunk) {
      chunks.push(sampleMajorChunk(n, n + 1, j, Math.min(k, j + directionsPerChunk)));
    }
  }
  return chunks;
}

/** Samples [first, end) with directions [j0, j1): each sample's center, then (+, −) per direction. */
function sampleMajorChunk(first: number, end: number, j0: number, j1: number): Chunk {
  const batch: Row[] = [];
  const chunk: Chunk = { batches: [batch], centers: [], pairs: [] };
  for (let n = first; n < end; n++) {
    chunk.centers.push({ sample: n, at: { batch: 0, row: batch.length } });
    batch.push({ sample: n, direction: -1, sign: 0 });
    for (let j = j0; j < j1; j++) {
      const plus = { batch: 0, row: batch.length };
      batch.push({ sample: n, direction: j, sign: 1 }, { sample: n, direction: j, sign: -1 });
      chunk.pairs.push({ sample: n, direction: j, plus, minus: { batch: 0, row: plus.row + 1 } });
    }
  }
  return chunk;
}

function perPassChunks(samples: number, k: number, maxRows: number): Chunk[] {
  if (maxRows < samples) {
    throw budgetTooSmall(maxRows, samples, `one pass of all ${samples} samples (rows interact, so a pass cannot be split)`);
  }
  const pass = (direction: number, sign: -1 | 0 | 1): Row[] =>
    Array.from({ length: samples }, (_, sample) => ({ sample, direction, sign }));
  const chunks: Chunk[] = [
    {
      batches: [pass(-1, 0)],
      centers: Array.from({ length: samples }, (_, n) => ({ sample: n, at: { batch: 0, row: n } })),
      pairs: [],
    },
  ];
  for (let j = 0; j < k; j++) {
    chunks.push({
      batches: [pass(j, 1), pass(j, -1)],
      centers: [],
      pairs: Array.from({ length: samples }, (_, n) => ({
        sample: n,
        direction: j,
        plus: { batch: 0, row: n },
        minus: { batch: 1, row: n },
      })),
    });
  }
  return chunks;
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
