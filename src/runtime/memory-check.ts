/**
 * Refuse a run that would pass the memory budget, before onnxruntime allocates anything. What a
 * batch holds at its peak (docs/harden.md, "The memory budget"): onnxruntime's largest tensor for
 * that batch, from static shape inference (onnx/shapes.ts) with the batch size bound, plus what the
 * host holds beside it (the outputs fetched into JavaScript, the metric's float64 accumulators),
 * which the Run states. Checked before the session opens (constant folding allocates at creation),
 * and before every batch that reaches onnxruntime.
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import { formatShape } from '../io/ndarray.js';
import { parseModel } from '../onnx/describe.js';
import { inferSizes, largestTensor, shapeGraph, type ShapeGraph, type TensorSize } from '../onnx/shapes.js';

/** A model as the check needs it (a LoadedModel, or a cut's prefix): its bytes, parsed once. */
export interface Sized {
  bytes: Uint8Array;
}

/** One shape graph per loaded model (workers keep their LoadedModels, so this is once per model). */
const graphs = new WeakMap<Sized, ShapeGraph>();

function graphOf(model: Sized): ShapeGraph {
  let graph = graphs.get(model);
  if (!graph) {
    graph = shapeGraph(parseModel(model.bytes));
    graphs.set(model, graph);
  }
  return graph;
}

/**
 * The largest tensor per model and input shapes: every batch of a plan has one of a few shapes,
 * so inference runs once per shape, not once per batch. Bounded: a model fed many shapes starts over.
 */
const largestByShapes = new WeakMap<Sized, Map<string, TensorSize | null>>();
const MAX_SHAPES_PER_MODEL = 256;

function largestFor(model: Sized, shapes: Record<string, number[]>): TensorSize | null {
  let known = largestByShapes.get(model);
  if (!known) {
    known = new Map();
    largestByShapes.set(model, known);
  }
  const key = JSON.stringify(shapes);
  if (known.has(key)) return known.get(key)!;
  if (known.size >= MAX_SHAPES_PER_MODEL) known.clear();
  const largest = largestTensor(graphOf(model), shapes);
  known.set(key, largest);
  return largest;
}

/** Something the host holds while a batch runs, beside onnxruntime's tensors. */
export interface Held {
  /** What it is, as the refusal names it: "the outputs fetched into JavaScript". */
  what: string;
  shape: number[];
  bytes: number;
}

const shapesOf = (feeds: Record<string, ort.Tensor>): Record<string, number[]> =>
  Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, t.dims.map(Number)]));

type Inferred = { largest: TensorSize | null; named: Record<string, TensorSize | null> };
/** Per model, by input shapes and names: every request of a signature asks the same (bounded like largestFor). */
const namedByShapes = new WeakMap<Sized, Map<string, Inferred>>();

/**
 * The inferred size of each named tensor for these feeds (null where inference does not know it),
 * and the largest tensor: the layers' sizes before any row has run.
 */
export function inferredSizes(model: Sized, feeds: Record<string, ort.Tensor>, names: readonly string[]): Inferred {
  let known = namedByShapes.get(model);
  if (!known) {
    known = new Map();
    namedByShapes.set(model, known);
  }
  const shapes = shapesOf(feeds);
  const key = JSON.stringify([shapes, names]);
  const hit = known.get(key);
  if (hit) return hit;
  if (known.size >= MAX_SHAPES_PER_MODEL) known.clear();
  const { largest, sizes } = inferSizes(graphOf(model), shapes);
  const inferred = { largest, named: Object.fromEntries(names.map((name) => [name, sizes.get(name) ?? null])) };
  known.set(key, inferred);
  return inferred;
}

/**
 * Refuse the batch when onnxruntime's largest tensor and what the host holds beside it pass the
 * budget; the refusal names the largest part, its shape and bytes, the rest and the budget.
 */
export function checkRunMemory(model: Sized, feeds: Record<string, ort.Tensor>, budget: number, held: readonly Held[] = []): void {
  const rows = Number(Object.values(feeds)[0]?.dims[0] ?? 0);
  const largest = largestFor(model, shapesOf(feeds));
  const parts: Held[] = [...(largest ? [{ what: `tensor '${largest.name}' (${largest.op})`, shape: largest.shape, bytes: largest.bytes }] : []), ...held];
  const total = parts.reduce((sum, p) => sum + p.bytes, 0);
  if (total <= budget) return;
  const [first, ...rest] = [...parts].sort((a, b) => b.bytes - a.bytes);
  const others = rest.filter((p) => p.bytes > 0);
  const beside = others.length > 0 ? `, with ${others.map((p) => `${p.what} (${formatShape(p.shape)}, ${p.bytes} bytes)`).join(' and ')}: ${total} bytes in all` : '';
  throw new AuditError(
    'memory_budget_exceeded',
    `${first.what} would have shape ${formatShape(first.shape)}, ${first.bytes} bytes, for a batch of ${rows} rows${beside}: ` +
      `over the memory budget of ${budget} bytes (--memory-budget), so the model is not run`,
    {
      ...(largest ? { tensor: largest.name, op: largest.op } : {}),
      part: first.what,
      shape: first.shape,
      bytes: first.bytes,
      total,
      held: others.map((p) => ({ what: p.what, shape: p.shape, bytes: p.bytes })),
      budget,
    },
  );
}
