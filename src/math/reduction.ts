/**
 * Layer reductions over all elements and samples: `max` is the reference default, `mean` the
 * alternative; the total penalty is the sum over layers.
 */
export type Reduction = 'max' | 'mean';

/** Running reduction of one sample's per-element values: both figures, chosen at the end. */
export class SampleStats {
  max = -Infinity;
  sum = 0;
  count = 0;

  add(x: number): void {
    if (x > this.max) this.max = x;
    this.sum += x;
    this.count++;
  }

  get mean(): number {
    return this.sum / this.count;
  }

  value(reduction: Reduction): number {
    return reduction === 'max' ? this.max : this.mean;
  }
}

/** Reduce per-sample figures to the layer's figure (mean of equal-sized samples = mean of all). */
export function reduceSamples(perSample: ArrayLike<number>, reduction: Reduction): number {
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < perSample.length; i++) {
    const x = perSample[i];
    if (x > max) max = x;
    sum += x;
  }
  return reduction === 'max' ? max : sum / perSample.length;
}

export function totalOverLayers(penalties: readonly (number | null)[]): number | null {
  let total = 0;
  for (const p of penalties) {
    if (p === null) return null;
    total += p;
  }
  return total;
}
