import type * as ort from 'onnxruntime-node';

/**
 * A layer's output as numbers. float16 arrives as raw bits (Uint16Array) where the runtime has no
 * Float16Array, and is widened here; on Node ≥ 24 onnxruntime hands out a Float16Array of values,
 * which widen to float32 exactly.
 */
export function outputValues(tensor: ort.Tensor): ArrayLike<number> {
  switch (tensor.type) {
    case 'float32':
    case 'float64':
      return tensor.data as Float32Array | Float64Array;
    case 'float16': {
      const data = tensor.data as Uint16Array | ArrayLike<number>;
      return data instanceof Uint16Array ? halfToFloat(data) : Float32Array.from(data);
    }
    default:
      throw new Error(`unsupported output type ${tensor.type}`);
  }
}

export function halfToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    out[i] =
      exponent === 0 ? sign * 2 ** -14 * (mantissa / 1024)
      : exponent === 31 ? (mantissa ? NaN : sign * Infinity)
      : sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
  }
  return out;
}
