// The penalty of two builds of this project, alternating in one process on the same machine noise
// (issue 12: the registry must not be slower than the engine before it). BEFORE is the root of an
// older checkout with its own dist/ (e.g. `git worktree add ../before 572442b && cd ../before &&
// ln -s ../main/node_modules && npx tsc`); the bare onnxruntime floor of the same rows is run in
// between. dcgan.onnx, N = 64, k = 8 (1,088 rows), CPU provider. Prints medians and ratios.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-node';

const BEFORE = process.env.BEFORE;
if (!BEFORE) throw new Error('set BEFORE to the root of the older checkout (with dist/ built)');
const REPEATS = Number(process.env.REPEATS ?? 15);
const bytes = new Uint8Array(readFileSync(new URL('../models/dcgan.onnx', import.meta.url)));
const request = { latents: { samples: 64 }, k: 8, seed: 1 };

const load = async (root, paths) => Object.assign({}, ...(await Promise.all(paths.map((p) => import(pathToFileURL(`${root}/dist/${p}`).href)))));
const before = await load(BEFORE, ['engine/evaluate.js', 'engine/model.js']);
const after = await load(new URL('..', import.meta.url).pathname, ['metrics/evaluate.js', 'runtime/model.js']);
const sides = {
  before: { run: (m, c) => before.evaluatePenalty(m, request, c), model: before.loadModel(bytes), context: { device: { kind: 'cpu' }, sessions: new before.SessionCache(1) } },
  after: { run: (m, c) => after.evaluatePenalty(m, request, c), model: after.loadModel(bytes), context: { device: { kind: 'cpu' }, sessions: new after.SessionCache(1) } },
};
const bare = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all' });
const feeds = { z: new ort.Tensor('float32', new Float32Array(1088 * 12).map(() => Math.random() - 0.5), [1088, 12]) };
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (f) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
for (const s of Object.values(sides)) await s.run(s.model, s.context);
const ms = { before: [], after: [], bare: [] };
for (let i = 0; i < REPEATS; i++) {
  for (const [name, s] of Object.entries(sides)) ms[name].push(await time(() => s.run(s.model, s.context)));
  ms.bare.push(await time(() => bare.run(feeds)));
}
const m = Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, Number(median(v).toFixed(1))]));
console.log(JSON.stringify({ repeats: REPEATS, medianMs: m, beforeOverBare: +(m.before / m.bare).toFixed(3), afterOverBare: +(m.after / m.bare).toFixed(3), afterOverBefore: +(m.after / m.before).toFixed(3) }, null, 1));
