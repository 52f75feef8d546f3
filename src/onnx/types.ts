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
