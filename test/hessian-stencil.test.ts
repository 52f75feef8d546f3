/**
 * The d² + d + 1 stencil (issue 13) against the figures of the 2d² + 1 four-point mixed differences
 * it replaced, on the example models: test/fixtures/hessian-mixed-stencil.json holds the hessian
 * fields of test/fixtures/pinned/results.json as the old code wrote them (commit 572442b), for the
 * same requests (cases.json). Tolerances, and why:
 * - quadratic.onnx: both stencils are exact on quadratics, so only float32 rounding of g differs,
 *   about 4u|g|/ε² ≈ 2e-4 per entry at ε = 0.1 (|g| ≈ 10): 1e-4 relative on the squared figures,
 *   1e-3 absolute on H (entries of size 1 to 6).
 * - dcgan_smooth.onnx (tanh/sigmoid, smooth): the two stencils' O(ε²) truncation errors differ
 *   (steps ε and 2ε on the diagonal, different pair points) and so does their rounding; measured
 *   1.6e-3 relative on the penalty at ε = 0.05, 6e-4 at ε = 0.1: 5e-3 relative on the penalty,
 *   the diagonal ratio and the interaction matrix (relative to its largest entry), 2e-3 absolute
 *   on the diagonal fraction, 1e-2 on the heatmap (relative to its largest value).
 * - separable.onnx: the true penalty is 0; both are rounding noise, each below its own noise floor.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { AuditRequestSchema, DEFAULT_LIMITS, parseRequest } from '../dist/contract/request.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const read = (path: string) => JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8'));
const before = read('./fixtures/hessian-mixed-stencil.json') as Record<string, any>;
const cases = read('./fixtures/pinned/cases.json') as { name: string; metric: string; model: string; request: unknown }[];
const sessions = new SessionCache(4);
t.teardown(() => sessions.clear());
const context = { device: { kind: 'cpu' as const }, sessions, limits: DEFAULT_LIMITS };

async function now(name: string): Promise<any> {
  const c = cases.find((x) => x.name === name)!;
  const model = loadModel(new Uint8Array(readFileSync(new URL(`../models/${c.model}`, import.meta.url))));
  const result: any = await evaluateMetric(c.metric as 'hessian', model, parseRequest(c.request, {}, AuditRequestSchema), context);
  return c.metric === 'audit' ? result.hessian : result;
}

const relative = (x: number, y: number) => Math.abs(x - y) / Math.abs(y);
const worst = (xs: number[], ys: number[]) => Math.max(...xs.map((x, i) => Math.abs(x - ys[i]))) / Math.max(...ys.map(Math.abs));

t.test('quadratic: both stencils exact, equal to float32 rounding; fewer rows', async (t) => {
  const [r, old] = [await now('hessian-quadratic'), before['hessian-quadratic']];
  t.equal(r.rowsPerSample, 21);
  t.equal(old.rowsPerSample, 33);
  t.ok(relative(r.penalty, old.penalty) < 1e-4, `penalty ${r.penalty} vs ${old.penalty}`);
  const [l, o] = [r.layers[0], old.layers[0]];
  t.ok(worst(l.interaction.flat(), o.interaction.flat()) < 1e-4, 'interaction');
  t.ok(relative(l.diagonalRatio, o.diagonalRatio) < 1e-4, `diagonal ratio ${l.diagonalRatio} vs ${o.diagonalRatio}`);
  t.equal(l.diagonalFraction, o.diagonalFraction);
  const h = l.elementHessian.flat(2) as number[];
  const g = o.elementHessian.flat(2) as number[];
  t.ok(Math.max(...h.map((x, i) => Math.abs(x - g[i]))) < 1e-3, 'element Hessian');
});

for (const name of ['hessian-dcgan-smooth', 'audit-dcgan-smooth']) {
  t.test(`${name}: within the stencils' O(ε²) difference`, async (t) => {
    const [r, old] = [await now(name), before[name]];
    t.equal(r.rowsPerSample, 157);
    t.equal(r.rows, 2 * 157);
    t.ok(relative(r.penalty, old.penalty) < 5e-3, `penalty ${r.penalty} vs ${old.penalty} at ε ${r.epsilon}`);
    const [l, o] = [r.layers[0], old.layers[0]];
    l.perSample.forEach((x: number, n: number) => t.ok(relative(x, o.perSample[n]) < 5e-3, `sample ${n}`));
    t.ok(worst(l.interaction.flat(), o.interaction.flat()) < 5e-3, 'interaction');
    t.ok(relative(l.diagonalRatio, o.diagonalRatio) < 5e-3, `diagonal ratio ${l.diagonalRatio} vs ${o.diagonalRatio}`);
    t.ok(Math.abs(l.diagonalFraction - o.diagonalFraction) < 2e-3, `diagonal fraction ${l.diagonalFraction} vs ${o.diagonalFraction}`);
    t.ok(worst(l.heatmap.values.flat(), o.heatmap.values.flat()) < 1e-2, 'heatmap');
  });
}

t.test('separable: the exact penalty 0 is rounding noise under both stencils, each below its floor', async (t) => {
  const [r, old] = [await now('audit-separable'), before['audit-separable']];
  t.equal(r.rowsPerSample, 13);
  t.equal(r.layers[0].diagonalFraction, 1);
  t.ok(r.penalty < r.layers[0].noiseFloor && old.penalty < old.layers[0].noiseFloor);
  t.ok(r.warnings.some((w: { code: string }) => w.code === 'below_noise_floor'));
});
