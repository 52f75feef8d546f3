import { STREAM_DIRECTIONS, STREAM_LATENTS, Xoshiro128 } from './prng.js';

/**
 * Rademacher directions v (each entry +1 or -1 with probability 1/2), laid out k x N x ... like
 * an explicit `directions` array. Entry i takes the top bit of the generator's i-th output
 * (1 -> -1, 0 -> +1) on the directions stream.
 */
export function rademacherDirections(k: number, valuesPerDirection: number, seed: number): Float32Array {
  const rng = new Xoshiro128(seed, STREAM_DIRECTIONS);
  const v = new Float32Array(k * valuesPerDirection);
  for (let i = 0; i < v.length; i++) v[i] = rng.nextUint32() & 0x80000000 ? -1 : 1;
  return v;
}

/**
 * Standard-normal latents by the Box-Muller transform on the latents stream: each pair of
 * outputs (u1, u2) gives sqrt(-2 ln u1) * cos(2 pi u2) and then sqrt(-2 ln u1) * sin(2 pi u2).
 */
export function standardNormal(count: number, seed: number): Float32Array {
  const rng = new Xoshiro128(seed, STREAM_LATENTS);
  const z = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(rng.nextOpenUnit()));
    const angle = 2 * Math.PI * (rng.nextUint32() / 2 ** 32);
    z[i] = radius * Math.cos(angle);
    if (i + 1 < count) z[i + 1] = radius * Math.sin(angle);
  }
  return z;
}

/** A fresh seed when the caller gives none; it is reported so that the run can be repeated. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}
