/**
 * NumPy's .npy format (versions 1.0, 2.0, 3.0): little-endian float32, float64, int32 and int64
 * in C order. Anything else is refused with a message that says how to save a supported array.
 */
import { AuditError } from '../contract/errors.js';
import { type NDArray, type NumericType, product } from './ndarray.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const DESCR: Record<string, NumericType> = { '<f4': 'float32', '<f8': 'float64', '<i4': 'int32', '<i8': 'int64' };
const DESCR_OF: Record<NumericType, string> = { float32: '<f4', float64: '<f8', int32: '<i4', int64: '<i8' };
const FIX = "save it with np.save(path, np.ascontiguousarray(a, dtype='<f4'))";

const bad = (what: string, why: string): AuditError =>
  new AuditError('invalid_array', `${what} is not a supported .npy array: ${why}; ${FIX}`);

export function isNpy(bytes: Uint8Array): boolean {
  return bytes.length >= 6 && MAGIC.every((b, i) => bytes[i] === b);
}

export interface NpyHeader {
  type: NumericType;
  shape: number[];
  /** Where the data starts. */
  offset: number;
}

/**
 * The header of a .npy file from its first bytes: null while more bytes are needed, so a stream
 * can be checked (shape, dtype) before its data is buffered.
 */
export function readNpyHeader(bytes: Uint8Array, what = 'the array'): NpyHeader | null {
  if (bytes.length < 6) return null;
  if (!isNpy(bytes)) throw bad(what, 'it does not start with the .npy magic string');
  if (bytes.length < 10) return null;
  const major = bytes[6];
  if ((major === 2 || major === 3) && bytes.length < 12) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLength: number;
  let start: number;
  if (major === 1) {
    headerLength = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    headerLength = view.getUint32(8, true);
    start = 12;
  } else {
    throw bad(what, `format version ${major} is unknown`);
  }
  if (start + headerLength > bytes.length) return null;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw bad(what, 'its header cannot be read');
  const type = DESCR[descr];
  if (!type) {
    const hint = descr.startsWith('>') ? 'big-endian data' : `dtype '${descr}'`;
    throw bad(what, `${hint} is not supported (use float32, float64, int32 or int64, little-endian)`);
  }
  if (fortran === 'True') throw bad(what, 'it is in Fortran order');
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw bad(what, `its shape (${shapeText}) is invalid`);
  return { type, shape, offset: start + headerLength };
}

export function readNpy(bytes: Uint8Array, what = 'the array'): NDArray {
  if (!isNpy(bytes)) throw bad(what, 'it does not start with the .npy magic string');
  if (bytes.length < 10) throw bad(what, 'the file is truncated');
  const major = bytes[6];
  if ((major === 2 || major === 3) && bytes.length < 12) throw bad(what, 'the file is truncated');
  const header = readNpyHeader(bytes, what);
  if (!header) throw bad(what, 'the header is truncated');
  const { type, shape, offset } = header;
  const count = product(shape);
  const itemSize = type === 'float64' || type === 'int64' ? 8 : 4;
  if (bytes.length - offset !== count * itemSize) {
    throw bad(what, `its shape (${shape.join(', ')}) needs ${count * itemSize} data bytes but ${bytes.length - offset} are present`);
  }
  // A copy (Buffer.slice would be a view into a shared pool), aligned for the typed array.
  const body = Uint8Array.prototype.slice.call(bytes, offset);
  const buffer = body.buffer;
  const data =
    type === 'float32' ? new Float32Array(buffer)
    : type === 'float64' ? new Float64Array(buffer)
    : type === 'int32' ? new Int32Array(buffer)
    : new BigInt64Array(buffer);
  return { type, shape, data };
}

export function writeNpy(array: NDArray): Uint8Array {
  const shape = array.shape.length === 1 ? `(${array.shape[0]},)` : `(${array.shape.join(', ')})`;
  let header = `{'descr': '${DESCR_OF[array.type]}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = new TextEncoder().encode(header);
  const data = new Uint8Array(array.data.buffer, array.data.byteOffset, array.data.byteLength);
  const out = new Uint8Array(10 + head.length + data.length);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, head.length, true);
  out.set(head, 10);
  out.set(data, 10 + head.length);
  return out;
}
