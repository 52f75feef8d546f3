import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import t, { type Test } from 'tap';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';
import { AuditError } from '../dist/contract/errors.js';
import { describeModel } from '../dist/onnx/describe.js';
import { decodeModel, modelProto } from '../dist/onnx/proto.js';
import { ModelSchema, modelWarnings } from '../dist/server/schemas.js';
import { checkModel, DEFAULT_SAFETY } from '../dist/onnx/safety.js';
import { cli } from './helpers/cli.js';
import { exampleModels, malformedCorpus, type Variant } from './helpers/corpus.js';
import {
  chainModel,
  constantModel,
  decodeExample,
  encode,
  externalWeight,
  functionModel,
  ifModel,
  linearModel,
  type Obj,
  rawFloats,
} from './helpers/onnx-build.js';
import { modelBytes } from './helpers/reference.js';

/** Every code the checks may answer with (parse failures keep describe.ts's invalid_model). */
const CODES = new Set([
  'invalid_model',
  'external_data_not_allowed',
  'unsupported_ir_version',
  'unsupported_opset',
  'custom_op_domain',
  'invalid_tensor',
  'tensor_data_mismatch',
  'too_many_nodes',
  'initializers_too_large',
  'graph_too_deep',
  'ambiguous_encoding',
  'invalid_graph',
]);

/** The AuditError a check throws, or null when the model passes. */
function refusal(bytes: Uint8Array, settings = {}): AuditError | null {
  try {
    checkModel(bytes, settings);
    return null;
  } catch (err) {
    if (err instanceof AuditError) return err;
    throw err;
  }
}

const refuses = (t: Test, model: Obj, code: string, status: number, settings = {}): AuditError | null => {
  const err = refusal(encode(model), settings);
  t.equal(err?.code, code, err?.message ?? 'passed the checks');
  t.equal(err?.status, status);
  return err;
};

// Nodes, weight bytes and tensors per example model, counted by the onnx Python package
// (numpy_helper.to_array(...).nbytes over initializers and tensor attributes: Constant and
// ConstantOfShape values): an independent parser.
const EXAMPLES: Record<string, [number, number, number]> = {
  'bn_train.onnx': [7, 8000, 10],
  'conditional.onnx': [7, 4608, 5],
  'cubic.onnx': [13, 64, 8],
  'dcgan.onnx': [11, 221164, 17],
  'dcgan64.onnx': [14, 1514240, 21],
  'dcgan_entangled.onnx': [29, 221248, 28],
  'dcgan_smooth.onnx': [13, 221164, 17],
  'ignoring.onnx': [20, 100, 13],
  'linear_correlated.onnx': [1, 48, 1],
  'linear_orthogonal.onnx': [1, 48, 1],
  'log.onnx': [1, 0, 0],
  'mlp.onnx': [6, 7488, 6],
  'noise_conv_in.onnx': [9, 9708, 9],
  'noise_dc_residual.onnx': [52, 37100, 25],
  'noise_leaky_conv.onnx': [10, 22476, 9],
  'noise_mlp.onnx': [7, 7488, 6],
  'noise_offset_ln.onnx': [17, 7756, 11],
  'noise_offset_ln_1e4.onnx': [17, 7756, 11],
  'noise_relu_conv.onnx': [10, 22476, 9],
  'noise_residual_ln.onnx': [50, 37100, 25],
  'noisy.onnx': [10, 7492, 7],
  'quadratic.onnx': [4, 72, 2],
  'separable.onnx': [31, 112, 16],
  'stylegan2.onnx': [290, 594184, 139],
  'stylegan2_synthesis.onnx': [267, 577232, 125],
  'vae_decoder.onnx': [4, 1291136, 4],
};

t.test('every example model passes, with the sizes the onnx package counts', async (t) => {
  t.same(exampleModels(), Object.keys(EXAMPLES), 'the table covers every example model');
  for (const [name, [nodes, bytes, tensors]] of Object.entries(EXAMPLES)) {
    const { summary } = checkModel(modelBytes(name));
    t.same(summary, { nodes, initializerBytes: bytes, tensors, depth: 0 }, name);
  }
});

t.test('external data is refused wherever a tensor can hide it', async (t) => {
  const inConstant = { ...externalWeight('w.bin'), dims: [3] };
  const cases: [string, Obj][] = [
    ['../ relative path', linearModel({ initializer: [externalWeight('../secret.bin')] })],
    ['absolute path', linearModel({ initializer: [externalWeight('/etc/passwd')] })],
    // onnxruntime 1.30 itself refuses the two above for a model loaded from bytes, but reads this one
    // from the server's working directory and hands its bytes to the graph as weights.
    ['plain name under the working directory', linearModel({ initializer: [externalWeight('package.json')] })],
    ['data_location EXTERNAL with no entries', linearModel({ initializer: [{ name: 'W', dims: [3, 4], dataType: 1, dataLocation: 1 }] })],
    ['a Constant node value', constantModel(inConstant)],
    ['an initializer of an If branch', ifModel(1, inConstant)],
    ['a sparse initializer', linearModel({ sparseInitializer: [{ dims: [3, 4], values: externalWeight('w.bin'), indices: { dims: [12], dataType: 7, int64Data: Array.from({ length: 12 }, (_, i) => i) } }] })],
    ['a node inside a function', functionModel({ node: [{ opType: 'Constant', output: ['c'], attribute: [{ name: 'value', type: 4, t: inConstant }] }, { opType: 'Add', input: ['x', 'c'], output: ['y'] }] })],
    ['a function attribute default', functionModel({ attributeProto: [{ name: 'alpha', type: 4, t: inConstant }] })],
    ['a training_info graph', linearModel({}, { trainingInfo: [{ initialization: { name: 'init', initializer: [externalWeight('w.bin')] } }] })],
  ];
  for (const [what, model] of cases) {
    const err = refuses(t, model, 'external_data_not_allowed', 422);
    t.match(err?.message, /external file/, what);
  }
  const err = refusal(encode(linearModel({ initializer: [externalWeight('../secret.bin')] })));
  t.match(err?.message, /initializer 'W' keeps its data in an external file \('\.\.\/secret\.bin'\).*save_as_external_data=False/);
  t.same(err?.details, { tensor: 'W', location: '../secret.bin' });
});

t.test('why: onnxruntime 1.30 itself reads external data under the working directory into the weights', async (t) => {
  // The model the checks refuse above, loaded straight into onnxruntime: W (3×4 floats) comes from
  // the first 48 bytes of package.json, and y = [1, 0, 0]·W returns its first 16 bytes.
  const bytes = encode(linearModel({ initializer: [externalWeight('package.json')] }));
  const session = await ort.InferenceSession.create(bytes);
  t.teardown(() => session.release());
  const out = await session.run({ z: new ort.Tensor('float32', Float32Array.from([1, 0, 0]), [1, 3]) });
  const leaked = Buffer.from((out.y.data as Float32Array).buffer).toString('latin1');
  t.equal(leaked, readFileSync(new URL('../package.json', import.meta.url), 'latin1').slice(0, 16));
});

t.test('IR version and opsets outside what onnxruntime 1.30 runs are refused', async (t) => {
  refuses(t, linearModel({}, { irVersion: 14 }), 'unsupported_ir_version', 422);
  refuses(t, linearModel({}, { irVersion: 2 }), 'unsupported_ir_version', 422);
  refuses(t, linearModel({}, { opsetImport: [{ domain: '', version: 27 }] }), 'unsupported_opset', 422);
  refuses(t, linearModel({}, { opsetImport: [{ domain: '', version: 6 }] }), 'unsupported_opset', 422);
  refuses(t, linearModel({}, { opsetImport: [{ domain: 'ai.onnx', version: 30 }] }), 'unsupported_opset', 422);
  refuses(t, linearModel({}, { opsetImport: [{ domain: '', version: 14 }, { domain: 'ai.onnx.ml', version: 6 }] }), 'unsupported_opset', 422);
  refuses(t, linearModel({}, { opsetImport: [{ domain: '', version: 14 }, { domain: 'com.microsoft', version: 2 }] }), 'unsupported_opset', 422);
  refuses(t, linearModel({}, { opsetImport: [] }), 'unsupported_opset', 422);
  refuses(t, functionModel({ opsetImport: [{ domain: '', version: 27 }] }), 'unsupported_opset', 422);
  const err = refusal(encode(linearModel({}, { opsetImport: [{ domain: '', version: 27 }] })));
  t.match(err?.message, /opset 27 of domain ai\.onnx; onnxruntime 1\.30 runs opsets 7 to 26/);
  // The edges of the supported ranges pass.
  for (const model of [
    linearModel({}, { irVersion: 13, opsetImport: [{ domain: '', version: 26 }] }),
    linearModel({}, { irVersion: 3, opsetImport: [{ domain: '', version: 7 }] }),
    linearModel({}, { opsetImport: [{ domain: '', version: 14 }, { domain: 'ai.onnx.ml', version: 5 }, { domain: 'com.microsoft', version: 1 }] }),
  ]) {
    t.equal(refusal(encode(model)), null);
  }
});

t.test('operators from domains onnxruntime cannot run are refused; model-local functions are not', async (t) => {
  const custom = { opType: 'Warp', domain: 'com.example', name: 'warp', input: ['z'], output: ['out1'] };
  const err = refuses(t, linearModel({ node: [{ ...custom, output: ['y'] }] }, { opsetImport: [{ domain: '', version: 14 }, { domain: 'com.example', version: 1 }] }), 'custom_op_domain', 422);
  t.same(err?.details, { node: 'warp', opType: 'Warp', domain: 'com.example' });
  refuses(t, ifModel(2, undefined, custom), 'custom_op_domain', 422);
  // A function of the same domain but another name does not make Warp runnable.
  refuses(t, functionModel({ name: 'Other' }), 'custom_op_domain', 422);
  t.equal(refusal(encode(functionModel())), null, 'a call to a function the model defines');
  t.equal(refusal(encode(linearModel({ node: [{ opType: 'FusedMatMul', domain: 'com.microsoft', input: ['z', 'W'], output: ['y'] }] }))), null);
});

t.test('declared tensor sizes must match the bytes present', async (t) => {
  // 2^40 float32 elements (4 TiB) declared, 4 bytes present.
  const huge = { name: 'W', dims: [2 ** 20, 2 ** 20], dataType: 1, rawData: rawFloats([1]) };
  const err = refuses(t, linearModel({ initializer: [huge] }), 'tensor_data_mismatch', 422);
  t.match(err?.message, /declares shape \[1048576, 1048576\] \(1099511627776 elements\) but carries 4 bytes of raw_data/);
  t.equal((err?.details as { elements: number }).elements, 2 ** 40);
  const mismatched: Obj[] = [
    { dims: [4], dataType: 1, floatData: [1, 2, 3] },
    { dims: [3], dataType: 1, rawData: rawFloats([1, 2]) },
    { dims: [3], dataType: 7, floatData: [1, 2, 3] },
    { dims: [3], dataType: 1 },
    { dims: [1], dataType: 8, rawData: new Uint8Array(4) },
    { dims: [2], dataType: 1, floatData: [1, 2], int32Data: [1, 2] },
    { dims: [2], dataType: 14, floatData: [1, 2] },
  ];
  for (const tensor of mismatched) refuses(t, constantModel(tensor), 'tensor_data_mismatch', 422);
  refuses(t, constantModel({ dims: [3, -1], dataType: 1, floatData: [] }), 'invalid_tensor', 422);
  refuses(t, constantModel({ dims: [3], dataType: 0, floatData: [1, 2, 3] }), 'invalid_tensor', 422);
  refuses(t, constantModel({ dims: [3], dataType: 99, int32Data: [1, 2, 3] }), 'invalid_tensor', 422);
  // Consistent tensors in each storage form pass.
  const consistent: Obj[] = [
    { dims: [3], dataType: 1, floatData: [1, 2, 3] },
    { dims: [3], dataType: 11, doubleData: [1, 2, 3] },
    { dims: [3], dataType: 7, int64Data: [1, 2, 3] },
    { dims: [2, 0], dataType: 1 },
    { dims: [], dataType: 1, floatData: [5] },
    { dims: [2], dataType: 8, stringData: [new Uint8Array([97]), new Uint8Array([98])] },
    { dims: [2], dataType: 14, floatData: [1, 2, 3, 4] },
    { dims: [3], dataType: 22, rawData: new Uint8Array(2) },
    { dims: [3], dataType: 22, int32Data: [1, 2] },
    { dims: [5], dataType: 26, rawData: new Uint8Array(2) },
  ];
  for (const tensor of consistent) t.equal(refusal(encode(constantModel(tensor))), null, JSON.stringify(tensor.dims));
});

t.test('graph size limits: nodes, weight bytes and nesting are settings', async (t) => {
  const big = encode(chainModel(100_000));
  const err = refusal(big);
  t.equal(err?.code, 'too_many_nodes');
  t.equal(err?.status, 413);
  t.same(err?.details, { limit: DEFAULT_SAFETY.maxNodes });
  t.equal(checkModel(big, { maxNodes: 100_000 }).summary.nodes, 100_000, 'the count is the only reason');
  t.equal(refusal(big, { maxNodes: 99_999 })?.code, 'too_many_nodes');

  const dcgan = modelBytes('dcgan.onnx');
  t.equal(refusal(dcgan, { maxInitializerBytes: 221_164 }), null, 'exactly at the limit');
  const over = refusal(dcgan, { maxInitializerBytes: 221_163 });
  t.equal(over?.code, 'initializers_too_large');
  t.equal(over?.status, 413);
  // One stored value, a dense shape of 2^40 floats: onnxruntime would densify it on load.
  const sparse = { dims: [2 ** 20, 2 ** 20], values: { dims: [1], dataType: 1, floatData: [1] }, indices: { dims: [1], dataType: 7, int64Data: [0] } };
  refuses(t, linearModel({ sparseInitializer: [sparse] }), 'initializers_too_large', 413);

  t.equal(checkModel(encode(ifModel(3))).summary.depth, 3);
  refuses(t, ifModel(DEFAULT_SAFETY.maxGraphDepth + 1), 'graph_too_deep', 413);
  t.equal(refusal(encode(ifModel(DEFAULT_SAFETY.maxGraphDepth))), null);
  refuses(t, ifModel(3), 'graph_too_deep', 413, { maxGraphDepth: 2 });
});

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};
/** A length-delimited protobuf field: tag, length, bytes. */
const field = (id: number, bytes: Uint8Array): Uint8Array => {
  const varint = (n: number): number[] => (n < 0x80 ? [n] : [(n & 0x7f) | 0x80, ...varint(n >>> 7)]);
  return concat(Uint8Array.from([...varint((id << 3) | 2), ...varint(bytes.length)]), bytes);
};

t.test('a singular message encoded twice (onnxruntime merges the copies, protobufjs keeps one) is refused', async (t) => {
  const clean = encode(linearModel());
  // A second `graph` field in front: C++ protobuf merges it into the clean one, protobufjs drops it.
  const hidden = encode({ graph: { initializer: [externalWeight('package.json')] } });
  const joined = concat(hidden, clean);
  t.equal(decodeModel(joined).graph?.initializer?.[0].dataLocation, undefined, 'protobufjs alone sees only the clean graph');
  const err = refusal(joined);
  t.equal(err?.code, 'ambiguous_encoding');
  t.equal(err?.status, 422);
  t.same(err?.details, { path: 'ModelProto.graph', reason: 'repeated_singular_message' });
  t.match(err?.message, /encodes ModelProto\.graph more than once; onnxruntime would merge/);

  // Deeper down: an attribute carrying its tensor `t` twice.
  const type = modelProto();
  const Attr = type.lookupType('onnx.AttributeProto');
  const Node = type.lookupType('onnx.NodeProto');
  const Graph = type.lookupType('onnx.GraphProto');
  const attribute = concat(
    Attr.encode(Attr.fromObject({ name: 'value', type: 4, t: { dims: [3], dataType: 1, floatData: [1, 2, 3] } })).finish(),
    Attr.encode(Attr.fromObject({ t: externalWeight('w.bin') })).finish(),
  );
  const node = concat(Node.encode(Node.fromObject({ opType: 'Constant', output: ['c'] })).finish(), field(5, attribute));
  const base = constantModel({ dims: [3], dataType: 1, floatData: [1, 2, 3] });
  const graph = concat(Graph.encode(Graph.fromObject({ ...base.graph, node: base.graph.node.slice(1) })).finish(), field(1, node));
  const model = concat(encode({ ...base, graph: undefined }), field(7, graph));
  t.same(refusal(model)?.details, { path: 'ModelProto.graph.node.attribute.t', reason: 'repeated_singular_message' });

  // A sub-message field under a scalar wire type: C++ protobuf skips it as unknown.
  const wrongWire = concat(clean, Uint8Array.from([(7 << 3) | 0, 1]));
  t.ok(['ambiguous_encoding', 'invalid_model'].includes(refusal(wrongWire)?.code ?? ''), refusal(wrongWire)?.message);
});

t.test('a node without an operator type, or a nameless graph input or output, is refused', async (t) => {
  refuses(t, linearModel({ node: [{ name: 'mm', input: ['z', 'W'], output: ['y'] }] }), 'invalid_graph', 422);
  refuses(t, ifModel(2, undefined, { input: ['z'], output: ['out2'] }), 'invalid_graph', 422);
  const nameless = refuses(t, linearModel({ output: [{ type: { tensorType: { elemType: 1 } } }] }), 'invalid_graph', 422);
  t.match(nameless?.message, /graph output #1 has no name/);
  refuses(t, linearModel({ input: [{ name: 'z' }, {}] }), 'invalid_graph', 422);
});

t.test('bytes that are not an ONNX model are refused as invalid_model', async (t) => {
  for (const bytes of [new Uint8Array(0), new TextEncoder().encode('{"not": "onnx"}'), new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])]) {
    const err = refusal(bytes);
    t.equal(err?.code, 'invalid_model');
    t.equal(err?.status, 422);
  }
});

t.test('the CLI refuses an unsafe model with exit code 2 before opening a session', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'hessian-safety-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const evil = join(dir, 'evil.onnx');
  writeFileSync(evil, encode(linearModel({ initializer: [externalWeight('package.json')] })));
  for (const command of ['inspect', 'penalty']) {
    const r = await cli(command, evil);
    t.equal(r.code, 2, command);
    t.match(r.stderr, /error: graph initializer 'W' keeps its data in an external file \('package\.json'\)/);
    t.equal(r.stdout, '');
  }
  const deep = join(dir, 'deep.onnx');
  writeFileSync(deep, encode(chainModel(DEFAULT_SAFETY.maxNodes + 1)));
  const r = await cli('inspect', deep, '--json');
  t.equal(r.code, 2);
  t.match(r.stderr, /more than 20000 nodes/);
});

const corpus = malformedCorpus({ seed: 20261127 });

t.test('a seeded corpus of malformed models: every variant is refused with a specific code or passes', async (t) => {
  t.ok(corpus.length >= 500, `${corpus.length} variants`);
  const codes: Record<string, number> = {};
  const passed: Variant[] = [];
  for (const variant of corpus) {
    let err: AuditError | null;
    try {
      err = refusal(variant.bytes);
    } catch (bug) {
      t.fail(`${variant.name}: ${(bug as Error).stack}`);
      continue;
    }
    if (err === null) {
      passed.push(variant);
      continue;
    }
    codes[err.code] = (codes[err.code] ?? 0) + 1;
    if (!CODES.has(err.code) || err.status < 400 || err.status > 499 || err.message.length === 0) {
      t.fail(`${variant.name}: ${err.code} ${err.status} ${err.message}`);
    }
  }
  t.comment(`refusals by code: ${JSON.stringify(codes)}; ${passed.length} variants still valid models`);
  // What passes is described and answered by POST /v1/models: the description must fit its schema
  // (a node without an op type once slipped through here and became a 500).
  for (const v of passed) {
    const description = describeModel(v.bytes);
    const answer = ModelSchema.safeParse({ id: '0'.repeat(64), size: v.bytes.length, created: true, ...description, warnings: modelWarnings(description) });
    if (!answer.success) t.fail(`${v.name}: ${answer.error.message}`);
  }
  // Truncation always loses the trailing opset_import (these exports write it last) or cuts a
  // message short; random bytes are never a model.
  t.same(passed.filter((v) => v.kind === 'truncated' || v.kind === 'random').map((v) => v.name), []);
  t.ok(codes.invalid_model > 0 && codes.tensor_data_mismatch > 0, 'parse failures and size mismatches both occur');
});

t.test('models that pass the checks: onnxruntime opens them in a child process; good numbers unchanged', async (t) => {
  const passing = corpus.filter((v) => refusal(v.bytes) === null);
  // A bounded, deterministic subset: a few per example model, plus the crafted valid models.
  const perModel = new Map<string, number>();
  const chosen = passing.filter((v) => {
    const n = perModel.get(v.model ?? '') ?? 0;
    perModel.set(v.model ?? '', n + 1);
    return n < 4;
  });
  const dir = mkdtempSync(join(tmpdir(), 'hessian-corpus-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const crafted: [string, Uint8Array][] = [
    ['crafted/function', encode(functionModel())],
    ['crafted/if', encode(ifModel(2))],
    ['crafted/ir13-opset26', encode(linearModel({}, { irVersion: 13, opsetImport: [{ domain: '', version: 26 }] }))],
  ];
  const entries = [...chosen.map((v): [string, Uint8Array] => [v.name, v.bytes]), ...crafted].map(([name, bytes], i) => {
    const file = join(dir, `${i}.onnx`);
    writeFileSync(file, bytes);
    return { name, file };
  });
  const manifest = join(dir, 'manifest.json');
  writeFileSync(manifest, JSON.stringify({ good: new URL('../models/mlp.onnx', import.meta.url).pathname, variants: entries }));
  const child = spawnSync(process.execPath, [new URL('./helpers/open-variants.mjs', import.meta.url).pathname, manifest], {
    encoding: 'utf8',
    timeout: 100_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  const lines = child.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const last = lines.at(-1);
  t.equal(child.status, 0, `child exited cleanly (signal ${child.signal}; last line ${JSON.stringify(last)})`);
  const results = lines.filter((l) => !l.started);
  t.equal(results.length, entries.length + 2, 'one answer per model plus the good model twice');
  for (const r of results) {
    if (r.outcome === 'refused') {
      t.ok(r.status >= 400 && r.status < 500, `${r.name}: ${r.code} ${r.status}`);
    } else {
      t.equal(r.outcome, 'ok', `${r.name}: ${r.message ?? ''}`);
    }
  }
  const byName = Object.fromEntries(results.map((r) => [r.name, r]));
  t.equal(byName['crafted/function'].outcome, 'ok', 'a model-local function runs');
  t.equal(byName['crafted/ir13-opset26'].outcome, 'ok', 'the newest supported versions run');
  t.same(byName['good:after'].layers, byName['good:before'].layers, 'the good model gives the same numbers after the corpus');
  // And the same as an unloaded in-process evaluation with the same seed.
  const sessions = new SessionCache(1);
  const fresh = await evaluatePenalty(loadModel(modelBytes('mlp.onnx')), { latents: { samples: 2 }, k: 2, seed: 11 }, { device: parseDevice('cpu'), sessions });
  await sessions.clear();
  t.same(byName['good:before'].layers, fresh.layers.map((l) => [l.name, l.penalty]));
  t.comment(`onnxruntime outcomes: ${JSON.stringify(results.reduce((m: Record<string, number>, r) => ({ ...m, [r.code ?? r.outcome]: (m[r.code ?? r.outcome] ?? 0) + 1 }), {}))}`);
});
