/**
 * Element types of every tensor of a graph, without onnxruntime. Exporters rarely write
 * value_info for intermediate tensors, so a tensor's type comes from, in order: value_info, the
 * graph's inputs and outputs, initializers, and else the op that produces it: ops with a fixed
 * output type (Shape → int64, comparisons → bool, Cast → its `to`), and otherwise the type of the
 * op's first typed input, which holds for the elementwise, linear, shape-moving and normalization
 * ops generators are made of.
 */
import type { Attribute, GraphProto, NodeProto, ValueInfo } from './proto.js';

const INT64 = 7;
const BOOL = 9;
const FLOAT = 1;

const INT64_OUTPUT_OPS = new Set(['Shape', 'Size', 'ArgMax', 'ArgMin', 'NonZero', 'NonMaxSuppression']);
const BOOL_OUTPUT_OPS = new Set(['Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf']);
/** Ops whose first input is not the one that decides the output type. */
const TYPE_FROM_INPUT: Record<string, number> = { Where: 1 };

const attribute = (node: NodeProto, name: string): Attribute | undefined => (node.attribute ?? []).find((a) => a.name === name);

/** Tensor name → ONNX element type code, for every tensor whose type can be told. */
export function elementTypes(graph: GraphProto): Map<string, number> {
  const types = new Map<string, number>();
  const declare = (values: ValueInfo[] | undefined): void => {
    for (const v of values ?? []) {
      const code = v.type?.tensorType?.elemType;
      if (code) types.set(v.name, code);
    }
  };
  declare(graph.input);
  declare(graph.output);
  declare(graph.valueInfo);
  for (const t of graph.initializer ?? []) if (t.name && t.dataType) types.set(t.name, t.dataType);
  for (const node of graph.node ?? []) {
    const code = producedType(node, types);
    for (const [i, name] of (node.output ?? []).entries()) {
      if (!name || types.has(name)) continue;
      // TopK's second output holds indices; every other multi-output op here shares one type.
      const own = node.opType === 'TopK' && i === 1 ? INT64 : code;
      if (own !== undefined) types.set(name, own);
    }
  }
  return types;
}

function producedType(node: NodeProto, types: Map<string, number>): number | undefined {
  if (INT64_OUTPUT_OPS.has(node.opType)) return INT64;
  if (BOOL_OUTPUT_OPS.has(node.opType)) return BOOL;
  if (node.opType === 'Cast') return attribute(node, 'to')?.i;
  if (node.opType === 'CastLike') return types.get(node.input?.[1] ?? '');
  if (node.opType === 'Constant') return attribute(node, 'value')?.t?.dataType ?? constantScalarType(node);
  if (node.opType === 'ConstantOfShape') return attribute(node, 'value')?.t?.dataType ?? FLOAT;
  if (node.opType === 'RandomNormal' || node.opType === 'RandomUniform' || node.opType === 'EyeLike') return attribute(node, 'dtype')?.i ?? FLOAT;
  const inputs = node.input ?? [];
  const preferred = TYPE_FROM_INPUT[node.opType];
  if (preferred !== undefined) return types.get(inputs[preferred] ?? '');
  for (const name of inputs) {
    const code = name ? types.get(name) : undefined;
    if (code !== undefined) return code;
  }
  return undefined;
}

function constantScalarType(node: NodeProto): number | undefined {
  if (attribute(node, 'value_float') || attribute(node, 'value_floats')) return FLOAT;
  if (attribute(node, 'value_int') || attribute(node, 'value_ints')) return INT64;
  return undefined;
}
