/** The batch-size tuner's selection logic, with a fake runner and a fake clock (no real timing). */
import t from 'tap';
import { candidateBatchRows, TuneCache, tuneBatchRows } from '../dist/runtime/tune.js';

/** A fake session: a run of `rows` takes cost(rows) ms on the fake clock; the first run of a size is slow (warm-up). */
function fake(cost: (rows: number) => number, coldExtra = 1000) {
  let clock = 0;
  const seen = new Set<number>();
  const runs: number[] = [];
  return {
    runs,
    now: () => clock,
    run: async (rows: number) => {
      runs.push(rows);
      clock += cost(rows) + (seen.has(rows) ? 0 : coldExtra);
      seen.add(rows);
    },
  };
}

t.test('candidates: powers of two from 16 to the budget, and the budget itself, largest first', async (t) => {
  t.same(candidateBatchRows(1088), [1088, 1024, 512, 256, 128, 64, 32, 16]);
  t.same(candidateBatchRows(64), [64, 32, 16]);
  t.same(candidateBatchRows(10), [10]);
  t.same(candidateBatchRows(100, 20), [100, 64, 32, 20]);
  // Whole samples of 2k + 1 = 17 rows: 1088 = 64·17 stays, 1024 → 1020, 16 → 17, …
  t.same(candidateBatchRows(1088, 16, 17), [1088, 1020, 510, 255, 119, 51, 17]);
  t.same(candidateBatchRows(10, 16, 17), [10], 'a multiple larger than the budget is ignored');
  t.throws(() => candidateBatchRows(0), /positive integer/);
  t.throws(() => candidateBatchRows(2.5), /positive integer/);
});

t.test('picks the size with the best rows/s; warm-up runs do not count', async (t) => {
  // Per-row cost lowest at 64 rows (a cache sweet spot): 1 ms per row at 64, more elsewhere.
  const perRow = (rows: number) => (rows === 64 ? 1 : rows === 128 ? 1.2 : 1.5);
  const f = fake((rows) => rows * perRow(rows));
  const result = await tuneBatchRows({ maxRows: 1088, run: f.run, now: f.now, budgetMs: 1e9 });
  t.equal(result.batchRows, 64);
  t.equal(result.rowsPerSecond, 1000);
  t.equal(result.truncated, false);
  t.same(result.measurements.map((m) => m.rows), [1088, 1024, 512, 256, 128, 64, 32, 16]);
  t.equal(f.runs.length, 8 * 3, 'one warm-up and two timed runs per size');
});

t.test('a size must beat the larger ones by 2% to be chosen', async (t) => {
  // 32 rows is 1% faster per row than 64: within the margin, so the larger (fewer runs) stays.
  const f = fake((rows) => rows * (rows === 32 ? 0.99 : 1));
  const result = await tuneBatchRows({ maxRows: 64, run: f.run, now: f.now, budgetMs: 1e9 });
  t.equal(result.batchRows, 64);
  const g = fake((rows) => rows * (rows === 32 ? 0.9 : 1));
  t.equal((await tuneBatchRows({ maxRows: 64, run: g.run, now: g.now, budgetMs: 1e9 })).batchRows, 32);
});

t.test('the time budget stops measuring new sizes, but the first is always measured', async (t) => {
  const f = fake((rows) => rows, 0);
  // 1088 ms of timed runs ×2 plus the warm-up: 3264 ms for the first size, over a 1 s budget.
  const result = await tuneBatchRows({ maxRows: 1088, run: f.run, now: f.now, budgetMs: 1000 });
  t.equal(result.truncated, true);
  t.same(result.measurements.map((m) => m.rows), [1088]);
  t.equal(result.batchRows, 1088);
  const g = fake((rows) => rows, 0);
  const two = await tuneBatchRows({ maxRows: 1088, run: g.run, now: g.now, budgetMs: 5000, repeats: 1 });
  t.same(two.measurements.map((m) => m.rows), [1088, 1024, 512], 'stops once 5 s have gone');
});

t.test('tuning in whole samples measures only multiples', async (t) => {
  const f = fake((rows) => rows);
  const result = await tuneBatchRows({ maxRows: 100, multipleOf: 17, run: f.run, now: f.now, budgetMs: 1e9 });
  t.same(result.measurements.map((m) => m.rows), [85, 51, 17]);
  t.ok(f.runs.every((rows) => rows % 17 === 0));
});

t.test('a zero-time run does not divide by zero', async (t) => {
  const f = fake(() => 0, 0);
  const result = await tuneBatchRows({ maxRows: 16, run: f.run, now: f.now });
  t.equal(result.batchRows, 16);
  t.ok(Number.isFinite(result.rowsPerSecond));
});

t.test('the real clock is the default', async (t) => {
  const result = await tuneBatchRows({ maxRows: 2, run: async () => {} });
  t.equal(result.batchRows, 2);
});

t.test('the cache tunes once per key, shares a tuning in flight, and forgets failures', async (t) => {
  const cache = new TuneCache();
  let tunings = 0;
  const tune = async () => {
    tunings++;
    return { batchRows: 64, rowsPerSecond: 1, measurements: [], truncated: false };
  };
  const [a, b] = await Promise.all([cache.get('dcgan|image|cpu', tune), cache.get('dcgan|image|cpu', tune)]);
  t.equal(a, b);
  t.equal(tunings, 1);
  await cache.get('dcgan|image|cuda:0', tune);
  t.equal(tunings, 2);
  t.equal(cache.size, 2);
  cache.delete('dcgan|image|cpu');
  await cache.get('dcgan|image|cpu', tune);
  t.equal(tunings, 3);
  await t.rejects(cache.get('bad', async () => Promise.reject(new Error('session failed'))), /session failed/);
  await new Promise((r) => setImmediate(r));
  t.equal(cache.size, 2, 'the failed tuning is not kept');
});

t.test('ascending: from the smallest up, stopping once two sizes in a row are slower than the best', async (t) => {
  // A CPU-like curve: fastest per row at 64.
  const perRow = (rows: number) => (rows === 64 ? 1 : rows === 32 || rows === 128 ? 1.2 : 1.5);
  const f = fake((rows) => rows * perRow(rows));
  const result = await tuneBatchRows({ maxRows: 1088, order: 'ascending', run: f.run, now: f.now, budgetMs: 1e9 });
  t.same(result.measurements.map((m) => m.rows), [16, 32, 64, 128, 256], 'stops after 128 and 256 are both slower than 64');
  t.equal(result.batchRows, 64);
  const g = fake((rows) => rows * perRow(rows));
  const once = await tuneBatchRows({ maxRows: 1088, order: 'ascending', patience: 1, run: g.run, now: g.now, budgetMs: 1e9 });
  t.same(once.measurements.map((m) => m.rows), [16, 32, 64, 128], 'patience 1 stops at the first slower size');
});

t.test('ascending: a rising curve runs until the time budget, and the largest measured wins', async (t) => {
  // GPU-like: per-row cost falls with the batch.
  const f = fake((rows) => 100 + rows * 0.1, 0);
  const result = await tuneBatchRows({ maxRows: 4096, order: 'ascending', run: f.run, now: f.now, budgetMs: 1000, repeats: 1 });
  t.equal(result.truncated, true);
  t.same(result.measurements.map((m) => m.rows), [16, 32, 64, 128, 256]);
  t.equal(result.batchRows, 256);
});

t.test('ascending: the 2% margin still favours the larger size', async (t) => {
  const f = fake((rows) => rows * (rows === 16 ? 0.99 : 1));
  const result = await tuneBatchRows({ maxRows: 64, order: 'ascending', run: f.run, now: f.now, budgetMs: 1e9 });
  t.equal(result.batchRows, 64, '16 rows is 1% faster than 64: within the margin');
});

t.test('measureRows: small sizes run several batches per timed measurement; margin is configurable', async (t) => {
  const f = fake((rows) => 1 + rows, 0);
  const result = await tuneBatchRows({ maxRows: 64, order: 'ascending', measureRows: 64, repeats: 1, run: f.run, now: f.now, budgetMs: 1e9 });
  // Per size: one warm-up batch, then 64 rows' worth: 4 × 16, 2 × 32, 1 × 64.
  t.same(f.runs, [16, 16, 16, 16, 16, 32, 32, 32, 64, 64]);
  t.same(result.measurements.map((m) => Math.round(m.rowsPerSecond)), [Math.round(64000 / 68), Math.round(64000 / 66), Math.round(64000 / 65)]);
  const g = fake((rows) => rows * (rows === 32 ? 0.95 : 1));
  t.equal((await tuneBatchRows({ maxRows: 64, run: g.run, now: g.now, budgetMs: 1e9 })).batchRows, 32, '5% beats the default 2% margin');
  const h = fake((rows) => rows * (rows === 32 ? 0.95 : 1));
  t.equal((await tuneBatchRows({ maxRows: 64, margin: 0.1, run: h.run, now: h.now, budgetMs: 1e9 })).batchRows, 64, 'but not a 10% margin');
});
