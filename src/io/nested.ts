/** Nested JSON arrays (N × …) ↔ NDArray. */
import { AuditError, clip } from '../contract/errors.js';
import { type NDArray, type NumericType } from './ndarray.js';

export type Nested = number | Nested[];

/**
 * One outer entry of a nested array parsed off the event loop (server/plugins/json-body.ts): its
 * numbers, C order, and its shape. A nested array may be a list of these, all of one shape.
 */
export class PackedBlock {
  constructor(
    readonly shape: readonly number[],
    readonly data: Float64Array,
  ) {}
}

/** An array of `shape[0]` blocks over `data` (views, no copy). */
export function packedBlocks(shape: readonly number[], data: Float64Array): PackedBlock[] {
  const inner = shape.slice(1);
  const size = inner.reduce((a, b) => a * b, 1);
  return Array.from({ length: shape[0] }, (_, i) => new PackedBlock(inner, data.subarray(i * size, (i + 1) * size)));
}

/** A list of blocks of one shape: its data copied out in one pass per block. */
function fromBlocks(value: unknown, type: NumericType): NDArray | null {
  if (!Array.isArray(value) || value.length === 0 || !value.every((b) => b instanceof PackedBlock && b.shape.join() === (value[0] as PackedBlock).shape.join())) return null;
  const blocks = value as PackedBlock[];
  const shape = [blocks.length, ...blocks[0].shape];
  const size = blocks[0].data.length;
  const all = new Float64Array(blocks.length * size);
  blocks.forEach((b, i) => all.set(b.data, i * size));
  const data = type === 'float64' ? all : type === 'float32' ? Float32Array.from(all) : type === 'int32' ? Int32Array.from(all) : BigInt64Array.from(all, (x) => BigInt(Math.trunc(x)));
  return { type, shape, data };
}

/**
 * Deepest nesting accepted. ONNX tensors of generators have rank 2–5; a body nested thousands of
 * levels deep is an attack on the converter, refused before any walk.
 */
export const MAX_NESTED_DEPTH = 32;

/**
 * Flatten a rectangular nested array of numbers; `what` names it in error messages. The walk
 * keeps its own stack (no recursion), so no nesting can overflow the call stack.
 */
export function fromNested(value: unknown, what: string, type: NumericType = 'float64'): NDArray {
  const shape: number[] = [];
  const packed = fromBlocks(value, type);
  if (packed) return packed;
  for (let v = value; Array.isArray(v); v = v[0]) {
    if (shape.length === MAX_NESTED_DEPTH) {
      throw new AuditError('invalid_array', `${what} is nested more than ${MAX_NESTED_DEPTH} levels deep; tensors here have a rank of at most ${MAX_NESTED_DEPTH}`, {
        maxDepth: MAX_NESTED_DEPTH,
      });
    }
    shape.push(v.length);
  }
  const flat: number[] = [];
  if (shape.length === 0) {
    if (typeof value !== 'number') throw notNumber(what, [], value);
    flat.push(value);
  } else {
    // One frame per open array: the array and the index of the next entry to visit.
    const arrays: unknown[][] = [value as unknown[]];
    const path: number[] = [0];
    check(what, value, shape, path, 0);
    while (arrays.length > 0) {
      const depth = arrays.length - 1;
      const array = arrays[depth];
      const i = path[depth];
      if (i === array.length) {
        arrays.pop();
        path.pop();
        if (path.length > 0) path[path.length - 1]++;
        continue;
      }
      const entry = array[i];
      if (depth + 1 === shape.length) {
        if (typeof entry !== 'number') throw notNumber(what, path, entry);
        flat.push(entry);
        path[depth]++;
      } else {
        check(what, entry, shape, path, depth + 1);
        arrays.push(entry as unknown[]);
        path.push(0);
      }
    }
  }
  const data =
    type === 'float32' ? Float32Array.from(flat)
    : type === 'float64' ? Float64Array.from(flat)
    : type === 'int32' ? Int32Array.from(flat)
    : BigInt64Array.from(flat, (x) => BigInt(Math.trunc(x)));
  return { type, shape, data };
}

/** The entry at `path` (depth entries) must be an array of shape[depth] entries. */
function check(what: string, v: unknown, shape: number[], path: number[], depth: number): void {
  if (Array.isArray(v) && v.length === shape[depth]) return;
  const at = index(path.slice(0, depth));
  throw new AuditError(
    'invalid_array',
    `${what} is not rectangular: ${what}${at} has ${Array.isArray(v) ? v.length : 'no'} entries where ${shape[depth]} were expected`,
  );
}

function notNumber(what: string, path: number[], v: unknown): AuditError {
  const shown = Array.isArray(v) ? 'an array' : v !== null && typeof v === 'object' ? 'an object' : (JSON.stringify(v) ?? 'undefined');
  return new AuditError('invalid_array', `${what}${index(path)} is ${clip(shown)}, not a number`);
}

const index = (path: number[]): string => path.map((i) => `[${i}]`).join('');
