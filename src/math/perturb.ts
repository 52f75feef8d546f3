import type { Row } from './rows.js';

/**
 * The rows of one batch for the input the penalty is taken with respect to:
 * z_n + sign·ε·v_{j,n}, with z laid out N × size and v laid out k × N × size.
 */
export function perturbedRows(
  rows: readonly Row[],
  z: Float32Array | Float64Array,
  directions: Float32Array,
  epsilon: number,
  size: number,
  samples: number,
  out: Float32Array | Float64Array = new Float32Array(rows.length * size),
): Float32Array | Float64Array {
  for (let r = 0; r < rows.length; r++) {
    const { sample, direction, sign } = rows[r];
    const zn = sample * size;
    const row = r * size;
    if (sign === 0) {
      for (let i = 0; i < size; i++) out[row + i] = z[zn + i];
      continue;
    }
    const v = (direction * samples + sample) * size;
    const step = sign * epsilon;
    for (let i = 0; i < size; i++) out[row + i] = z[zn + i] + step * directions[v + i];
  }
  return out;
}

/** Rows of an extra per-sample input (a class label, say): row r repeats sample n's values. */
export function repeatedRows<T extends ArrayLike<unknown> & { length: number }>(
  rows: readonly Pick<Row, 'sample'>[],
  data: T,
  size: number,
  out: { [i: number]: unknown },
): void {
  rows.forEach(({ sample }, r) => {
    for (let i = 0; i < size; i++) out[r * size + i] = data[sample * size + i];
  });
}
