/**
 * Direction bases (docs/design.md, "Audit metrics"): the penalty with respect to coefficients w along
 * a basis Q whose m rows are directions in z-space (GANSpace, SeFa, …). Directions v are drawn in
 * w-space (k × N × m) and the perturbation is ε·(vQ): z-space directions, k × N × size, so every
 * consumer of directions (the penalty, orthogonality) runs unchanged.
 */
export function directionsAlongBasis(v: ArrayLike<number>, basis: ArrayLike<number>, m: number, size: number): Float32Array {
  const count = v.length / m;
  const out = new Float32Array(count * size);
  const row = new Float64Array(size);
  for (let r = 0; r < count; r++) {
    row.fill(0);
    for (let a = 0; a < m; a++) {
      const c = v[r * m + a];
      if (c === 0) continue;
      for (let e = 0; e < size; e++) row[e] += c * basis[a * size + e];
    }
    out.set(row, r * size);
  }
  return out;
}
