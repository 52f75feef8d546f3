/**
 * Model bytes → description: inputs and outputs (element types, shapes with symbolic dimensions),
 * opsets, and every intermediate tensor that can be audited, with the op that produces it.
 */
import { checkModel, type SafetySettings } from './safety.js';
import type { GraphProto, ModelProtoObject, NodeProto, ValueInfo } from './proto.js';
import { batchMixingOps, type NodeRisk, randomOps } from './risks.js';
import { elementTypeName, FLOAT_TYPES } from './types.js';

/** A dimension: a fixed size, a symbolic name ("batch"), or null when unknown. */
export type Dim = number | string | null;

export interface TensorInfo {
  name: string;
  type: string;
  shape: Dim[] | null;
}

export interface LayerInfo {
  name: string;
  /** The op that produces the tensor (Gemm, LeakyRelu, …). */
  op: string;
  node: string;
  isOutput: boolean;
  /** Straight out of a linear op: penalties there tend to degenerate (see the seed tips). */
  afterLinear: boolean;
  /** For afterLinear tensors: the nearest normalization or activation output downstream. */
  suggestion?: string;
}

export interface ModelDescription {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  producer: string;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  layers: LayerInfo[];
  nodes: number;
  /** Op type → how many nodes use it. */
  ops: Record<string, number>;
  /** Nodes that make G random: the estimate is refused unless the caller overrides. */
  randomOps: NodeRisk[];
  /** Nodes whose rows interact: passes then run as separate batches of N. */
  batchMixingOps: NodeRisk[];
}

export const LINEAR_OPS = new Set(['Gemm', 'MatMul', 'Conv', 'ConvTranspose']);
const NORMALIZATION_OPS = new Set([
  'BatchNormalization',
  'InstanceNormalization',
  'LayerNormalization',
  'GroupNormalization',
  'LpNormalization',
]);
const ACTIVATION_OPS = new Set([
  'Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'Tanh', 'Sigmoid', 'HardSigmoid',
  'HardSwish', 'Softplus', 'Softsign', 'Mish', 'ThresholdedRelu',
]);
/** Ops that only move values: a linear op's output stays "straight out of a linear op" through them. */
const PASS_THROUGH_OPS = new Set(['Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Identity']);
/** Ops whose outputs describe shapes, not values: nothing downstream of them depends on z's values. */
const SHAPE_OPS = new Set(['Shape', 'Size']);

export { parseModel } from './safety.js';

/**
 * Describe untrusted bytes: the upload checks of safety.ts run first (every caller, CLI and
 * server worker alike, gets them), so a model that fails them never reaches onnxruntime.
 */
export function describeModel(bytes: Uint8Array, safety: Partial<SafetySettings> = {}): ModelDescription {
  return describeParsed(checkModel(bytes, safety).model);
}

export function describeParsed(model: ModelProtoObject): ModelDescription {
  const graph = model.graph as GraphProto;
  const nodes = graph.node ?? [];
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).filter((i) => !initializers.has(i.name)).map(tensorInfo);
  const outputs = (graph.output ?? []).map(tensorInfo);
  const ops: Record<string, number> = {};
  for (const node of nodes) ops[node.opType] = (ops[node.opType] ?? 0) + 1;
  return {
    irVersion: model.irVersion ?? 0,
    opsets: (model.opsetImport ?? []).map((o) => ({ domain: o.domain ?? '', version: o.version ?? 0 })),
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
    inputs,
    outputs,
    layers: auditableLayers(nodes, inputs, new Set(outputs.map((o) => o.name))),
    nodes: nodes.length,
    ops,
    randomOps: randomOps(model),
    batchMixingOps: batchMixingOps(model),
  };
}

function tensorInfo(value: ValueInfo): TensorInfo {
  const tensor = value.type?.tensorType;
  const dims = tensor?.shape?.dim;
  return {
    name: value.name,
    type: elementTypeName(tensor?.elemType),
    shape: dims ? dims.map((d) => d.dimValue ?? d.dimParam ?? null) : null,
  };
}

/** Node outputs that depend on the values of a floating-point input, in graph order. */
function auditableLayers(nodes: NodeProto[], inputs: TensorInfo[], graphOutputs: Set<string>): LayerInfo[] {
  const dependent = new Set(inputs.filter((i) => FLOAT_TYPES.has(i.type)).map((i) => i.name));
  const consumers = new Map<string, NodeProto[]>();
  for (const node of nodes) {
    for (const input of node.input ?? []) {
      if (!consumers.has(input)) consumers.set(input, []);
      consumers.get(input)!.push(node);
    }
  }
  const layers: LayerInfo[] = [];
  const linear = new Set<string>();
  for (const node of nodes) {
    if (SHAPE_OPS.has(node.opType) || !(node.input ?? []).some((i) => dependent.has(i))) continue;
    for (const name of node.output ?? []) {
      if (!name) continue;
      dependent.add(name);
      const afterLinear = LINEAR_OPS.has(node.opType) || (PASS_THROUGH_OPS.has(node.opType) && linear.has(node.input?.[0] ?? ''));
      if (afterLinear) linear.add(name);
      const layer: LayerInfo = { name, op: node.opType, node: node.name ?? '', isOutput: graphOutputs.has(name), afterLinear };
      if (afterLinear) {
        const better = nearestDownstream(name, consumers);
        if (better) layer.suggestion = better;
      }
      layers.push(layer);
    }
  }
  return layers;
}

/** Breadth-first from a tensor to the first normalization, else activation, output downstream. */
function nearestDownstream(start: string, consumers: Map<string, NodeProto[]>): string | undefined {
  let frontier = [start];
  const seen = new Set(frontier);
  let activation: string | undefined;
  while (frontier.length > 0) {
    const next: string[] = [];
    for (const tensor of frontier) {
      for (const node of consumers.get(tensor) ?? []) {
        const out = node.output?.[0];
        if (!out || seen.has(out)) continue;
        if (NORMALIZATION_OPS.has(node.opType)) return out;
        if (ACTIVATION_OPS.has(node.opType)) activation ??= out;
        seen.add(out);
        next.push(out);
      }
    }
    if (activation) return activation;
    frontier = next;
  }
  return undefined;
}
