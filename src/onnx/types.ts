/** ONNX TensorProto.DataType codes, named as onnxruntime names tensor types. */
export const ELEMENT_TYPES: Record<number, string> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  14: 'complex64',
  15: 'complex128',
  16: 'bfloat16',
};

export const FLOAT_TYPES = new Set(['float32', 'float64', 'float16', 'bfloat16']);

export const elementTypeName = (code: number | undefined): string =>
  code === undefined ? 'unknown' : (ELEMENT_TYPES[code] ?? `type_${code}`);

/** Bytes per element of a type (0 when variable, as for strings). */
export function bytesPerElement(type: string): number {
  switch (type) {
    case 'float64':
    case 'int64':
    case 'uint64':
    case 'complex64':
      return 8;
    case 'complex128':
      return 16;
    case 'float32':
    case 'int32':
    case 'uint32':
      return 4;
    case 'float16':
    case 'bfloat16':
    case 'int16':
    case 'uint16':
      return 2;
    case 'string':
      return 0;
    default:
      return 1;
  }
}
