/**
 * Throughput-tuned batches (issue 13, item 2): on a session's first use, measure rows/s for a few
 * batch sizes within the memory budget and keep the fastest. On a CPU, batches of 32–136 rows ran
 * ~1.3× faster than one of 1,088 (cache); on a GPU the largest batch usually wins. Budget-only
 * planning picks the largest, so this measures instead of guessing.
 *
 * Pure apart from the two callbacks: `run(rows)` runs one batch of that many rows (the tuning
 * runs are the session's warm-up, so nothing else needs to warm it), `now()` reads a clock in
 * milliseconds. Tests pass a fake clock whose times are a function of the rows.
 */

export interface TuneOptions {
  /** Rows that fit the memory budget in one batch. */
  maxRows: number;
  /** Smallest batch tried (default 16, or maxRows when that is smaller). */
  minRows?: number;
  /**
   * Round candidates down to a multiple of this (the penalty's 2k + 1 rows per sample): whole
   * samples per chunk, so the in-graph estimator fetches no means and repeats no centers.
   */
  multipleOf?: number;
  /** Stop measuring new sizes once this much time has gone (default 2,000 ms); the best so far wins. */
  budgetMs?: number;
  /** Timed runs per size after its first (warm-up) run; the fastest counts (default 2). */
  repeats?: number;
  /**
   * `descending` (default) measures the budget's size first; `ascending` starts at the smallest
   * and stops once `patience` sizes in a row fail to beat the best: cheap where small batches win
   * (a CPU), and a rising curve simply runs until the time budget.
   */
  order?: 'descending' | 'ascending';
  /** Ascending only: consecutive sizes slower than the best before measuring stops (default 2). */
  patience?: number;
  /**
   * Each timed run repeats a small size until this many rows ran (default 0: one batch), so small
   * sizes are not judged on a millisecond's noise.
   */
  measureRows?: number;
  /** A smaller size must beat every larger one by this share (default 0.02). */
  margin?: number;
  run: (rows: number) => Promise<void>;
  now?: () => number;
}

export interface Measurement {
  rows: number;
  /** Best rows/s of the timed runs. */
  rowsPerSecond: number;
}

export interface TuneResult {
  batchRows: number;
  rowsPerSecond: number;
  measurements: Measurement[];
  /** Whether the time budget cut the candidate list short. */
  truncated: boolean;
}

/**
 * Candidate sizes: powers of two from minRows up to maxRows, and maxRows itself. Tried from the
 * largest down: the size budget-only planning would choose is measured first, so a budget that
 * runs out still leaves that baseline to compare against.
 */
export function candidateBatchRows(maxRows: number, minRows = 16, multipleOf = 1): number[] {
  if (!Number.isInteger(maxRows) || maxRows < 1) throw new Error(`maxRows must be a positive integer, got ${maxRows}`);
  const low = Math.min(minRows, maxRows);
  const sizes = new Set<number>([maxRows]);
  for (let rows = 2 ** Math.ceil(Math.log2(low)); rows < maxRows; rows *= 2) sizes.add(rows);
  if (low < maxRows) sizes.add(low);
  if (multipleOf <= 1 || multipleOf > maxRows) return [...sizes].sort((a, b) => b - a);
  const rounded = new Set([...sizes].map((rows) => Math.max(multipleOf, rows - (rows % multipleOf))));
  return [...rounded].sort((a, b) => b - a);
}

/** A faster batch must beat the best so far by this share; otherwise the larger (fewer runs) stays. */
const MARGIN = 0.02;

export async function tuneBatchRows(options: TuneOptions): Promise<TuneResult> {
  const { maxRows, run, budgetMs = 2000, repeats = 2, now = () => performance.now(), patience = 2, measureRows = 0, margin = MARGIN } = options;
  const ascending = options.order === 'ascending';
  const candidates = candidateBatchRows(maxRows, options.minRows, options.multipleOf);
  if (ascending) candidates.reverse();
  const start = now();
  const measurements: Measurement[] = [];
  let truncated = false;
  let best = 0;
  let slower = 0;
  for (const rows of candidates) {
    if (measurements.length > 0 && now() - start >= budgetMs) {
      truncated = true;
      break;
    }
    if (ascending && slower >= patience) break;
    await run(rows);
    const times = Math.max(1, Math.ceil(measureRows / rows));
    let fastest = Infinity;
    for (let r = 0; r < repeats; r++) {
      const t = now();
      for (let i = 0; i < times; i++) await run(rows);
      fastest = Math.min(fastest, now() - t);
    }
    const rowsPerSecond = (times * rows * 1000) / Math.max(fastest, 1e-6);
    measurements.push({ rows, rowsPerSecond });
    slower = rowsPerSecond > best ? 0 : slower + 1;
    best = Math.max(best, rowsPerSecond);
  }
  // Larger batches first, so a smaller one must beat every larger by the margin.
  const bySize = [...measurements].sort((a, b) => b.rows - a.rows);
  let chosen = bySize[0];
  for (const m of bySize.slice(1)) if (m.rowsPerSecond > chosen.rowsPerSecond * (1 + margin)) chosen = m;
  return { batchRows: chosen.rows, rowsPerSecond: chosen.rowsPerSecond, measurements, truncated };
}

/**
 * Tuned sizes kept with the sessions, by (model, layers, device) — the session cache's own key.
 * Concurrent first uses of one key share one tuning run.
 */
export class TuneCache {
  private readonly results = new Map<string, Promise<TuneResult>>();

  get(key: string, tune: () => Promise<TuneResult>): Promise<TuneResult> {
    let result = this.results.get(key);
    if (result === undefined) {
      result = tune();
      this.results.set(key, result);
      // A failed tuning is not cached: the next use measures again.
      result.catch(() => this.results.delete(key));
    }
    return result;
  }

  delete(key: string): void {
    this.results.delete(key);
  }

  get size(): number {
    return this.results.size;
  }
}
