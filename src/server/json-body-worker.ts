/**
 * A tinypool worker thread that parses one large JSON body off the event loop (plugins/json-body.ts).
 * The same parse as Fastify's default (secure-json-parse: __proto__ and constructor.prototype are
 * refused), then each array field (latents, directions, basis, inputs.*.data) that is a rectangular
 * nested array of numbers, two levels deep or more, is packed into one Float64Array and its shape:
 * the main thread receives one block of bytes instead of millions of numbers to rebuild. The values
 * are the same doubles JSON.parse gives; any other array stays as it is, so validation refuses it in
 * the same words.
 */
import secureJson from 'secure-json-parse';

/** A packed field: the rows of its innermost arrays, one after another. */
export interface PackedField {
  packedShape: number[];
  data: Float64Array;
}

export type ParsedBody = { body: unknown; packed: string[] } | { invalid: true };

export default function parseLargeBody(text: Uint8Array): ParsedBody {
  let body: unknown;
  try {
    body = secureJson.parse(Buffer.from(text.buffer, text.byteOffset, text.byteLength), undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch {
    return { invalid: true };
  }
  const packed: string[] = [];
  if (body !== null && typeof body === 'object' && !Array.isArray(body)) packFields(body as Record<string, unknown>, packed);
  return { body, packed };
}

const ARRAY_FIELDS = ['latents', 'directions', 'basis'] as const;

function packFields(body: Record<string, unknown>, packed: string[]): void {
  for (const field of ARRAY_FIELDS) {
    const done = pack(body[field]);
    if (done) {
      body[field] = done;
      packed.push(field);
    }
  }
  const inputs = body.inputs;
  if (inputs === null || typeof inputs !== 'object' || Array.isArray(inputs)) return;
  for (const [name, input] of Object.entries(inputs as Record<string, unknown>)) {
    if (input === null || typeof input !== 'object') continue;
    const done = pack((input as { data?: unknown }).data);
    if (done) {
      (input as { data: unknown }).data = done;
      packed.push(`inputs.${name}.data`);
    }
  }
}

/** The packed form of a rectangular numeric array at least two levels deep, or null. */
function pack(value: unknown): PackedField | null {
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) {
    if (v.length === 0 || shape.length === 32) return null;
    shape.push(v.length);
  }
  if (shape.length < 2) return null;
  const data = new Float64Array(shape.reduce((a, b) => a * b, 1));
  let at = 0;
  // Its own stack: no nesting can overflow the call stack.
  const stack: { array: unknown[]; depth: number }[] = [{ array: value as unknown[], depth: 0 }];
  while (stack.length > 0) {
    const { array, depth } = stack.pop()!;
    if (!Array.isArray(array) || array.length !== shape[depth]) return null;
    if (depth === shape.length - 1) {
      for (const x of array) {
        if (typeof x !== 'number') return null;
        data[at++] = x;
      }
    } else for (let i = array.length - 1; i >= 0; i--) stack.push({ array: array[i] as unknown[], depth: depth + 1 });
  }
  return { packedShape: shape, data };
}
