/** Nested JSON arrays (N × …) ↔ NDArray. */
import { AuditError } from '../contract/errors.js';
import { type NDArray, type NumericType } from './ndarray.js';

export type Nested = number | Nested[];

/** Flatten a rectangular nested array of numbers; `what` names it in error messages. */
export function fromNested(value: unknown, what: string, type: NumericType = 'float64'): NDArray {
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) shape.push(v.length);
  const flat: number[] = [];
  const walk = (v: unknown, depth: number, path: number[]): void => {
    if (depth === shape.length) {
      if (typeof v !== 'number') {
        throw new AuditError('invalid_array', `${what}${index(path)} is ${JSON.stringify(v) ?? 'undefined'}, not a number`);
      }
      flat.push(v);
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new AuditError(
        'invalid_array',
        `${what} is not rectangular: ${what}${index(path)} has ${Array.isArray(v) ? v.length : 'no'} entries where ${shape[depth]} were expected`,
      );
    }
    v.forEach((x, i) => walk(x, depth + 1, [...path, i]));
  };
  walk(value, 0, []);
  const data =
    type === 'float32' ? Float32Array.from(flat)
    : type === 'float64' ? Float64Array.from(flat)
    : type === 'int32' ? Int32Array.from(flat)
    : BigInt64Array.from(flat, (x) => BigInt(Math.trunc(x)));
  return { type, shape, data };
}

const index = (path: number[]): string => path.map((i) => `[${i}]`).join('');
