/** A typed n-dimensional array in C order, as read from .npy or JSON. */
export type NumericType = 'float32' | 'float64' | 'int32' | 'int64';
export type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array;

export interface NDArray {
  type: NumericType;
  shape: number[];
  data: TypedData;
}

export const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

export function allocate(type: NumericType, length: number): TypedData {
  switch (type) {
    case 'float32':
      return new Float32Array(length);
    case 'float64':
      return new Float64Array(length);
    case 'int32':
      return new Int32Array(length);
    case 'int64':
      return new BigInt64Array(length);
  }
}

/** Convert to another element type; integers must be whole numbers (checked by the caller). */
export function convert(array: NDArray, type: NumericType): NDArray {
  if (array.type === type) return array;
  const out = allocate(type, array.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = array.data[i];
    if (type === 'int64') (out as BigInt64Array)[i] = BigInt(v as number | bigint);
    else (out as Float32Array)[i] = Number(v);
  }
  return { type, shape: array.shape, data: out };
}

export const formatShape = (shape: readonly (number | string | null)[]): string =>
  `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
