/**
 * The estimator end to end on onnxruntime, against exact ground truth: analytic models with known
 * Hessians, and a float64 reference that runs the 2k+1 passes separately.
 */
import t from 'tap';
import * as ort from 'onnxruntime-node';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { rademacherDirections, standardNormal } from '../dist/math/index.js';
import { modelBytes, referencePenalty, relative } from './helpers/reference.js';

const sessions = new SessionCache(16);
t.teardown(() => sessions.clear());
const cpu = { device: { kind: 'cpu' as const }, sessions };
const load = (name: string) => loadModel(modelBytes(name));
const array = (data: Float32Array, shape: number[]) => ({ type: 'float32' as const, shape, data });

// G(z) = zᵀAz, A as in models/export.py; H = A + Aᵀ.
const A = [
  [1, 2, 0, -1],
  [0, 3, 1, 0],
  [0.5, 0, -2, 1],
  [0, 1, 0, 1],
];
const H = A.map((row, i) => row.map((a, j) => a + A[j][i]));
const offDiagonalSquares = H.reduce((s, row, i) => s + row.reduce((r, h, j) => r + (i === j ? 0 : h * h), 0), 0);

t.test('cubic model with explicit directions equals the float64 formula', async (t) => {
  const n = 5;
  const k = 4;
  const epsilon = 0.1;
  const z = standardNormal(n * 2, 11);
  const v = rademacherDirections(k, n * 2, 12);
  for (const variance of ['unbiased', 'biased'] as const) {
    const result = await evaluatePenalty(
      load('cubic.onnx'),
      { latents: array(z, [n, 2]), directions: array(v, [k, n, 2]), epsilon, variance },
      cpu,
    );
    // Float64 ground truth: the second difference is exact for cubics, so q = vᵀHv exactly.
    const expected = [0, 1].map((layer) => {
      let max = -Infinity;
      for (let s = 0; s < n; s++) {
        const [z0, z1] = [z[2 * s], z[2 * s + 1]];
        const q = Array.from({ length: k }, (_, j) => {
          const [v0, v1] = [v[(j * n + s) * 2], v[(j * n + s) * 2 + 1]];
          return layer === 0 ? 2 * v0 * v1 : 2 * z1 * v0 * v0 + 4 * z0 * v0 * v1;
        });
        const mean = q.reduce((a, b) => a + b) / k;
        const varq = q.reduce((a, b) => a + (b - mean) ** 2, 0) / (variance === 'unbiased' ? k - 1 : k);
        max = Math.max(max, varq);
      }
      return max;
    });
    t.same(result.layers.map((l) => l.name), ['y0', 'y1']);
    for (const [i, layer] of result.layers.entries()) {
      t.ok(relative(layer.penalty!, expected[i]) < 1e-5, `${variance} ${layer.name}: ${layer.penalty} vs ${expected[i]}`);
    }
    t.ok(relative(result.penalty!, expected[0] + expected[1]) < 1e-5, 'total is the sum over layers');
    t.equal(result.forwardPasses, 2 * k + 1);
    t.equal(result.rows, n * (2 * k + 1));
    t.equal(result.directions, 'explicit');
  }
});

t.test('quadratic model with explicit directions equals the float64 formula', async (t) => {
  const n = 3;
  const k = 5;
  const z = standardNormal(n * 4, 21);
  const v = rademacherDirections(k, n * 4, 22);
  const result = await evaluatePenalty(load('quadratic.onnx'), { latents: array(z, [n, 4]), directions: array(v, [k, n, 4]), reduction: 'mean' }, cpu);
  let sum = 0;
  for (let s = 0; s < n; s++) {
    const q = Array.from({ length: k }, (_, j) => {
      const vj = Array.from({ length: 4 }, (_, i) => v[(j * n + s) * 4 + i]);
      return H.reduce((acc, row, a) => acc + row.reduce((r, h, b) => r + vj[a] * h * vj[b], 0), 0);
    });
    const mean = q.reduce((a, b) => a + b) / k;
    sum += q.reduce((a, b) => a + (b - mean) ** 2, 0) / (k - 1);
  }
  t.ok(relative(result.penalty!, sum / n) < 1e-5, `${result.penalty} vs ${sum / n}`);
});

t.test('with k = 2000 seeded directions the penalties approach their expectations', async (t) => {
  const cubic = await evaluatePenalty(load('cubic.onnx'), { latents: { samples: 6 }, k: 2000, seed: 5 }, cpu);
  const z = standardNormal(12, 5);
  const maxZ0Squared = Math.max(...Array.from({ length: 6 }, (_, s) => z[2 * s] ** 2));
  t.ok(relative(cubic.layers[0].penalty!, 4) < 0.05, `y0 ${cubic.layers[0].penalty} ≈ 4`);
  t.ok(relative(cubic.layers[1].penalty!, 16 * maxZ0Squared) < 0.05, `y1 ${cubic.layers[1].penalty} ≈ ${16 * maxZ0Squared}`);

  const quadratic = await evaluatePenalty(load('quadratic.onnx'), { latents: { samples: 4 }, k: 2000, seed: 6, reduction: 'mean' }, cpu);
  const expected = 2 * offDiagonalSquares;
  t.ok(relative(quadratic.penalty!, expected) < 0.05, `zᵀAz ${quadratic.penalty} ≈ 2·Σ_{i≠j} H_ij² = ${expected}`);
});

t.test('intermediate tensors of the conv generator equal a float64 reference from the same tensors', async (t) => {
  const n = 3;
  const k = 3;
  const layers = ['/block1/block1.2/LeakyRelu_output_0', '/block2/block2.1/BatchNormalization_output_0', 'image'];
  const z = standardNormal(n * 12, 31);
  const v = rademacherDirections(k, n * 12, 32);
  for (const reduction of ['max', 'mean'] as const) {
    const result = await evaluatePenalty(
      load('dcgan.onnx'),
      { latents: array(z, [n, 12]), directions: array(v, [k, n, 12]), layers, reduction, epsilon: 0.1 },
      cpu,
    );
    const reference = await referencePenalty({
      model: 'dcgan.onnx', layers, expose: layers.slice(0, 2), z, shape: [n, 12], directions: v, k, epsilon: 0.1, reduction,
    });
    t.same(result.layers.map((l) => l.name), layers, 'layers in the order asked');
    t.same(result.layers[0].shape, [n, 32, 8, 8]);
    t.same(result.layers[2].shape, [n, 3, 32, 32]);
    t.equal(result.layers[0].op, 'LeakyRelu');
    for (const layer of result.layers) {
      const ref = reference[layer.name].penalty;
      t.ok(ref > 0, 'a non-trivial penalty');
      // Batch composition differs (stacked vs separate passes): float32 rounding of the
      // activations is amplified by 1/ε², so the tolerance is relative to that noise.
      t.ok(relative(layer.penalty!, ref) < 1e-3, `${reduction} ${layer.name}: ${layer.penalty} vs ${ref}`);
    }
  }
});

t.test('biased = unbiased · (k−1)/k exactly', async (t) => {
  const request = { latents: { samples: 4 }, k: 5, seed: 9 };
  const unbiased = await evaluatePenalty(load('dcgan.onnx'), { ...request, variance: 'unbiased' }, cpu);
  const biased = await evaluatePenalty(load('dcgan.onnx'), { ...request, variance: 'biased' }, cpu);
  t.ok(relative(biased.penalty!, (unbiased.penalty! * 4) / 5) < 1e-12, `${biased.penalty} vs ${unbiased.penalty}·4/5`);
});

t.test('chunked and unchunked plans agree to float rounding', async (t) => {
  const request = { latents: { samples: 6 }, k: 6, seed: 3, layers: ['/block1/block1.2/LeakyRelu_output_0', 'image'] };
  const whole = await evaluatePenalty(load('dcgan.onnx'), request, cpu);
  t.equal(whole.batches, 1);
  const elements = 32 * 8 * 8 + 3 * 32 * 32;
  const bytesPerRow = 12 * 4 + 2 * 4 * elements;
  // The penalty's float64 state (docs/harden.md): 8 + 84 + 8 bytes an element for the run, 24 for each
  // sample in flight (two split ones, and one per 2k+1 = 13 rows).
  const state = (8 + 84 + 8 + 2 * 24) * elements;
  for (const rows of [30, 7]) {
    const limits = { ...DEFAULT_LIMITS, memoryBudget: state + rows * (bytesPerRow + (24 * elements) / 13) + 1 };
    const chunked = await evaluatePenalty(load('dcgan.onnx'), request, { ...cpu, limits });
    t.ok(chunked.batches > 1, `${chunked.batches} batches of at most ${rows} rows`);
    t.equal(chunked.rows, whole.rows, 'a sample split over batches keeps its state: no row runs twice');
    for (const [i, layer] of chunked.layers.entries()) {
      t.ok(relative(layer.penalty!, whole.layers[i].penalty!) < 1e-4, `${layer.name}: ${layer.penalty} vs ${whole.layers[i].penalty}`);
    }
  }
});

t.test('the same seed reproduces the same numbers bit for bit', async (t) => {
  const request = { latents: { samples: 4 }, k: 4, seed: 77 };
  const a = await evaluatePenalty(load('dcgan.onnx'), request, cpu);
  const b = await evaluatePenalty(load('dcgan.onnx'), request, { device: { kind: 'cpu' }, sessions: new SessionCache(1) });
  t.same(a.layers.map((l) => l.perSample), b.layers.map((l) => l.perSample));
  t.equal(a.penalty, b.penalty);
  t.equal(a.seed, 77);
  const c = await evaluatePenalty(load('dcgan.onnx'), { ...request, seed: 78 }, cpu);
  t.not(c.penalty, a.penalty, 'another seed, another draw');
});

t.test('extra inputs are held fixed: the conditional generator equals the reference', async (t) => {
  const n = 4;
  const k = 3;
  const z = standardNormal(n * 8, 41);
  const v = rademacherDirections(k, n * 8, 42);
  const labels = [3, 1, 4, 1];
  const result = await evaluatePenalty(
    load('conditional.onnx'),
    {
      latents: array(z, [n, 8]),
      directions: array(v, [k, n, 8]),
      inputs: {
        label: { type: 'int64', shape: [n], data: BigInt64Array.from(labels.map(BigInt)) },
        truncation: { type: 'float64', shape: [1], data: Float64Array.from([0.7]) },
      },
    },
    cpu,
  );
  const reference = await referencePenalty({
    model: 'conditional.onnx', layers: ['out'], z, shape: [n, 8], directions: v, k, epsilon: 0.1,
    extra: {
      label: new ort.Tensor('int64', BigInt64Array.from(labels.map(BigInt)), [n]),
      truncation: new ort.Tensor('float32', Float32Array.from([0.7]), [1]),
    },
  });
  t.ok(relative(result.penalty!, reference.out.penalty) < 1e-4, `${result.penalty} vs ${reference.out.penalty}`);
  t.equal(result.wrt, 'z', 'wrt defaults to the first floating-point input');
  // A different label changes the numbers: the label really reaches the model.
  const other = await evaluatePenalty(
    load('conditional.onnx'),
    {
      latents: array(z, [n, 8]),
      directions: array(v, [k, n, 8]),
      inputs: {
        label: { type: 'int64', shape: [n], data: BigInt64Array.from([0n, 0n, 0n, 0n]) },
        truncation: { type: 'float64', shape: [1], data: Float64Array.from([0.7]) },
      },
    },
    cpu,
  );
  t.not(other.penalty, result.penalty);
});

t.test('the penalty can be taken with respect to another input', async (t) => {
  const result = await evaluatePenalty(
    load('conditional.onnx'),
    {
      wrt: 'truncation',
      latents: { type: 'float32', shape: [1], data: Float32Array.from([0.7]) },
      inputs: {
        z: { type: 'float32', shape: [1, 8], data: standardNormal(8, 1) },
        label: { type: 'int64', shape: [1], data: BigInt64Array.from([2n]) },
      },
      k: 3,
      seed: 1,
    },
    cpu,
  ).catch((e) => e);
  // truncation has a fixed dimension of 1 and no batch axis: it is treated as a batch of one.
  t.equal(result.wrt ?? result.code, 'truncation');
});
