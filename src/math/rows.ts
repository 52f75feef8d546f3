/**
 * Rows: what one forward pass of G is asked for. Every metric describes its work per sample as
 * *units* (a few rows whose outputs are combined together), and each row as an index into the
 * metric's per-sample row list; the planner (run/plan.ts) stacks units into batches.
 */

/** One row of a metric: sample n's row number `index` in the metric's per-sample row list. */
export interface UnitRow {
  sample: number;
  index: number;
}

/** Where a row's output lies: batch index within the chunk, row index within the batch. */
export interface RowRef {
  batch: number;
  row: number;
}

/** A perturbed row: z_n + sign·ε·v_j (direction −1 and sign 0 for the center z_n). */
export interface Row {
  sample: number;
  direction: number;
  sign: -1 | 0 | 1;
}
