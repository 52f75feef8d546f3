/**
 * The rounding noise floor of the estimate. Each output g carries a rounding error of about
 * u·|g| (u: the unit roundoff of its element type); the second difference adds four such errors
 * and divides by ε², so q carries noise of about 4·u·max|g|/ε², and its variance over directions —
 * the penalty — cannot be resolved below the square of that. This is the O(1/ε⁴) of the tips.
 */
export const UNIT_ROUNDOFF: Record<string, number> = {
  float16: 2 ** -11,
  bfloat16: 2 ** -8,
  float32: 2 ** -24,
  float64: 2 ** -53,
};

export function noiseFloor(maxAbsOutput: number, epsilon: number, type: string): number {
  const u = UNIT_ROUNDOFF[type] ?? UNIT_ROUNDOFF.float32;
  return ((4 * u * maxAbsOutput) / (epsilon * epsilon)) ** 2;
}

/** A penalty must exceed the floor by this factor (its standard deviation 10× the noise) to be trusted. */
export const NOISE_MARGIN = 100;

/** What a difference δ between two runs of G(z) does to each second difference: about 4δ/ε². */
export const secondDifferenceError = (difference: number, epsilon: number): number => (4 * difference) / (epsilon * epsilon);
