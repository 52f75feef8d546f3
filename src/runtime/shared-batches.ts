/**
 * Batches shared by concurrent requests (issue 13, dynamic batching): the Runs of one worker
 * task hand their stacked batches here instead of to onnxruntime, and the batches that arrive
 * in the same turn of the event loop on the same session, with the same inputs and layers, run
 * as one: their rows are concatenated along the batch dimension up to the smallest cap among
 * them (the session's tuned size, or the memory budget), and the outputs are cut back into each
 * batch's own rows. Stacked rows are independent (the preflight checked), so every request gets
 * the values it would have got alone; a packed run that fails, or whose outputs do not have the
 * packed row count, runs each batch alone, so errors are those of each request alone too.
 */
import * as ort from 'onnxruntime-node';
import type { OpenSession } from './session.js';

/** One Run's batch waiting to be packed. */
export interface SharedBatch {
  open: OpenSession;
  layers: readonly string[];
  feeds: Record<string, ort.Tensor>;
  rows: number;
  /** The most rows a packed run holding this batch may have. */
  maxRows: number;
  /** Runs the batch alone (the Run's own timed run), for a pack of one and for retries. */
  alone: () => Promise<Record<string, ort.Tensor>>;
  /** This batch's share of a packed run's onnxruntime time is added here. */
  timing: { forwardMs: number };
}

interface Pending extends SharedBatch {
  resolve: (outputs: Record<string, ort.Tensor>) => void;
  reject: (err: unknown) => void;
}

export interface SharedBatchStats {
  /** session.run calls made for batches handed here. */
  runs: number;
  /** Of those, runs that held the rows of more than one batch. */
  packed: number;
  /** Batches handed here. */
  batches: number;
}

export class SharedBatches {
  private pending: Pending[] = [];
  private scheduled = false;
  private flushing = false;
  readonly stats: SharedBatchStats = { runs: 0, packed: 0, batches: 0 };

  /** The batch's outputs, from a run it may share with other Runs' batches. */
  run(batch: SharedBatch): Promise<Record<string, ort.Tensor>> {
    this.stats.batches++;
    return new Promise((resolve, reject) => {
      this.pending.push({ ...batch, resolve, reject });
      this.schedule();
    });
  }

  /**
   * The next flush: after every Run that can reach its next batch without waiting on I/O has
   * done so (setImmediate runs once the microtasks are drained), and never while one runs
   * (one session, one run at a time).
   */
  private schedule(): void {
    if (this.scheduled || this.flushing || this.pending.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    const batches = this.pending;
    this.pending = [];
    try {
      for (const pack of packs(batches)) await this.runPack(pack);
    } finally {
      this.flushing = false;
      this.schedule();
    }
  }

  private async runPack(pack: Pending[]): Promise<void> {
    this.stats.runs++;
    if (pack.length === 1) return settle(pack[0], pack[0].alone());
    this.stats.packed++;
    const total = pack.reduce((n, b) => n + b.rows, 0);
    const started = performance.now();
    let outputs: Record<string, ort.Tensor>;
    try {
      outputs = await pack[0].open.session.run(concatenated(pack, total), pack[0].layers as string[]);
    } catch {
      return this.alone(pack);
    }
    const ms = performance.now() - started;
    if (pack[0].layers.some((name) => Number(outputs[name].dims[0]) !== total)) return this.alone(pack);
    let first = 0;
    for (const batch of pack) {
      batch.timing.forwardMs += (ms * batch.rows) / total;
      batch.resolve(rowsOf(outputs, batch.layers, first, batch.rows, total));
      first += batch.rows;
    }
  }

  /** Each batch of a pack that could not run packed, alone: its own result or its own error. */
  private async alone(pack: Pending[]): Promise<void> {
    for (const batch of pack) {
      this.stats.runs++;
      await settle(batch, batch.alone());
    }
  }
}

async function settle(batch: Pending, outputs: Promise<Record<string, ort.Tensor>>): Promise<void> {
  try {
    batch.resolve(await outputs);
  } catch (err) {
    batch.reject(err);
  }
}

/** What batches must share to run as one: the session, the layers, each input's name, type and per-row shape. */
function packKey(batch: SharedBatch): string {
  const inputs = Object.entries(batch.feeds)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, t]) => [name, t.type, t.dims.slice(1)]);
  return JSON.stringify([batch.layers, inputs]);
}

/** The batches grouped by session and key, in arrival order, each group cut into packs within every member's cap. */
export function packs<T extends SharedBatch>(batches: T[]): T[][] {
  const groups = new Map<OpenSession, Map<string, T[]>>();
  for (const batch of batches) {
    let bySession = groups.get(batch.open);
    if (!bySession) groups.set(batch.open, (bySession = new Map()));
    const key = packKey(batch);
    const group = bySession.get(key);
    if (group) group.push(batch);
    else bySession.set(key, [batch]);
  }
  const out: T[][] = [];
  for (const bySession of groups.values()) {
    for (const group of bySession.values()) {
      let pack: T[] = [];
      let rows = 0;
      let cap = Infinity;
      for (const batch of group) {
        if (pack.length > 0 && (rows + batch.rows > Math.min(cap, batch.maxRows))) {
          out.push(pack);
          pack = [];
          rows = 0;
          cap = Infinity;
        }
        pack.push(batch);
        rows += batch.rows;
        cap = Math.min(cap, batch.maxRows);
      }
      if (pack.length > 0) out.push(pack);
    }
  }
  return out;
}

/** Every input of the pack's batches, their rows one after another. */
function concatenated(pack: SharedBatch[], total: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, first] of Object.entries(pack[0].feeds)) {
    const perRow = (first.data as ArrayLike<number>).length / pack[0].rows;
    const data = new (first.data.constructor as new (n: number) => Float32Array)(total * perRow);
    let at = 0;
    for (const batch of pack) {
      const part = batch.feeds[name].data as Float32Array;
      data.set(part, at);
      at += part.length;
    }
    feeds[name] = new ort.Tensor(first.type as 'float32', data, [total, ...first.dims.slice(1)]);
  }
  return feeds;
}

/** Rows [first, first + rows) of every layer's output, as tensors of their own (views, no copy). */
function rowsOf(outputs: Record<string, ort.Tensor>, layers: readonly string[], first: number, rows: number, total: number): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const name of layers) {
    const tensor = outputs[name];
    const data = tensor.data as Float32Array;
    const perRow = data.length / total;
    out[name] = new ort.Tensor(tensor.type as 'float32', data.subarray(first * perRow, (first + rows) * perRow), [rows, ...tensor.dims.slice(1)]);
  }
  return out;
}
