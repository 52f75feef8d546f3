/**
 * Static shape inference for the common ops, with the batch size bound: how many bytes each tensor
 * of a run will take, known before onnxruntime allocates any of it. It finds the run-time memory
 * bombs that pass the upload checks (an Expand or ConstantOfShape to 2^26 elements, a Tile whose
 * size grows with the batch). Small integer tensors (shapes, repeats, axes) are folded, since they
 * decide the sizes. An op it does not know gives unknown shapes downstream: inference never
 * refuses on a guess, only on a size it has computed exactly.
 * (No maintained npm library infers ONNX shapes; onnx's own shape inference is Python/C++.)
 */
import type { Attribute, GraphProto, ModelProtoObject, NodeProto, TensorProto } from './proto.js';

/** What inference knows of a tensor: its shape, and its values when it is a small integer tensor. */
interface Known {
  shape: number[] | null;
  value?: number[];
  /** Bytes per element. */
  itemBytes: number;
}

/** Graph facts that inference needs, extracted once per model (the weights themselves are dropped). */
export interface ShapeGraph {
  nodes: { op: string; name: string; inputs: string[]; outputs: string[]; attrs: Record<string, Attribute> }[];
  initial: Map<string, Known>;
  /** Element bytes of each graph input. */
  inputBytes: Map<string, number>;
  /**
   * Shapes the model declares (graph outputs, value_info), used where inference does not know an
   * op: numbers, or 'batch' for a dimension named like an input's first (the batch size is bound).
   */
  declared: Map<string, { dims: (number | 'batch' | null)[]; itemBytes: number }>;
}

export interface TensorSize {
  name: string;
  op: string;
  shape: number[];
  bytes: number;
}

/** Integer tensors folded up to this many values: enough for shapes, far below weights. */
const MAX_FOLDED = 64;

const ITEM_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 };
const itemBytes = (type: number | undefined): number => ITEM_BYTES[type ?? 1] ?? 4;

const UNARY = new Set([
  'Identity', 'Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'Tanh', 'Sigmoid', 'HardSigmoid', 'HardSwish',
  'Softplus', 'Softsign', 'Mish', 'Neg', 'Abs', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Sin', 'Cos', 'Erf', 'Floor', 'Ceil',
  'Round', 'Sign', 'Not', 'Clip', 'Dropout', 'Softmax', 'LogSoftmax', 'BatchNormalization', 'InstanceNormalization',
  'LayerNormalization', 'LpNormalization', 'IsNaN', 'IsInf',
]);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Mean', 'Sum', 'Equal', 'Less', 'Greater', 'And', 'Or', 'Where', 'Mod']);
const FOLD: Partial<Record<string, (a: number, b: number) => number>> = {
  Add: (a, b) => a + b,
  Sub: (a, b) => a - b,
  Mul: (a, b) => a * b,
  Div: (a, b) => Math.trunc(a / b),
  Max: Math.max,
  Min: Math.min,
};

function integerValues(t: TensorProto): number[] | undefined {
  if (t.int64Data?.length) return t.int64Data.map(Number);
  if (t.int32Data?.length) return t.int32Data;
  if (!t.rawData?.length) return t.dataType === 7 || t.dataType === 6 ? [] : undefined;
  const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
  if (t.dataType === 7) return Array.from({ length: t.rawData.length / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)));
  if (t.dataType === 6) return Array.from({ length: t.rawData.length / 4 }, (_, i) => view.getInt32(i * 4, true));
  return undefined;
}

function tensorKnown(t: TensorProto): Known {
  const shape = (t.dims ?? []).map(Number);
  const known: Known = { shape, itemBytes: itemBytes(t.dataType) };
  if (product(shape) <= MAX_FOLDED && (t.dataType === 7 || t.dataType === 6)) {
    const value = integerValues(t);
    if (value && value.length === product(shape)) known.value = value;
  }
  return known;
}

export function shapeGraph(model: ModelProtoObject): ShapeGraph {
  const graph = (model.graph ?? {}) as GraphProto;
  const initial = new Map<string, Known>();
  for (const t of graph.initializer ?? []) if (t.name) initial.set(t.name, tensorKnown(t));
  const inputBytes = new Map<string, number>();
  for (const i of graph.input ?? []) if (i.name && !initial.has(i.name)) inputBytes.set(i.name, itemBytes(i.type?.tensorType?.elemType));
  // A symbolic first dimension of an input names the batch; the same name elsewhere is the batch too.
  const batchNames = new Set((graph.input ?? []).map((i) => i.type?.tensorType?.shape?.dim?.[0]?.dimParam).filter((d): d is string => !!d));
  const declared: ShapeGraph['declared'] = new Map();
  for (const v of [...(graph.output ?? []), ...(graph.valueInfo ?? [])]) {
    const dims = v.type?.tensorType?.shape?.dim;
    if (!v.name || !dims) continue;
    const shape = dims.map((d) => (d.dimValue !== undefined && Number(d.dimValue) > 0 ? Number(d.dimValue) : d.dimParam && batchNames.has(d.dimParam) ? ('batch' as const) : null));
    declared.set(v.name, { dims: shape, itemBytes: itemBytes(v.type?.tensorType?.elemType) });
  }
  const nodes = (graph.node ?? []).map((n: NodeProto, i) => ({
    op: n.domain ? `${n.domain}.${n.opType}` : (n.opType ?? ''),
    name: n.name || `${n.opType}#${i}`,
    inputs: n.input ?? [],
    outputs: n.output ?? [],
    attrs: Object.fromEntries((n.attribute ?? []).map((a) => [a.name ?? '', a])),
  }));
  return { nodes, initial, inputBytes, declared };
}

const product = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Numpy broadcasting; null when a dimension is unknown or the shapes do not broadcast. */
function broadcast(shapes: (number[] | null)[]): number[] | null {
  if (shapes.some((s) => s === null)) return null;
  const rank = Math.max(...shapes.map((s) => s!.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let dim = 1;
    for (const s of shapes as number[][]) {
      const d = s[s.length - rank + i] ?? 1;
      if (d === 1) continue;
      if (dim !== 1 && dim !== d) return null;
      dim = d;
    }
    out.push(dim);
  }
  return out;
}

const axis = (a: number, rank: number): number => (a < 0 ? a + rank : a);

/** The outputs of one node from what is known of its inputs; unknown (null) outputs for unknown ops. */
function infer(node: ShapeGraph['nodes'][number], inputs: (Known | undefined)[]): Known[] {
  const [x, y] = inputs;
  const i = (name: string, fallback: number): number => Number(node.attrs[name]?.i ?? fallback);
  const ints = (name: string): number[] | undefined => node.attrs[name]?.ints?.map(Number);
  const bytes = x?.itemBytes ?? 4;
  const same = (shape: number[] | null, value?: number[], b = bytes): Known[] => [{ shape, ...(value ? { value } : {}), itemBytes: b }];
  const op = node.op;
  if (UNARY.has(op)) return same(x?.shape ?? null, op === 'Identity' ? x?.value : undefined);
  if (op === 'Cast') return same(x?.shape ?? null, x?.value, itemBytes(i('to', 1)));
  if (BROADCAST.has(op)) {
    const shape = broadcast(inputs.map((k) => k?.shape ?? null));
    const fold = FOLD[op];
    const value =
      fold && x?.value && y?.value && shape && product(shape) <= MAX_FOLDED
        ? Array.from({ length: product(shape) }, (_, j) => fold(x.value![x.value!.length === 1 ? 0 : j], y.value![y.value!.length === 1 ? 0 : j]))
        : undefined;
    const b = op === 'Where' ? (y?.itemBytes ?? 4) : ['Equal', 'Less', 'Greater', 'And', 'Or'].includes(op) ? 1 : bytes;
    return same(shape, value, b);
  }
  switch (op) {
    case 'Constant': {
      const t = node.attrs.value?.t;
      if (t) return [tensorKnown(t)];
      const v = node.attrs.value_ints?.ints ?? (node.attrs.value_int ? [node.attrs.value_int.i] : undefined);
      return v ? [{ shape: node.attrs.value_int ? [] : [v.length], value: v.map(Number), itemBytes: 8 }] : same(null);
    }
    case 'Shape':
      return x?.shape ? [{ shape: [x.shape.length], value: [...x.shape], itemBytes: 8 }] : [{ shape: null, itemBytes: 8 }];
    case 'Size':
      return x?.shape ? [{ shape: [], value: [product(x.shape)], itemBytes: 8 }] : [{ shape: [], itemBytes: 8 }];
    case 'ConstantOfShape': {
      const t = node.attrs.value?.t;
      return same(x?.value ?? null, undefined, t ? itemBytes(t.dataType) : 4);
    }
    case 'Expand':
      return same(y?.value ? broadcast([x?.shape ?? null, y.value]) : null);
    case 'Tile':
      return same(x?.shape && y?.value && y.value.length === x.shape.length ? x.shape.map((d, j) => d * y.value![j]) : null);
    case 'Reshape': {
      if (!x?.shape || !y?.value) return same(null);
      const shape = y.value.map((d, j) => (d === 0 && i('allowzero', 0) === 0 ? (x.shape![j] ?? 0) : d));
      const unknown = shape.indexOf(-1);
      if (unknown >= 0) shape[unknown] = product(x.shape) / product(shape.filter((d) => d !== -1));
      return same(Number.isInteger(shape[unknown] ?? 0) ? shape : null, x.value);
    }
    case 'Flatten': {
      if (!x?.shape) return same(null);
      const a = axis(i('axis', 1), x.shape.length);
      return same([product(x.shape.slice(0, a)), product(x.shape.slice(a))], x.value);
    }
    case 'Concat': {
      if (inputs.some((k) => !k?.shape)) return same(null);
      const shapes = inputs.map((k) => k!.shape!);
      const a = axis(i('axis', 0), shapes[0].length);
      const shape = [...shapes[0]];
      shape[a] = shapes.reduce((s, sh) => s + (sh[a] ?? 0), 0);
      const value = inputs.every((k) => k!.value) && shape.length === 1 ? inputs.flatMap((k) => k!.value!) : undefined;
      return same(shape, value);
    }
    case 'Gather': {
      if (!x?.shape || !y?.shape) return same(null);
      const a = axis(i('axis', 0), x.shape.length);
      const shape = [...x.shape.slice(0, a), ...y.shape, ...x.shape.slice(a + 1)];
      const value = x.value && y.value && x.shape.length === 1 ? y.value.map((j) => x.value![j < 0 ? j + x.value!.length : j]) : undefined;
      return same(shape, value?.every((v) => v !== undefined) ? value : undefined);
    }
    case 'Slice': {
      // Positive steps along the given axes; 1-D slices of folded shape tensors keep their values
      // (the usual Shape → Slice → Concat chains).
      const starts = inputs[1]?.value ?? ints('starts');
      const ends = inputs[2]?.value ?? ints('ends');
      const axes = inputs[3]?.value ?? ints('axes') ?? starts?.map((_, a) => a);
      const steps = inputs[4]?.value ?? starts?.map(() => 1);
      if (!x?.shape || !starts || !ends || !axes || !steps || ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) return same(null);
      if (steps.some((step) => step < 1)) return same(null);
      const shape = [...x.shape];
      let from = 0;
      starts.forEach((start, a) => {
        const axis = axes[a] < 0 ? axes[a] + shape.length : axes[a];
        const n = x.shape![axis];
        const clamp = (v: number): number => Math.min(n, Math.max(0, v < 0 ? v + n : v));
        const [lo, hi] = [clamp(start), clamp(ends[a])];
        shape[axis] = Math.ceil(Math.max(0, hi - lo) / steps[a]);
        if (axis === 0) from = lo;
      });
      const value = x.shape.length === 1 && steps[0] === 1 ? x.value?.slice(from, from + shape[0]) : undefined;
      return same(shape, value);
    }
    case 'Unsqueeze': {
      const axes = y?.value ?? ints('axes');
      if (!x?.shape || !axes) return same(null);
      const rank = x.shape.length + axes.length;
      const at = new Set(axes.map((a) => axis(a, rank)));
      const rest = [...x.shape];
      return same(Array.from({ length: rank }, (_, j) => (at.has(j) ? 1 : (rest.shift() as number))), x.value);
    }
    case 'Squeeze': {
      const axes = y?.value ?? ints('axes');
      if (!x?.shape) return same(null);
      const at = axes ? new Set(axes.map((a) => axis(a, x.shape!.length))) : null;
      return same(x.shape.filter((d, j) => (at ? !at.has(j) : d !== 1)), x.value);
    }
    case 'Transpose': {
      if (!x?.shape) return same(null);
      const perm = ints('perm') ?? x.shape.map((_, j) => x.shape!.length - 1 - j);
      return same(perm.map((p) => x.shape![p]));
    }
    case 'MatMul': {
      if (!x?.shape || !y?.shape || x.shape.length < 2 || y.shape.length < 2) return same(null);
      const batch = broadcast([x.shape.slice(0, -2), y.shape.slice(0, -2)]);
      return same(batch ? [...batch, x.shape[x.shape.length - 2], y.shape[y.shape.length - 1]] : null);
    }
    case 'Gemm': {
      if (!x?.shape || !y?.shape || x.shape.length !== 2 || y.shape.length !== 2) return same(null);
      const m = i('transA', 0) ? x.shape[1] : x.shape[0];
      const n = i('transB', 0) ? y.shape[0] : y.shape[1];
      return same([m, n]);
    }
    default:
      return node.outputs.map(() => ({ shape: null, itemBytes: 4 }));
  }
}

/** What inference found for a run with these input shapes: every tensor it sized, and the largest. */
export interface InferredSizes {
  /** The largest tensor (graph outputs and intermediates: onnxruntime allocates both), or null. */
  largest: TensorSize | null;
  /** Each tensor whose size was inferred, by name. */
  sizes: Map<string, TensorSize>;
}

export function inferSizes(graph: ShapeGraph, inputShapes: Record<string, readonly number[]>): InferredSizes {
  const known = new Map(graph.initial);
  const rows = Object.values(inputShapes)[0]?.[0];
  /** A declared shape with the batch bound, when every dimension is then a number. */
  const declaredShape = (name: string): Known | null => {
    const d = graph.declared.get(name);
    if (!d || d.dims.some((x) => x === null || (x === 'batch' && rows === undefined))) return null;
    return { shape: d.dims.map((x) => (x === 'batch' ? rows! : (x as number))), itemBytes: d.itemBytes };
  };
  for (const [name, shape] of Object.entries(inputShapes)) known.set(name, { shape: [...shape], itemBytes: graph.inputBytes.get(name) ?? 4 });
  const sizes = new Map<string, TensorSize>();
  let largest: TensorSize | null = null;
  for (const node of graph.nodes) {
    let outputs: Known[];
    try {
      outputs = infer(node, node.inputs.map((n) => (n === '' ? undefined : known.get(n))));
    } catch {
      outputs = node.outputs.map(() => ({ shape: null, itemBytes: 4 }));
    }
    node.outputs.forEach((name, j) => {
      let k = outputs[j] ?? { shape: null, itemBytes: 4 };
      if (k.shape && k.shape.some((d) => !Number.isFinite(d) || d < 0)) k.shape = null;
      if (!k.shape) k = declaredShape(name) ?? k;
      known.set(name, k);
      if (!k.shape) return;
      const size = { name, op: node.op, shape: k.shape, bytes: product(k.shape) * k.itemBytes };
      sizes.set(name, size);
      if (!largest || size.bytes > largest.bytes) largest = size;
    });
  }
  return { largest, sizes };
}

/** The largest tensor a run with these input shapes computes, or null when no size could be inferred. */
export function largestTensor(graph: ShapeGraph, inputShapes: Record<string, readonly number[]>): TensorSize | null {
  return inferSizes(graph, inputShapes).largest;
}
