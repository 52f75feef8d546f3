/**
 * Trustworthy numbers (the seed tips): random ops, rows that interact, ε and rounding, memory,
 * sub-sampling and non-finite outputs — each with a real exported model.
 */
import t from 'tap';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { noiseFloor, rademacherDirections, standardNormal } from '../dist/math/index.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath, referencePenalty, relative } from './helpers/reference.js';

const sessions = new SessionCache(16);
t.teardown(() => sessions.clear());
const cpu = { device: { kind: 'cpu' as const }, sessions };
const load = (name: string) => loadModel(modelBytes(name));
const array = (data: Float32Array, shape: number[]) => ({ type: 'float32' as const, shape, data });

t.test('a generator with in-graph noise is refused, naming the node', async (t) => {
  const model = load('noisy.onnx');
  t.same(model.description.randomOps.map((r) => [r.node, r.op]), [['/RandomNormalLike', 'RandomNormalLike']]);
  await t.rejects(evaluatePenalty(model, { latents: { samples: 2 }, seed: 1 }, cpu), {
    code: 'nondeterministic_model',
    status: 422,
    message: /\/RandomNormalLike \(RandomNormalLike: draws random numbers on every run\).*allowNondeterministic/,
  });
  const r = await cli('penalty', modelPath('noisy.onnx'), '--samples', '2');
  t.equal(r.code, 2);
  t.match(r.stderr, /the model is not deterministic: \/RandomNormalLike.*--allow-nondeterministic/);
});

t.test('with the override it runs, and the determinism probe reports a non-zero difference', async (t) => {
  const result = await evaluatePenalty(load('noisy.onnx'), { latents: { samples: 3 }, seed: 1, allowNondeterministic: true }, cpu);
  const layer = result.layers[0];
  t.ok(layer.determinism.maxDifference > 0, `difference ${layer.determinism.maxDifference}`);
  t.ok(relative(layer.determinism.secondDifferenceError, (4 * layer.determinism.maxDifference) / 0.01) < 1e-12);
  const codes = result.warnings.map((w) => w.code);
  t.ok(codes.includes('nondeterministic_model'));
  const output = result.warnings.find((w) => w.code === 'nondeterministic_output');
  t.match(output?.message, /differs by up to .* between two runs of the same G\(z\); each second difference can be off by about 4δ\/ε²/);
  // A deterministic model has no such difference.
  const clean = await evaluatePenalty(load('mlp.onnx'), { latents: { samples: 3 }, seed: 1 }, cpu);
  t.equal(clean.layers[0].determinism.maxDifference, 0);
  t.notOk(clean.warnings.some((w) => w.code.startsWith('nondeterministic')));
});

t.test('BatchNorm in training mode: detected, run pass by pass, equal to separate passes', async (t) => {
  const model = load('bn_train.onnx');
  t.same(model.description.batchMixingOps.map((r) => r.op), ['BatchNormalization']);
  const n = 5;
  const k = 3;
  const z = standardNormal(n * 8, 51);
  const v = rademacherDirections(k, n * 8, 52);
  const result = await evaluatePenalty(model, { latents: array(z, [n, 8]), directions: array(v, [k, n, 8]) }, cpu);
  t.equal(result.mode, 'per-pass');
  t.equal(result.batches, 2 * k + 1);
  t.match(result.warnings.find((w) => w.code === 'rows_interact')?.message, /\/norm\/BatchNormalization .*own batch of 5/);
  const reference = await referencePenalty({ model: 'bn_train.onnx', layers: ['out'], z, shape: [n, 8], directions: v, k, epsilon: 0.1 });
  t.ok(relative(result.penalty!, reference.out.penalty) < 1e-9, `${result.penalty} vs ${reference.out.penalty}`);
  // Forcing the stacked plan changes the batch statistics, and so the number: the detection matters.
  const stacked = await evaluatePenalty(model, { latents: array(z, [n, 8]), directions: array(v, [k, n, 8]), mode: 'stacked' }, cpu);
  t.ok(relative(stacked.penalty!, reference.out.penalty) > 1e-3, `stacked ${stacked.penalty} differs`);
});

t.test('an ε sweep: the cubic model is flat, the conv generator is not', async (t) => {
  const epsilons = [0.05, 0.1, 0.2];
  const cubic = await evaluatePenalty(load('cubic.onnx'), { latents: { samples: 4 }, k: 6, seed: 2, epsilons }, cpu);
  t.same(cubic.sweep!.map((p) => p.epsilon), epsilons);
  for (const point of cubic.sweep!) {
    for (const [i, layer] of point.layers.entries()) {
      t.ok(relative(layer.penalty!, cubic.layers[i].penalty!) < 1e-3, `ε=${point.epsilon} ${layer.name}: ${layer.penalty} vs ${cubic.layers[i].penalty}`);
    }
  }
  const conv = await evaluatePenalty(load('dcgan.onnx'), { latents: { samples: 4 }, k: 6, seed: 2, epsilons }, cpu);
  const values = conv.sweep!.map((p) => p.penalty!);
  t.ok(relative(values[0], values[2]) > 1e-2, `conv penalties change with ε: ${values}`);
  t.equal(conv.sweep![1].penalty, conv.penalty, 'the sweep point at the request ε is the result itself');
  await t.rejects(evaluatePenalty(load('cubic.onnx'), { epsilons: [0.1, -1] }, cpu), { code: 'invalid_request', message: /request\.epsilons\.1: must be greater than 0/ });
});

t.test('a small ε on a float32 model is flagged below the rounding noise floor', async (t) => {
  const small = await evaluatePenalty(load('dcgan.onnx'), { latents: { samples: 2 }, seed: 4, epsilon: 1e-4 }, cpu);
  const warning = small.warnings.find((w) => w.code === 'below_noise_floor');
  t.match(warning?.message, /layer 'image': the penalty .* is not clearly above the measured rounding noise floor .* at epsilon 0.0001; use epsilon >= /);
  const unmeasured = await evaluatePenalty(load('dcgan.onnx'), { latents: { samples: 2 }, seed: 4, epsilon: 1e-4, noise: false }, cpu);
  t.match(
    unmeasured.warnings.find((w) => w.code === 'below_noise_floor')?.message,
    /layer 'image': the penalty .* is not clearly above the float32 rounding noise floor .* at epsilon 0.0001/,
    'without the measurement, the output-ulp floor as before',
  );
  t.ok(small.layers[0].noiseFloor > 1, `floor ${small.layers[0].noiseFloor}`);
  const normal = await evaluatePenalty(load('dcgan.onnx'), { latents: { samples: 2 }, seed: 4 }, cpu);
  t.notOk(normal.warnings.some((w) => w.code === 'below_noise_floor'));
  t.ok(normal.layers[0].noiseFloor < 1e-8);
});

t.test('the noise floor follows 1/ε⁴ and the unit roundoff', async (t) => {
  t.ok(relative(noiseFloor(1, 0.1, 'float32'), ((4 * 2 ** -24) / 0.01) ** 2) < 1e-12);
  t.ok(relative(noiseFloor(1, 0.05, 'float32') / noiseFloor(1, 0.1, 'float32'), 16) < 1e-12);
  t.ok(relative(noiseFloor(1, 0.1, 'float16') / noiseFloor(1, 0.1, 'float32'), 2 ** 26) < 1e-12);
});

t.test('a memory budget below one row is refused up front with the numbers', async (t) => {
  const limits = { ...DEFAULT_LIMITS, memoryBudget: 40_000 };
  await t.rejects(evaluatePenalty(load('dcgan.onnx'), { latents: { samples: 2 }, k: 2 }, { ...cpu, limits }), {
    code: 'memory_budget_exceeded',
    message: /the memory budget fits 1 rows per batch, but one unit of work \(2 rows\) needs 2.*about 24624 bytes per row.*budget 40000 bytes/,
  });
});

t.test('maxSamples audits the first samples of the batch', async (t) => {
  const z = standardNormal(6 * 12, 8);
  const sub = await evaluatePenalty(load('dcgan.onnx'), { latents: array(z, [6, 12]), maxSamples: 2, seed: 3 }, cpu);
  const direct = await evaluatePenalty(load('dcgan.onnx'), { latents: array(z.slice(0, 24), [2, 12]), seed: 3 }, cpu);
  t.equal(sub.samples, 2);
  t.same(sub.layers[0].perSample, direct.layers[0].perSample);
  t.match(sub.warnings.find((w) => w.code === 'subsampled')?.message, /first 2 of 6 samples/);
  // Explicit directions for all six samples are cut to the same two.
  const v = rademacherDirections(2, 6 * 12, 9);
  const vSub = new Float32Array([...v.slice(0, 24), ...v.slice(72, 96)]);
  const a = await evaluatePenalty(load('dcgan.onnx'), { latents: array(z, [6, 12]), directions: array(v, [2, 6, 12]), maxSamples: 2 }, cpu);
  const b = await evaluatePenalty(load('dcgan.onnx'), { latents: array(z.slice(0, 24), [2, 12]), directions: array(vSub, [2, 2, 12]) }, cpu);
  t.same(a.layers[0].perSample, b.layers[0].perSample);
  const r = await cli('penalty', modelPath('dcgan.onnx'), '--samples', '4', '--max-samples', '0');
  t.match(r.stderr, /request\.maxSamples: must be at least 1/);
});

t.test('NaN in a layer makes that layer invalid with a warning, never a silent max', async (t) => {
  const z = Float32Array.from([1, 2, -1, 3]); // log(-1) is NaN
  const result = await evaluatePenalty(load('log.onnx'), { latents: array(z, [2, 2]), seed: 1 }, cpu);
  t.equal(result.layers[0].penalty, null);
  t.equal(result.penalty, null, 'the total is undefined too');
  t.equal(result.layers[0].perSample[0] !== null, true, 'the clean sample keeps its number');
  t.match(result.warnings.find((w) => w.code === 'non_finite_output')?.message, /layer 'y' produced NaN or infinite second differences in 1 elements/);
});
