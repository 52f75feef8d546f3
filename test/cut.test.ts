/**
 * Cutting a model at an intermediate tensor (src/onnx/cut.ts): what the suffix and prefix keep, the
 * tensors `inspect` lists as wrt candidates, and every error a user can cause with a wrt tensor.
 */
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { AuditError } from '../dist/contract/errors.js';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { cutPrefix, cutSuffix, wrtCandidates } from '../dist/onnx/cut.js';
import { describeModel } from '../dist/onnx/describe.js';
import { parseModel } from '../dist/onnx/safety.js';
import { standardNormal, rademacherDirections } from '../dist/math/index.js';
import { encode, type Obj } from './helpers/onnx-build.js';
import { modelBytes, relative } from './helpers/reference.js';

const sessions = new SessionCache(4);
t.teardown(() => sessions.clear());
const cpu = { device: { kind: 'cpu' as const }, sessions };
const whole = modelBytes('stylegan2.onnx');

const info = (name: string, dims: (number | string)[] | null, elemType = 1): Obj => ({
  name,
  type: { tensorType: { elemType, ...(dims ? { shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}) } },
});
const floats = (values: number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

/**
 * z [N,3] → MatMul W → h (declared in value_info as [N,4]) → Relu → y; h → Cast(int64) → idx;
 * z → Neg → dead (no output reads it); z → Split → (a, b) → Add → s (second output).
 */
function handModel(): Uint8Array {
  return encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'hand',
      node: [
        { opType: 'MatMul', input: ['z', 'W'], output: ['h'] },
        { opType: 'Relu', input: ['h'], output: ['y'] },
        { opType: 'Cast', input: ['h'], output: ['idx'], attribute: [{ name: 'to', type: 2, i: 7 }] },
        { opType: 'Neg', input: ['z'], output: ['dead'] },
        { opType: 'Split', input: ['z'], output: ['a', 'b'], attribute: [{ name: 'axis', type: 2, i: 1 }, { name: 'split', type: 7, ints: [1, 2] }] },
        { opType: 'ReduceSum', input: ['b'], output: ['bs'], attribute: [{ name: 'axes', type: 7, ints: [1] }] },
        { opType: 'Add', input: ['a', 'bs'], output: ['s'] },
      ],
      initializer: [
        { name: 'W', dims: [3, 4], dataType: 1, rawData: floats(Array.from({ length: 12 }, (_, i) => i - 5)) },
        { name: 'unused', dims: [2], dataType: 1, rawData: floats([1, 2]) },
      ],
      input: [info('z', ['N', 3])],
      output: [info('y', ['N', 4]), info('s', ['N', 1])],
      valueInfo: [info('h', ['N', 4])],
    },
  });
}

function expectError(t: Tap.Test, fn: () => unknown, code: string, pattern: RegExp): void {
  try {
    fn();
    t.fail(`expected ${code}`);
  } catch (err) {
    t.ok(err instanceof AuditError, 'an AuditError');
    const e = err as InstanceType<typeof AuditError>;
    t.equal(e.code, code);
    t.equal(e.status, 422);
    t.match(e.message, pattern);
    t.notMatch(e.message, /\n/, 'one line');
  }
}

t.test('the suffix keeps only what the layers need from the tensor, with the declared shape', async (t) => {
  const suffix = cutSuffix(handModel(), 'h', ['y']);
  t.same(suffix.input, { name: 'h', type: 'float32', shape: ['batch', 4] }, 'shape from value_info, batch symbolic');
  const graph = parseModel(suffix.bytes).graph!;
  t.same(graph.node!.map((n) => n.opType), ['Relu']);
  t.same(graph.input!.map((i) => i.name), ['h']);
  t.same(graph.output!.map((o) => o.name), ['y']);
  t.same(graph.initializer ?? [], [], 'no weight is used after h');
  t.same(describeModel(suffix.bytes).inputs, [{ name: 'h', type: 'float32', shape: ['batch', 4] }]);

  const prefix = cutPrefix(handModel(), 'h');
  const pg = parseModel(prefix.bytes).graph!;
  t.same(pg.node!.map((n) => n.opType), ['MatMul']);
  t.same(pg.initializer!.map((i) => i.name), ['W'], 'the unused weight is dropped');
  t.same(prefix.output, { name: 'h', type: 'float32', shape: ['N', 4] });
  const session = await ort.InferenceSession.create(prefix.bytes);
  const out = await session.run({ z: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 0, 1, 0]), [2, 3]) });
  t.same(Array.from(out.h.data as Float32Array), [-5, -4, -3, -2, -1, 0, 1, 2], 'rows 0 and 1 of W');
  await session.release();
});

t.test('an original input the layers still need stays an input: the conditional generator', async (t) => {
  // h = cat([z · truncation, embed(label)]): cut at z · truncation, the label is still read.
  const bytes = modelBytes('conditional.onnx');
  const suffix = cutSuffix(bytes, '/Mul_output_0', ['out'], { shape: [8] });
  t.same(suffix.extraInputs, ['label'], 'truncation is only used before the cut');
  t.same(describeModel(suffix.bytes).inputs.map((i) => i.name), ['/Mul_output_0', 'label']);
  const n = 4;
  const z = standardNormal(n * 8, 5);
  const truncation = 0.75; // exact in binary, so u = 0.75·z is the same float on both sides
  const u = Float32Array.from(z, (x) => x * truncation);
  const label = new ort.Tensor('int64', BigInt64Array.from([3n, 1n, 4n, 1n]), [n]);
  const original = await ort.InferenceSession.create(bytes);
  const tail = await ort.InferenceSession.create(suffix.bytes);
  const a = (await original.run({ z: new ort.Tensor('float32', z, [n, 8]), label, truncation: new ort.Tensor('float32', Float32Array.from([truncation]), [1]) })).out;
  const b = (await tail.run({ '/Mul_output_0': new ort.Tensor('float32', u, [n, 8]), label })).out;
  t.same(Array.from(b.data as Float32Array), Array.from(a.data as Float32Array), 'suffix(t·z, label) = G(z, label, t)');
  await Promise.all([original.release(), tail.release()]);

  // The penalty w.r.t. u = t·z at ε·t, times t⁴, is the penalty w.r.t. z at ε (H_z = t² H_u).
  const k = 3;
  const v = rademacherDirections(k, n * 8, 6);
  const labels = { label: { type: 'int64' as const, shape: [n], data: BigInt64Array.from([3n, 1n, 4n, 1n]) } };
  const wrtZ = await evaluatePenalty(
    loadModel(bytes),
    { latents: { type: 'float32', shape: [n, 8], data: z }, directions: { type: 'float32', shape: [k, n, 8], data: v }, epsilon: 0.2,
      inputs: { ...labels, truncation: { type: 'float32', shape: [1], data: Float32Array.from([truncation]) } } },
    cpu,
  );
  const wrtU = await evaluatePenalty(
    loadModel(suffix.bytes),
    { latents: { type: 'float32', shape: [n, 8], data: u }, directions: { type: 'float32', shape: [k, n, 8], data: v }, epsilon: 0.2 * truncation, inputs: labels },
    cpu,
  );
  t.equal(wrtU.wrt, '/Mul_output_0');
  const scaled = wrtU.penalty! * truncation ** 4;
  t.ok(relative(scaled, wrtZ.penalty!) < 1e-3, `t⁴ · P_u ${scaled} vs P_z ${wrtZ.penalty} (float32 rounding of z ± εv vs u ± tεv)`);
});

t.test("a tensor read by a subgraph's outer-scope reference counts as a dependency", async (t) => {
  const then = { name: 'then', node: [{ opType: 'Identity', input: ['r'], output: ['o1'] }], output: [info('o1', ['N', 3])] };
  const otherwise = { name: 'else', node: [{ opType: 'Neg', input: ['r'], output: ['o2'] }], output: [info('o2', ['N', 3])] };
  const bytes = encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    graph: {
      name: 'if',
      node: [
        { opType: 'Relu', input: ['z'], output: ['r'] },
        { opType: 'If', input: ['cond'], output: ['y'], attribute: [{ name: 'then_branch', type: 5, g: then }, { name: 'else_branch', type: 5, g: otherwise }] },
      ],
      input: [info('z', ['N', 3]), info('cond', [], 9)],
      output: [info('y', ['N', 3])],
    },
  });
  t.same(wrtCandidates(bytes).map((c) => c.name), ['r']);
  const suffix = cutSuffix(bytes, 'r', [], { shape: [3] });
  t.same(suffix.layers, ['y']);
  t.same(suffix.extraInputs, ['cond']);
  const session = await ort.InferenceSession.create(suffix.bytes);
  const r = new ort.Tensor('float32', Float32Array.from([1, -2, 3]), [1, 3]);
  const y = await session.run({ r, cond: new ort.Tensor('bool', [false], []) });
  t.same(Array.from(y.y.data as Float32Array), [-1, 2, -3], 'the else branch negates r');
  await session.release();
});

t.test('wrt candidates: floating-point intermediate tensors between the inputs and an output', async (t) => {
  const candidates = wrtCandidates(whole);
  const names = candidates.map((c) => c.name);
  const w = candidates.find((c) => c.name === 'w');
  t.same(w, { name: 'w', type: 'float32', shape: null, op: 'LeakyRelu' }, 'w, shape unknown without value_info');
  t.equal(candidates.find((c) => c.name === 'ws')?.op, 'Tile');
  t.notOk(names.includes('z'), 'inputs are not intermediate');
  t.notOk(names.includes('image'), 'outputs are left out');
  const description = describeModel(whole);
  const layers = new Set(description.layers.map((l) => l.name));
  t.ok(candidates.every((c) => layers.has(c.name)), 'every candidate depends on the input (a describe layer)');
  t.ok(candidates.every((c) => c.type === 'float32'));
  t.notOk(names.some((n) => /Shape/.test(n)), 'no shape tensor');
  t.ok(names.indexOf('w') < names.indexOf('ws'), 'graph order');

  const hand = wrtCandidates(handModel());
  t.same(hand, [
    { name: 'h', type: 'float32', shape: ['N', 4], op: 'MatMul' },
    { name: 'a', type: 'float32', shape: null, op: 'Split' },
    { name: 'b', type: 'float32', shape: null, op: 'Split' },
    { name: 'bs', type: 'float32', shape: null, op: 'ReduceSum' },
  ], 'not the int64 cast, not the tensor no output reads, not the outputs');
});

t.test('every wrt error names the tensor in one line (AuditError, 422)', async (t) => {
  expectError(t, () => cutSuffix(whole, 'nope'), 'unknown_tensor', /tensor 'nope', which the model does not have/);
  expectError(t, () => cutPrefix(whole, 'nope'), 'unknown_tensor', /'nope'/);
  const weight = parseModel(whole).graph!.initializer![0].name!;
  expectError(t, () => cutSuffix(whole, weight), 'unknown_tensor', new RegExp(`'${weight.replace(/\./g, '\\.')}', which is a weight`));
  expectError(t, () => cutSuffix(whole, '/synthesis/Shape_output_0'), 'unsupported_type', /tensor '\/synthesis\/Shape_output_0', whose type int64 is not floating point/);
  expectError(t, () => cutSuffix(handModel(), 'idx'), 'unsupported_type', /'idx', whose type int64/);
  expectError(t, () => cutSuffix(whole, 'w', ['/mapping/fcs.0/Gemm_output_0']), 'wrt_unused', /layer '\/mapping\/fcs\.0\/Gemm_output_0' does not depend on tensor 'w'/);
  expectError(t, () => cutSuffix(handModel(), 'dead'), 'wrt_unused', /no output of the model depends on tensor 'dead'/);
  expectError(t, () => cutSuffix(whole, 'w', ['w']), 'wrt_unused', /layer 'w' is the tensor the penalty is taken with respect to/);
  expectError(t, () => cutSuffix(whole, 'w', ['missing']), 'unknown_layer', /layer 'missing' is not a tensor of the model/);
  expectError(t, () => cutSuffix(handModel(), 'a', ['s']), 'uncuttable', /tensor 'a' comes out of a node whose other outputs the layers also need/);
  expectError(t, () => cutSuffix(new Uint8Array([1, 2, 3]), 'w'), 'invalid_model', /not an ONNX model/);
});

t.test('element types without value_info: from the op that produces each tensor', async (t) => {
  const node = (opType: string, input: string[], output: string[], attribute: Obj[] = []): Obj => ({ opType, input, output, attribute });
  const graph = {
    input: [info('x', ['N', 3]), info('d', ['N', 3], 11)],
    initializer: [{ name: 'k', dims: [1], dataType: 7, int64Data: [2] }],
    node: [
      node('Constant', [], ['cf'], [{ name: 'value_float', type: 1, f: 1.5 }]),
      node('Constant', [], ['ci'], [{ name: 'value_int', type: 2, i: 3 }]),
      node('Constant', [], ['ct'], [{ name: 'value', type: 4, t: { dims: [1], dataType: 11, doubleData: [1] } }]),
      node('Constant', [], ['cs'], [{ name: 'value_string', type: 3, s: new Uint8Array([97]) }]),
      node('ConstantOfShape', ['k'], ['zeros']),
      node('CastLike', ['x', 'd'], ['like']),
      node('TopK', ['x', 'k'], ['values', 'indices']),
      node('Where', ['eq', 'd', 'd'], ['chosen']),
      node('Equal', ['x', 'x'], ['eq']),
      node('RandomNormal', [], ['noise'], [{ name: 'dtype', type: 2, i: 11 }]),
      node('Relu', ['unknown'], ['untyped']),
    ],
  };
  const { elementTypes } = await import('../dist/onnx/element-types.js');
  const types = Object.fromEntries(elementTypes(graph as never));
  t.same(types, { x: 1, d: 11, k: 7, cf: 1, ci: 7, ct: 11, zeros: 1, like: 11, values: 1, indices: 7, chosen: 11, eq: 9, noise: 11 });
  t.notOk('cs' in types, 'a string constant has no numeric type to tell');
  t.notOk('untyped' in types, 'an op whose inputs are unknown stays unknown');
});
