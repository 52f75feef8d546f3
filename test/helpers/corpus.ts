/**
 * A seeded corpus of malformed models: random bytes, and truncated, bit-flipped and scrambled
 * copies of every example model in models/. The same seed gives the same corpus, so a failure
 * names a variant that can be rebuilt exactly.
 */
import { readdirSync } from 'node:fs';
import { Xoshiro128 } from '../../dist/math/prng.js';
import { MODELS, modelBytes } from './reference.js';

export type VariantKind = 'random' | 'truncated' | 'flipped' | 'scrambled';

export interface Variant {
  /** e.g. `dcgan.onnx/flipped/7@123456.3`: model, kind, index, where. */
  name: string;
  model: string | null;
  kind: VariantKind;
  bytes: Uint8Array;
}

export interface CorpusOptions {
  seed: number;
  /** Per example model. */
  truncated?: number;
  flipped?: number;
  scrambled?: number;
  random?: number;
}

export const exampleModels = (): string[] =>
  readdirSync(MODELS)
    .filter((f) => f.endsWith('.onnx'))
    .sort();

export function malformedCorpus(options: CorpusOptions): Variant[] {
  const { seed, truncated = 12, flipped = 24, scrambled = 8, random = 40 } = options;
  const rng = new Xoshiro128(seed, 7);
  const below = (n: number): number => Math.floor((rng.nextUint32() / 2 ** 32) * n);
  const variants: Variant[] = [];

  for (const model of exampleModels()) {
    const original = modelBytes(model);
    for (let i = 0; i < truncated; i++) {
      // Always include the empty file and the file missing its last byte; the rest at random.
      const length = i === 0 ? 0 : i === 1 ? original.length - 1 : below(original.length);
      variants.push({ name: `${model}/truncated/${i}@${length}`, model, kind: 'truncated', bytes: original.slice(0, length) });
    }
    for (let i = 0; i < flipped; i++) {
      const bytes = original.slice();
      // Bias half the flips towards the first 512 bytes, where the structure (not the weights) lives.
      const at = i % 2 === 0 ? below(Math.min(512, bytes.length)) : below(bytes.length);
      const bit = below(8);
      bytes[at] ^= 1 << bit;
      variants.push({ name: `${model}/flipped/${i}@${at}.${bit}`, model, kind: 'flipped', bytes });
    }
    for (let i = 0; i < scrambled; i++) {
      const bytes = original.slice();
      const at = below(bytes.length);
      const run = 1 + below(16);
      for (let j = at; j < Math.min(bytes.length, at + run); j++) bytes[j] = below(256);
      variants.push({ name: `${model}/scrambled/${i}@${at}+${run}`, model, kind: 'scrambled', bytes });
    }
  }
  for (let i = 0; i < random; i++) {
    const length = i === 0 ? 1 : below(4096);
    const bytes = new Uint8Array(length);
    for (let j = 0; j < length; j++) bytes[j] = below(256);
    // Half of them start like a ModelProto (field 1, varint: ir_version 8) to get past the first byte.
    if (i % 2 === 1 && length > 2) bytes.set([0x08, 0x08], 0);
    variants.push({ name: `random/${i}+${length}`, model: null, kind: 'random', bytes });
  }
  return variants;
}
