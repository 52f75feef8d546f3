/**
 * Cut a model at an intermediate tensor t (docs/design.md: the penalty with respect to StyleGAN's w).
 *
 * - The suffix: t becomes a graph input; only the nodes the requested layers need from t remain,
 *   with any original inputs they still need (fed as fixed extra inputs) and the initializers
 *   they use. Its Hessian with respect to t is the one measured.
 * - The prefix: the model's inputs → t as the single output, pruned likewise. It computes t when
 *   the caller gives or draws the model's own inputs.
 *
 * Graph editing on the decoded ModelProto, re-encoded with protobufjs. The suffix input needs t's
 * element type (value_info, else inferred from the producing op: element-types.ts) and its shape:
 * value_info when the exporter wrote it (torch.onnx.export usually does not); otherwise the caller
 * passes the per-sample shape learnt by running the prefix once (`options.shape`), or the input
 * is declared with its type and no shape, which onnxruntime accepts.
 */
import { AuditError } from '../contract/errors.js';
import type { Dim, TensorInfo } from './describe.js';
import { elementTypes } from './element-types.js';
import { type GraphProto, modelProto, type ModelProtoObject, type NodeProto, type ValueInfo } from './proto.js';
import { parseModel } from './safety.js';
import { elementTypeName, FLOAT_TYPES } from './types.js';

/** Ops whose outputs describe shapes, not values: a tensor read only through them does not move the output. */
const SHAPE_OPS = new Set(['Shape', 'Size']);
const BATCH = 'batch';

export interface SuffixModel {
  bytes: Uint8Array;
  /** t as the suffix's input: batch dimension symbolic ("batch"); shape null when not known. */
  input: TensorInfo;
  /** Original model inputs the suffix still reads: fed unchanged, like the model's extra inputs. */
  extraInputs: string[];
  /** The layers, as the suffix's outputs. */
  layers: string[];
}

export interface PrefixModel {
  bytes: Uint8Array;
  /** The model inputs t depends on: the prefix's only inputs. */
  inputs: string[];
  /** t, the single output. */
  output: TensorInfo;
}

export interface WrtCandidate extends TensorInfo {
  /** The op that produces the tensor. */
  op: string;
}

export interface CutOptions {
  /** Per-sample shape of t (without the batch dimension), when the model does not declare it. */
  shape?: readonly number[];
}

/** The suffix t → layers (default: every graph output that depends on t). */
export function cutSuffix(bytes: Uint8Array, tensor: string, layers: readonly string[] = [], options: CutOptions = {}): SuffixModel {
  const model = parseModel(bytes);
  const graph = model.graph as GraphProto;
  const index = graphIndex(graph);
  const info = cutTensor(graph, index, tensor);
  const affected = dependents(graph, tensor);
  const asked = layers.length > 0 ? [...layers] : (graph.output ?? []).map((o) => o.name).filter((name) => affected.has(name));
  if (asked.length === 0) {
    throw new AuditError('wrt_unused', `no output of the model depends on tensor '${tensor}', so it cannot be the tensor the penalty is taken with respect to`);
  }
  for (const layer of asked) {
    if (!index.producer.has(layer) && !index.inputs.has(layer)) {
      throw new AuditError('unknown_layer', `layer '${layer}' is not a tensor of the model (see 'hessian-audit inspect')`, { layer });
    }
    if (layer === tensor) throw new AuditError('wrt_unused', `layer '${layer}' is the tensor the penalty is taken with respect to; name a layer downstream of it`, { layer });
    if (!affected.has(layer)) {
      throw new AuditError('wrt_unused', `layer '${layer}' does not depend on tensor '${tensor}'; name layers downstream of it (see 'hessian-audit inspect')`, { layer, wrt: tensor });
    }
  }
  const nodes = neededNodes(graph, index, asked, new Set([tensor]));
  if (nodes.some((n) => (n.output ?? []).includes(tensor))) {
    throw new AuditError('uncuttable', `tensor '${tensor}' comes out of a node whose other outputs the layers also need; cut at a tensor of its own`, { wrt: tensor });
  }
  const perSample = options.shape ? [...options.shape] : info.shape?.slice(1);
  const shape: Dim[] | null = perSample && perSample.every((d) => typeof d === 'number') ? [BATCH, ...perSample] : null;
  const input: ValueInfo = { name: tensor, type: { tensorType: { elemType: info.code, ...(shape ? { shape: { dim: dims(shape) } } : {}) } } };
  const used = usedNames(nodes);
  const extraInputs = (graph.input ?? []).filter((i) => !index.initializers.has(i.name) && used.has(i.name) && i.name !== tensor);
  const outputs = asked.map((name) => (graph.output ?? []).find((o) => o.name === name) ?? { name });
  const suffix = rebuild(model, graph, nodes, [input, ...extraInputs], outputs, used);
  return {
    bytes: suffix,
    input: { name: tensor, type: info.type, shape },
    extraInputs: extraInputs.map((i) => i.name),
    layers: asked,
  };
}

/** The prefix: model inputs → t. */
export function cutPrefix(bytes: Uint8Array, tensor: string): PrefixModel {
  const model = parseModel(bytes);
  const graph = model.graph as GraphProto;
  const index = graphIndex(graph);
  const info = cutTensor(graph, index, tensor);
  const nodes = neededNodes(graph, index, [tensor], new Set());
  const used = usedNames(nodes);
  const inputs = (graph.input ?? []).filter((i) => !index.initializers.has(i.name) && (used.has(i.name) || i.name === tensor));
  const output: ValueInfo = {
    name: tensor,
    type: { tensorType: { elemType: info.code, ...(info.shape ? { shape: { dim: dims(info.shape) } } : {}) } },
  };
  return { bytes: rebuild(model, graph, nodes, inputs, [output], used), inputs: inputs.map((i) => i.name), output: { name: tensor, type: info.type, shape: info.shape } };
}

/**
 * Tensors that can serve as `wrt`: floating-point node outputs that depend on the values of a
 * model input and that at least one graph output depends on, in graph order, shapes where the
 * model declares them. Graph outputs themselves are left out (their suffix would be the identity).
 */
export function wrtCandidates(bytes: Uint8Array): WrtCandidate[] {
  const graph = parseModel(bytes).graph as GraphProto;
  const index = graphIndex(graph);
  const types = elementTypes(graph);
  const fromInputs = new Set<string>();
  for (const i of graph.input ?? []) if (!index.initializers.has(i.name)) fromInputs.add(i.name);
  const valued = valueDependents(graph.node ?? [], fromInputs);
  const upstream = valueAncestors(graph, index, (graph.output ?? []).map((o) => o.name));
  const outputs = new Set((graph.output ?? []).map((o) => o.name));
  const declared = new Map((graph.valueInfo ?? []).map((v) => [v.name, v]));
  const candidates: WrtCandidate[] = [];
  for (const node of graph.node ?? []) {
    for (const name of node.output ?? []) {
      if (!name || outputs.has(name) || !valued.has(name) || !upstream.has(name)) continue;
      const type = elementTypeName(types.get(name));
      if (!FLOAT_TYPES.has(type)) continue;
      candidates.push({ name, type, shape: shapeOf(declared.get(name)), op: node.opType });
    }
  }
  return candidates;
}

// --- graph analysis -----------------------------------------------------------------------------

interface GraphIndex {
  /** Tensor → the node that produces it. */
  producer: Map<string, NodeProto>;
  inputs: Set<string>;
  initializers: Set<string>;
}

function graphIndex(graph: GraphProto): GraphIndex {
  const producer = new Map<string, NodeProto>();
  for (const node of graph.node ?? []) for (const out of node.output ?? []) if (out) producer.set(out, node);
  const initializers = new Set<string>();
  for (const t of graph.initializer ?? []) if (t.name) initializers.add(t.name);
  for (const t of graph.sparseInitializer ?? []) if (t.values?.name) initializers.add(t.values.name);
  return { producer, inputs: new Set((graph.input ?? []).map((i) => i.name)), initializers };
}

/** t must exist and be floating point: its type and declared shape. */
function cutTensor(graph: GraphProto, index: GraphIndex, tensor: string): { code: number; type: string; shape: Dim[] | null } {
  if (index.initializers.has(tensor)) {
    throw new AuditError('unknown_tensor', `wrt names '${tensor}', which is a weight of the model, not a tensor computed from its inputs`, { wrt: tensor });
  }
  if (!index.producer.has(tensor) && !index.inputs.has(tensor)) {
    throw new AuditError('unknown_tensor', `wrt names tensor '${tensor}', which the model does not have (see 'hessian-audit inspect' for the tensors wrt can name)`, { wrt: tensor });
  }
  const code = elementTypes(graph).get(tensor);
  const type = elementTypeName(code);
  if (code === undefined || !FLOAT_TYPES.has(type)) {
    throw new AuditError('unsupported_type', `wrt names tensor '${tensor}', whose type ${type} is not floating point; name a float32 or float64 tensor`, { wrt: tensor, type });
  }
  return { code, type, shape: declaredShape(graph, tensor) };
}

function declaredShape(graph: GraphProto, name: string): Dim[] | null {
  return shapeOf([...(graph.valueInfo ?? []), ...(graph.output ?? []), ...(graph.input ?? [])].find((v) => v.name === name));
}

function shapeOf(value: ValueInfo | undefined): Dim[] | null {
  const dim = value?.type?.tensorType?.shape?.dim;
  return dim ? dim.map((d) => d.dimValue ?? d.dimParam ?? null) : null;
}

const dims = (shape: Dim[]): { dimValue?: number; dimParam?: string }[] =>
  shape.map((d) => (typeof d === 'number' ? { dimValue: d } : typeof d === 'string' ? { dimParam: d } : {}));

/** A node's inputs, including the outer-scope names its subgraphs (If/Loop/Scan bodies) read. */
function nodeInputs(node: NodeProto): string[] {
  const names = (node.input ?? []).filter(Boolean);
  for (const a of node.attribute ?? []) {
    for (const g of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) {
      const local = new Set([...(g.input ?? []).map((i) => i.name), ...(g.initializer ?? []).map((t) => t.name ?? '')]);
      for (const inner of g.node ?? []) {
        for (const name of nodeInputs(inner)) if (!local.has(name)) names.push(name);
        for (const out of inner.output ?? []) local.add(out);
      }
    }
  }
  return names;
}

/** Tensors whose values change with those of `start` (not through Shape/Size), `start` included. */
function valueDependents(nodes: NodeProto[], start: Set<string>): Set<string> {
  const dependent = new Set(start);
  for (const node of nodes) {
    if (SHAPE_OPS.has(node.opType) || !nodeInputs(node).some((i) => dependent.has(i))) continue;
    for (const out of node.output ?? []) if (out) dependent.add(out);
  }
  return dependent;
}

const dependents = (graph: GraphProto, tensor: string): Set<string> => valueDependents(graph.node ?? [], new Set([tensor]));

/** Tensors whose values reach one of `targets` (not through Shape/Size), the targets included. */
function valueAncestors(graph: GraphProto, index: GraphIndex, targets: string[]): Set<string> {
  const seen = new Set<string>();
  const stack = [...targets];
  while (stack.length > 0) {
    const name = stack.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const node = index.producer.get(name);
    if (node && !SHAPE_OPS.has(node.opType)) stack.push(...nodeInputs(node));
  }
  return seen;
}

/** The nodes that compute `targets`, in graph order, stopping at the `stops` tensors. */
function neededNodes(graph: GraphProto, index: GraphIndex, targets: readonly string[], stops: Set<string>): NodeProto[] {
  const needed = new Set<NodeProto>();
  const stack = [...targets];
  const seen = new Set<string>();
  while (stack.length > 0) {
    const name = stack.pop()!;
    if (seen.has(name) || stops.has(name)) continue;
    seen.add(name);
    const node = index.producer.get(name);
    if (!node || needed.has(node)) continue;
    needed.add(node);
    stack.push(...nodeInputs(node));
  }
  return (graph.node ?? []).filter((n) => needed.has(n));
}

function usedNames(nodes: NodeProto[]): Set<string> {
  const used = new Set<string>();
  for (const node of nodes) for (const name of nodeInputs(node)) used.add(name);
  return used;
}

/** The model with a new main graph: these nodes, inputs and outputs, and only the weights used. */
function rebuild(model: ModelProtoObject, graph: GraphProto, nodes: NodeProto[], inputs: ValueInfo[], outputs: ValueInfo[], used: Set<string>): Uint8Array {
  const present = new Set<string>();
  for (const n of nodes) for (const out of n.output ?? []) present.add(out);
  for (const i of inputs) present.add(i.name);
  const initializer = (graph.initializer ?? []).filter((t) => used.has(t.name ?? ''));
  const sparseInitializer = (graph.sparseInitializer ?? []).filter((t) => used.has(t.values?.name ?? ''));
  // Older exporters list initializers among the inputs too; keep those entries for the weights kept.
  const weightInputs = (graph.input ?? []).filter((i) => initializer.some((t) => t.name === i.name) && !inputs.some((x) => x.name === i.name));
  const valueInfo = (graph.valueInfo ?? []).filter((v) => present.has(v.name) && !inputs.some((i) => i.name === v.name));
  const next: GraphProto = { ...graph, node: nodes, input: [...inputs, ...weightInputs], output: outputs, initializer, sparseInitializer, valueInfo };
  const type = modelProto();
  return type.encode(type.fromObject({ ...model, graph: next })).finish();
}
