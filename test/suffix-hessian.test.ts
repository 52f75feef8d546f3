/** The full-Hessian suffix (d² + d + 1 rows) against combineCompactHessian on the same rows. */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { appendHessianSuffix } from '../dist/onnx/suffix.js';
import { combineCompactHessian, compactHessianLayout, compactStencilMatrix } from '../dist/penalty/hessian-compact.js';
import { steppedRows } from '../dist/penalty/hessian.js';

function values(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

const SAMPLES = 2;
const EPSILON = 0.1;

for (const [model, d, layer] of [['cubic', 2, 'y1'], ['mlp', 8, 'out'], ['dcgan', 12, 'image']] as const) {
  t.test(`${model}: the in-graph Hessian figures equal the JavaScript combination`, async (t) => {
    const bytes = new Uint8Array(readFileSync(new URL(`../models/${model}.onnx`, import.meta.url)));
    const layout = compactHessianLayout(d);
    const R = layout.steps.length;
    const rows = Array.from({ length: SAMPLES * R }, (_, r) => ({ sample: Math.floor(r / R), index: r % R }));
    const z = values(SAMPLES * d, 5);
    const latents = steppedRows(rows, layout.steps, z, EPSILON, d, null, new Float32Array(rows.length * d));
    const feeds = { z: new ort.Tensor('float32', latents as Float32Array, [rows.length, d]) };

    const bare = await ort.InferenceSession.create(bytes);
    const raw = (await bare.run(feeds, [layer]))[layer];
    const size = raw.dims.slice(1).reduce((a, b) => a * Number(b), 1);
    const g = Float64Array.from(raw.data as Float32Array);

    const suffix = appendHessianSuffix(bytes, { layers: [layer], latents: d });
    const session = await ort.InferenceSession.create(suffix.bytes);
    // Slots in reverse sample order: the layout is fed, not assumed.
    const index = BigInt64Array.from({ length: SAMPLES * R }, (_, i) => BigInt((SAMPLES - 1 - Math.floor(i / R)) * R + (i % R)));
    const out = await session.run(
      {
        ...feeds,
        [suffix.inputs.rows]: new ort.Tensor('int64', index, [SAMPLES, R]),
        [suffix.inputs.stencil]: new ort.Tensor('float64', compactStencilMatrix(d, EPSILON), [d * d, R]),
      },
      suffix.fetches,
    );
    const names = suffix.outputs[layer];
    const got = (name: string) => out[name].data as Float64Array;
    let worst = 0;
    let scale = 0;
    const compare = (x: number, y: number) => {
      worst = Math.max(worst, Math.abs(x - y) / (Math.abs(y) + 1e-9 * scale));
    };
    for (let slot = 0; slot < SAMPLES; slot++) {
      const sample = SAMPLES - 1 - slot;
      const h = combineCompactHessian(g.subarray(sample * R * size, (sample + 1) * R * size), d, size, EPSILON);
      for (let x = 0; x < h.length; x++) scale = Math.max(scale, Math.abs(h[x]));
      const interaction = new Float64Array(d * d);
      let maxAbs = 0;
      for (let e = 0; e < size; e++) {
        maxAbs = Math.max(maxAbs, Math.abs(g[sample * R * size + e]));
        let off = 0, maxDiagonal = 0, maxOff = 0, sumDiagonal = 0, sumOff = 0;
        for (let i = 0; i < d; i++) {
          for (let j = 0; j < d; j++) {
            const v = h[(i * d + j) * size + e];
            interaction[i * d + j] += v * v;
            if (i === j) {
              maxDiagonal = Math.max(maxDiagonal, Math.abs(v));
              sumDiagonal += Math.abs(v);
            } else {
              off += v * v;
              maxOff = Math.max(maxOff, Math.abs(v));
              sumOff += Math.abs(v);
            }
          }
        }
        const at = slot * size + e;
        compare(got(names.offSquares)[at], off);
        compare(got(names.maxDiagonal)[at], maxDiagonal);
        compare(got(names.maxOff)[at], maxOff);
        compare(got(names.sumDiagonal)[at], sumDiagonal);
        compare(got(names.sumOff)[at], sumOff);
      }
      interaction.forEach((v, p) => compare(got(names.interaction)[slot * d * d + p], v));
      t.equal(got(names.maxAbs)[slot], maxAbs, `slot ${slot}: max |g(z)|`);
    }
    // The same float64 rows combined by a MatMul instead of the formula: summation order only.
    t.ok(worst <= 1e-9, `worst relative difference ${worst.toExponential(2)} ≤ 1e-9`);
    t.ok(scale > 0, 'a Hessian to compare');
    await bare.release();
    await session.release();
  });
}

t.test('Hessian suffix argument errors', async (t) => {
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  t.throws(() => appendHessianSuffix(bytes, { layers: [], latents: 2 }), /at least one layer/);
  t.throws(() => appendHessianSuffix(bytes, { layers: ['out'], latents: 0 }), /positive integer/);
  t.throws(() => appendHessianSuffix(bytes, { layers: ['out'], latents: 2, opset: 12 }), /opset 13 or later/);
  const f32 = appendHessianSuffix(bytes, { layers: ['out'], latents: 8, accumulation: 'float32', opset: 14 });
  t.equal(f32.accumulation, 'float32');
  t.equal(f32.fetches.length, 7);
});
