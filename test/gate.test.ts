import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty, type PenaltyResult } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import type { PenaltyRequest } from '../dist/contract/request.js';
import { SessionCache } from '../dist/runtime/session.js';
import { gateSpec } from '../dist/gate/config.js';
import { type GateResult, inProcess, runGate } from '../dist/gate/gate.js';
import { figureRule, RULES } from '../dist/gate/rules.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';

const DCGAN = modelPath('dcgan.onnx');
const ENTANGLED = modelPath('dcgan_entangled.onnx');
// Small, so the file runs in seconds; the verdicts below hold with a wide margin at this size.
const SMALL = ['--samples', '16', '--k', '4', '--resamples', '500'];
const dir = mkdtempSync(join(tmpdir(), 'gate-'));

async function gateJson(...argv: string[]): Promise<{ code: number; result: GateResult; stderr: string }> {
  const r = await cli('gate', ...argv, '--json');
  t.equal(r.stderr, '', 'nothing on stderr');
  return { code: r.code, result: JSON.parse(r.stdout) as GateResult, stderr: r.stderr };
}

/** The same model evaluated on its own with the gate's request: the ground truth for the gate's numbers. */
async function penaltyOf(name: string, request: PenaltyRequest): Promise<PenaltyResult> {
  const sessions = new SessionCache(1);
  try {
    return await evaluatePenalty(loadModel(modelBytes(name)), request, { device: parseDevice('cpu'), sessions });
  } finally {
    await sessions.clear();
  }
}

const mean = (xs: (number | null)[]): number => (xs as number[]).reduce((a, b) => a + b, 0) / xs.length;
const withoutTimings = (r: GateResult): Omit<GateResult, 'timings'> => {
  const { timings: _, ...rest } = r;
  return rest;
};

t.test('candidate = baseline: identical numbers, ratio exactly 1, exit 0', async (t) => {
  const { code, result } = await gateJson('--candidate', DCGAN, '--baseline', DCGAN, ...SMALL);
  t.equal(code, 0);
  t.equal(result.verdict, 'pass');
  const [layer] = result.layers;
  t.equal(layer.name, 'image');
  t.same(layer.ratio, { estimate: 1, lower: 1, upper: 1 });
  t.same(layer.candidate, layer.baseline);
  t.same(layer.rules.map((r) => [r.rule, r.limit, r.verdict]), [['maxIncrease', 1.1, 'pass'], ['minNoiseMargin', 10, 'pass']]);
  // The gate's figures are the model's own penalty with the same request (seed 0 by default).
  const truth = await penaltyOf('dcgan.onnx', { latents: { samples: 16 }, k: 4, seed: 0 });
  t.equal(layer.candidate.penalty, truth.layers[0].penalty);
  t.equal(layer.candidate.mean, mean(truth.layers[0].perSample));
  t.same(result.settings, {
    samples: 16, k: 4, epsilon: 0.1, reduction: 'max', variance: 'unbiased', seed: 0, wrt: 'z',
    confidence: 0.95, resamples: 500,
    statistic: 'candidate/baseline ratio of the mean per-sample penalty',
    interval: 'paired studentized bootstrap over samples',
  });
});

t.test('a measurably more entangled candidate fails with exit 1', async (t) => {
  const { code, result } = await gateJson('--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL);
  const [layer] = result.layers;
  // Measurably more entangled: the whole interval lies above the 10% allowance, not just the upper bound.
  t.ok(layer.ratio!.lower > 1.1, `ratio ${JSON.stringify(layer.ratio)}`);
  t.equal(layer.verdict, 'fail');
  t.equal(result.verdict, 'fail');
  t.equal(code, 1);

  // Common random numbers: each side equals that model's own penalty on the same latents and directions.
  const request = { latents: { samples: 16 }, k: 4, seed: 0 };
  const [cand, base] = [await penaltyOf('dcgan_entangled.onnx', request), await penaltyOf('dcgan.onnx', request)];
  t.equal(layer.candidate.penalty, cand.layers[0].penalty);
  t.equal(layer.baseline.penalty, base.layers[0].penalty);
  t.equal(layer.ratio!.estimate, mean(cand.layers[0].perSample) / mean(base.layers[0].perSample));

  const text = await cli('gate', '--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL);
  t.equal(text.code, 1);
  t.match(text.stdout, /^image\s+\S+\s+\S+\s+\S+ \[\S+, \S+\]\s+ratio upper bound \S+ > 1\.1; penalty \/ noise floor \S+ ≥ 10\s+FAIL$/m);
  t.match(text.stdout, /gate: FAIL\n$/);
});

t.test('a less entangled candidate passes', async (t) => {
  const { code, result } = await gateJson('--candidate', DCGAN, '--baseline', ENTANGLED, ...SMALL);
  t.equal(code, 0);
  t.ok(result.layers[0].ratio!.upper < 1, `ratio ${JSON.stringify(result.layers[0].ratio)}`);
});

t.test('reruns with the same seed give the same verdict and numbers; another seed other numbers', async (t) => {
  const args = ['--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL, '--seed', '5'];
  const first = await gateJson(...args);
  const second = await gateJson(...args);
  t.same(withoutTimings(second.result), withoutTimings(first.result));
  t.equal(first.code, second.code);
  const other = await gateJson('--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL, '--seed', '6');
  t.not(other.result.layers[0].candidate.penalty, first.result.layers[0].candidate.penalty);
});

t.test('--max-penalty, per-layer overrides from a config file, and the total', async (t) => {
  const strict = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, ...SMALL, '--max-penalty', '0.01');
  t.equal(strict.code, 1, 'identical models still fail an absolute ceiling they exceed');
  t.match(strict.stdout, /candidate penalty \S+ > 0\.01/);

  const config = join(dir, 'override.json');
  writeFileSync(config, JSON.stringify({ layers: { image: { maxIncrease: null, maxPenalty: 1 } }, total: { maxPenalty: 0.01 } }));
  const { code, result } = await gateJson('--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL, '--config', config);
  t.same(result.layers[0].rules.map((r) => [r.rule, r.verdict]), [['maxPenalty', 'pass'], ['minNoiseMargin', 'pass']], 'maxIncrease switched off for image');
  t.same(result.total.rules.map((r) => [r.rule, r.verdict]), [['maxPenalty', 'fail']]);
  t.equal(code, 1, 'the total fails');

  // Flags win over the file.
  const flags = await gateJson('--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL, '--config', config, '--max-total-penalty', '10');
  t.equal(flags.code, 0);
});

t.test('layers: intermediate tensors, a mapping, the total over several layers', async (t) => {
  const mid = '/block1/block1.2/LeakyRelu_output_0';
  const { code, result } = await gateJson(
    '--candidate', DCGAN, '--baseline', DCGAN, ...SMALL, '--layers', `image,${mid}`, '--map', `image=/to_rgb/ConvTranspose_output_0`,
  );
  t.equal(code, result.verdict === 'pass' ? 0 : 1);
  t.same(result.layers.map((l) => [l.name, l.baselineName]), [['image', '/to_rgb/ConvTranspose_output_0'], [mid, mid]]);
  const request = { latents: { samples: 16 }, k: 4, seed: 0 };
  const cand = await penaltyOf('dcgan.onnx', { ...request, layers: ['image', mid] });
  const base = await penaltyOf('dcgan.onnx', { ...request, layers: ['/to_rgb/ConvTranspose_output_0', mid] });
  t.equal(result.layers[0].candidate.penalty, cand.layers[0].penalty);
  t.equal(result.layers[0].baseline.penalty, base.layers[0].penalty);
  t.not(cand.layers[0].penalty, base.layers[0].penalty, 'the mapped layers differ, so the check above can fail');
  t.equal(result.layers[0].ratio!.estimate, mean(cand.layers[0].perSample) / mean(base.layers[0].perSample));
  t.same(result.layers[1].ratio, { estimate: 1, lower: 1, upper: 1 });
  t.equal(result.total.candidate.penalty, cand.penalty);
  t.equal(result.total.baseline.penalty, base.penalty);
});

t.test('extra inputs are held fixed and shared by both models', async (t) => {
  const label = join(dir, 'label.json');
  const truncation = join(dir, 'truncation.json');
  writeFileSync(label, JSON.stringify([1, 2, 3, 4, 5, 6, 7, 8]));
  writeFileSync(truncation, JSON.stringify([0.7]));
  const model = modelPath('conditional.onnx');
  const inputs = ['--input', `label=${label}`, '--input', `truncation=${truncation}`];
  const { code, result } = await gateJson('--candidate', model, '--baseline', model, '--samples', '8', '--resamples', '200', ...inputs);
  t.equal(code, 0);
  t.same(result.layers[0].ratio, { estimate: 1, lower: 1, upper: 1 });
  const missing = await cli('gate', '--candidate', model, '--baseline', model, '--samples', '8');
  t.equal(missing.code, 2);
  t.match(missing.stderr, /baseline model: the model needs input 'label'/);
});

t.test('a layer that cannot be evaluated never passes', async (t) => {
  // log(z) is NaN for the negative latents among the drawn ones: the second differences are NaN.
  // (An ε large enough to overflow float32 is refused now: epsilon_out_of_range.)
  const nanModel = modelPath('log.onnx');
  const { code, result } = await gateJson('--candidate', nanModel, '--baseline', nanModel, '--samples', '4', '--max-increase', '0.1');
  t.equal(code, 1);
  t.equal(result.verdict, 'fail');
  t.equal(result.layers[0].verdict, 'error');
  t.equal(result.layers[0].candidate.penalty, null);
  t.match(result.layers[0].problem, /NaN or infinite/);
  const noRules = await cli('gate', '--candidate', nanModel, '--baseline', nanModel, '--samples', '4', '--max-increase', '0');
  t.equal(noRules.code, 1);
  t.match(noRules.stdout, /ERROR/);
});

t.test('--summary writes Markdown for a CI job page', async (t) => {
  const summary = join(dir, 'summary.md');
  const r = await cli('gate', '--candidate', ENTANGLED, '--baseline', DCGAN, ...SMALL, '--summary', summary);
  t.equal(r.code, 1);
  const md = readFileSync(summary, 'utf8');
  t.match(md, /^## ❌ Hessian Penalty gate: fail\n/);
  t.match(md, /\| layer \| baseline \| candidate \| ratio \| rule \| verdict \|\n\| --- \| ---: \| ---: \| ---: \| --- \| --- \|\n/);
  t.match(md, /\| `image` \| [\d.]+ \| [\d.]+ \| [\d.]+ \[[\d.]+, [\d.]+\] \| ratio upper bound [\d.]+ > 1\.1; penalty \/ noise floor [\d.]+ ≥ 10 \| ❌ \*\*fail\*\* \|/);
  t.match(md, /\*\*Why it failed\*\*\n\n- image: ratio upper bound/);
  // Appends, as $GITHUB_STEP_SUMMARY expects.
  await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, ...SMALL, '--summary', summary);
  t.match(readFileSync(summary, 'utf8'), /gate: fail[\s\S]*## ✅ Hessian Penalty gate: pass/);
  const unwritable = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, ...SMALL, '--summary', join(dir, 'no', 'such', 'dir.md'));
  t.equal(unwritable.code, 2);
  t.match(unwritable.stderr, /cannot write the summary to .*dir\.md: ENOENT/);
});

t.test('usage and input errors exit 2 with a clear message', async (t) => {
  const cases: [string, string[], RegExp][] = [
    [
      'incompatible latent shapes',
      ['--candidate', modelPath('cubic.onnx'), '--baseline', modelPath('mlp.onnx')],
      /error: the candidate and the baseline cannot be given the same inputs: input 'z' has shape \[batch, 2\] in the candidate but \[batch, 8\] in the baseline/,
    ],
    [
      'an input only one model has',
      ['--candidate', modelPath('conditional.onnx'), '--baseline', modelPath('mlp.onnx')],
      /input 'label' exists only in the candidate; input 'truncation' exists only in the candidate/,
    ],
    [
      'a layer missing in the baseline',
      ['--candidate', ENTANGLED, '--baseline', DCGAN, '--layers', 'image,/Add_output_0'],
      /error: layer '\/Add_output_0' is not in the baseline \(map it to a baseline layer with --map \/Add_output_0=BASELINE_LAYER\)/,
    ],
    [
      'a layer missing in the candidate',
      ['--candidate', DCGAN, '--baseline', ENTANGLED, '--layers', '/Add_output_0'],
      /error: layer '\/Add_output_0' is not in the candidate/,
    ],
    [
      'a mapping to a layer the baseline lacks',
      ['--candidate', DCGAN, '--baseline', DCGAN, '--map', 'image=rgb'],
      /layer 'rgb' \(mapped from 'image'\) is not in the baseline/,
    ],
    [
      'a mapping to a candidate layer the candidate lacks',
      ['--candidate', DCGAN, '--baseline', DCGAN, '--map', 'x=image'],
      /layer 'x' is not in the candidate/,
    ],
    ['a mapping of a layer not compared', ['--candidate', DCGAN, '--baseline', DCGAN, '--layers', 'image', '--map', 'x=image'], /layerMap maps 'x', which is not among the compared layers \('image'\)/],
    ['a malformed mapping', ['--candidate', DCGAN, '--baseline', DCGAN, '--map', 'image'], /--map takes CANDIDATE_LAYER=BASELINE_LAYER, got 'image'/],
    ['a negative allowance', ['--candidate', DCGAN, '--baseline', DCGAN, '--max-increase', '-0.1'], /error: command line: --max-increase: Too small: expected number to be >=0/],
    ['a confidence of 95', ['--candidate', DCGAN, '--baseline', DCGAN, '--confidence', '95'], /--confidence: Too big: expected number to be <1/],
    ['one sample', ['--candidate', DCGAN, '--baseline', DCGAN, '--samples', '1'], /error: command line: --samples: must be at least 2 \(the interval needs two samples\)/],
    ['a missing model file', ['--candidate', join(dir, 'nope.onnx'), '--baseline', DCGAN], /cannot read model .*nope\.onnx: ENOENT/],
    ['no baseline', ['--candidate', DCGAN], /required option '--baseline <file>' not specified/],
    ['a non-number', ['--candidate', DCGAN, '--baseline', DCGAN, '--max-penalty', 'lots'], /--max-penalty must be a number, got 'lots'/],
  ];
  for (const [what, argv, message] of cases) {
    const r = await cli('gate', ...argv);
    t.equal(r.code, 2, `${what}: exit 2`);
    t.match(r.stderr, message, `${what}: message`);
    t.equal(r.stdout, '', `${what}: no table`);
  }
});

t.test('a bad config file exits 2 and names the key', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ rules: { maxIncrese: 0.1 } }, /typo\.json: rules\.maxIncrese: unknown key \(known: maxIncrease, maxPenalty, minDiagonalFraction, maxUnusedLatents, minNoiseMargin\)/],
    [{ layers: { image: { maxPenalty: 'high' } } }, /typo\.json: layers\.image\.maxPenalty: Invalid input: expected number, received string/],
    [{ layers: { '/fc/Gemm_output_0': { maxPenalty: 1 } } }, /layers\["\/fc\/Gemm_output_0"\]: not a compared layer \(compared: 'image'\)/],
  ];
  const path = join(dir, 'typo.json');
  for (const [config, message] of cases) {
    writeFileSync(path, JSON.stringify(config));
    const r = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, ...SMALL, '--config', path);
    t.equal(r.code, 2);
    t.match(r.stderr, message);
  }
});

t.test('explicit latents are shared too; one sample is refused before anything runs', async (t) => {
  const latents = join(dir, 'latents.json');
  const z = Array.from({ length: 6 }, (_, i) => Array.from({ length: 12 }, (_, j) => Math.sin(i * 12 + j)));
  writeFileSync(latents, JSON.stringify(z));
  const { code, result } = await gateJson('--candidate', ENTANGLED, '--baseline', DCGAN, '--latents', latents, '--resamples', '200');
  t.equal(result.settings.samples, 6);
  t.equal(code, result.verdict === 'pass' ? 0 : 1);
  const truth = await penaltyOf('dcgan.onnx', { latents: { type: 'float64', shape: [6, 12], data: Float64Array.from(z.flat()) }, k: 4, seed: 0 });
  t.equal(result.layers[0].baseline.penalty, truth.layers[0].penalty);

  writeFileSync(latents, JSON.stringify(z.slice(0, 1)));
  const one = await cli('gate', '--candidate', ENTANGLED, '--baseline', DCGAN, '--latents', latents);
  t.equal(one.code, 2);
  t.match(one.stderr, /the gate needs at least 2 samples to put an interval on the ratio, got 1/);
  const both = await cli('gate', '--candidate', ENTANGLED, '--baseline', DCGAN, '--latents', latents, '--samples', '4');
  t.equal(both.code, 2);
  t.match(both.stderr, /give either latents or samples, not both/);
});

t.test('a figure provider feeds audit-figure rules (the hook the audit rules use)', async (t) => {
  const model = loadModel(modelBytes('dcgan.onnx'));
  const diagonal = figureRule('minDiagonalFraction', '--min-diagonal-fraction', 'diagonalFraction', 'floor', 'floor on the diagonal-ness fraction');
  const spec = gateSpec([{ penalty: { samples: 4, k: 2 }, resamples: 100 }]);
  spec.rules.minDiagonalFraction = 0.5;
  const calls: string[] = [];
  const sessions = new SessionCache(2);
  const result = await runGate(model, model, spec, {
    evaluate: inProcess({ device: parseDevice('cpu'), sessions }),
    rules: [...RULES, diagonal],
    figures: async (side, _model, request) => {
      calls.push(`${side}: ${request.layers!.join()} seed ${request.seed}`);
      return { image: { diagonalFraction: side === 'candidate' ? 0.4 : 0.9 } };
    },
  });
  await sessions.clear();
  t.same(calls, ['baseline: image seed 0', 'candidate: image seed 0'], 'both models, same request');
  t.same(result.layers[0].baseline.figures, { diagonalFraction: 0.9 });
  const rule = result.layers[0].rules.find((r) => r.rule === 'minDiagonalFraction');
  t.same([rule?.value, rule?.verdict], [0.4, 'fail']);
  t.equal(result.verdict, 'fail');
});
