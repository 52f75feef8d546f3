// Extra forward rows the noise measurement costs a default penalty request (N = 8, k = 2: 40 rows),
// through the real path (evaluatePenalty), counted at the session: first use of a session (fresh
// cache) and a cache hit (a second request, another seed, same session). Rows are counted, not timed.
// Usage: npm run build --silent && node bench/noise-rows.mjs [seeds=10]
import { readFileSync } from 'node:fs';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';

const seeds = Number(process.argv[2] ?? 10);
const models = ['noise_mlp.onnx', 'noise_conv_in.onnx', 'noise_residual_ln.onnx', 'noise_offset_ln.onnx', 'noise_dc_residual.onnx', 'dcgan.onnx', 'mlp.onnx', 'cubic.onnx', 'bn_train.onnx'];
console.log('model\tmode\tpenalty rows\textra rows on first use (min/median/max over seeds)\tseeds needing a 2nd try\tof the request\textra rows on a cache hit');
for (const name of models) {
  const model = loadModel(new Uint8Array(readFileSync(new URL(`../models/${name}`, import.meta.url))));
  const first = [];
  const tries = [];
  const hits = [];
  let rows = 0;
  let mode = '';
  for (let seed = 1; seed <= seeds; seed++) {
    const sessions = new SessionCache(1);
    const context = { device: { kind: 'cpu' }, sessions };
    const a = await evaluatePenalty(model, { latents: { samples: 8 }, seed }, context);
    const b = await evaluatePenalty(model, { latents: { samples: 8 }, seed: seed + 1000 }, context);
    first.push(a.noise.rows);
    tries.push(a.noise.tries.length);
    hits.push(b.noise.rows);
    rows = a.rows;
    mode = a.mode;
    await sessions.clear();
  }
  first.sort((x, y) => x - y);
  const median = first[Math.floor(first.length / 2)];
  const pct = (x) => `${((100 * x) / rows).toFixed(1)}%`;
  console.log(`${name}\t${mode}\t${rows}\t${first[0]}/${median}/${first.at(-1)}\t${tries.filter((x) => x > 1).length}/${seeds}\t${pct(first[0])}/${pct(median)}/${pct(first.at(-1))}\t${Math.max(...hits)}`);
}
