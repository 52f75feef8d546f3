import t from 'tap';
import {
  evaluateActiveness,
  evaluateAudit,
  evaluateHessian,
  evaluateOrthogonality,
} from '../dist/metrics/evaluate.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import type { MetricRequest as AuditRequest } from '../dist/contract/request.js';
import { loadModel } from '../dist/runtime/model.js';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { SessionCache } from '../dist/runtime/session.js';
import type { NDArray } from '../dist/io/ndarray.js';
import { modelBytes } from './helpers/reference.js';

const sessions = new SessionCache(8);
t.teardown(() => sessions.clear());
const context = { device: { kind: 'cpu' as const }, sessions };
const model = (name: string) => loadModel(modelBytes(name));
const array = (shape: number[], values: number[]): NDArray => ({ type: 'float64', shape, data: Float64Array.from(values) });

// models/export.py: G(z) = zᵀAz, so H = A + Aᵀ everywhere.
const A = [
  [1, 2, 0, -1],
  [0, 3, 1, 0],
  [0.5, 0, -2, 1],
  [0, 1, 0, 1],
];
const H = A.map((row, i) => row.map((a, j) => a + A[j][i]));
const offSquares = (m: number[][]) => m.reduce((s, row, i) => s + row.reduce((r, x, j) => r + (i === j ? 0 : x * x), 0), 0);
/** All 2^d sign patterns: the biased variance over them is the population variance, exactly. */
const allSigns = (d: number) => Array.from({ length: 2 ** d }, (_, m) => Array.from({ length: d }, (_, i) => ((m >> i) & 1 ? -1 : 1)));
const close = (a: number, b: number, rel: number) => Math.abs(a - b) <= rel * Math.max(Math.abs(b), 1);

t.test('quadratic zᵀAz: interaction = (A+Aᵀ)_ij², exact penalty = 2·Σ_{i≠j}(A+Aᵀ)_ij², to float rounding', async (t) => {
  for (const reduction of ['max', 'mean'] as const) {
    const r = await evaluateHessian(model('quadratic.onnx'), { latents: { samples: 5 }, seed: 3, epsilon: 0.5, reduction, element: 0 }, context);
    const layer = r.layers[0];
    t.equal(r.rowsPerSample, 4 * 4 + 4 + 1);
    t.equal(r.rows, 5 * 21);
    t.equal(r.latents, 4);
    const expected = 2 * offSquares(H);
    t.equal(expected, 33);
    t.ok(close(layer.penalty as number, expected, 1e-5), `${reduction}: penalty ${layer.penalty} vs ${expected}`);
    layer.interaction.forEach((row, i) =>
      row.forEach((v, j) => t.ok(close(v, H[i][j] ** 2, 1e-5), `interaction ${i},${j}: ${v} vs ${H[i][j] ** 2}`)),
    );
    for (const h of layer.elementHessian!) h.forEach((row, i) => row.forEach((v, j) => t.ok(close(v, H[i][j], 1e-5), `H ${i},${j}`)));
    // Each element's largest |H| is the diagonal 6 (row 1); mean |diag| 14/4 over mean |off| 13/12.
    t.equal(layer.diagonalFraction, 1);
    t.ok(close(layer.diagonalRatio, 3.5 / (13 / 12 + 1e-8), 1e-5), `ratio ${layer.diagonalRatio}`);
  }
});

t.test('separable generator: the Hessian is diagonal (fraction 1) and the exact penalty is 0 to rounding', async (t) => {
  const r = await evaluateHessian(model('separable.onnx'), { latents: { samples: 6 }, seed: 5 }, context);
  const layer = r.layers[0];
  t.equal(layer.diagonalFraction, 1);
  t.ok((layer.penalty as number) >= 0 && (layer.penalty as number) < layer.noiseFloor, `penalty ${layer.penalty} under the rounding floor ${layer.noiseFloor}`);
  // float32 rounding of the seven-point pair stencil: about 4u|g|/ε² per entry (math/hessian.ts).
  t.ok(layer.noiseFloor < 1e-5, 'the floor itself is small');
  const diagonal = Math.min(...layer.interaction.map((row, i) => row[i]));
  const off = Math.max(...layer.interaction.flatMap((row, i) => row.filter((_, j) => j !== i)));
  t.ok(off < 1e-6 * diagonal, `off-diagonal ${off} vs diagonal ${diagonal}`);
  t.ok(r.warnings.some((w) => w.code === 'below_noise_floor' && /read it as 0/.test(w.message)));
});

t.test('a latent the model ignores has activeness exactly 0 and is listed unused', async (t) => {
  const r = await evaluateActiveness(model('ignoring.onnx'), { latents: { samples: 4 }, seed: 2 }, context);
  const [layer] = r.layers;
  t.equal(layer.activeness[3], 0);
  t.ok(layer.activeness.slice(0, 3).every((a) => (a as number) > 0.01), `used latents: ${layer.activeness}`);
  t.same(layer.unused, [3]);
  t.same(r.unused, [3]);
  t.equal(r.rows, 4 * 12);
  t.equal(r.extent, 2);
  // z2 only enters through tanh(z2): variance of tanh over {−2, 0, 2} is tanh(2)², averaged over the 3 outputs.
  const raised = await evaluateActiveness(model('ignoring.onnx'), { latents: { samples: 1 }, seed: 2, extent: 2 }, context);
  t.ok(close(raised.layers[0].activeness[2] as number, Math.tanh(2) ** 2 / 3, 1e-6), `z2: ${raised.layers[0].activeness[2]}`);
});

t.test('orthogonality: 0 for orthogonal columns, 2·Σ_{i≠j}(WᵀW)_ij² = 4 for the correlated ones', async (t) => {
  const orthogonal = await evaluateOrthogonality(model('linear_orthogonal.onnx'), { latents: { samples: 6 }, seed: 1, k: 16, epsilon: 1 }, context);
  t.ok(Math.abs(orthogonal.score as number) < 1e-8, `orthogonal: ${orthogonal.score}`);
  t.equal(orthogonal.rows, 6 * 17);
  // All 8 sign patterns per sample and the biased variance: the population variance, exactly 4.
  const samples = 3;
  const patterns = allSigns(3);
  const directions = array([8, samples, 3], patterns.flatMap((v) => Array.from({ length: samples }, () => v).flat()));
  const correlated = await evaluateOrthogonality(
    model('linear_correlated.onnx'),
    { latents: { samples }, seed: 1, directions, variance: 'biased', epsilon: 1 },
    context,
  );
  t.ok(close(correlated.score as number, 4, 1e-5), `correlated: ${correlated.score}`);
  t.equal(correlated.directions, 'explicit');
  for (const s of correlated.layers[0].perSample) t.ok(close(s as number, 4, 1e-5));
});

// dcgan_smooth.onnx is dcgan.onnx's architecture with SiLU for LeakyReLU (docs/audit.md: a
// piecewise-linear G has no Hessian off its kinks, and both finite-difference figures grow like 1/ε).
t.test('on the conv example the stochastic penalty with large k agrees with the exact one within its standard error', async (t) => {
  const request = { latents: { samples: 12 }, seed: 11, reduction: 'mean' as const, epsilon: 0.1 };
  const exact = await evaluateHessian(model('dcgan_smooth.onnx'), request, context);
  const stochastic = await evaluatePenalty(model('dcgan_smooth.onnx'), { ...request, k: 96 }, context);
  t.notOk(exact.warnings.some((w) => w.code === 'piecewise_linear'));
  t.ok((exact.penalty as number) > 100 * exact.layers[0].noiseFloor, 'well above the rounding floor');
  // Per sample the two differ only by the random directions: the standard error of the mean difference.
  const diff = stochastic.layers[0].perSample.map((s, n) => (s as number) - (exact.layers[0].perSample[n] as number));
  const mean = diff.reduce((a, b) => a + b) / diff.length;
  const sd = Math.sqrt(diff.reduce((a, b) => a + (b - mean) ** 2, 0) / (diff.length - 1));
  const se = sd / Math.sqrt(diff.length);
  t.ok(Math.abs(mean) < 3 * se, `mean difference ${mean} within 3 standard errors (${se})`);
  t.ok(se < 0.1 * (exact.layers[0].penalty as number), `the standard error ${se} is small next to the penalty ${exact.layers[0].penalty}`);
  t.ok(close(stochastic.penalty as number, exact.penalty as number, 0.15), `${stochastic.penalty} vs ${exact.penalty}`);
});

t.test('basis: identity equals the plain penalty; a rotated basis gives the analytic value for the quadratic', async (t) => {
  const identity = array([4, 4], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  const base = { latents: { samples: 3 }, seed: 9, k: 6, epsilon: 0.5 };
  const plain = await evaluatePenalty(model('quadratic.onnx'), base, context);
  const along = await evaluatePenalty(model('quadratic.onnx'), { ...base, basis: identity }, context);
  t.same(along.layers[0].perSample, plain.layers[0].perSample);
  const plainOrtho = await evaluateOrthogonality(model('quadratic.onnx'), base, context);
  const alongOrtho = await evaluateOrthogonality(model('quadratic.onnx'), { ...base, basis: identity }, context);
  t.same(alongOrtho.layers[0].perSample, plainOrtho.layers[0].perSample);

  // Rotations by 0.3 in the (z0, z1) plane and 1.1 in (z2, z3): the Hessian along Q is Q H Qᵀ.
  const [c1, s1, c2, s2] = [Math.cos(0.3), Math.sin(0.3), Math.cos(1.1), Math.sin(1.1)];
  const Q = [
    [c1, s1, 0, 0],
    [-s1, c1, 0, 0],
    [0, 0, c2, s2],
    [0, 0, -s2, c2],
  ];
  const QHQ = Q.map((qi) => Q.map((qj) => qi.reduce((s, a, x) => s + a * qj.reduce((r, b, y) => r + H[x][y] * b, 0), 0)));
  const expected = 2 * offSquares(QHQ);
  const basis = array([4, 4], Q.flat());
  const hessian = await evaluateHessian(model('quadratic.onnx'), { ...base, basis }, context);
  t.equal(hessian.basis, 4);
  t.ok(close(hessian.penalty as number, expected, 1e-5), `exact along Q: ${hessian.penalty} vs ${expected}`);
  hessian.layers[0].interaction.forEach((row, i) => row.forEach((v, j) => t.ok(close(v, QHQ[i][j] ** 2, 1e-4), `(QHQᵀ)² ${i},${j}`)));
  // The stochastic penalty with all 16 sign patterns in w-space (biased variance) is the same number.
  const samples = 3;
  const directions = array([16, samples, 4], allSigns(4).flatMap((v) => Array.from({ length: samples }, () => v).flat()));
  const stochastic = await evaluatePenalty(model('quadratic.onnx'), { ...base, basis, directions, variance: 'biased', k: 16 }, context);
  t.ok(close(stochastic.penalty as number, expected, 1e-5), `stochastic along Q: ${stochastic.penalty} vs ${expected}`);
  t.not(Math.round(expected * 1e3), 33_000, 'the rotation changes the value');
});

t.test('per-pass execution gives the same figures as stacked rows', async (t) => {
  const request: AuditRequest = { latents: { samples: 3 }, seed: 4, k: 3, epsilon: 0.5 };
  for (const evaluate of [evaluateHessian, evaluateActiveness, evaluateOrthogonality]) {
    const stacked = await evaluate(model('cubic.onnx'), request, context);
    const perPass = await evaluate(model('cubic.onnx'), { ...request, mode: 'per-pass' }, context);
    t.equal(perPass.mode, 'per-pass');
    t.same(JSON.parse(JSON.stringify(perPass.layers)), JSON.parse(JSON.stringify(stacked.layers)), `${stacked.metric}`);
  }
});

t.test('a small memory budget splits the work into many batches with the same result', async (t) => {
  const request = { latents: { samples: 2 }, seed: 4, epsilon: 0.5 };
  const whole = await evaluateHessian(model('quadratic.onnx'), request, context);
  // The Hessian's float64 state for two samples in flight (8 + 2·(48 + 8·5) bytes, d = 5) and 72 bytes of rows: 2 rows a batch.
  const split = await evaluateHessian(model('quadratic.onnx'), request, { ...context, limits: { ...DEFAULT_LIMITS, memoryBudget: 8 + 2 * 88 + 3 * 24 } });
  t.ok(split.batches > 10, `${split.batches} batches`);
  t.same(split.layers[0].interaction, whole.layers[0].interaction);
  t.equal(split.penalty, whole.penalty);
});

t.test('audit runs every metric on one set of latents', async (t) => {
  const request = { latents: { samples: 3 }, seed: 21, k: 4 };
  const events: string[] = [];
  const audit = await evaluateAudit(model('dcgan.onnx'), request, { ...context, previews: true, onProgress: (_d, _t, stage) => events.push(stage) });
  const hessian = await evaluateHessian(model('dcgan.onnx'), request, context);
  const penalty = await evaluatePenalty(model('dcgan.onnx'), request, context);
  t.same(audit.hessian!.layers[0].interaction, hessian.layers[0].interaction);
  t.same(audit.penalty.layers[0].perSample, penalty.layers[0].perSample);
  t.equal(audit.latents, 12);
  t.ok(audit.warnings.some((w) => w.code === 'piecewise_linear' && /LeakyRelu/.test(w.message)));
  t.equal(audit.activeness.layers[0].activeness.length, 12);
  // With previews (the report) the audit adds the traversal grid, sorted by its own activeness.
  // N = 3: the step test would pass 25% more rows, so it does not run (halving_skipped).
  t.same(new Set(events), new Set(['penalty', 'noise', 'hessian', 'activeness', 'orthogonality', 'traversal']));
  t.match(audit.warnings.find((w) => w.code === 'halving_skipped')?.message, /with 3 samples one more at 2ε alone \(8 rows\) is more than 25% of the request's 27 rows; pass stepTest: true/);
  t.same(audit.traversal!.scores, audit.activeness.layers[0].activeness, 'the audit’s activeness orders the traversal');
  t.equal(audit.previews!.length, 1);
  t.same(audit.previews![0].shape, [3, 32, 32]);
  t.equal(audit.previews![0].images.length, 3);
  t.same([audit.hessian!.layers[0].heatmap!.height, audit.hessian!.layers[0].heatmap!.width], [32, 32]);
  // A random seed is drawn once and shared by every metric.
  const unseeded = await evaluateAudit(model('quadratic.onnx'), { latents: { samples: 2 } }, context);
  t.equal(unseeded.penalty.seed, unseeded.seed);
  t.equal(unseeded.hessian!.seed, unseeded.seed);
});

t.test('d too large for the row limit: hessian refuses and points to the stochastic penalty; audit skips it', async (t) => {
  const limits = { ...DEFAULT_LIMITS, maxRows: 20 };
  await t.rejects(evaluateHessian(model('quadratic.onnx'), { latents: { samples: 1 }, seed: 1 }, { ...context, limits }), {
    code: 'hessian_too_large',
    status: 422,
    message: /d²\+d\+1 = 21 forward rows per sample for d = 4 latents, above the limit of 20 rows; use the stochastic penalty/,
  });
  await t.rejects(
    evaluateHessian(model('quadratic.onnx'), { latents: { samples: 2 }, seed: 1 }, { ...context, limits: { ...DEFAULT_LIMITS, maxRows: 40 } }),
    { code: 'hessian_too_large', message: /N·\(d²\+d\+1\) = 2·21 = 42 forward rows.*use fewer samples, or the stochastic penalty/ },
  );
  const audit = await evaluateAudit(model('quadratic.onnx'), { latents: { samples: 1 }, seed: 1 }, { ...context, limits });
  t.equal(audit.hessian, null);
  t.ok(audit.warnings.some((w) => w.code === 'hessian_skipped' && /stochastic penalty/.test(w.message)));
  t.ok(audit.activeness.layers.length === 1);
  await t.rejects(
    evaluateOrthogonality(model('quadratic.onnx'), { latents: { samples: 2 }, seed: 1, k: 20 }, { ...context, limits }),
    { code: 'limit_exceeded', message: /needs 42 forward rows \(N·\(1\+k\) = 2·21\)/ },
  );
  await t.rejects(
    evaluateActiveness(model('quadratic.onnx'), { latents: { samples: 2 }, seed: 1 }, { ...context, limits }),
    { code: 'limit_exceeded', message: /needs 24 forward rows \(N·3d = 2·12\)/ },
  );
});

t.test('every audit setting a user can get wrong is refused with a clear message', async (t) => {
  const q = model('quadratic.onnx');
  const base = { latents: { samples: 2 }, seed: 1 };
  await t.rejects(evaluateActiveness(q, { ...base, extent: 0 }, context), { code: 'invalid_request', status: 400, message: /request\.extent: must be greater than 0/ });
  await t.rejects(evaluateActiveness(q, { ...base, threshold: -1 }, context), { code: 'invalid_request', message: /request\.threshold: must be at least 0/ });
  await t.rejects(evaluateHessian(q, { ...base, element: 1.5 }, context), { code: 'invalid_request', message: /request\.element: must be a whole number/ });
  await t.rejects(evaluateHessian(q, { ...base, element: 1 }, context), { code: 'invalid_element', status: 422, message: /element 1 is outside layer 'y', which has 1 elements/ });
  await t.rejects(evaluateActiveness(q, { ...base, basis: array([1, 4], [1, 0, 0, 0]) }, context), { code: 'invalid_argument', message: /not defined along a basis/ });
  await t.rejects(evaluateHessian(q, { ...base, basis: array([2, 3], [1, 0, 0, 0, 1, 0]) }, context), {
    code: 'shape_mismatch',
    status: 422,
    message: /basis has shape \[2, 3\] but its rows must be latent directions: m × \[4\]/,
  });
  await t.rejects(evaluateHessian(q, { ...base, basis: array([1, 4], [1, NaN, 0, 0]) }, context), { code: 'non_finite_input', message: /basis hold NaN at index \[0, 1\]/ });
  await t.rejects(
    evaluateOrthogonality(q, { ...base, basis: array([2, 4], [1, 0, 0, 0, 0, 1, 0, 0]), directions: array([2, 2, 4], new Array(16).fill(1)) }, context),
    { code: 'shape_mismatch', message: /directions have shape \[2, 2, 4\] but .* is \[2, 2, 2\]/ },
  );
});

t.test('the audit trusts a model as the penalty does: random ops refused, interacting rows run pass by pass', async (t) => {
  const base = { latents: { samples: 3 }, seed: 1, k: 2 };
  for (const evaluate of [evaluateHessian, evaluateActiveness, evaluateOrthogonality, evaluateAudit]) {
    await t.rejects(evaluate(model('noisy.onnx'), base, context), { code: 'nondeterministic_model', status: 422, message: /RandomNormalLike/ });
  }
  const allowed = await evaluateActiveness(model('noisy.onnx'), { ...base, allowNondeterministic: true }, context);
  t.ok(allowed.warnings.some((w) => w.code === 'nondeterministic_model'));
  const bn = await evaluateHessian(model('bn_train.onnx'), base, context);
  t.equal(bn.mode, 'per-pass');
  t.ok(bn.warnings.some((w) => w.code === 'rows_interact' && /each Hessian pass runs as its own batch of 3/.test(w.message)), JSON.stringify(bn.warnings));
  t.equal(bn.batches, 8 * 8 + 8 + 1, 'one batch of N rows per row of a sample');
});

t.test('extra inputs follow their sample into every audit row: conditional activeness equals a direct onnxruntime reference', async (t) => {
  const ort = await import('onnxruntime-node');
  const n = 3;
  const labels = [3, 1, 7];
  const z = Float32Array.from({ length: n * 8 }, (_, i) => Math.sin(i + 1));
  const inputs = {
    label: { type: 'int64' as const, shape: [n], data: BigInt64Array.from(labels.map(BigInt)) },
    truncation: { type: 'float64' as const, shape: [1], data: Float64Array.from([0.7]) },
  };
  const result = await evaluateActiveness(model('conditional.onnx'), { latents: { type: 'float32', shape: [n, 8], data: z }, inputs, extent: 1.5 }, context);
  // Reference: for each latent i, three separate runs of all N samples with z_i set, then the formula in float64.
  const session = await ort.InferenceSession.create(modelBytes('conditional.onnx'));
  const label = new ort.Tensor('int64', BigInt64Array.from(labels.map(BigInt)), [n]);
  const truncation = new ort.Tensor('float32', Float32Array.from([0.7]), [1]);
  for (let i = 0; i < 8; i++) {
    const outs: Float32Array[] = [];
    for (const value of [-1.5, 0, 1.5]) {
      const x = Float32Array.from(z);
      for (let s = 0; s < n; s++) x[s * 8 + i] = value;
      outs.push((await session.run({ z: new ort.Tensor('float32', x, [n, 8]), label, truncation })).out.data as Float32Array);
    }
    let sum = 0;
    for (let e = 0; e < outs[0].length; e++) {
      const m = (outs[0][e] + outs[1][e] + outs[2][e]) / 3;
      sum += ((outs[0][e] - m) ** 2 + (outs[1][e] - m) ** 2 + (outs[2][e] - m) ** 2) / 2;
    }
    const expected = sum / outs[0].length;
    t.ok(close(result.layers[0].activeness[i] as number, expected, 1e-6), `z${i}: ${result.layers[0].activeness[i]} vs ${expected}`);
  }
  await session.release();
});
