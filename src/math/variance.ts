/**
 * Variance over the k directions, accumulated one direction at a time (Welford's update), so the
 * memory for a sample does not grow with k.
 *
 *   unbiased: divide by k - 1 (the PyTorch and NumPy references)
 *   biased:   divide by k     (the TensorFlow reference)
 */
export type VarianceKind = 'unbiased' | 'biased';

export function varianceDivisor(k: number, kind: VarianceKind): number {
  return kind === 'unbiased' ? k - 1 : k;
}

/** Per-element running mean and sum of squared deviations. */
export class Welford {
  readonly mean: Float64Array;
  readonly m2: Float64Array;
  count = 0;

  constructor(size: number) {
    this.mean = new Float64Array(size);
    this.m2 = new Float64Array(size);
  }

  reset(): void {
    this.mean.fill(0);
    this.m2.fill(0);
    this.count = 0;
  }

  /** Start a new observation; `add(e, x)` then adds element e's value for it. */
  next(): void {
    this.count++;
  }

  add(e: number, x: number): void {
    const delta = x - this.mean[e];
    this.mean[e] += delta / this.count;
    this.m2[e] += delta * (x - this.mean[e]);
  }

  variance(e: number, kind: VarianceKind): number {
    return this.m2[e] / varianceDivisor(this.count, kind);
  }
}
