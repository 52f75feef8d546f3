/**
 * Preflight runs before the real plan, on a few center rows:
 *  - shapes: each layer's per-sample shape (symbolic dimensions become numbers), batch-first check;
 *  - determinism: the same rows twice must give exactly the same outputs (seed tips);
 *  - row independence: perturbing row 0 must leave the other rows unchanged, or stacking the
 *    2k+1 passes into one batch would change G.
 */
import type * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import { formatShape } from '../io/ndarray.js';
import type { Row } from '../math/rows.js';
import type { ResolvedRequest } from './resolve.js';
import { outputValues } from '../runtime/tensors.js';

export interface LayerShape {
  /** Per-sample shape (without the batch dimension). */
  shape: number[];
  size: number;
  bytesPerRow: number;
  /** Element type of the layer's output. */
  type: string;
}

export interface Preflight {
  shapes: Record<string, LayerShape>;
  /** Largest |difference| per layer between two runs of the same rows. */
  determinism: Record<string, number>;
  /** true when perturbing one row changed another; null when it could not be decided. */
  rowsInteract: boolean | null;
}

export type RunRows = (rows: Row[]) => Promise<Record<string, ort.Tensor>>;

/** The preflight's rows: a few center rows (the fixed batch size when the model has one). */
export function preflightRows(resolved: ResolvedRequest): Row[] {
  const count = resolved.fixedBatch ?? Math.max(2, Math.min(resolved.samples, 4));
  return Array.from({ length: count }, (_, r) => ({ sample: Math.min(r, resolved.samples - 1), direction: -1, sign: 0 }));
}

export async function preflight(resolved: ResolvedRequest, run: RunRows): Promise<Preflight> {
  const centers = preflightRows(resolved);
  const count = centers.length;
  const first = await run(centers);
  const shapes = layerShapes(resolved, first, count);
  const second = await run(centers);
  const determinism = Object.fromEntries(resolved.layers.map((name) => [name, maxDifference(first[name], second[name], 0)]));
  let rowsInteract: boolean | null = null;
  const deterministic = Object.values(determinism).every((d) => d === 0);
  if (resolved.fixedBatch === null && deterministic) {
    const moved = await run([{ sample: centers[0].sample, direction: 0, sign: 1 }, ...centers.slice(1)]);
    rowsInteract = resolved.layers.some((name) => {
      const size = shapes[name].size;
      const scale = maxAbs(outputValues(first[name]));
      return maxDifference(first[name], moved[name], size) > 1e-6 * Math.max(scale, 1e-30);
    });
  }
  return { shapes, determinism, rowsInteract };
}

function layerShapes(resolved: ResolvedRequest, outputs: Record<string, ort.Tensor>, count: number): Record<string, LayerShape> {
  const shapes: Record<string, LayerShape> = {};
  for (const name of resolved.layers) {
    const tensor = outputs[name];
    if (!['float32', 'float64', 'float16'].includes(tensor.type)) {
      throw new AuditError('unsupported_type', `layer '${name}' is ${tensor.type}; only floating-point layers have a Hessian Penalty`, { layer: name });
    }
    if (tensor.dims[0] !== count) {
      throw new AuditError(
        'layer_not_batched',
        `layer '${name}' has shape ${formatShape([...tensor.dims])} for ${count} rows: its first dimension is not the batch, so it cannot be audited per sample`,
        { layer: name },
      );
    }
    const shape = tensor.dims.slice(1).map(Number);
    const size = shape.reduce((a, b) => a * b, 1);
    shapes[name] = { shape, size, bytesPerRow: size * (tensor.type === 'float64' ? 8 : 4), type: tensor.type };
  }
  return shapes;
}

/** Largest |a − b| over the values from `from` on (NaN-safe: NaN against a number counts as ∞). */
function maxDifference(a: ort.Tensor, b: ort.Tensor, from: number): number {
  const x = outputValues(a);
  const y = outputValues(b);
  let max = 0;
  for (let i = from; i < x.length; i++) {
    if (Number.isNaN(x[i]) && Number.isNaN(y[i])) continue;
    const d = Math.abs(x[i] - y[i]);
    if (!(d <= max)) max = Number.isNaN(d) ? Infinity : d;
  }
  return max;
}

function maxAbs(values: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) if (Math.abs(values[i]) > max) max = Math.abs(values[i]);
  return max;
}
