/**
 * Where protobufjs and onnxruntime read the same bytes differently.
 *
 * A singular sub-message that appears twice on the wire is merged by C++ protobuf (what
 * onnxruntime uses: expose.ts relies on it) but replaced by protobufjs, which keeps the last copy.
 * A file with two `graph` fields would then show the checks one graph and onnxruntime the union of
 * both, external data and custom ops included. No exporter writes a singular message twice, so
 * such files are refused rather than merged here.
 */
import protobuf from 'protobufjs';

export interface WireProblem {
  /** Dotted path of field names, e.g. `ModelProto.graph.node.attribute.t`. */
  path: string;
  reason: 'repeated_singular_message' | 'wrong_wire_type';
}

/** The first sub-message field that would be merged by onnxruntime, or null when there is none. */
export function findMergedMessage(bytes: Uint8Array, type: protobuf.Type): WireProblem | null {
  return scan(protobuf.Reader.create(bytes), bytes.length, type, type.name);
}

const LENGTH_DELIMITED = 2;

function scan(reader: protobuf.Reader, end: number, type: protobuf.Type, path: string): WireProblem | null {
  const seen = new Set<number>();
  while (reader.pos < end) {
    const tag = reader.uint32();
    const id = tag >>> 3;
    const wire = tag & 7;
    const field = type.fieldsById[id];
    const sub = field?.resolve().resolvedType;
    if (!(sub instanceof protobuf.Type)) {
      reader.skipType(wire);
      continue;
    }
    const here = `${path}.${field.name}`;
    // protobufjs would decode a sub-message under any wire type; C++ protobuf keeps it as an unknown field.
    if (wire !== LENGTH_DELIMITED) return { path: here, reason: 'wrong_wire_type' };
    if (!field.repeated) {
      if (seen.has(id)) return { path: here, reason: 'repeated_singular_message' };
      seen.add(id);
    }
    const length = reader.uint32();
    const stop = reader.pos + length;
    if (stop > end) throw new Error(`${here} runs past the end of its message`);
    const problem = scan(reader, stop, sub, here);
    if (problem) return problem;
    reader.pos = stop;
  }
  if (reader.pos > end) throw new Error(`a field of ${path} runs past the end of its message`);
  return null;
}
