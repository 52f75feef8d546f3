/**
 * The Hessian's, activeness's and orthogonality's in-graph estimators through the real path (issue
 * 13, item 1): the suffix in a companion session (run/graph-suffix.ts), its figures folded by the
 * same accumulators as the host's rows (HessianAccumulator.slots, ActivenessAccumulator.unitSums,
 * OrthogonalityAccumulator.norms).
 *
 * Tolerances. Both estimators accumulate in float64 from the same float32 rows. The Hessian
 * suffix computes W(1)·G / ε² (exact products, the host's division) and reduces in onnxruntime's
 * order, so the figures differ by the rounding of their sums only: measured ≤ 5e-14 relative on
 * every model here; checked at 1e-9 (issue 13 asks for 1e-6). Orthogonality's variance over k
 * norms cancels (relative rounding grows by ‖Jv‖²/Var): measured up to 2e-11, still under 1e-9. Exact zeros (linear layers) are
 * exactly zero on both. Against the analytic Hessians, the float32 rounding of the rows bounds the
 * error (about 4u·|g|/ε², math/hessian.ts): 1e-5 at ε = 0.5, as test/audit-engine.test.ts.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { AuditRequestSchema, DEFAULT_LIMITS, parseRequest } from '../dist/contract/request.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { appendOrthogonalitySuffix } from '../dist/onnx/suffix.js';
import { cli } from './helpers/cli.js';
import { batchTiledModel, encode, linearModel } from './helpers/onnx-build.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const model = (name: string) => loadModel(new Uint8Array(readFileSync(new URL(`../models/${name}`, import.meta.url))));
const sessions = new SessionCache(4);
t.teardown(() => sessions.clear());
const context = { device: { kind: 'cpu' as const }, sessions, limits: DEFAULT_LIMITS };
const evaluate = (metric: string, name: string, body: Record<string, unknown>, limits = DEFAULT_LIMITS): Promise<any> =>
  evaluateMetric(metric, model(name), parseRequest(body, {}, AuditRequestSchema), { ...context, limits });

/** Largest relative difference over every number of two results' figures (NaN/null must match). */
function worstRelative(a: unknown, b: unknown, path = ''): { worst: number; at: string } {
  if (typeof a === 'number' && typeof b === 'number') {
    const r = a === b ? 0 : Math.abs(a - b) / Math.abs(b);
    return { worst: r, at: path };
  }
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return { worst: a === b ? 0 : Infinity, at: path };
  let best = { worst: 0, at: '' };
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    const r = worstRelative((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], `${path}.${key}`);
    if (r.worst > best.worst) best = r;
  }
  return best;
}

/** The figures of a result, without how it ran (estimator, bytes, batches, timings). */
const figures = (r: any) => ({ penalty: r.penalty, score: r.score, layers: r.layers, unused: r.unused, rows: r.rows, rowsPerSample: r.rowsPerSample });

const CONDITIONAL = { label: { type: 'int64', shape: [2], data: [0, 2] }, truncation: { shape: [1], data: [0.7] } };
/** Every example model the three metrics accept (noisy.onnx: refused, random ops; bn_train.onnx: rows interact, below). */
const MODELS: { name: string; body?: Record<string, unknown>; hessian?: false }[] = [
  { name: 'cubic.onnx' },
  { name: 'quadratic.onnx' },
  { name: 'separable.onnx' },
  { name: 'ignoring.onnx' },
  { name: 'linear_correlated.onnx' },
  { name: 'linear_orthogonal.onnx' },
  { name: 'log.onnx' },
  { name: 'mlp.onnx' },
  { name: 'conditional.onnx', body: { inputs: CONDITIONAL } },
  { name: 'dcgan.onnx' },
  { name: 'dcgan_entangled.onnx' },
  { name: 'dcgan_smooth.onnx' },
  { name: 'vae_decoder.onnx' },
  { name: 'stylegan2.onnx' },
  { name: 'noise_conv_in.onnx' },
  { name: 'noise_dc_residual.onnx' },
  { name: 'noise_mlp.onnx' },
  { name: 'noise_offset_ln.onnx' },
  { name: 'noise_residual_ln.onnx' },
  // d = 100 and a 512-wide w: a sample's d² + d + 1 rows and their suffix tensors exceed the memory
  // budget, so the Hessian's graph estimator refuses (tested below on dcgan with batchRows < R).
  { name: 'dcgan64.onnx', hessian: false },
  { name: 'stylegan2_synthesis.onnx', hessian: false },
];

for (const m of MODELS) {
  const metrics = m.hessian === false ? ['activeness', 'orthogonality'] : ['hessian', 'activeness', 'orthogonality'];
  t.test(`${m.name}: graph and host estimators agree (${metrics.join(', ')})`, async (t) => {
    for (const metric of metrics) {
      const body = { latents: { samples: 2 }, seed: 3, ...m.body };
      const host = await evaluate(metric, m.name, { ...body, estimator: 'host' });
      const graph = await evaluate(metric, m.name, { ...body, estimator: 'graph' });
      t.same([host.estimator, graph.estimator], ['host', 'graph'], metric);
      t.notOk(graph.warnings.some((w: { code: string }) => w.code === 'estimator_host'));
      const { worst, at } = worstRelative(figures(graph), figures(host));
      t.ok(worst <= 1e-9, `${metric}: worst relative difference ${worst.toExponential(2)} ≤ 1e-9 (at ${at})`);
      t.ok(graph.fetchedBytes > 0 && host.fetchedBytes > 0);
    }
    sessions.clear();
  });
}

t.test('cubic G = [z0·z1, z0²·z1]: the graph Hessian is the analytic one, per sample', async (t) => {
  const latents = [[0.5, -1], [1.5, 0.25]];
  for (const [element, layer] of [[0, 0], [0, 1]] as const) {
    const body = { latents, epsilon: 0.5, reduction: 'mean', element, layers: [layer === 0 ? 'y0' : 'y1'], estimator: 'graph' };
    const r = await evaluate('hessian', 'cubic.onnx', body);
    t.equal(r.estimator, 'graph');
    const l = r.layers[0];
    latents.forEach(([z0, z1], n) => {
      // y0: H = [[0, 1], [1, 0]], penalty 2·Σ_{i≠j} H² = 4; y1: H = [[2z1, 2z0], [2z0, 0]], penalty 16·z0².
      const H = layer === 0 ? [[0, 1], [1, 0]] : [[2 * z1, 2 * z0], [2 * z0, 0]];
      const penalty = layer === 0 ? 4 : 16 * z0 * z0;
      t.ok(Math.abs(l.perSample[n] - penalty) <= 1e-5 * Math.max(1, penalty), `y${layer} sample ${n}: penalty ${l.perSample[n]} vs ${penalty}`);
      l.elementHessian[n].forEach((row: number[], i: number) => row.forEach((v, j) => t.ok(Math.abs(v - H[i][j]) <= 1e-5, `H${i}${j} ${v} vs ${H[i][j]}`)));
    });
  }
});

t.test('quadratic zᵀAz: the graph Hessian is A + Aᵀ, penalty 33, for every sample', async (t) => {
  const A = [[1, 2, 0, -1], [0, 3, 1, 0], [0.5, 0, -2, 1], [0, 1, 0, 1]];
  const H = A.map((row, i) => row.map((x, j) => x + A[j][i]));
  const r = await evaluate('hessian', 'quadratic.onnx', { latents: { samples: 4 }, seed: 2, epsilon: 0.5, element: 0, estimator: 'graph' });
  t.equal(r.estimator, 'graph');
  const l = r.layers[0];
  t.ok(Math.abs(l.penalty - 33) <= 33e-5, `penalty ${l.penalty}`);
  for (const h of l.elementHessian) h.forEach((row: number[], i: number) => row.forEach((v, j) => t.ok(Math.abs(v - H[i][j]) <= 1e-5 * Math.max(1, Math.abs(H[i][j])))));
  l.interaction.forEach((row: number[], i: number) => row.forEach((v, j) => t.ok(Math.abs(v - H[i][j] ** 2) <= 1e-5 * Math.max(1, H[i][j] ** 2))));
  t.equal(l.diagonalFraction, 1);
});

t.test('along a basis: the rows carry the directions, so the suffixes serve it unchanged (quadratic: Q H Qᵀ)', async (t) => {
  const A = [[1, 2, 0, -1], [0, 3, 1, 0], [0.5, 0, -2, 1], [0, 1, 0, 1]];
  const H = A.map((row, i) => row.map((x, j) => x + A[j][i]));
  const [c, s] = [Math.cos(0.3), Math.sin(0.3)];
  const Q = [[c, s, 0, 0], [0, 0, -s, c]];
  const QHQ = Q.map((qi) => Q.map((qj) => qi.reduce((sum, a, x) => sum + a * qj.reduce((r, b, y) => r + H[x][y] * b, 0), 0)));
  const body = { latents: { samples: 3 }, seed: 9, k: 2, epsilon: 0.5, basis: Q };
  for (const metric of ['hessian', 'orthogonality']) {
    const graph = await evaluate(metric, 'quadratic.onnx', { ...body, estimator: 'graph' });
    const host = await evaluate(metric, 'quadratic.onnx', { ...body, estimator: 'host' });
    t.same([graph.estimator, graph.basis], ['graph', 2]);
    const { worst } = worstRelative(figures(graph), figures(host));
    t.ok(worst <= 1e-9, `${metric} along Q: ${worst.toExponential(2)}`);
    if (metric === 'hessian') t.ok(Math.abs(graph.penalty - 4 * QHQ[0][1] ** 2) <= 1e-5 * Math.max(1, 4 * QHQ[0][1] ** 2), `exact along Q: ${graph.penalty} vs ${4 * QHQ[0][1] ** 2}`);
  }
});

t.test('bytes out of onnxruntime: per sample, not per row, and independent of the batching', async (t) => {
  // dcgan: d = 12, R = 157 rows per sample, the image layer E = 3·32·32 elements.
  const d = 12;
  const R = d * d + d + 1;
  const E = 3 * 32 * 32;
  for (const samples of [2, 8]) {
    // 8 samples = 1,256 rows: the session tunes its batch size (below R it is raised to one sample).
    for (const batchRows of [undefined, R, 3 * R]) {
      const body = { latents: { samples }, seed: 1, layers: ['image'], estimator: 'graph', ...(batchRows ? { batchRows } : {}) };
      const graph = await evaluate('hessian', 'dcgan.onnx', body);
      t.equal(graph.estimator, 'graph');
      // Per slot: 5 figures per element, d² interaction sums and max |g(z)|, float64.
      t.equal(graph.fetchedBytes, samples * (5 * E + d * d + 1) * 8, `hessian N=${samples} batchRows=${batchRows}: ${graph.batches} batches`);
      const element = await evaluate('hessian', 'dcgan.onnx', { ...body, element: 5 });
      t.equal(element.fetchedBytes, samples * (5 * E + 2 * d * d + 1) * 8, 'with element: its d² entries per sample more');
      const activeness = await evaluate('activeness', 'dcgan.onnx', body);
      t.equal(activeness.fetchedBytes, samples * d * 8 + 16 * activeness.batches, 'activeness: one float64 per latent and sample, whatever the layer size (and [rows, E] per batch)');
      const orthogonality = await evaluate('orthogonality', 'dcgan.onnx', { ...body, k: 6 });
      t.equal(orthogonality.fetchedBytes, samples * 6 * 8 + 16 * orthogonality.batches, 'orthogonality: k float64 per sample, whatever the layer size (and [rows, E] per batch)');
    }
    const host = await evaluate('hessian', 'dcgan.onnx', { latents: { samples }, seed: 1, layers: ['image'], estimator: 'host' });
    t.equal(host.fetchedBytes, samples * R * E * 4, 'the host copies every float32 row');
    const hostActiveness = await evaluate('activeness', 'dcgan.onnx', { latents: { samples }, seed: 1, layers: ['image'], estimator: 'host' });
    t.equal(hostActiveness.fetchedBytes, samples * 3 * d * E * 4);
  }
});

t.test('graph asked for where it cannot serve: the host reduces, with estimator_host saying why', async (t) => {
  for (const metric of ['hessian', 'activeness', 'orthogonality']) {
    const interacting = await evaluate(metric, 'bn_train.onnx', { latents: { samples: 4 }, seed: 5, estimator: 'graph' });
    t.equal(interacting.estimator, 'host', `${metric}: rows interact`);
    const warning = interacting.warnings.find((w: { code: string }) => w.code === 'estimator_host');
    t.match(warning?.message, /reduced on the host, not in the graph: rows of a batch influence each other/);
    const auto = await evaluate(metric, 'bn_train.onnx', { latents: { samples: 4 }, seed: 5 });
    t.equal(auto.estimator, 'host');
    t.notOk(auto.warnings.some((w: { code: string }) => w.code === 'estimator_host'), 'no warning when the graph was not asked for');
  }
  // The Hessian suffix needs a sample's R = 157 rows in one batch.
  const small = await evaluate('hessian', 'dcgan.onnx', { latents: { samples: 2 }, seed: 1, batchRows: 100, estimator: 'graph' });
  t.equal(small.estimator, 'host');
  t.match(small.warnings.find((w: { code: string }) => w.code === 'estimator_host')?.message, /the Hessian's figures were reduced on the host.*157 rows in one batch, and batches hold 100 rows/);
  const tight = await evaluate('hessian', 'dcgan.onnx', { latents: { samples: 2 }, seed: 1, estimator: 'graph' }, { ...DEFAULT_LIMITS, memoryBudget: 16 * 1024 * 1024 });
  t.equal(tight.estimator, 'host', 'the suffix’s [d², E] tensors per sample (about 200 kB per row) do not fit 16 MiB');
  t.ok(tight.warnings.some((w: { code: string }) => w.code === 'estimator_host'));
  const cpu = await evaluate('hessian', 'mlp.onnx', { latents: { samples: 2 }, seed: 1 });
  t.equal(cpu.estimator, 'host', 'auto on the CPU: the host');
});

t.test('orthogonality: samples split over chunks repeat their center and fold in direction order', async (t) => {
  const body = { latents: { samples: 3 }, seed: 8, k: 5, layers: ['image'] };
  const host = await evaluate('orthogonality', 'dcgan.onnx', { ...body, estimator: 'host' });
  for (const batchRows of [2, 4, 7]) {
    const graph = await evaluate('orthogonality', 'dcgan.onnx', { ...body, estimator: 'graph', batchRows });
    t.equal(graph.estimator, 'graph');
    t.ok(graph.rows > host.rows, `batchRows ${batchRows}: ${graph.rows - host.rows} centers run again`);
    const { worst } = worstRelative(graph.layers[0].perSample, host.layers[0].perSample);
    t.ok(worst <= 1e-9, `batchRows ${batchRows}: worst relative difference ${worst.toExponential(2)}`);
  }
});

t.test('a model of an older opset: the suffixes refuse, the host reduces, estimator_host names the opset', async (t) => {
  const old = loadModel(encode(linearModel({}, { opsetImport: [{ domain: '', version: 10 }] })));
  for (const [metric, needed] of [['hessian', 13], ['activeness', 11], ['orthogonality', 11]] as const) {
    const r: any = await evaluateMetric(metric, old, parseRequest({ latents: { samples: 2 }, seed: 1, estimator: 'graph' }, {}, AuditRequestSchema), context);
    t.equal(r.estimator, 'host', metric);
    t.match(r.warnings.find((w: { code: string }) => w.code === 'estimator_host')?.message, new RegExp(`suffix needs opset ${needed} or later, and the model imports opset 10`));
  }
});

t.test('orthogonality suffix argument errors', async (t) => {
  const bytes = modelBytes('mlp.onnx');
  t.throws(() => appendOrthogonalitySuffix(bytes, { layers: [] }), /at least one layer/);
  t.throws(() => appendOrthogonalitySuffix(bytes, { layers: ['out'], opset: 10 }), /opset 11 or later/);
  const f32 = appendOrthogonalitySuffix(bytes, { layers: ['out'], accumulation: 'float32' });
  t.same([f32.accumulation, f32.fetches.length], ['float32', 2]);
});

t.test('a per-row output size that grows with the batch: output_shape_changed on the graph path too', async (t) => {
  const tiled = loadModel(encode(batchTiledModel()));
  for (const metric of ['hessian', 'activeness', 'orthogonality']) {
    const request = parseRequest({ latents: { samples: 2 }, seed: 1, estimator: 'graph' }, {}, AuditRequestSchema);
    await t.rejects(evaluateMetric(metric, tiled, request, context), { code: 'output_shape_changed', message: /layer 'y' has \d+ elements per row in a stacked batch, but 6 were expected/ }, metric);
  }
});

t.test('the graph path keeps the row limit', async (t) => {
  const limits = { ...DEFAULT_LIMITS, maxRows: 40 };
  await t.rejects(evaluate('hessian', 'quadratic.onnx', { latents: { samples: 2 }, seed: 1, estimator: 'graph' }, limits), { code: 'hessian_too_large' });
  await t.rejects(evaluate('activeness', 'mlp.onnx', { latents: { samples: 2 }, seed: 1, estimator: 'graph' }, limits), { code: 'limit_exceeded' });
  await t.rejects(evaluate('orthogonality', 'mlp.onnx', { latents: { samples: 8 }, k: 5, seed: 1, estimator: 'graph' }, limits), { code: 'limit_exceeded' });
  await t.rejects(evaluate('penalty', 'mlp.onnx', { latents: { samples: 4 }, k: 5, seed: 1, noise: false, estimator: 'graph' }, limits), { code: 'limit_exceeded' });
});

t.test('the audit runs its Hessian and activeness on the estimator asked for', async (t) => {
  const body = { latents: { samples: 2 }, seed: 4, k: 3, noise: false };
  const graph = await evaluate('audit', 'mlp.onnx', { ...body, estimator: 'graph' });
  const parts = ['hessian', 'activeness', 'orthogonality'] as const;
  t.same([graph.penalty.estimator, ...parts.map((p) => graph[p].estimator)], ['graph', 'graph', 'graph', 'graph']);
  const host = await evaluate('audit', 'mlp.onnx', body);
  t.same([host.penalty.estimator, ...parts.map((p) => host[p].estimator)], ['host', 'host', 'host', 'host']);
  for (const part of parts) {
    t.ok(graph[part].fetchedBytes < host[part].fetchedBytes, `${part}: fewer bytes in the graph`);
    const { worst } = worstRelative(figures(graph[part]), figures(host[part]));
    t.ok(worst <= 1e-9, `${part}: ${worst}`);
  }
});

t.test('CLI --estimator and HTTP estimator give the same figures', async (t) => {
  const { app } = await startApp(t);
  const form = multipart([{ name: 'model', filename: 'mlp.onnx', data: modelBytes('mlp.onnx') }]);
  t.equal((await app.inject({ method: 'POST', url: '/v1/models', payload: form.payload, headers: form.headers })).statusCode, 201);
  for (const metric of ['hessian', 'activeness', 'orthogonality']) {
    const local = await cli(metric, modelPath('mlp.onnx'), '--samples', '2', '--seed', '6', '--estimator', 'graph', '--json');
    t.equal(local.code, 0, local.stderr);
    const res = await app.inject({
      method: 'POST',
      url: `/v1/models/${sha256(modelBytes('mlp.onnx'))}/${metric}`,
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ latents: { samples: 2 }, seed: 6, estimator: 'graph' }),
    });
    t.equal(res.statusCode, 200, res.body);
    const [a, b] = [JSON.parse(local.stdout), res.json()];
    t.same([a.estimator, b.estimator], ['graph', 'graph']);
    t.equal(a.fetchedBytes, b.fetchedBytes);
    t.same(figures(a), figures(b), `${metric}: the same figures`);
  }
});
