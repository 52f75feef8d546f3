// Overhead of `penalty` over bare onnxruntime: dcgan.onnx, N = 64, k = 8, CPU provider.
// Both run in this process with the same session options; runs alternate so that machine noise
// hits both alike. Prints medians and the ratio (target ≤ 1.10).
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { openSession } from '../dist/runtime/session.js';

const N = 64;
const K = 8;
const REPEATS = Number(process.env.REPEATS ?? 7);
const model = loadModel(new Uint8Array(readFileSync(new URL('../models/dcgan.onnx', import.meta.url))));
const sessions = new SessionCache(1);
const device = { kind: 'cpu' };
const request = { latents: { samples: N }, k: K, seed: 1 };

const bare = (await openSession(model.bytes, [], device)).session;
const rows = N * (2 * K + 1);
const feeds = { z: new ort.Tensor('float32', new Float32Array(rows * 12).map(() => Math.random() - 0.5), [rows, 12]) };

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (f) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
await evaluatePenalty(model, request, { device, sessions });
await bare.run(feeds);
const ours = [];
const theirs = [];
for (let i = 0; i < REPEATS; i++) {
  ours.push(await time(() => evaluatePenalty(model, request, { device, sessions })));
  theirs.push(await time(() => bare.run(feeds)));
}
const result = {
  model: 'dcgan.onnx',
  samples: N,
  k: K,
  rows,
  repeats: REPEATS,
  penaltyMs: Number(median(ours).toFixed(1)),
  bareOnnxruntimeMs: Number(median(theirs).toFixed(1)),
  ratio: Number((median(ours) / median(theirs)).toFixed(3)),
  target: 1.1,
};
console.log(JSON.stringify(result, null, 2));
await sessions.clear();
