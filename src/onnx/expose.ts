/**
 * Expose intermediate tensors as graph outputs without re-exporting the model.
 *
 * Protobuf merges a message that appears twice on the wire: singular sub-messages merge and
 * repeated fields append. Appending the encoding of `ModelProto { graph { output: [...] } }` to
 * the original bytes therefore adds outputs while every other byte — including fields this
 * schema version does not know — stays exactly as exported. onnxruntime infers the element type
 * and shape of an output declared by name only.
 */
import { modelProto } from './proto.js';

export function exposeTensors(bytes: Uint8Array, names: readonly string[]): Uint8Array {
  if (names.length === 0) return bytes;
  const type = modelProto();
  const extra = type.encode(type.fromObject({ graph: { output: names.map((name) => ({ name })) } })).finish();
  const joined = new Uint8Array(bytes.length + extra.length);
  joined.set(bytes, 0);
  joined.set(extra, bytes.length);
  return joined;
}
