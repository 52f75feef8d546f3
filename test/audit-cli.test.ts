import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { progressBar } from '../dist/cli/progress.js';
import { cli, spawnCli } from './helpers/cli.js';
import { modelPath } from './helpers/reference.js';

const dir = mkdtempSync(join(tmpdir(), 'audit-cli-'));

t.test('hessian --json: the quadratic model’s exact penalty and interaction matrix', async (t) => {
  const r = await cli('hessian', modelPath('quadratic.onnx'), '--samples', '2', '--seed', '1', '--epsilon', '0.5', '--json');
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  t.equal(result.metric, 'hessian');
  t.ok(Math.abs(result.penalty - 33) < 1e-3, `penalty ${result.penalty}`);
  t.ok(Math.abs(result.layers[0].interaction[1][1] - 36) < 1e-3);
  t.equal(result.rows, 2 * 21, 'N·(d²+d+1)');
  t.notOk('previews' in result);
});

t.test('hessian text output prints the interaction matrix and the element asked for', async (t) => {
  const r = await cli('hessian', modelPath('quadratic.onnx'), '--samples', '1', '--seed', '1', '--epsilon', '0.5', '--element', '0');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /exact penalty\s+diagonal fraction\s+diagonal ratio/);
  t.match(r.stdout, /interaction matrix of y/);
  t.match(r.stdout, /full Hessian of the chosen element in sample 0\n\s+z0\s+z1\s+z2\s+z3/);
  t.match(r.stdout, /z1\s+2\.00\s+6\.00\s+1\.00\s+1\.00/, 'row 1 of A + Aᵀ');
});

t.test('activeness names the ignored latent', async (t) => {
  const r = await cli('activeness', modelPath('ignoring.onnx'), '--samples', '3', '--seed', '1');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /unused in every layer: z3/);
  const json = JSON.parse((await cli('activeness', modelPath('ignoring.onnx'), '--samples', '3', '--seed', '1', '--extent', '1', '--json')).stdout);
  t.same(json.unused, [3]);
  t.equal(json.extent, 1);
});

t.test('orthogonality --json is 0 for orthogonal columns', async (t) => {
  const r = await cli('orthogonality', modelPath('linear_orthogonal.onnx'), '--samples', '3', '--seed', '1', '--k', '4', '--epsilon', '1', '--json');
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  t.ok(Math.abs(result.score) < 1e-8, `score ${result.score}`);
  t.equal(result.rows, 15);
  const text = await cli('orthogonality', modelPath('linear_correlated.onnx'), '--samples', '2', '--seed', '1', '--k', '4');
  t.match(text.stdout, /Var_v \|\|Jv\|\|\^2/);
});

t.test('--basis reads a file and audits along it', async (t) => {
  const basis = join(dir, 'basis.json');
  writeFileSync(basis, JSON.stringify([[0, 1, 0, 0], [1, 0, 0, 0]]));
  const r = await cli('hessian', modelPath('quadratic.onnx'), '--samples', '1', '--seed', '1', '--epsilon', '0.5', '--basis', basis, '--json');
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  t.equal(result.basis, 2);
  // Swapping z0 and z1: the interaction is that of (A + Aᵀ) restricted to (z1, z0).
  t.ok(Math.abs(result.layers[0].interaction[0][0] - 36) < 1e-3 && Math.abs(result.layers[0].interaction[1][1] - 4) < 1e-3);
  // penalty takes --basis too: along the identity it is the plain penalty.
  const identity = join(dir, 'identity.json');
  writeFileSync(identity, JSON.stringify([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]));
  const plain = JSON.parse((await cli('penalty', modelPath('quadratic.onnx'), '--samples', '2', '--seed', '5', '--k', '3', '--json')).stdout);
  const along = await cli('penalty', modelPath('quadratic.onnx'), '--samples', '2', '--seed', '5', '--k', '3', '--basis', identity, '--json');
  t.equal(along.code, 0, along.stderr);
  t.same(JSON.parse(along.stdout).layers[0].perSample, plain.layers[0].perSample);
  const missing = await cli('hessian', modelPath('quadratic.onnx'), '--basis', join(dir, 'nope.json'));
  t.equal(missing.code, 2);
  t.match(missing.stderr, /cannot read basis from .*nope\.json: ENOENT/);
});

t.test('audit prints every section and writes the report; JSON leaves the images out', async (t) => {
  const report = join(dir, 'report.html');
  const r = await cli('audit', modelPath('dcgan.onnx'), '--samples', '2', '--seed', '3', '--k', '2', '--report', report);
  t.equal(r.code, 0, r.stderr);
  for (const section of ['penalty (stochastic)', 'full Hessian', 'activeness', 'orthogonality']) t.match(r.stdout, section);
  t.match(r.stdout, /warning \[piecewise_linear\]/);
  const html = readFileSync(report, 'utf8');
  t.match(html, /^<!DOCTYPE html>/);
  t.notMatch(html, /(src|href)="https?:/, 'nothing fetched');
  t.match(html, /<img src="data:image\/png;base64,/);
  const json = await cli('audit', modelPath('quadratic.onnx'), '--samples', '2', '--seed', '3', '--json');
  const result = JSON.parse(json.stdout);
  t.equal(result.metric, 'audit');
  t.equal(result.hessian.penalty > 0, true);
  t.notOk('previews' in result);
});

t.test('user errors exit 2 with the reason', async (t) => {
  const extent = await cli('activeness', modelPath('ignoring.onnx'), '--extent', '-1');
  t.equal(extent.code, 2);
  t.match(extent.stderr, /request\.extent: must be greater than 0/);
  const threshold = await cli('activeness', modelPath('ignoring.onnx'), '--threshold', 'x');
  t.equal(threshold.code, 2);
  t.match(threshold.stderr, /--threshold must be a number, got 'x'/);
  const reduction = await cli('hessian', modelPath('quadratic.onnx'), '--reduction', 'median');
  t.equal(reduction.code, 2);
  t.match(reduction.stderr, /request\.reduction: Invalid option: expected one of "max"\|"mean"/);
  const unwritable = await cli('hessian', modelPath('quadratic.onnx'), '--samples', '1', '--report', join(dir, 'missing', 'r.html'));
  t.equal(unwritable.code, 2);
  t.match(unwritable.stderr, /cannot write the report to .*r\.html: ENOENT/);
  const layer = await cli('audit', modelPath('quadratic.onnx'), '--layers', 'nope');
  t.equal(layer.code, 2);
  t.match(layer.stderr, /layer 'nope' is not an output or intermediate tensor/);
  const model = await cli('hessian', join(dir, 'absent.onnx'));
  t.equal(model.code, 2);
  t.match(model.stderr, /cannot read model/);
});

t.test('the progress bar appears only on a terminal', async (t) => {
  const writes: string[] = [];
  const bar = progressBar({ isTTY: true, write: (s: string) => writes.push(s) });
  bar!(1, 4, 'hessian');
  bar!(4, 4, 'hessian');
  t.match(writes[0], /^\rhessian\s+\[#{8}-{22}\] 1\/4$/);
  t.match(writes[1], /\[#{30}\] 4\/4/);
  t.equal(writes[2], '\n');
  t.equal(progressBar({ isTTY: false, write: () => t.fail('no writes') }), undefined);
  // The real executable with stderr piped: nothing on stderr.
  const run = spawnCli('audit', modelPath('cubic.onnx'), '--samples', '2', '--seed', '1', '--json');
  t.equal(run.code, 0, run.stderr);
  t.equal(run.stderr, '');
  t.equal(JSON.parse(run.stdout).metric, 'audit');
});
