/** The full-Hessian suffix (d² + d + 1 rows) against combineCompactHessian on the same rows. */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { appendHessianSuffix } from '../dist/onnx/suffix.js';
import { combineCompactHessian, compactHessianLayout, compactStencilMatrix } from '../dist/math/hessian-compact.js';
import { steppedRows } from '../dist/math/hessian.js';

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
        [suffix.inputs.stencil]: new ort.Tensor('float64', compactStencilMatrix(d), [d * d, R]),
        [suffix.inputs.epsilon]: new ort.Tensor('float64', Float64Array.of(EPSILON), []),
        [suffix.inputs.element]: new ort.Tensor('int64', BigInt64Array.of(0n), [1]),
      },
      [...suffix.fetches, suffix.outputs[layer].element],
    );
    const names = suffix.outputs[layer];
    const got = (name: string) => out[name].data as Float64Array;
    let worst = 0;
    let elementWorst = 0;
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
      // The element output: element 0's full Hessian, [S, d², 1]. Single entries, not sums: the
      // MatMul's float64 rounding of Σ w·g (|w| ≤ 1/ε², up to 7 terms) is absolute, ≲ 1e-13·max|g|/ε².
      for (let p = 0; p < d * d; p++) {
        const delta = Math.abs(got(names.element)[slot * d * d + p] - h[p * size]);
        elementWorst = Math.max(elementWorst, delta / (maxAbs / EPSILON ** 2));
      }
      t.equal(got(names.maxAbs)[slot], maxAbs, `slot ${slot}: max |g(z)|`);
    }
    // The same float64 rows combined by a MatMul instead of the formula: summation order only.
    t.ok(worst <= 1e-9, `worst relative difference ${worst.toExponential(2)} ≤ 1e-9`);
    t.ok(elementWorst <= 1e-13, `element Hessian: worst difference ${elementWorst.toExponential(2)} ≤ 1e-13·max|g|/ε²`);
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

t.test('the in-graph figures equal hessian.ts’s streamed figures (the same d² + d + 1 stencil)', async (t) => {
  const { HessianAccumulator, hessianLayout } = await import('../dist/math/hessian.js');
  // The same stencil on both sides (hessian.ts streams it since issue 13): only float32 rounding of
  // g (≈ 1e-7·|g|/ε²) and the suffix's accumulation order differ; the tolerances date from when the
  // reference was the 2d² + 1 four-point stencil and bound that O(ε²) difference too. Not mlp: LeakyReLU's kinks make any stencil's figures depend on its points.
  for (const [model, d, layer, tolerance] of [['cubic', 2, 'y1', 1e-4], ['dcgan_smooth', 12, 'image', 2e-2]] as const) {
    const bytes = new Uint8Array(readFileSync(new URL(`../models/${model}.onnx`, import.meta.url)));
    const z = values(SAMPLES * d, 9);
    const bare = await ort.InferenceSession.create(bytes);
    const run = async (steps: any[]) => {
      const R = steps.length;
      const rows = Array.from({ length: SAMPLES * R }, (_, r) => ({ sample: Math.floor(r / R), index: r % R }));
      const latents = steppedRows(rows, steps, z, EPSILON, d, null, new Float32Array(rows.length * d));
      const feeds = { z: new ort.Tensor('float32', latents as Float32Array, [rows.length, d]) };
      return { feeds, R, out: (await bare.run(feeds, [layer]))[layer] };
    };
    const old = hessianLayout(d);
    const before = await run(old.steps);
    const size = before.out.dims.slice(1).reduce((a, b) => a * Number(b), 1);
    const reference = new HessianAccumulator(SAMPLES, size, old, EPSILON);
    const offsets: number[] = [];
    old.unitSizes.reduce((at: number, n: number) => (offsets.push(at), at + n), 0);
    for (let sample = 0; sample < SAMPLES; sample++) {
      old.units.forEach((_: unknown, u: number) => {
        const at = Array.from({ length: old.unitSizes[u] }, (_, r) => (sample * before.R + offsets[u] + r) * size);
        reference.unit(sample, u, at.map(() => before.out.data as Float32Array), at);
      });
    }
    const expected = reference.result('max');

    const compact = compactHessianLayout(d);
    const now = await run(compact.steps);
    const suffix = appendHessianSuffix(bytes, { layers: [layer], latents: d });
    const session = await ort.InferenceSession.create(suffix.bytes);
    // The one fold (math/hessian.ts), fed the suffix's figures instead of rows.
    const accumulator = new HessianAccumulator(SAMPLES, size, compact, EPSILON);
    for (let sample = 0; sample < SAMPLES; sample++) {
      const index = BigInt64Array.from({ length: now.R }, (_, r) => BigInt(sample * now.R + r));
      const out = await session.run(
        {
          ...now.feeds,
          [suffix.inputs.rows]: new ort.Tensor('int64', index, [1, now.R]),
          [suffix.inputs.stencil]: new ort.Tensor('float64', compactStencilMatrix(d), [d * d, now.R]),
          [suffix.inputs.epsilon]: new ort.Tensor('float64', Float64Array.of(EPSILON), []),
          [suffix.inputs.element]: new ort.Tensor('int64', BigInt64Array.of(0n), [1]),
        },
        suffix.fetches,
      );
      const names = suffix.outputs[layer];
      accumulator.slots([sample], Object.fromEntries(Object.entries(names).map(([k, name]) => [k, out[name]?.data])) as any);
    }
    t.throws(() => accumulator.slots([0], { maxAbs: [0], interaction: [] } as any), /came twice/);
    const actual = accumulator.result('max');
    const rel = (x: number, y: number) => Math.abs(x - y) / Math.abs(y);
    t.ok(rel(actual.penalty!, expected.penalty!) <= tolerance, `${model}: penalty ${actual.penalty} vs ${expected.penalty}`);
    t.ok(rel(actual.diagonalRatio, expected.diagonalRatio) <= tolerance, `${model}: diagonal ratio ${actual.diagonalRatio} vs ${expected.diagonalRatio}`);
    // A share of elements: near-ties between max |H_ii| and max |H_ij| may flip under the O(ε²)
    // difference (at most 1% of elements here); on the cubic none may.
    const flips = Math.abs(actual.diagonalFraction - expected.diagonalFraction);
    t.ok(flips <= (model === 'cubic' ? 0 : 0.01), `${model}: diagonal fraction ${actual.diagonalFraction} vs ${expected.diagonalFraction}`);
    const worst = Math.max(...Array.from(expected.interaction, (y: number, p: number) => Math.abs(actual.interaction[p] - y) / (Math.abs(y) + 1e-6 * expected.interaction[0])));
    t.ok(worst <= tolerance, `${model}: interaction matrix, worst relative difference ${worst.toExponential(2)}`);
    t.equal(actual.maxAbsOutput, expected.maxAbsOutput);
    t.equal(actual.nonFinite, 0);
    await bare.release();
    await session.release();
  }
  const unfinished = new HessianAccumulator(2, 1, hessianLayout(1), EPSILON);
  t.throws(() => unfinished.result('mean'), /2 samples did not come/);
});
