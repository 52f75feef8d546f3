/**
 * Issue 15 wired through the real CLI and HTTP paths: wrt naming an intermediate tensor (the graph
 * cut) against the separately exported synthesis network and torch's references, grouped
 * directions against the same directions given explicitly, the traversal metric against direct
 * runs of G at its points, and the errors, worded the same by both front ends.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { PNG } from 'pngjs';
import t from 'tap';
import { groupedDirections, resolveGroups } from '../dist/math/groups.js';
import { standardNormal } from '../dist/math/index.js';
import { orderByScore, traversalGrid, traversalPoints } from '../dist/report/traversal.js';
import { TRAVERSAL_FRACTIONS } from '../dist/metrics/traversal.js';
import { launchBrowser } from './helpers/browser.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath, relative } from './helpers/reference.js';
import { multipart, startApp } from './helpers/server.js';

interface Case { name: string; shape: number[]; z: number[]; directions: number[]; k: number; epsilon: number; penalty_max: number; penalty_mean: number; inputs_z?: number[] }
const cases = (JSON.parse(readFileSync(modelPath('archs_reference.json'), 'utf8')) as { cases: Case[] }).cases;
const byName = (name: string): Case => cases.find((c) => c.name === name)!;

const dir = mkdtempSync(join(tmpdir(), 'sg-wire-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
/** A nested JSON array file of these values in this shape (C order). */
function nested(values: ArrayLike<number>, shape: number[]): unknown {
  if (shape.length === 1) return Array.from(values);
  const inner = shape.slice(1).reduce((a, b) => a * b, 1);
  return Array.from({ length: shape[0] }, (_, i) => nested(Array.prototype.slice.call(values, i * inner, (i + 1) * inner), shape.slice(1)));
}
function file(name: string, values: ArrayLike<number>, shape: number[]): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(nested(values, shape)));
  return path;
}
async function json(...argv: string[]): Promise<Record<string, any>> {
  const r = await cli(...argv, '--json');
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const whole = modelPath('stylegan2.onnx');
const synthesis = modelPath('stylegan2_synthesis.onnx');
const limits = { maxSamples: 64, maxK: 64, maxRows: 20000, memoryBudget: 64 * 1024 * 1024 };
const { app } = await startApp(t, { limits });
async function upload(name: string): Promise<string> {
  const body = multipart([{ name: 'model', filename: name, data: modelBytes(name) }]);
  const res = await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
  if (res.statusCode !== 201) throw new Error(`upload ${name}: ${res.statusCode} ${res.body.slice(0, 200)}`);
  return res.json().id;
}
const post = (id: string, metric: string, body: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: `/v1/models/${id}/${metric}`, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(body) });
const wholeId = await upload('stylegan2.onnx');
const dcganId = await upload('dcgan.onnx');

t.test('cut at ws: CLI and HTTP equal the separately exported synthesis network within 1e-4', async (t) => {
  const c = byName('stylegan2_ws');
  const latents = file('ws.json', c.z, c.shape);
  const directions = file('v.json', c.directions, [c.k, ...c.shape]);
  const args = ['--latents', latents, '--directions', directions, '--epsilon', String(c.epsilon), '--reduction', 'mean'];
  const cut = await json('penalty', whole, '--wrt', 'ws', ...args);
  const alone = await json('penalty', synthesis, ...args);
  t.ok(relative(cut.penalty, alone.penalty) < 1e-4, `CLI: cut ${cut.penalty} vs synthesis ${alone.penalty}`);
  t.ok(relative(cut.penalty, c.penalty_mean) < 1e-4, `and torch ${c.penalty_mean}`);
  t.same(cut.cut, { tensor: 'ws', shape: c.shape, source: 'latents', inputs: [], drawn: [] });
  const http = await post(wholeId, 'penalty', { wrt: 'ws', latents: nested(c.z, c.shape), directions: nested(c.directions, [c.k, ...c.shape]), epsilon: c.epsilon, reduction: 'mean' });
  t.equal(http.statusCode, 200, http.body.slice(0, 300));
  t.equal(http.json().penalty, cut.penalty, 'HTTP gives the CLI’s number');
  t.same(http.json().cut, cut.cut);
});

t.test('cut at w from the model’s own inputs: the prefix runs once, and the penalty is torch’s', async (t) => {
  const c = byName('stylegan2_w');
  const z = file('z.json', c.inputs_z!, [c.shape[0], 32]);
  const directions = file('vw.json', c.directions, [c.k, ...c.shape]);
  const r = await json('penalty', whole, '--wrt', 'w', '--input', `z=${z}`, '--directions', directions, '--epsilon', String(c.epsilon));
  t.ok(relative(r.penalty, c.penalty_max) < 1e-4, `max ${r.penalty} vs torch ${c.penalty_max}`);
  t.same(r.cut, { tensor: 'w', shape: c.shape, source: 'inputs', inputs: ['z'], drawn: [] });
  // Drawn: the same z as the seed draws for wrt=z, so it equals giving that z.
  const seed = 5;
  const drawn = await json('penalty', whole, '--wrt', 'w', '--samples', '3', '--seed', String(seed), '--epsilon', '0.1');
  t.same(drawn.cut, { tensor: 'w', shape: [3, 32], source: 'drawn', inputs: ['z'], drawn: ['z'] });
  const zFile = file('z3.json', standardNormal(3 * 32, seed), [3, 32]);
  const given = await json('penalty', whole, '--wrt', 'w', '--input', `z=${zFile}`, '--seed', String(seed), '--epsilon', '0.1');
  t.equal(given.penalty, drawn.penalty, 'drawn z = the seed’s z given');
  const http = await post(wholeId, 'penalty', { wrt: 'w', latents: { samples: 3 }, seed, epsilon: 0.1 });
  t.equal(http.json().penalty, drawn.penalty, 'HTTP draws the same');
});

t.test('every metric takes wrt the same way; grouped W+ Hessian of the cut equals the synthesis network’s', async (t) => {
  const c = byName('stylegan2_ws');
  const latents = file('ws1.json', c.z.slice(0, 11 * 32), [1, 11, 32]);
  const args = ['--latents', latents, '--groups', 'rows', '--epsilon', '0.1', '--seed', '3'];
  const cut = await json('hessian', whole, '--wrt', 'ws', ...args);
  const alone = await json('hessian', synthesis, ...args);
  t.equal(cut.latents, 11, 'G = 11 groups: an 11 × 11 group Hessian');
  t.same(cut.groups, { count: 11, description: 'rows' });
  t.equal(cut.layers[0].interaction.length, 11);
  t.ok(relative(cut.penalty, alone.penalty) < 1e-4, `hessian: cut ${cut.penalty} vs synthesis ${alone.penalty}`);
  const o1 = await json('orthogonality', whole, '--wrt', 'ws', ...args);
  const o2 = await json('orthogonality', synthesis, ...args);
  t.ok(relative(o1.score, o2.score) < 1e-4, `orthogonality: cut ${o1.score} vs synthesis ${o2.score}`);
  const a = await json('activeness', whole, '--wrt', 'w', '--samples', '2', '--seed', '1');
  t.equal(a.cut.tensor, 'w');
  t.equal(a.layers[0].activeness.length, 32);
  const audit = await post(wholeId, 'audit', { wrt: 'w', latents: { samples: 1 }, seed: 2, groups: 'blocks:8' });
  t.equal(audit.statusCode, 200, audit.body.slice(0, 300));
  t.equal(audit.json().hessian.latents, 4, 'the audit’s Hessian along 4 groups of w');
  t.equal(audit.json().cut.tensor, 'w');
});

t.test('grouped directions equal the same directions given explicitly (CLI and HTTP)', async (t) => {
  const c = byName('stylegan2_ws');
  const [n] = c.shape;
  const k = 3;
  const seed = 17;
  const explicit = groupedDirections(k, n, resolveGroups('rows', [11, 32]), seed);
  const latents = file('wsg.json', c.z, c.shape);
  const grouped = await json('penalty', synthesis, '--latents', latents, '--groups', 'rows', '--k', String(k), '--seed', String(seed));
  const given = await json('penalty', synthesis, '--latents', latents, '--directions', file('vg.json', explicit, [k, ...c.shape]));
  t.equal(grouped.penalty, given.penalty, 'bit for bit');
  t.same(grouped.layers[0].perSample, given.layers[0].perSample);
  const http = await post(wholeId, 'penalty', { wrt: 'ws', latents: nested(c.z, c.shape), groups: 'rows', k, seed });
  t.ok(relative(http.json().penalty, grouped.penalty) < 1e-4, 'the cut over HTTP, grouped');
});

t.test('errors: CLI exit 2 and HTTP status with the same words', async (t) => {
  const c = byName('stylegan2_ws');
  const ws = file('wse.json', c.z, c.shape);
  const cases: [string, string[], Record<string, unknown>, number, string, RegExp][] = [
    ['unknown tensor', ['--wrt', 'nope', '--samples', '2'], { wrt: 'nope', latents: { samples: 2 } }, 422, 'unknown_tensor', /wrt names 'nope', which is neither an input nor a tensor of the model; its inputs are 'z' and tensors wrt can name include 'w', 'ws'/],
    ['not floating point', ['--wrt', '/synthesis/Shape_output_0', '--samples', '2'], { wrt: '/synthesis/Shape_output_0', latents: { samples: 2 } }, 422, 'unsupported_type', /wrt names tensor '\/synthesis\/Shape_output_0', whose type int64 is not floating point/],
    ['layers do not depend on it', ['--wrt', 'ws', '--layers', 'w', '--samples', '2'], { wrt: 'ws', layers: ['w'], latents: { samples: 2 } }, 422, 'wrt_unused', /layer 'w' does not depend on tensor 'ws'/],
    ['groups syntax', ['--wrt', 'ws', '--groups', '0-3,x', '--samples', '2'], { wrt: 'ws', groups: '0-3,x', latents: { samples: 2 } }, 400, 'invalid_argument', /groups: 'x' in group 1 is not a coordinate/],
    ['groups against the shape', ['--wrt', 'ws', '--groups', 'blocks:5', '--samples', '2'], { wrt: 'ws', groups: 'blocks:5', latents: { samples: 2 } }, 422, 'invalid_groups', /groups 'blocks:5' needs a block size that divides the 352 coordinates/],
    ['latents and z both', ['--wrt', 'ws', '--latents', ws, '--input', `z=${ws}`], { wrt: 'ws', latents: nested(c.z, c.shape), inputs: { z: { data: nested(c.z, c.shape) } } }, 400, 'invalid_argument', /give either latents of tensor 'ws' or the model inputs it is computed from \('z'\), not both/],
  ];
  for (const [what, argv, body, status, code, message] of cases) {
    if (code === '') continue;
    const metric = 'penalty';
    const r = await cli(metric, whole, ...argv);
    t.equal(r.code, 2, `${what}: exit 2`);
    t.match(r.stderr, message, `${what}: CLI words`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`);
    const res = await post(wholeId, metric, body);
    t.equal(res.statusCode, status, `${what}: HTTP ${status}`);
    t.equal(res.json().error.code, code);
    t.equal(res.json().error.message, r.stderr.trim().replace(/^error: /, ''), `${what}: the same words`);
  }
  const activeness = await post(wholeId, 'activeness', { wrt: 'ws', groups: 'rows', latents: { samples: 2 } });
  t.equal(activeness.statusCode, 400);
  t.match(activeness.json().error.message, /not defined along a basis or groups; leave out groups/);
  const health = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(health.statusCode, 200, 'the server is still up');
});

t.test('traversal: the grid equals direct runs of G at the traversal points; CLI --out and Accept: image/png', async (t) => {
  const seed = 4;
  const out = join(dir, 'grid.png');
  const r = await json('traversal', modelPath('dcgan.onnx'), '--samples', '3', '--seed', String(seed), '--out', out);
  const d = 12;
  t.equal(r.labels.length, d);
  t.same(r.values, [-2, -1, 0, 1, 2], 'default extent 2: z_i from −2 to 2');
  t.equal(r.orderedBy, 'activeness');
  t.same(r.order, orderByScore(r.scores), 'rows by activeness, highest first');
  t.notOk('png' in r, 'the JSON leaves the PNG to --out');
  // Direct runs of G at the same points.
  const z = standardNormal(3 * d, seed);
  const plan = traversalPoints(z, d, { samples: 3, steps: TRAVERSAL_FRACTIONS, extent: 2 });
  const session = await ort.InferenceSession.create(modelBytes('dcgan.onnx'));
  const inputName = session.inputNames[0];
  const outputs = (await session.run({ [inputName]: new ort.Tensor('float32', plan.points, [plan.points.length / d, d]) }))[session.outputNames[0]].data as Float32Array;
  await session.release();
  const direct = traversalGrid(outputs, plan, r.imageShape, r.order);
  const fromCli = PNG.sync.read(readFileSync(out));
  const expected = PNG.sync.read(direct.png);
  t.same([fromCli.width, fromCli.height], [expected.width, expected.height]);
  let maxDiff = 0;
  for (let i = 0; i < expected.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(fromCli.data[i] - expected.data[i]));
  t.ok(maxDiff <= 1, `pixels equal direct runs within one grey level (max ${maxDiff}: batches of other sizes round differently)`);
  const png = await post(dcganId, 'traversal', { latents: { samples: 3 }, seed }, { accept: 'image/png' });
  t.equal(png.statusCode, 200);
  t.match(png.headers['content-type'], /^image\/png/);
  t.same(png.rawPayload, readFileSync(out), 'HTTP returns the bytes the CLI wrote');
  const asJson = await post(dcganId, 'traversal', { latents: { samples: 3 }, seed });
  t.same(Buffer.from(asJson.json().png, 'base64'), readFileSync(out), 'JSON carries the same PNG, base64');
  const report = await post(dcganId, 'traversal', { latents: { samples: 3 }, seed }, { accept: 'text/html' });
  t.match(report.headers['content-type'], /^text\/html/);
  t.match(report.body, /<section id="traversal">[\s\S]*<img src="data:image\/png;base64,/, 'Accept: text/html: the report with the grid');
  const tooMany = await post(wholeId, 'traversal', { wrt: 'ws', latents: { samples: 1 } });
  t.equal(tooMany.statusCode, 422);
  t.match(tooMany.json().error.message, /the traversal needs 352 directions, above the limit of 128/);
  const html = await post(dcganId, 'audit', { latents: { samples: 2 }, seed }, { accept: 'text/html' });
  t.match(html.body, /<section id="activeness">[\s\S]*<section id="traversal">[\s\S]*<section id="orthogonality">/, 'the report’s traversal sits after activeness');
});

const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;

t.test('the audit report of StyleGAN2 in W: the traversal section in headless Chromium, after activeness, rows by activeness', async (t) => {
  const browser = await launchBrowser(t);
  if (!browser) return;
  const report = join(dir, 'report.html');
  const r = await json('audit', whole, '--wrt', 'w', '--samples', '2', '--seed', '1', '--epsilon', '0.3', '--report', report);
  t.equal(r.cut.tensor, 'w');
  t.notOk('traversal' in r && 'png' in r.traversal, 'the JSON keeps the PNG out');
  const activeness: number[] = r.activeness.layers[0].activeness;
  mkdirSync(ARTIFACTS, { recursive: true });
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`file://${report}`);
  await page.waitForLoadState('load');
  const ids = await page.locator('main > section').evaluateAll((els) => els.map((e) => e.id));
  t.equal(ids.indexOf('traversal'), ids.indexOf('activeness') + 1, `next to activeness: ${ids.join(', ')}`);
  t.equal(await page.locator('section#traversal img').count(), 1, 'the grid is one image');
  const natural = await page.locator('section#traversal img').evaluate((img) => [(img as HTMLImageElement).naturalWidth, (img as HTMLImageElement).naturalHeight]);
  t.same(natural, [r.traversal.grid.width, r.traversal.grid.height], 'decoded at the grid’s size');
  t.equal(r.traversal.grid.height, 32 * (32 + 2) + 2, '32 rows of 32-pixel images');
  const labels = await page.locator('.traversal-label').allTextContents();
  const order = orderByScore(activeness);
  t.same(labels.map((l) => l.split(' · ')[0]), order.map((i) => `w[${i}]`), 'rows sorted by the audit’s activeness, highest first');
  t.match(await page.locator('section#traversal .note').textContent(), /−2, −1, 0, \+1, \+2/);
  t.same(errors, [], 'no console errors');
  await page.locator('section#traversal').screenshot({ path: join(ARTIFACTS, 'traversal-stylegan2-w.png') });
});

t.test('a cut that keeps an extra input past it, and inputs that cannot be drawn (conditional model)', async (t) => {
  const model = modelPath('conditional.onnx');
  const truncation = file('trunc.json', [1], [1]);
  const label = file('label.json', [0, 1], [2]);
  // /Mul_output_0 = z · truncation: at truncation 1 the suffix is the whole model as a function of z.
  const cut = await json('penalty', model, '--wrt', '/Mul_output_0', '--samples', '2', '--seed', '3', '--input', `truncation=${truncation}`, '--input', `label=${label}`);
  const plain = await json('penalty', model, '--wrt', 'z', '--samples', '2', '--seed', '3', '--input', `truncation=${truncation}`, '--input', `label=${label}`);
  t.equal(cut.penalty, plain.penalty, 'the same function, the same drawn z: the same number');
  t.same(cut.cut, { tensor: '/Mul_output_0', shape: [2, 8], source: 'drawn', inputs: ['z', 'truncation'], drawn: ['z'] });
  // Given latents of the tensor: the shape is learnt by one run of the prefix on zeros (the int label included).
  const latents = file('mul.json', standardNormal(16, 9), [2, 8]);
  const given = await json('orthogonality', model, '--wrt', '/Mul_output_0', '--latents', latents, '--input', `label=${label}`, '--seed', '1');
  t.same(given.cut, { tensor: '/Mul_output_0', shape: [2, 8], source: 'latents', inputs: [], drawn: [] });
  const errors: [string, string[], RegExp][] = [
    ['a fixed input is not drawn', ['--wrt', '/Mul_output_0', '--samples', '2', '--input', `label=${label}`], /tensor '\/Mul_output_0' is computed from input 'truncation' of shape \[1\], which is not one entry per sample, so it is not drawn; pass it with --input truncation=FILE/],
    ['an int input cannot be drawn', ['--wrt', '/Concat_output_0', '--samples', '2', '--input', `truncation=${truncation}`], /tensor '\/Concat_output_0' is computed from input 'label' \(int64\), which cannot be drawn; pass it with --input label=FILE/],
    ['samples against the inputs given', ['--wrt', '/Concat_output_0', '--samples', '3', '--input', `truncation=${truncation}`, '--input', `label=${label}`, '--input', `z=${latents}`], /latents asks for 3 samples, but the inputs given have 2; give one or the other/],
    ['a wrong latents shape', ['--wrt', '/Mul_output_0', '--latents', file('bad.json', [1, 2, 3], [1, 3]), '--input', `label=${file('l1.json', [0], [1])}`], /latents have shape \[1, 3\] but input '\/Mul_output_0' expects \[batch, 8\]/],
  ];
  for (const [what, argv, message] of errors) {
    const r = await cli('penalty', model, ...argv);
    t.equal(r.code, 2, `${what}: exit 2`);
    t.match(r.stderr, message, what);
  }
});

t.test('inspect lists the tensors wrt can name, with shapes learnt by one run', async (t) => {
  const r = await cli('inspect', whole);
  t.equal(r.code, 0);
  t.match(r.stdout, /tensors wrt can name/);
  t.match(r.stdout, /\nws\s+float32\s+\[batch, 11, 32\]\s+Tile/);
  const described = await json('inspect', whole);
  const w = described.wrt.find((c: { name: string }) => c.name === 'w');
  t.same(w, { name: 'w', type: 'float32', shape: ['batch', 32], op: 'LeakyRelu' });
  t.notOk(described.wrt.some((c: { name: string }) => c.name === 'image'), 'outputs are not cut points');
  const none = await cli('inspect', modelPath('quadratic.onnx'));
  t.match(none.stdout, /tensors wrt can name/);
});

t.test('traversal along groups, and a model without an image layer', async (t) => {
  const r = await json('traversal', whole, '--wrt', 'ws', '--groups', 'rows', '--samples', '2', '--seed', '1', '--extent', '0.5');
  t.equal(r.directions, 'groups');
  t.same(r.labels, Array.from({ length: 11 }, (_, g) => `group ${g}`));
  t.equal(r.orderedBy, null, 'activeness is per coordinate: groups keep their order');
  t.same(r.order, Array.from({ length: 11 }, (_, g) => g));
  t.same(r.values, [-0.5, -0.25, 0, 0.25, 0.5]);
  t.equal(r.samplesShown, 2);
  t.equal(r.rows, 11 * 2 * 5, 'one forward row per image');
  const quadratic = await upload('quadratic.onnx');
  const res = await post(quadratic, 'traversal', { latents: { samples: 2 } });
  t.equal(res.statusCode, 422);
  t.equal(res.json().error.code, 'no_image_layer');
  t.match(res.json().error.message, /no layer asked is image-shaped/);
  const cliError = await cli('traversal', modelPath('quadratic.onnx'), '--samples', '2');
  t.equal(cliError.code, 2);
  t.equal(cliError.stderr.trim(), `error: ${res.json().error.message}`, 'the same words');
});
