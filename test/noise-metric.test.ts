/**
 * The noise metric wired into the registry (issue 14): the measured floor through the real penalty
 * path against float64 ground truth (models/noise_*.onnx, models/noise_reference.json), the rows it
 * costs (6 on first use with the penalty's centre row, 0 on a cache hit, counted at the session),
 * `noise: false`, the noise metric alone, the gate's minNoiseMargin refusal, the CLI, HTTP and the
 * report.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { gateSpec } from '../dist/gate/config.js';
import { inProcess, runGate } from '../dist/gate/gate.js';
import { evaluateNoise, evaluatePenalty } from '../dist/metrics/evaluate.js';
import { MEASURED_NOISE_MARGIN } from '../dist/math/index.js';
import { renderReport } from '../dist/report/html.js';
import { tf32InEffect } from '../dist/runtime/cuda.js';
import { loadModel } from '../dist/runtime/model.js';
import { type OpenSession, SessionCache } from '../dist/runtime/session.js';
import type { Device } from '../dist/runtime/device.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { multipart, startApp } from './helpers/server.js';

interface Reference {
  latents: { shape: [number, number]; data: number[] };
  directions: { shape: number[]; data: number[] };
  k: number;
  models: Record<string, { epsilon: number; max: number; mean: number }[]>;
}
const reference = JSON.parse(readFileSync(modelPath('noise_reference.json'), 'utf8')) as Reference;
const [n, d] = reference.latents.shape;
const latents = { type: 'float32' as const, shape: [n, d], data: Float32Array.from(reference.latents.data) };
const directions = { type: 'float32' as const, shape: [reference.k, n, d], data: Float32Array.from(reference.directions.data) };

/** A session cache that counts the rows every session.run is fed (the first dimension of the wrt input). */
class CountingSessions extends SessionCache {
  rows = 0;
  private readonly wrapped = new WeakSet<OpenSession>();
  override async get(id: string, bytes: Uint8Array, layers: readonly string[], device: Device): Promise<OpenSession> {
    const open = await super.get(id, bytes, layers, device);
    if (!this.wrapped.has(open)) {
      this.wrapped.add(open);
      const run = open.session.run.bind(open.session);
      open.session.run = ((feeds: Record<string, { dims: readonly number[] }>, ...rest: unknown[]) => {
        this.rows += Number(feeds.z.dims[0]);
        return (run as (...a: unknown[]) => unknown)(feeds, ...rest);
      }) as typeof open.session.run;
    }
    return open;
  }
}


t.test('float64 truth through evaluatePenalty: off by more than its size → below_noise_floor; within 2% → none', async (t) => {
  const sessions = new SessionCache(8);
  t.teardown(() => sessions.clear());
  let warned = 0;
  let clean = 0;
  for (const [name, sweep] of Object.entries(reference.models)) {
    const model = loadModel(modelBytes(name));
    for (const [i, point] of sweep.entries()) {
      const r = await evaluatePenalty(model, { latents, directions, epsilon: point.epsilon }, { device: { kind: 'cpu' }, sessions });
      const layer = r.layers[0];
      // First request on this session measures (6 rows a try: the centre row is the penalty's; the
      // kinked models re-sample their kink lines at h/100), then the cache answers.
      t.same([r.noise!.cached, r.noise!.rows], i === 0 ? [false, 6 * r.noise!.tries.length] : [true, 0], `${name}@${point.epsilon}: rows spent`);
      // The step-halving: 2·2k rows on the first of the 8 samples, each ε a new key.
      t.same(r.halving, { samples: 1, factors: [2, 0.5], rows: 8, cached: false }, `${name}@${point.epsilon}: halving rows`);
      const relative = Math.abs(layer.penalty! - point.max) / point.max;
      const warning = r.warnings.find((w) => w.code === 'below_noise_floor' && w.layer === layer.name);
      const id = `${name}@${point.epsilon}`;
      const detail = `${id}: float32 ${layer.penalty!.toPrecision(4)}, float64 ${point.max.toPrecision(4)}, off ${(100 * relative).toPrecision(3)}%, floor ${layer.noise!.floor!.toPrecision(3)}`;
      t.equal(layer.noise!.belowFloor, warning !== undefined, `${id}: the flag and the warning agree`);
      if (relative > 1) {
        warned++;
        t.ok(warning, `warns: ${detail}`);
        // It names the recommended ε, which lies above this ε.
        const min = layer.noise!.recommendedEpsilon!.min!;
        t.ok(min > point.epsilon, `recommended ε ${min} > ${point.epsilon}`);
        t.match(warning!.message, `use epsilon >= ${min.toPrecision(2)}`);
      } else if (relative <= 0.02) {
        clean++;
        t.notOk(warning, `silent: ${detail}`);
      }
      // The old output-ulp floor keeps its value (pinned results depend on it).
      t.ok(layer.noiseFloor > 0 && layer.noiseFloor < layer.noise!.floor! * 1e6);
    }
  }
  t.ok(warned >= 15 && clean >= 20, `${warned} noisy points warned, ${clean} clean points silent`);
});

t.test('the sweep marks the noise-dominated points and gives the upper end of the range', async (t) => {
  const sessions = new SessionCache(2);
  t.teardown(() => sessions.clear());
  const truth = reference.models['noise_offset_ln.onnx'];
  const epsilons = truth.map((p) => p.epsilon);
  const r = await evaluatePenalty(loadModel(modelBytes('noise_offset_ln.onnx')), { latents, directions, epsilon: 0.1, epsilons }, { device: { kind: 'cpu' }, sessions });
  for (const [i, point] of r.sweep!.entries()) {
    const layer = point.layers[0];
    const relative = Math.abs(layer.penalty! - truth[i].max) / truth[i].max;
    if (relative > 1) t.equal(point.noiseDominated, true, `ε = ${point.epsilon} off ${(100 * relative).toFixed(0)}%: marked`);
    if (relative <= 0.02) t.equal(point.noiseDominated, false, `ε = ${point.epsilon} within 2%: not marked`);
    // Sweep points are judged by the floor alone (the halving runs at the request's ε).
    t.equal(layer.belowFloor, layer.penalty! < MEASURED_NOISE_MARGIN * layer.floor!);
  }
  const range = r.layers[0].noise!.recommendedEpsilon!;
  t.ok(range.usable && range.max !== null && range.min! < range.max!, `range [${range.min}, ${range.max}]`);
  // Inside the range the float32 penalty is within 5% of the ε → 0 float64 limit.
  const limit = truth[truth.length - 2].max;
  for (const [i, point] of truth.entries()) {
    if (point.epsilon >= range.min! && point.epsilon <= range.max!) {
      t.ok(Math.abs(r.sweep![i].layers[0].penalty! - limit) / limit < 0.05, `ε = ${point.epsilon} inside the range is accurate`);
    }
  }
  const text = (await cli('penalty', modelPath('noise_offset_ln.onnx'), '--seed', '1', '--epsilons', '0.1,0.001')).stdout;
  t.match(text, /^0\.001\s+\S+ \*/m, 'the text marks the noisy sweep point');
  t.match(text, /^0\.1\s+[\d.e-]+\s+[\d.e-]+$/m, 'and not the clean one');
});

t.test('rows counted at the session: 6 extra on first use, none on a cache hit, none with noise: false', async (t) => {
  const sessions = new CountingSessions(4);
  t.teardown(() => sessions.clear());
  const context = { device: { kind: 'cpu' as const }, sessions };
  const model = loadModel(modelBytes('noise_mlp.onnx'));
  const request = { latents: { samples: 8 }, seed: 3 }; // the default request: N = 8, k = 2, 40 rows
  const first = await evaluatePenalty(model, request, context);
  const probeAndFirst = sessions.rows;
  t.equal(first.rows, 40);
  // 6 rows per try (the centre row is the penalty's); this draw needs a second spacing.
  t.same(first.noise, { points: 7, tries: first.noise!.tries, cached: false, rows: 6 * first.noise!.tries.length, stepRows: 8 });
  sessions.rows = 0;
  const second = await evaluatePenalty(model, { ...request, seed: 4 }, context);
  t.equal(sessions.rows, 40 + 8, 'probe and noise cached: the penalty rows and the halving (new latents are a new key)');
  t.same(second.halving, { samples: 1, factors: [2, 0.5], rows: 8, cached: false });
  t.same([second.noise!.cached, second.noise!.rows], [true, 0]);
  t.same(second.layers[0].noise!.sigma, first.layers[0].noise!.sigma, 'the cached σ');
  // First use: the probe's 3 × 4 rows, the penalty's 40, the noise rows and the halving's 8; nothing else.
  t.equal(probeAndFirst, 12 + 40 + first.noise!.rows + 8);
  sessions.rows = 0;
  const again = await evaluatePenalty(model, { ...request, seed: 4 }, context);
  t.equal(sessions.rows, 40, 'the same request again: the halving is cached too');
  t.same([again.halving!.cached, again.halving!.rows, again.noise!.stepRows], [true, 0, 0]);
  t.same(again.layers[0].noise!.halving, second.layers[0].noise!.halving, 'the cached halving figures');
  sessions.rows = 0;
  const unhalved = await evaluatePenalty(model, { ...request, seed: 5, stepTest: false }, context);
  t.equal(sessions.rows, 40, 'stepTest: false saves its rows');
  t.equal(unhalved.halving, null);
  t.equal(unhalved.noise!.stepRows, 0);
  t.equal(unhalved.layers[0].noise!.halving, null);
  t.same([unhalved.layers[0].noise!.regime, unhalved.layers[0].noise!.exponent], [null, null], 'no step test, no regime');
  t.equal(second.noise!.stepRows, 8, 'the step test: 2·2k rows on one sample, 20% of the request');

  const off = new CountingSessions(1);
  t.teardown(() => off.clear());
  const plain = await evaluatePenalty(model, { ...request, noise: false }, { device: { kind: 'cpu' }, sessions: off });
  t.equal(plain.noise, null);
  t.notOk('noise' in plain.layers[0], 'no per-layer noise without the measurement');
  t.equal(off.rows, 12 + 40, 'noise: false spends exactly the noise rows less');
  t.equal(plain.layers[0].penalty, (await evaluatePenalty(model, request, context)).layers[0].penalty, 'the measurement does not change the penalty');
});

t.test('the step test within 25% more rows: 2ε alone for N = 4 to 7, none below 4 unless asked for', async (t) => {
  const sessions = new CountingSessions(4);
  t.teardown(() => sessions.clear());
  const context = { device: { kind: 'cpu' as const }, sessions };
  const model = loadModel(modelBytes('noise_mlp.onnx'));
  await evaluatePenalty(model, { latents: { samples: 8 }, seed: 30 }, context); // probe and noise cached
  sessions.rows = 0;
  const five = await evaluatePenalty(model, { latents: { samples: 5 }, seed: 31 }, context);
  t.same(five.halving, { samples: 1, factors: [2], rows: 4, cached: false }, 'one sample at 2ε: 2k = 4 rows');
  t.equal(five.noise!.stepRows, 4);
  t.equal(sessions.rows, 25 + 4, `4 extra rows on a request of 25: ${(100 * 4) / 25}%`);
  t.same(five.layers[0].noise!.halving!.growth.down, null, 'no ε/2 side');
  t.equal(five.layers[0].noise!.halving!.half, null);
  const three = await evaluatePenalty(model, { latents: { samples: 3 }, seed: 32 }, context);
  t.equal(three.halving, null);
  t.equal(three.noise!.stepRows, 0);
  t.match(three.warnings.find((w) => w.code === 'halving_skipped')?.message, /with 3 samples one more at 2ε alone \(4 rows\) is more than 25% of the request's 15 rows; pass stepTest: true to run it anyway \(8 rows\)/);
  const asked = await evaluatePenalty(model, { latents: { samples: 3 }, seed: 32, stepTest: true }, context);
  t.same(asked.halving, { samples: 1, factors: [2, 0.5], rows: 8, cached: false }, 'stepTest: true runs both spacings');
  t.notOk(asked.warnings.some((w) => w.code === 'halving_skipped'));
});

t.test('rows interact (per-pass): every sample is measured, sharing the penalty’s centre pass', async (t) => {
  const sessions = new SessionCache(1);
  t.teardown(() => sessions.clear());
  const r = await evaluatePenalty(loadModel(modelBytes('bn_train.onnx')), { latents: { samples: 4 }, seed: 5 }, { device: { kind: 'cpu' }, sessions });
  t.equal(r.mode, 'per-pass');
  t.equal(r.halving, null, 'the halving would repeat all N samples twice: skipped');
  t.match(r.warnings.find((w) => w.code === 'halving_skipped')?.message, /the step-halving test did not run: rows interact in this model \(per-pass mode\)/);
  t.equal(r.noise!.rows, 6 * 4 * r.noise!.tries.length, '6 passes of all 4 rows per try');
  t.equal(r.layers[0].noise!.samples, 4);
  t.equal(r.layers[0].noise!.sigma.elements, 4 * r.layers[0].shape.slice(1).reduce((a, b) => a * b, 1));
});

t.test('nothing resolves along a zero direction: noise_unresolved, and the output-ulp floor as before', async (t) => {
  const sessions = new SessionCache(1);
  t.teardown(() => sessions.clear());
  const context = { device: { kind: 'cpu' as const }, sessions };
  const model = loadModel(modelBytes('noise_mlp.onnx'));
  const zero = { type: 'float32' as const, shape: [2, 2, d], data: new Float32Array(2 * 2 * d) };
  const request = { latents: { type: 'float32' as const, shape: [2, d], data: latents.data.slice(0, 2 * d) }, directions: zero };
  const r = await evaluatePenalty(model, request, context);
  // Every row equals the centre: "h too small" at every spacing, 4 tries (1e-3, 0.1, 10, 1000).
  t.same(r.noise!.tries.map((x) => x.h), [1e-3, 0.1, 10, 1000]);
  t.equal(r.noise!.rows, 4 * 6);
  t.equal(r.layers[0].noise, null);
  t.match(r.warnings.find((w) => w.code === 'noise_unresolved')?.message, /layer 'out': the rounding noise could not be measured \(none of its 16 elements resolved/);
  t.equal(r.layers[0].penalty, 0);
  t.match(r.warnings.find((w) => w.code === 'below_noise_floor')?.message, /float32 rounding noise floor/, 'the old floor decides');
  const alone = await evaluateNoise(model, request, context);
  t.same([alone.cached, alone.layers[0].floor, alone.layers[0].secondDifferenceNoise, alone.layers[0].sigma.p90], [true, null, null, null]);
  t.ok(alone.warnings.some((w) => w.code === 'noise_unresolved'));
  t.match((await cli('noise', modelPath('noise_mlp.onnx'), '--samples', '2', '--k', '2')).stdout, /out\s+\[2, 16\]\s+float32/);
});

t.test('the noise metric alone: 7 rows on a fresh session, the penalty’s σ, the floor at ε', async (t) => {
  const sessions = new CountingSessions(2);
  t.teardown(() => sessions.clear());
  const context = { device: { kind: 'cpu' as const }, sessions };
  const model = loadModel(modelBytes('noise_dc_residual.onnx'));
  const alone = await evaluateNoise(model, { latents, directions, epsilon: 3e-3 }, context);
  t.equal(alone.metric, 'noise');
  t.same([alone.cached, alone.rows, alone.points, alone.margin], [false, 7, 7, 10]);
  t.equal(alone.precision.tf32, null, 'TF32 does not apply on the CPU');
  const layer = alone.layers[0];
  t.ok(layer.sigma.p90! > 1e-5, `the offset model's σ is far above a float32 ulp: ${layer.sigma.p90}`);
  const penalty = await evaluatePenalty(model, { latents, directions, epsilon: 3e-3 }, context);
  t.same([penalty.noise!.cached, penalty.noise!.rows], [true, 0], 'the penalty reuses the noise metric’s measurement');
  t.same(penalty.layers[0].noise!.sigma, layer.sigma);
  t.equal(penalty.layers[0].noise!.floor, layer.floor, 'same floor at the same ε, k, N and reduction');
  t.equal(layer.secondDifferenceNoise, (Math.sqrt(6) * layer.sigma.p90!) / 9e-6);
});

t.test('the gate refuses a layer whose candidate or baseline is below the floor, and says which', async (t) => {
  const sessions = new SessionCache(4);
  t.teardown(() => sessions.clear());
  const context = { evaluate: inProcess({ device: { kind: 'cpu' }, sessions }) };
  const offset = loadModel(modelBytes('noise_offset_ln.onnx'));
  const clean = loadModel(modelBytes('noise_mlp.onnx'));
  const spec = (epsilon: number) => gateSpec([{ penalty: { samples: 8, k: 2, epsilon }, resamples: 200, rules: { maxIncrease: null, maxPenalty: 1e6 } }]);

  const noisy = await runGate(offset, offset, spec(3e-3), context);
  const rule = noisy.layers[0].rules.find((r) => r.rule === 'minNoiseMargin')!;
  t.equal(noisy.verdict, 'fail');
  t.equal(noisy.layers[0].verdict, 'fail');
  t.equal(rule.verdict, 'fail');
  t.equal(rule.limit, 10);
  t.equal(rule.value, noisy.layers[0].candidate.penalty! / noisy.layers[0].candidate.noiseFloor!);
  t.match(rule.message, /penalty \/ noise floor \S+ < 10 \(the candidate and the baseline are below the measured rounding noise: mostly rounding/);

  const oneSide = await runGate(clean, offset, spec(3e-3), context);
  const one = oneSide.layers[0].rules.find((r) => r.rule === 'minNoiseMargin')!;
  t.equal(one.verdict, 'fail');
  t.match(one.message, /\(the baseline is below the measured rounding noise: mostly rounding/);

  const fine = await runGate(offset, offset, spec(0.1), context);
  t.equal(fine.verdict, 'pass', 'at ε = 0.1 both clear their floor');
  t.equal(fine.layers[0].rules.find((r) => r.rule === 'minNoiseMargin')!.verdict, 'pass');

  // The same verdict as below_noise_floor: a kinked model below a (deliberately huge) margin is
  // cleared by the step-halving, and the message says so.
  const kinkedModel = loadModel(modelBytes('noise_leaky_conv.onnx'));
  const strict = gateSpec([{ penalty: { samples: 8, k: 2, epsilon: 1e-3 }, resamples: 200, rules: { maxIncrease: null, maxPenalty: 1e6, minNoiseMargin: 1e6 } }]);
  const kinkedGate = await runGate(kinkedModel, kinkedModel, strict, context);
  const cleared = kinkedGate.layers[0].rules.find((r) => r.rule === 'minNoiseMargin')!;
  t.ok(cleared.value! < 1e6, `penalty/floor ${cleared.value} is below the limit`);
  t.equal(cleared.verdict, 'pass');
  t.match(cleared.message, /penalty \/ noise floor \S+ < \S+, but the candidate and the baseline are not rounding by the step-halving/);
  t.equal(kinkedGate.layers[0].candidate.halving!.kinked, true);

  const off = await runGate(offset, offset, gateSpec([{ penalty: { samples: 8, k: 2, epsilon: 3e-3 }, resamples: 200, rules: { minNoiseMargin: null } }]), context);
  t.equal(off.verdict, 'pass', 'null switches the rule off');
  t.notOk(off.layers[0].rules.some((r) => r.rule === 'minNoiseMargin'));
});

t.test('CLI: the noise command, --no-noise, and the errors', async (t) => {
  const path = modelPath('noise_offset_ln.onnx');
  const json = await cli('noise', path, '--seed', '1', '--epsilon', '0.003', '--json');
  t.equal(json.code, 0, json.stderr);
  const r = JSON.parse(json.stdout);
  t.same([r.metric, r.epsilon, r.rows, r.cached], ['noise', 0.003, 7, false]);
  const text = await cli('noise', path, '--seed', '1');
  t.equal(text.code, 0);
  t.match(text.stdout, /method {5}ECnoise \(Moré & Wild\) along direction 0, 7 points, spacing h 0\.001/);
  t.match(text.stdout, /^out\s+\[8, 16\]\s+float32\s+16\/16\s+/m);
  t.match(text.stdout, /a penalty below 10 x floor is mostly rounding noise/);

  const penalty = await cli('penalty', path, '--seed', '1', '--epsilon', '0.003');
  t.match(penalty.stdout, /^noise {6}ECnoise, 7 points, 6 extra rows, h 0\.001; step test 8 extra rows$/m);
  t.match(penalty.stdout, /sigma p90\s+floor\s+recommended epsilon\s+scales as/);
  t.match(penalty.stdout, /BELOW FLOOR/);
  t.match(penalty.stdout, /warning \[below_noise_floor\] layer 'out': .*measured rounding noise floor.*use epsilon >= /);
  const without = await cli('penalty', path, '--seed', '1', '--epsilon', '0.003', '--no-noise', '--json');
  t.equal(JSON.parse(without.stdout).noise, null);
  const halved = JSON.parse((await cli('penalty', path, '--seed', '1', '--epsilon', '0.003', '--json')).stdout);
  t.same(halved.halving, { samples: 1, factors: [2, 0.5], rows: 8, cached: false });
  t.equal(halved.layers[0].noise.reason, 'floor', 'the halving does not clear a rounding-dominated offset model');
  const { regime, exponent } = halved.layers[0].noise as { regime: string; exponent: number };
  t.ok(['rounding', 'mixed'].includes(regime), `the offset model at ε = 0.003 scales like rounding: ${regime}, exponent ${exponent}`);
  t.ok(penalty.stdout.includes(`${regime} (eps^${(-exponent).toFixed(1)})`), 'the text table says how the figure scales');
  const noHalving = JSON.parse((await cli('penalty', path, '--seed', '1', '--epsilon', '0.003', '--no-step-test', '--json')).stdout);
  t.same([noHalving.halving, noHalving.rows], [null, halved.rows]);
  t.match((await cli('penalty', '--help')).stdout, /--no-step-test/);

  const sweep = await cli('noise', path, '--epsilons', '0.1');
  t.equal(sweep.code, 2);
  t.match(sweep.stderr, /unknown option '--epsilons'/);
});

t.test('HTTP: POST /v1/models/:id/noise, the penalty’s fields, and a bad noise flag', async (t) => {
  const { app } = await startApp(t);
  const body = multipart([{ name: 'model', filename: 'noise_offset_ln.onnx', data: modelBytes('noise_offset_ln.onnx') }]);
  const id = (await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers })).json().id;
  const post = (metric: string, payload: unknown) =>
    app.inject({ method: 'POST', url: `/v1/models/${id}/${metric}`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload) });

  const noise = await post('noise', { latents: { samples: 4 }, seed: 2, epsilon: 0.003 });
  t.equal(noise.statusCode, 200, noise.body.slice(0, 300));
  const n = noise.json();
  t.same([n.metric, n.rows, n.cached], ['noise', 7, false]);
  t.ok(n.layers[0].sigma.resolved >= 0.9 * 16, 'the driver stops at 90% resolved');
  const penalty = await post('penalty', { latents: { samples: 4 }, seed: 2, epsilon: 0.003 });
  const p = penalty.json();
  t.same([p.noise.cached, p.noise.rows], [true, 0], 'the worker’s session cache answers');
  t.same(p.layers[0].noise.sigma, n.layers[0].sigma);
  t.equal(p.layers[0].noise.belowFloor, true);
  t.same(p.precision, { tf32: null });

  const bad = await post('penalty', { noise: 'yes' });
  t.equal(bad.statusCode, 400);
  t.equal(bad.json().error.code, 'invalid_request');
  t.match(bad.json().error.message, /noise/);
  const badHalving = await post('penalty', { stepTest: 'no' });
  t.equal(badHalving.statusCode, 400);
  t.equal(badHalving.json().error.code, 'invalid_request');
  t.match(badHalving.json().error.message, /stepTest/);
  const halvingOnNoise = await post('noise', { stepTest: false });
  t.equal(halvingOnNoise.statusCode, 400, 'the noise metric has no halving');
  t.match(halvingOnNoise.json().error.message, /stepTest/);
  const unhalved = (await post('penalty', { latents: { samples: 4 }, seed: 2, epsilon: 0.003, stepTest: false })).json();
  t.same([unhalved.halving, unhalved.layers[0].noise.halving, unhalved.layers[0].noise.reason], [null, null, 'floor']);
  t.equal(unhalved.layers[0].noise.belowFloor, true, 'stepTest: false keeps the floor verdict');
  const sweep = await post('noise', { epsilons: [0.1] });
  t.equal(sweep.statusCode, 400);
  t.match(sweep.json().error.message, /epsilons/);
  const html = await app.inject({ method: 'POST', url: `/v1/models/${id}/noise`, headers: { 'content-type': 'application/json', accept: 'text/html' }, payload: '{"seed": 2}' });
  t.equal(html.statusCode, 200);
  t.match(html.body, /<section id="noise"><h2>Rounding noise<\/h2>/);
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
  t.ok(doc.paths['/v1/models/{id}/noise'], 'the route is in the OpenAPI document');
  t.ok(doc.components.schemas.NoiseResult.properties.layers);
  t.equal(doc.components.schemas.NoiseRequest.additionalProperties, false);
  t.ok(doc.components.schemas.PenaltyRequest.properties.noise);
  t.ok(doc.components.schemas.PenaltyRequest.properties.stepTest, 'stepTest is in the OpenAPI document');
  const health = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(health.statusCode, 200, 'the server is still up');
});

t.test('the report shows σ, the floor, the recommended ε and the math mode', async (t) => {
  const sessions = new SessionCache(1);
  t.teardown(() => sessions.clear());
  const model = loadModel(modelBytes('noise_offset_ln.onnx'));
  const result = await evaluatePenalty(model, { latents, directions, epsilon: 3e-3 }, { device: { kind: 'cpu' }, sessions });
  const html = renderReport({ modelName: 'offset', penalty: result });
  t.match(html, /<section id="noise"><h2>Rounding noise and the recommended ε<\/h2>/);
  t.match(html, /below the floor/);
  t.match(html, /<th>math mode<\/th><td>full precision of the layer types \(TF32 does not apply to this provider\)<\/td>/);
  const tf32 = renderReport({ penalty: { ...result, executionProvider: 'cuda:0', precision: { tf32: true } } });
  t.match(tf32, /TF32 ON in matrix products and convolutions/);
  const alone = renderReport({ noise: await evaluateNoise(model, { latents, directions }, { device: { kind: 'cpu' }, sessions }) });
  t.match(alone, /<section id="noise"><h2>Rounding noise<\/h2>/);
});

t.test('TF32 in effect: null off CUDA, on unless NVIDIA_TF32_OVERRIDE=0', async (t) => {
  t.equal(tf32InEffect('cpu', {}), null);
  t.equal(tf32InEffect('webgpu', {}), null);
  t.equal(tf32InEffect('cuda:0', { NVIDIA_TF32_OVERRIDE: '0' }), false);
  t.equal(tf32InEffect('cuda:1', {}), true);
});
