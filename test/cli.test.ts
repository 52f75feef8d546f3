/** The command line: contract names, numbers equal to the library's, and one clear line per user error. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { writeNpy } from '../dist/io/npy.js';
import { rademacherDirections, standardNormal } from '../dist/math/index.js';
import { cli, spawnCli } from './helpers/cli.js';
import { modelPath } from './helpers/reference.js';

const dir = mkdtempSync(join(tmpdir(), 'hessian-audit-cli-'));
const file = (name: string, content: string | Uint8Array): string => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};
const dcgan = modelPath('dcgan.onnx');
const z = file('z.npy', writeNpy({ type: 'float32', shape: [3, 12], data: standardNormal(36, 4) }));
const v = file('v.npy', writeNpy({ type: 'float32', shape: [2, 3, 12], data: rademacherDirections(2, 36, 5) }));

t.test('the real executable prints a table, and JSON with --json', async (t) => {
  const human = spawnCli('penalty', dcgan, '--samples', '4', '--seed', '1', '--k', '3');
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, /layer\s+shape\s+op\s+penalty/);
  t.match(human.stdout, /image\s+\[4, 3, 32, 32\]\s+Tanh\s+\d/);
  t.match(human.stdout, /N=4 k=3 epsilon=0.1 reduction=max variance=unbiased/);
  const json = spawnCli('penalty', dcgan, '--samples', '4', '--seed', '1', '--k', '3', '--json');
  const result = JSON.parse(json.stdout);
  t.equal(result.samples, 4);
  t.equal(result.forwardPasses, 7);
  t.equal(result.executionProvider, 'cpu');
  t.match(human.stdout, result.layers[0].penalty.toPrecision(6), 'the table shows the JSON number');
});

t.test('latents and directions from .npy and JSON files give the same numbers', async (t) => {
  const fromNpy = JSON.parse((await cli('penalty', dcgan, '--latents', z, '--directions', v, '--json')).stdout);
  const zJson = file('z.json', JSON.stringify(nested(standardNormal(36, 4), [3, 12])));
  const vJson = file('v.json', JSON.stringify(nested(rademacherDirections(2, 36, 5), [2, 3, 12])));
  const fromJson = JSON.parse((await cli('penalty', dcgan, '--latents', zJson, '--directions', vJson, '--json')).stdout);
  t.equal(fromNpy.directions, 'explicit');
  t.equal(fromNpy.k, 2, 'k comes from the directions');
  t.same(fromJson.layers[0].perSample, fromNpy.layers[0].perSample);
});

t.test('extra inputs come by name', async (t) => {
  const label = file('label.npy', writeNpy({ type: 'int64', shape: [2], data: BigInt64Array.from([1n, 2n]) }));
  const r = await cli('penalty', modelPath('conditional.onnx'), '--samples', '2', '--input', `label=${label}`, '--input', `truncation=${file('t.json', '[0.5]')}`, '--json');
  t.equal(r.code, 0, r.stderr);
  t.ok(JSON.parse(r.stdout).penalty > 0);
});

t.test('inspect lists inputs, outputs and auditable layers with advice', async (t) => {
  const r = await cli('inspect', dcgan, '--json');
  const d = JSON.parse(r.stdout);
  t.same(d.inputs, [{ name: 'z', type: 'float32', shape: ['batch', 12] }]);
  t.equal(d.outputs[0].name, 'image');
  const conv = d.layers.find((l: { name: string }) => l.name === '/block1/block1.0/ConvTranspose_output_0');
  t.same([conv.op, conv.afterLinear, conv.suggestion], ['ConvTranspose', true, '/block1/block1.1/BatchNormalization_output_0']);
  t.match((await cli('inspect', dcgan)).stdout, /straight out of a linear op: prefer \/block1\/block1.1\/BatchNormalization_output_0/);
});

const errors: [string, string[], RegExp][] = [
  ['k < 2', ['--k', '1'], /request\.k: must be at least 2/],
  ['k not a number', ['--k', 'two'], /--k must be a number, got 'two'/],
  ['epsilon = 0', ['--epsilon', '0'], /request\.epsilon: must be greater than 0/],
  ['epsilon < 0', ['--epsilon', '-0.1'], /request\.epsilon: must be greater than 0/],
  ['epsilon infinite', ['--epsilon', 'Infinity'], /request\.epsilon: .*expected number, received Infinity/],
  ['unknown layer', ['--layers', 'image,nope'], /layer 'nope' is not an output or intermediate tensor.*'image'/],
  ['unknown wrt input', ['--wrt', 'w'], /wrt names 'w', which is neither an input nor a tensor of the model; its inputs are 'z'/],
  ['unknown extra input', ['--input', `label=${join(dir, 'z.npy')}`], /inputs names input 'label', which the model does not have/],
  ['latents and samples together', ['--latents', join(dir, 'z.npy'), '--samples', '3'], /either --latents FILE or --samples N, not both/],
  ['unknown reduction', ['--reduction', 'min'], /request\.reduction: Invalid option: expected one of "max"\|"mean"/],
  ['unknown device', ['--device', 'tpu'], /unknown device 'tpu': use auto, cpu, cuda, cuda:N or webgpu/],
  ['negative samples', ['--samples', '-3'], /request\.latents\.samples: must be at least 1/],
];
for (const [what, args, message] of errors) {
  t.test(`usage error: ${what}`, async (t) => {
    const r = await cli('penalty', dcgan, '--samples', '2', ...args);
    t.equal(r.code, 2);
    t.match(r.stderr, message);
    t.equal(r.stdout, '');
  });
}

t.test('wrong latent shape names both shapes', async (t) => {
  const bad = file('bad.npy', writeNpy({ type: 'float32', shape: [3, 10], data: new Float32Array(30) }));
  const r = await cli('penalty', dcgan, '--latents', bad);
  t.equal(r.code, 2);
  t.match(r.stderr, /latents have shape \[3, 10\] but input 'z' expects \[batch, 12\]/);
});

t.test('integer latents are refused', async (t) => {
  const ints = file('ints.npy', writeNpy({ type: 'int32', shape: [3, 12], data: new Int32Array(36) }));
  const r = await cli('penalty', dcgan, '--latents', ints);
  t.equal(r.code, 2);
  t.match(r.stderr, /latents for 'z' are int32; give floating-point values/);
});

t.test('NaN and Inf in latents are refused with their position', async (t) => {
  const data = standardNormal(36, 1);
  data[14] = NaN;
  const r = await cli('penalty', dcgan, '--latents', file('nan.npy', writeNpy({ type: 'float32', shape: [3, 12], data })));
  t.equal(r.code, 2);
  t.match(r.stderr, /latents hold NaN at index \[1, 2\]; every value must be finite/);
  data[14] = 0;
  data[11] = -Infinity;
  const inf = await cli('penalty', dcgan, '--latents', file('inf.npy', writeNpy({ type: 'float32', shape: [3, 12], data })));
  t.match(inf.stderr, /latents hold -Infinity at index \[0, 11\]/);
  // JSON has no Infinity: a null in its place is named.
  const json = await cli('penalty', dcgan, '--latents', file('inf.json', JSON.stringify([[...Array(11).fill(0), 1e999]])));
  t.match(json.stderr, /latents\[0\]\[11\] is null, not a number/);
});

t.test('a missing extra input says how to pass it', async (t) => {
  const r = await cli('penalty', modelPath('conditional.onnx'), '--samples', '2');
  t.equal(r.code, 2);
  t.match(r.stderr, /the model needs input 'label' \(int64 \[batch\]\); pass it with --input label=FILE/);
});

t.test('a per-sample extra input with the wrong batch is refused', async (t) => {
  const label = file('label3.json', '[1, 2, 3]');
  const r = await cli('penalty', modelPath('conditional.onnx'), '--samples', '2', '--input', `label=${label}`, '--input', `truncation=${file('t1.json', '[0.5]')}`);
  t.equal(r.code, 2);
  t.match(r.stderr, /input 'label' is batch first, so it needs one entry per sample \(2\)/);
});

t.test('wrong direction shape names both shapes', async (t) => {
  const r = await cli('penalty', dcgan, '--latents', z, '--directions', v, '--k', '3');
  t.equal(r.code, 2);
  t.match(r.stderr, /directions have shape \[2, 3, 12\] but k × latents is \[3, 3, 12\]/);
});

t.test('malformed .npy files are refused with the reason', async (t) => {
  const good = writeNpy({ type: 'float32', shape: [3, 12], data: new Float32Array(36) });
  const cases: [string, Uint8Array, RegExp][] = [
    ['truncated', good.subarray(0, good.length - 5), /needs 144 data bytes but 139 are present/],
    ['big-endian', patch(good, "'<f4'", "'>f4'"), /big-endian data is not supported/],
    ['float16', patch(good, "'<f4'", "'<f2'"), /dtype '<f2' is not supported/],
    ['fortran order', patch(good, 'False', 'True '), /it is in Fortran order/],
    ['garbage header', patch(good, "'descr'", "'dscr' "), /its header cannot be read/],
  ];
  for (const [what, bytes, message] of cases) {
    const r = await cli('penalty', dcgan, '--latents', file(`${what}.npy`, bytes));
    t.equal(r.code, 2, what);
    t.match(r.stderr, message, what);
    t.match(r.stderr, /np\.save/, 'says how to fix it');
  }
  const text = await cli('penalty', dcgan, '--latents', file('text.npy', 'hello'));
  t.match(text.stderr, /neither a .npy file nor JSON/);
  const ragged = await cli('penalty', dcgan, '--latents', file('ragged.json', '[[1,2],[3]]'));
  t.match(ragged.stderr, /latents is not rectangular: latents\[1\] has 1 entries where 2 were expected/);
});

t.test('a file that is not ONNX is refused', async (t) => {
  const r = await cli('penalty', file('model.onnx', 'this is not a model'), '--samples', '2');
  t.equal(r.code, 2);
  t.match(r.stderr, /the file is not an ONNX model/);
  const missing = await cli('penalty', join(dir, 'nope.onnx'));
  t.match(missing.stderr, /cannot read model .*nope.onnx: ENOENT/);
  t.equal(missing.code, 2);
});

t.test('unknown commands and flags are usage errors', async (t) => {
  t.equal((await cli('frobnicate')).code, 2);
  const r = await cli('penalty', dcgan, '--bogus');
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown option '--bogus'/);
  t.equal((await cli('--help')).code, 0);
});

function nested(data: Float32Array, shape: number[]): unknown {
  if (shape.length === 1) return Array.from(data);
  const step = data.length / shape[0];
  return Array.from({ length: shape[0] }, (_, i) => nested(data.subarray(i * step, (i + 1) * step), shape.slice(1)));
}

function patch(bytes: Uint8Array, from: string, to: string): Uint8Array {
  const text = Buffer.from(bytes).toString('latin1').replace(from, to);
  return Buffer.from(text, 'latin1');
}
