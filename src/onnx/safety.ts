/**
 * Upload checks for untrusted models, run on the bytes before any onnxruntime session exists.
 *
 * An ONNX file is a program for the runtime: it can point at files on the server ("external
 * data": onnxruntime 1.30 refuses absolute paths and `..` for a model loaded from bytes, but still
 * reads any file under the working directory and hands its bytes to the graph as weights), declare
 * tensors far larger than the bytes it carries, call operators from domains the runtime does not
 * have, or be large enough to exhaust the server. Each refusal has its own code; all are 4xx.
 *
 * A pure function of the bytes and the settings: no I/O, no onnxruntime.
 */
import { AuditError } from '../contract/errors.js';
import {
  decodeModel,
  modelProto,
  type Attribute,
  type FunctionProto,
  type GraphProto,
  type ModelProtoObject,
  type NodeProto,
  type OperatorSetId,
  type SparseTensorProto,
  type TensorProto,
} from './proto.js';
import { findMergedMessage } from './wire.js';

/** Deployment settings: each has a documented default (docs/harden.md). */
export interface SafetySettings {
  /** Nodes in the whole model: main graph, subgraphs (If/Loop/Scan bodies), functions. */
  maxNodes: number;
  /** Bytes of weights once loaded: initializers (sparse ones densified) and constant tensors in attributes. */
  maxInitializerBytes: number;
  /** Nesting depth of subgraphs (an If inside a Loop body is depth 2). */
  maxGraphDepth: number;
}

export const DEFAULT_SAFETY: SafetySettings = {
  // Exported GAN/VAE generators have hundreds to a few thousand nodes (StyleGAN2 at 1024²: ~3,000).
  maxNodes: 20_000,
  // Large generators (BigGAN-deep 512, StyleGAN2 1024²) hold 100–300 MB of weights.
  maxInitializerBytes: 1024 * 1024 * 1024,
  maxGraphDepth: 16,
};

/**
 * What onnxruntime 1.30 runs, measured against the bundled build (docs/harden.md has the probe):
 * it refuses IR > 13 ("Unsupported model IR version: 14, max supported IR version: 13") and opsets
 * past its released ones ("Current official support for domain ai.onnx is till opset 26", ai.onnx.ml
 * 5, com.microsoft 1). The lower bounds are onnxruntime's documented floor: "All versions of ONNX
 * Runtime support ONNX opsets from ONNX v1.2.1+ (opset version 7 and higher)"
 * (https://onnxruntime.ai/docs/reference/compatibility.html); ONNX 1.2 wrote IR version 3.
 */
export const SUPPORTED_IR = { min: 3, max: 13 };
export const SUPPORTED_OPSETS: Record<string, { min: number; max: number }> = {
  'ai.onnx': { min: 7, max: 26 },
  'ai.onnx.ml': { min: 1, max: 5 },
  'com.microsoft': { min: 1, max: 1 },
};
/** Operator domains with kernels in onnxruntime's CPU build; any other domain is a custom op. */
export const RUNNABLE_DOMAINS = new Set(['ai.onnx', 'ai.onnx.ml', 'com.microsoft']);

const normalDomain = (domain: string | undefined): string => (domain === undefined || domain === '' ? 'ai.onnx' : domain);

/** Bits per element by TensorProto.DataType (onnx.proto, types 1–26); strings are counted apart. */
const ELEMENT_BITS: Record<number, number> = {
  1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 0, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
  14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
};
const STRING = 8;

export interface SafetySummary {
  nodes: number;
  /** Weight bytes once loaded (see SafetySettings.maxInitializerBytes). */
  initializerBytes: number;
  tensors: number;
  depth: number;
}

export interface CheckedModel {
  model: ModelProtoObject;
  summary: SafetySummary;
}

/** Decode bytes as an ONNX ModelProto, refusing what is not one. */
export function parseModel(bytes: Uint8Array): ModelProtoObject {
  let model: ModelProtoObject;
  try {
    model = decodeModel(bytes);
  } catch (err) {
    throw notOnnx(`its bytes do not decode as an ONNX ModelProto (${(err as Error).message})`);
  }
  if (!model.irVersion || !model.graph || !(model.graph.node?.length || model.graph.output?.length)) {
    throw notOnnx('it has no IR version or no graph');
  }
  return model;
}

const notOnnx = (why: string): AuditError =>
  new AuditError('invalid_model', `the file is not an ONNX model: ${why}; export the generator with torch.onnx.export or tf2onnx`);

/** Every check, in order: parse, versions, then one walk over every graph, node, attribute and tensor. */
export function checkModel(bytes: Uint8Array, settings: Partial<SafetySettings> = {}): CheckedModel {
  const limits = { ...DEFAULT_SAFETY, ...settings };
  const model = parseModel(bytes);
  checkEncoding(bytes);
  checkIrVersion(model.irVersion ?? 0);
  checkOpsets(model.opsetImport ?? [], 'the model');
  for (const fn of model.functions ?? []) checkOpsets(fn.opsetImport ?? [], `function '${fn.name ?? ''}'`, true);
  checkInterface(model.graph as GraphProto);
  const walk = new Walk(limits, model.functions ?? []);
  walk.graph(model.graph as GraphProto, 'graph', 0);
  for (const fn of model.functions ?? []) walk.fn(fn);
  for (const [i, info] of (model.trainingInfo ?? []).entries()) {
    if (info.initialization) walk.graph(info.initialization, `training_info[${i}].initialization`, 0);
    if (info.algorithm) walk.graph(info.algorithm, `training_info[${i}].algorithm`, 0);
  }
  return { model, summary: { nodes: walk.nodes, initializerBytes: walk.weightBytes, tensors: walk.tensors, depth: walk.depth } };
}

/** The checks read the model as protobufjs decodes it; refuse bytes onnxruntime would read otherwise. */
function checkEncoding(bytes: Uint8Array): void {
  let problem: ReturnType<typeof findMergedMessage>;
  try {
    problem = findMergedMessage(bytes, modelProto());
  } catch (err) {
    // Includes a RangeError from nesting too deep to walk.
    throw notOnnx((err as Error).message);
  }
  if (problem) {
    throw new AuditError(
      'ambiguous_encoding',
      problem.reason === 'repeated_singular_message'
        ? `the file encodes ${problem.path} more than once; onnxruntime would merge the copies into a model these checks do not see: re-save it with onnx.save_model`
        : `the file encodes ${problem.path} with the wrong protobuf wire type, which onnxruntime and these checks read differently: re-save it with onnx.save_model`,
      { ...problem },
    );
  }
}

/** The graph's inputs and outputs are addressed by name: a nameless one cannot be fed or read. */
function checkInterface(graph: GraphProto): void {
  for (const [kind, values] of [['input', graph.input ?? []], ['output', graph.output ?? []]] as const) {
    const i = values.findIndex((v) => !v.name);
    if (i >= 0) throw new AuditError('invalid_graph', `graph ${kind} #${i + 1} has no name; every input and output of an ONNX graph is named`, { [kind]: i });
  }
}

function checkIrVersion(ir: number): void {
  if (!Number.isInteger(ir) || ir < SUPPORTED_IR.min || ir > SUPPORTED_IR.max) {
    throw new AuditError(
      'unsupported_ir_version',
      `the model has ONNX IR version ${ir}; onnxruntime 1.30 runs IR versions ${SUPPORTED_IR.min} to ${SUPPORTED_IR.max}: export with an ONNX release that writes a supported version`,
      { irVersion: ir, supported: SUPPORTED_IR },
    );
  }
}

function checkOpsets(imports: OperatorSetId[], owner: string, optional = false): void {
  if (imports.length === 0 && !optional) {
    throw new AuditError('unsupported_opset', `${owner} imports no operator set; every ONNX model must name the opset it was exported with`);
  }
  for (const { domain, version = 0 } of imports) {
    const name = normalDomain(domain);
    const range = SUPPORTED_OPSETS[name];
    if (range && !(Number.isInteger(version) && version >= range.min && version <= range.max)) {
      throw new AuditError(
        'unsupported_opset',
        `${owner} imports opset ${version} of domain ${name}; onnxruntime 1.30 runs opsets ${range.min} to ${range.max} of it: export with --opset in that range`,
        { domain: name, version, supported: range },
      );
    }
  }
}

/** One pass over everything a model holds, counting as it goes and refusing at the first problem. */
class Walk {
  nodes = 0;
  weightBytes = 0;
  tensors = 0;
  depth = 0;
  private readonly functions: Set<string>;

  constructor(
    private readonly limits: SafetySettings,
    functions: FunctionProto[],
  ) {
    this.functions = new Set(functions.map((f) => functionKey(f.domain, f.name)));
  }

  graph(graph: GraphProto, where: string, depth: number): void {
    if (depth > this.depth) this.depth = depth;
    if (depth > this.limits.maxGraphDepth) {
      throw new AuditError(
        'graph_too_deep',
        `${where} is nested ${depth} subgraphs deep, above the limit of ${this.limits.maxGraphDepth}`,
        { depth, limit: this.limits.maxGraphDepth },
      );
    }
    for (const t of graph.initializer ?? []) this.tensor(t, `${where} initializer '${t.name ?? ''}'`, true);
    for (const s of graph.sparseInitializer ?? []) this.sparse(s, `${where} sparse initializer '${s.values?.name ?? ''}'`);
    for (const node of graph.node ?? []) this.node(node, where, depth);
  }

  fn(fn: FunctionProto): void {
    const where = `function '${fn.domain ?? ''}.${fn.name ?? ''}'`;
    for (const a of fn.attributeProto ?? []) this.attribute(a, `${where} attribute default '${a.name}'`, 0);
    for (const node of fn.node ?? []) this.node(node, where, 0);
  }

  private node(node: NodeProto, where: string, depth: number): void {
    this.nodes += 1;
    if (this.nodes > this.limits.maxNodes) {
      throw new AuditError(
        'too_many_nodes',
        `the model has more than ${this.limits.maxNodes} nodes (the limit, counting subgraphs and functions); a generator this large needs a deployment with a higher maxNodes`,
        { limit: this.limits.maxNodes },
      );
    }
    if (!node.opType) {
      throw new AuditError('invalid_graph', `${where} has a node${node.name ? ` '${node.name}'` : ''} with no operator type; the file is truncated or corrupt`, { node: node.name ?? '' });
    }
    const here = `${where} node '${node.name || node.opType}'`;
    const domain = normalDomain(node.domain);
    if (!RUNNABLE_DOMAINS.has(domain) && !this.functions.has(functionKey(node.domain, node.opType))) {
      throw new AuditError(
        'custom_op_domain',
        `${here} uses operator ${node.opType} of domain '${domain}', which onnxruntime cannot run (it runs ${[...RUNNABLE_DOMAINS].join(', ')} and functions defined in the model): export without custom operators`,
        { node: node.name ?? '', opType: node.opType, domain },
      );
    }
    for (const a of node.attribute ?? []) this.attribute(a, `${here} attribute '${a.name}'`, depth);
  }

  private attribute(a: Attribute, where: string, depth: number): void {
    if (a.t) this.tensor(a.t, where, true);
    for (const t of a.tensors ?? []) this.tensor(t, where, true);
    if (a.sparseTensor) this.sparse(a.sparseTensor, where);
    for (const s of a.sparseTensors ?? []) this.sparse(s, where);
    if (a.g) this.graph(a.g, `${where} subgraph`, depth + 1);
    for (const g of a.graphs ?? []) this.graph(g, `${where} subgraph`, depth + 1);
  }

  private sparse(s: SparseTensorProto, where: string): void {
    if (s.values) this.tensor(s.values, `${where} values`, false);
    if (s.indices) this.tensor(s.indices, `${where} indices`, false);
    // onnxruntime turns sparse initializers into dense tensors when it loads them.
    const dense = elementCount(s.dims ?? [], where);
    this.addWeights((dense * (ELEMENT_BITS[s.values?.dataType ?? 0] ?? 8)) / 8, where);
  }

  private tensor(t: TensorProto, where: string, countWeights: boolean): void {
    this.tensors += 1;
    if (t.dataLocation === 1 || (t.externalData ?? []).length > 0) {
      const location = (t.externalData ?? []).find((e) => e.key === 'location')?.value;
      throw new AuditError(
        'external_data_not_allowed',
        `${where} keeps its data in an external file${location === undefined ? '' : ` ('${location}')`}; uploaded models must embed every tensor: save with onnx.save_model(model, path, save_as_external_data=False)`,
        { tensor: t.name ?? '', location: location ?? null },
      );
    }
    const type = t.dataType ?? 0;
    const bits = ELEMENT_BITS[type];
    if (bits === undefined) {
      throw new AuditError('invalid_tensor', `${where} has element type ${type}, which is not an ONNX tensor type`, { tensor: t.name ?? '', dataType: type });
    }
    const count = elementCount(t.dims ?? [], where);
    const present = presentData(t, type, count);
    if (!present.ok) {
      throw new AuditError(
        'tensor_data_mismatch',
        `${where} declares shape [${(t.dims ?? []).join(', ')}] (${count} elements) but carries ${present.carried}; the file is truncated or corrupt`,
        { tensor: t.name ?? '', dims: t.dims ?? [], elements: count, carried: present.carried },
      );
    }
    if (countWeights) this.addWeights(type === STRING ? present.bytes : (count * bits) / 8, where);
  }

  private addWeights(bytes: number, where: string): void {
    this.weightBytes += Math.ceil(bytes);
    if (this.weightBytes > this.limits.maxInitializerBytes) {
      throw new AuditError(
        'initializers_too_large',
        `the model's weights exceed ${this.limits.maxInitializerBytes} bytes (the limit) at ${where}`,
        { limit: this.limits.maxInitializerBytes },
      );
    }
  }
}

const functionKey = (domain: string | undefined, name: string | undefined): string => `${normalDomain(domain)}\u0000${name ?? ''}`;

/** Product of the dims; a negative or fractional dim is not a shape. */
function elementCount(dims: number[], where: string): number {
  let count = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new AuditError('invalid_tensor', `${where} has dimension ${d}; tensor dimensions are whole numbers ≥ 0`, { dims });
    }
    count *= d;
  }
  return count;
}

/**
 * Whether the data a tensor carries matches its declared element count: raw_data bytes, else the
 * typed field onnx.proto assigns to the type (sub-byte types may be packed in int32_data).
 */
function presentData(t: TensorProto, type: number, count: number): { ok: boolean; carried: string; bytes: number } {
  const bits = ELEMENT_BITS[type];
  if (t.rawData !== undefined) {
    const expected = Math.ceil((count * bits) / 8);
    return { ok: type !== STRING && t.rawData.length === expected, carried: `${t.rawData.length} bytes of raw_data`, bytes: t.rawData.length };
  }
  const typed: [string, unknown[] | undefined, number][] = [
    ['float_data', t.floatData, type === 14 ? 2 : 1],
    ['double_data', t.doubleData, type === 15 ? 2 : 1],
    ['int64_data', t.int64Data, 1],
    ['uint64_data', t.uint64Data, 1],
    ['int32_data', t.int32Data, 1],
    ['string_data', t.stringData, 1],
  ];
  const used = typed.filter(([, values]) => (values?.length ?? 0) > 0);
  if (used.length === 0) return { ok: count === 0, carried: 'no data', bytes: 0 };
  if (used.length > 1) return { ok: false, carried: `data in ${used.map(([n]) => n).join(' and ')}`, bytes: 0 };
  const [field, values, perElement] = used[0];
  const n = values!.length;
  const expectedField = FIELD_OF[type];
  let ok = field === expectedField && n === count * perElement;
  if (field === expectedField && bits < 8) ok ||= n === Math.ceil((count * bits) / 8);
  const bytes = type === STRING ? (t.stringData ?? []).reduce((s, b) => s + b.length, 0) : 0;
  return { ok, carried: `${n} values in ${field}`, bytes };
}

const FIELD_OF: Record<number, string> = {
  1: 'float_data', 14: 'float_data', 11: 'double_data', 15: 'double_data', 7: 'int64_data',
  12: 'uint64_data', 13: 'uint64_data', 8: 'string_data',
  2: 'int32_data', 3: 'int32_data', 4: 'int32_data', 5: 'int32_data', 6: 'int32_data', 9: 'int32_data',
  10: 'int32_data', 16: 'int32_data', 17: 'int32_data', 18: 'int32_data', 19: 'int32_data',
  20: 'int32_data', 21: 'int32_data', 22: 'int32_data', 23: 'int32_data', 24: 'int32_data',
  25: 'int32_data', 26: 'int32_data',
};
