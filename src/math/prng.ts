/**
 * A small, documented PRNG so that the same seed gives the same directions and latents on every
 * platform: xoshiro128** (Blackman & Vigna, 2018), all arithmetic on 32-bit integers.
 *
 * Seeding: a seed is an integer 0 <= seed < 2^53 and a stream number picks an independent
 * sequence (latents and directions never share one). The words (seed mod 2^32, floor(seed/2^32),
 * stream) are folded with MurmurHash3's fmix32 into one 32-bit value h; SplitMix32 started at h
 * yields the four state words of xoshiro128**.
 */
export const STREAM_LATENTS = 1;
export const STREAM_DIRECTIONS = 2;

const GOLDEN = 0x9e3779b9;

function fmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`seed must be an integer from 0 to 2^53-1, got ${seed}`);
    }
    let h = 0;
    for (const word of [seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0, stream >>> 0]) {
      h = (fmix32(h ^ word) + GOLDEN) >>> 0;
    }
    const state: number[] = [];
    for (let i = 0; i < 4; i++) {
      h = (h + GOLDEN) >>> 0;
      state.push(fmix32(h));
    }
    [this.s0, this.s1, this.s2, this.s3] = state;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** A generator started from raw state words (for checking against published test vectors). */
  static fromState(s0: number, s1: number, s2: number, s3: number): Xoshiro128 {
    const rng = new Xoshiro128(0);
    [rng.s0, rng.s1, rng.s2, rng.s3] = [s0, s1, s2, s3];
    return rng;
  }

  /** The next 32-bit output as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in (0, 1]: never 0, so it is safe under a logarithm. */
  nextOpenUnit(): number {
    return (this.nextUint32() + 1) / 2 ** 32;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
