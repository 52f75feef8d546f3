/**
 * ONNX's own protobuf schema (src/onnx/schema/onnx.proto), read by protobufjs. Field names are
 * camelCased by protobufjs; 64-bit integers are converted to numbers on the way out.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const SCHEMA = fileURLToPath(new URL('../../src/onnx/schema/onnx.proto', import.meta.url));

let root: protobuf.Root | undefined;
function schema(): protobuf.Root {
  root ??= protobuf.loadSync(SCHEMA);
  return root;
}

export const modelProto = (): protobuf.Type => schema().lookupType('onnx.ModelProto');

export interface Dimension {
  dimValue?: number;
  dimParam?: string;
}
export interface TypeProto {
  tensorType?: { elemType?: number; shape?: { dim?: Dimension[] } };
}
export interface ValueInfo {
  name: string;
  type?: TypeProto;
}
export interface StringStringEntry {
  key: string;
  value: string;
}
export interface Attribute {
  name: string;
  type?: number;
  i?: number;
  f?: number;
  s?: Uint8Array;
  ints?: number[];
  t?: TensorProto;
  g?: GraphProto;
  sparseTensor?: SparseTensorProto;
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparseTensors?: SparseTensorProto[];
}
export interface NodeProto {
  name?: string;
  opType: string;
  domain?: string;
  input?: string[];
  output?: string[];
  attribute?: Attribute[];
}
export interface TensorProto {
  name?: string;
  dims?: number[];
  dataType?: number;
  rawData?: Uint8Array;
  dataLocation?: number;
  externalData?: StringStringEntry[];
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  uint64Data?: number[];
  stringData?: Uint8Array[];
}
export interface SparseTensorProto {
  values?: TensorProto;
  indices?: TensorProto;
  dims?: number[];
}
export interface OperatorSetId {
  domain?: string;
  version?: number;
}
export interface FunctionProto {
  name?: string;
  domain?: string;
  node?: NodeProto[];
  opsetImport?: OperatorSetId[];
  attributeProto?: Attribute[];
}
export interface GraphProto {
  name?: string;
  node?: NodeProto[];
  initializer?: TensorProto[];
  sparseInitializer?: SparseTensorProto[];
  input?: ValueInfo[];
  output?: ValueInfo[];
  valueInfo?: ValueInfo[];
}
export interface ModelProtoObject {
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  opsetImport?: OperatorSetId[];
  graph?: GraphProto;
  functions?: FunctionProto[];
  trainingInfo?: { initialization?: GraphProto; algorithm?: GraphProto }[];
}

/** Decode model bytes; throws protobufjs's error on bytes that are not a ModelProto. */
export function decodeModel(bytes: Uint8Array): ModelProtoObject {
  const type = modelProto();
  return type.toObject(type.decode(bytes), { longs: Number, defaults: false, arrays: true }) as ModelProtoObject;
}
