/**
 * Refuse a run whose tensors would pass the memory budget, before onnxruntime allocates them:
 * the sizes come from static shape inference (onnx/shapes.ts) with the batch size bound. Checked
 * before the session opens (constant folding allocates at creation), and before every batch.
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import { formatShape } from '../io/ndarray.js';
import { parseModel } from '../onnx/describe.js';
import { largestTensor, shapeGraph, type ShapeGraph, type TensorSize } from '../onnx/shapes.js';
import type { LoadedModel } from './model.js';

/** One shape graph per loaded model (workers keep their LoadedModels, so this is once per model). */
const graphs = new WeakMap<LoadedModel, ShapeGraph>();

function graphOf(model: LoadedModel): ShapeGraph {
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
const largestByShapes = new WeakMap<LoadedModel, Map<string, TensorSize | null>>();
const MAX_SHAPES_PER_MODEL = 256;

function largestFor(model: LoadedModel, shapes: Record<string, number[]>): TensorSize | null {
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

export function checkRunMemory(model: LoadedModel, feeds: Record<string, ort.Tensor>, budget: number): void {
  const rows = Number(Object.values(feeds)[0]?.dims[0] ?? 0);
  const shapes = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, t.dims.map(Number)]));
  const largest = largestFor(model, shapes);
  if (!largest || largest.bytes <= budget) return;
  throw new AuditError(
    'memory_budget_exceeded',
    `tensor '${largest.name}' (${largest.op}) would have shape ${formatShape(largest.shape)}, ${largest.bytes} bytes, for a batch of ${rows} rows: ` +
      `over the memory budget of ${budget} bytes (--memory-budget), so the model is not run`,
    { tensor: largest.name, op: largest.op, shape: largest.shape, bytes: largest.bytes, budget },
  );
}
