// Float32 penalties of models/noise_*.onnx against their float64 truth, and the measured floor:
// prints penalty/floor and the relative error per (model, ε). Used to choose the margin.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { evaluatePenalty, SessionCache } from '../dist/engine/evaluate.js';
import { loadModel } from '../dist/engine/model.js';
import { measureNoise, summarizeNoise, measuredFloor, noiseFloor } from '../dist/penalty/index.js';

const models = new URL('../models/', import.meta.url);
const ref = JSON.parse(readFileSync(new URL('noise_reference.json', models), 'utf8'));
const sessions = new SessionCache(8);
const warnSet = []; const cleanSet = [];
const z = Float32Array.from(ref.latents.data);
const v = Float32Array.from(ref.directions.data);
const [n, d] = ref.latents.shape;
const points = Number(process.argv[2] ?? 8);
const samplesMeasured = Number(process.argv[3] ?? 1);
for (const [name, truth] of Object.entries(ref.models)) {
  const bytes = new Uint8Array(readFileSync(new URL(name, models)));
  const session = await ort.InferenceSession.create(bytes);
  // ECnoise on the first sample(s), along the first direction.
  const sigmas = [];
  let rows = 0; let tries = [];
  for (let s = 0; s < samplesMeasured; s++) {
    const x = z.subarray(s * d, (s + 1) * d); const dir = v.subarray(s * d, (s + 1) * d);
    let elements = 0;
    const evaluate = async (offsets) => {
      const feed = new Float32Array(offsets.length * d);
      offsets.forEach((t, i) => { for (let j = 0; j < d; j++) feed[i * d + j] = x[j] + t * dir[j]; });
      const out = await session.run({ z: new ort.Tensor('float32', feed, [offsets.length, d]) });
      return out.out.data;
    };
    const probe = await session.run({ z: new ort.Tensor('float32', x.slice(), [1, d]) });
    elements = probe.out.data.length;
    const m = await measureNoise(evaluate, elements, { points });
    rows += m.rows; tries = m.tries;
    sigmas.push(...m.sigma);
  }
  const summary = summarizeNoise(Float64Array.from(sigmas));
  if (!process.env.QUIET) console.log(name, 'σ', summary, 'rows', rows, tries.map((t) => `${t.h}:${t.ok}/${t.hTooSmall}/${t.hTooLarge}`).join(' '));
  for (const point of truth) {
    const r = await evaluatePenalty(loadModel(bytes), { latents: { type: 'float32', shape: [n, d], data: z }, directions: { type: 'float32', shape: [ref.k, n, d], data: v }, epsilon: point.epsilon }, { device: { kind: 'cpu' }, sessions });
    const p = r.layers[0].penalty;
    const count = n * r.layers[0].shape.slice(1).reduce((a, b) => a * b, 1);
    const floor = measuredFloor({ noise: summary, epsilon: point.epsilon, k: ref.k, variance: 'unbiased', reduction: 'max', count });
    const err = Math.abs(p - point.max) / point.max;
    if (process.env.QUIET) { (err > 1 ? warnSet : err <= 0.02 ? cleanSet : []).push([name.slice(6,-5)+'@'+point.epsilon, p / floor]); } else console.log(`  ε=${point.epsilon}\tP32=${p.toPrecision(4)}\tP64=${point.max.toPrecision(4)}\trel=${err.toPrecision(3)}\tP/floor=${(p / floor).toPrecision(3)}\told P/floor=${(p / r.layers[0].noiseFloor).toPrecision(3)}\t${err > 1 ? 'MUST WARN' : err <= 0.02 ? 'must not' : ''}`);
  }
  await session.release();
}
sessions.clear();
if (process.env.QUIET) { warnSet.sort((a,b)=>b[1]-a[1]); cleanSet.sort((a,b)=>a[1]-b[1]); console.log(`points=${points} samples=${samplesMeasured} must-warn max`, warnSet.slice(0,3).map(([n,r])=>`${n}:${r.toPrecision(3)}`).join(' '), '| must-not min', cleanSet.slice(0,3).map(([n,r])=>`${n}:${r.toPrecision(3)}`).join(' ')); }
