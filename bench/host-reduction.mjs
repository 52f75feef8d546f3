// The host reduction alone (LayerPenaltyAccumulator, src/math/second-difference.ts): N = 64, k = 8,
// the outputs of 1,088 rows of 3,072 values (dcgan's 3×32×32) and of 12,288 (dcgan64's 3×64×64),
// fed unit by unit as Run.units feeds them (batches of 64 rows, so some samples span two batches).
// With BEFORE=<root of an older checkout with its dist/ built> both builds run alternately in one
// process on the same outputs; their penalties must be equal bit for bit. Prints ns per output
// value (minimum and median over REPEATS, default 31) and the ratio after / before.
//
//   npm run build && node bench/host-reduction.mjs
import { loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';

const N = 64;
const K = 8;
const BATCH = 64;
const REPEATS = Number(process.env.REPEATS ?? 31);
const builds = { after: new URL('..', import.meta.url).pathname };
if (process.env.BEFORE) builds.before = process.env.BEFORE;
const loaded = {};
for (const [name, root] of Object.entries(builds)) {
  loaded[name] = {
    ...(await import(pathToFileURL(`${root}/dist/math/second-difference.js`).href)),
    ...(await import(pathToFileURL(`${root}/dist/run/plan.js`).href)),
  };
}
const round = (x, digits = 2) => Number(x.toFixed(digits));
const out = { date: new Date().toISOString(), loadAverage: { before: loadavg().map((x) => round(x)) }, samples: N, k: K, batchRows: BATCH, repeats: REPEATS, layers: [] };
for (const size of [3072, 12288]) {
  const { planUnits, penaltyUnitSizes } = loaded.after;
  const plan = planUnits({ samples: N, unitSizes: penaltyUnitSizes(K), maxRows: BATCH });
  // Deterministic outputs, one fresh array per batch as onnxruntime hands them over.
  const outputs = plan.chunks.map((chunk, c) => Float32Array.from({ length: chunk.batches[0].length * size }, (_, i) => Math.sin(i * 0.37 + c)));
  const reduce = (lib) => () => {
    const acc = new lib.LayerPenaltyAccumulator(N, size, K, 0.1, 'unbiased');
    plan.chunks.forEach((chunk, c) => {
      for (const { sample, unit, rows } of chunk.units) acc.unit(sample, unit, rows.map(() => outputs[c]), rows.map((r) => r.row * size));
    });
    return acc.result('max').penalty;
  };
  const runs = Object.fromEntries(Object.entries(loaded).map(([name, lib]) => [name, reduce(lib)]));
  const penalty = {};
  for (const [name, run] of Object.entries(runs)) for (let i = 0; i < 10; i++) penalty[name] = run();
  const times = Object.fromEntries(Object.keys(runs).map((n) => [n, []]));
  for (let i = 0; i < REPEATS; i++) {
    for (const [name, run] of Object.entries(runs)) {
      const t = performance.now();
      run();
      times[name].push(performance.now() - t);
    }
  }
  const values = plan.rows * size;
  const layer = { valuesPerRow: size, values };
  for (const [name, ts] of Object.entries(times)) {
    ts.sort((a, b) => a - b);
    layer[name] = { minMs: round(ts[0]), medianMs: round(ts[ts.length >> 1]), nsPerValue: { min: round((ts[0] * 1e6) / values), median: round((ts[ts.length >> 1] * 1e6) / values) }, penalty: penalty[name] };
  }
  if (layer.before) {
    layer.afterOverBefore = { min: round(layer.after.minMs / layer.before.minMs, 3), median: round(layer.after.medianMs / layer.before.medianMs, 3) };
    layer.samePenalty = penalty.after === penalty.before;
  }
  out.layers.push(layer);
}
out.loadAverage.after = loadavg().map((x) => round(x));
console.log(JSON.stringify(out, null, 2));
