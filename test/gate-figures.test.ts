/** Gate rules on audit figures: diagonal-ness floor and unused-latents ceiling, against known models. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cli } from './helpers/cli.js';
import { modelPath } from './helpers/reference.js';

const gate = (candidate: string, baseline: string, ...flags: string[]) =>
  cli('gate', '--candidate', modelPath(candidate), '--baseline', modelPath(baseline), '--samples', '4', '--json', ...flags);

t.test('a separable generator has a diagonal Hessian: the floor passes at 1', async (t) => {
  const r = await gate('separable.onnx', 'separable.onnx', '--min-diagonal-fraction', '1');
  t.equal(r.code, 0, r.stderr);
  const layer = JSON.parse(r.stdout).layers[0];
  t.equal(layer.candidate.figures.diagonalFraction, 1);
  t.same(layer.rules.map((o: { rule: string; verdict: string }) => [o.rule, o.verdict]), [['maxIncrease', 'pass'], ['minDiagonalFraction', 'pass'], ['minNoiseMargin', 'pass']]);
});

t.test('the entangled generator fails a diagonal-ness floor that the ratio alone would let through', async (t) => {
  const r = await gate('dcgan_entangled.onnx', 'dcgan.onnx', '--min-diagonal-fraction', '0.9', '--max-increase', '100');
  t.equal(r.code, 1);
  const layer = JSON.parse(r.stdout).layers[0];
  const outcome = layer.rules.find((o: { rule: string }) => o.rule === 'minDiagonalFraction');
  t.equal(outcome.verdict, 'fail');
  t.ok(outcome.value < 0.9 && outcome.value > 0, `fraction ${outcome.value}`);
  t.match(outcome.message, /candidate diagonalFraction 0\.\d+ < 0\.9/);
});

t.test('a latent the model ignores counts as unused', async (t) => {
  const fail = await gate('ignoring.onnx', 'ignoring.onnx', '--max-unused-latents', '0');
  t.equal(fail.code, 1);
  t.equal(JSON.parse(fail.stdout).layers[0].candidate.figures.unusedLatents, 1);
  const pass = await gate('ignoring.onnx', 'ignoring.onnx', '--max-unused-latents', '1');
  t.equal(pass.code, 0, pass.stderr);
});

t.test('figure rules from a config file, per layer; a bad key is named', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gate-figures-'));
  const config = join(dir, 'gate.json');
  writeFileSync(config, JSON.stringify({ layers: { y: { maxUnusedLatents: 0 } } }));
  const r = await gate('ignoring.onnx', 'ignoring.onnx', '--config', config);
  t.equal(r.code, 1);
  writeFileSync(config, JSON.stringify({ rules: { minDiagonalFractoin: 0.5 } }));
  const bad = await gate('ignoring.onnx', 'ignoring.onnx', '--config', config);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /rules\.minDiagonalFractoin/);
});
