/**
 * Computational noise of a function, measured from its values (Moré & Wild, "Estimating
 * computational noise", SIAM J. Sci. Comput. 33(3), 2011: the ECnoise algorithm).
 *
 * For one output element f, take nf = m+1 values f(x + i·h·v), i = 0..m, at a tiny spacing h.
 * The j-th difference Δʲf of a smooth f is O(hʲ), while the differences of independent noise of
 * level σ have variance σ²·(2j)!/(j!)², so σ_j = sqrt(γ_j · mean((Δʲf)²)), γ_j = (j!)²/(2j)!,
 * levels off at σ once the smooth part has been differenced away. As in ECnoise.m:
 *   - a relative range of the values above 0.1 means h is too large (the values differ in the
 *     first digit: the smooth part dominates);
 *   - at least half of the first differences being zero means h is too small (the values are
 *     equal: rounding hides the variation);
 *   - otherwise σ = σ_j for the first j where σ_j, σ_{j+1}, σ_{j+2} agree within a factor of 4
 *     and Δʲf changes sign (noise, unlike a smooth trend, changes sign); if no j qualifies, h is
 *     too large (the smooth part is not differenced away within m orders).
 * ECnoise.m compares three consecutive levels; docs/design.md's summary names two. Three is the
 * original and rejects more false plateaus, so it is used here.
 *
 * Many output elements are measured at once: `values` is row-major [m+1][E] (row i is the whole
 * output at offset i·h), so one forward row serves every element.
 */

/** Per-element outcome of one difference table. */
export const NoiseStatus = { ok: 0, hTooSmall: 1, hTooLarge: 2, nonFinite: 3, kink: 4 } as const;
export type NoiseStatusCode = (typeof NoiseStatus)[keyof typeof NoiseStatus];
export type NoiseStatusName = 'ok' | 'h_too_small' | 'h_too_large' | 'non_finite' | 'kink';
export const NOISE_STATUS_NAMES: readonly NoiseStatusName[] = ['ok', 'h_too_small', 'h_too_large', 'non_finite', 'kink'];

/**
 * A line that crosses a kink of a piecewise-linear function (ReLU, LeakyReLU, max-pool) is two
 * straight segments: its first differences take two levels, so all of Δ²f's energy sits in the
 * one or two adjacent entries at the crossing, and those have the same sign (c·(t_{i+1} − t₀) and
 * c·(t₀ − t_i) for a slope change c at t₀). ECnoise reads such a table as noise (its levels fall
 * with j, its signs change) although the line is exact: a kink line is discarded, not counted.
 * Noise spreads its energy over every entry, and a step of a rounding grid (a staircase) puts it
 * on two adjacent entries of opposite signs (+q, −q): neither is a kink. On the smooth test
 * generators no line is flagged (test/noise-models.test.ts).
 */
export const KINK_ENERGY_SHARE = 0.98;

/** Does this Δ² row (entries 0..n-1) put KINK_ENERGY_SHARE of its energy on one entry, or two adjacent ones of one sign? */
export function crossesKink(second: ArrayLike<number>, n: number): boolean {
  let total = 0;
  for (let i = 0; i < n; i++) total += second[i] ** 2;
  if (!(total > 0)) return false;
  for (let i = 0; i < n; i++) {
    const one = second[i] ** 2;
    if (one >= KINK_ENERGY_SHARE * total) return true;
    if (i + 1 < n && second[i] * second[i + 1] > 0 && one + second[i + 1] ** 2 >= KINK_ENERGY_SHARE * total) return true;
  }
  return false;
}

export interface NoiseTable {
  /** σ per element; NaN where the status is not ok. */
  sigma: Float64Array;
  /** NoiseStatus code per element. */
  status: Uint8Array;
  /** The difference order j that gave σ (0 where the status is not ok). */
  order: Uint8Array;
}

/** At least 4 points (ECnoise.m's minimum); 7 to 9 are recommended. */
export const MIN_POINTS = 4;

/** γ_j = (j!)²/(2j)! for j = 1..m, by ECnoise.m's recurrence γ_j = γ_{j-1}·j/(2(2j-1)). */
export function gammaFactors(m: number): Float64Array {
  const gamma = new Float64Array(m + 1);
  gamma[0] = 1;
  for (let j = 1; j <= m; j++) gamma[j] = (gamma[j - 1] * j) / (2 * (2 * j - 1));
  return gamma;
}

/** ECnoise on every element of a [points][elements] table of values. */
export function ecnoise(values: ArrayLike<number>, points: number, elements: number): NoiseTable {
  if (!Number.isInteger(points) || points < MIN_POINTS) throw new RangeError(`ECnoise needs at least ${MIN_POINTS} points, got ${points}`);
  if (values.length !== points * elements) {
    throw new RangeError(`ECnoise expects ${points}×${elements} = ${points * elements} values, got ${values.length}`);
  }
  const m = points - 1;
  const gamma = gammaFactors(m);
  const sigma = new Float64Array(elements).fill(Number.NaN);
  const status = new Uint8Array(elements);
  const order = new Uint8Array(elements);
  const table = new Float64Array(points);
  const level = new Float64Array(m + 1);
  const signChange = new Uint8Array(m + 1);
  for (let e = 0; e < elements; e++) {
    let fmin = Infinity;
    let fmax = -Infinity;
    let finite = true;
    for (let i = 0; i < points; i++) {
      const f = values[i * elements + e];
      table[i] = f;
      finite &&= Number.isFinite(f);
      if (f < fmin) fmin = f;
      if (f > fmax) fmax = f;
    }
    if (!finite) {
      status[e] = NoiseStatus.nonFinite;
      continue;
    }
    // An all-zero element (0 > 0 is false) goes on to the zero-difference test: "too small".
    if (fmax - fmin > 0.1 * Math.max(Math.abs(fmax), Math.abs(fmin))) {
      status[e] = NoiseStatus.hTooLarge;
      continue;
    }
    let tooSmall = false;
    let kink = false;
    for (let j = 1; j <= m; j++) {
      let sumSquares = 0;
      let dmin = Infinity;
      let dmax = -Infinity;
      let zeros = 0;
      for (let i = 0; i < points - j; i++) {
        const d = table[i + 1] - table[i];
        table[i] = d;
        sumSquares += d * d;
        if (d < dmin) dmin = d;
        if (d > dmax) dmax = d;
        if (d === 0) zeros++;
      }
      // "h is too small only when half the function values are equal" (ECnoise.m).
      if (j === 1 && !(zeros < points / 2)) {
        tooSmall = true;
        break;
      }
      if (j === 2 && points - 2 >= 3 && crossesKink(table, points - 2)) {
        kink = true;
        break;
      }
      level[j] = Math.sqrt((gamma[j] * sumSquares) / (points - j));
      signChange[j] = dmin * dmax < 0 ? 1 : 0;
    }
    if (tooSmall || kink) {
      status[e] = tooSmall ? NoiseStatus.hTooSmall : NoiseStatus.kink;
      continue;
    }
    status[e] = NoiseStatus.hTooLarge;
    for (let j = 1; j <= m - 2; j++) {
      const lo = Math.min(level[j], level[j + 1], level[j + 2]);
      const hi = Math.max(level[j], level[j + 1], level[j + 2]);
      if (hi <= 4 * lo && signChange[j]) {
        sigma[e] = level[j];
        status[e] = NoiseStatus.ok;
        order[e] = j;
        break;
      }
    }
  }
  return { sigma, status, order };
}

/**
 * Evaluates G at the offsets t_i (x + t_i·v for one fixed point x and direction v) and returns
 * the [offsets][elements] outputs, row-major. The caller owns batching: all rows of one try come
 * in one call, and offset 0 is x itself (a row the penalty already computes).
 */
export type EvaluateOffsets = (offsets: Float64Array) => Promise<ArrayLike<number>>;

export interface NoiseMeasureOptions {
  /** Number of points m+1 (default 7, the least ECnoise.m recommends; docs/noise.md compares 4 to 9). */
  points?: number;
  /** First spacing h (default 1e-3, suited to float32 generators of N(0,1) latents). */
  h?: number;
  /** At most this many spacings are tried (default 4). */
  maxTries?: number;
  /** Stop once this fraction of the elements has a σ (default 0.9). */
  accept?: number;
}

export interface NoiseTry {
  h: number;
  /** Elements this spacing's table resolved (including ones an earlier spacing already had). */
  ok: number;
  /** Of the elements still unresolved: what the table said (non-finite ones are not counted). */
  hTooSmall: number;
  hTooLarge: number;
  /** Of the elements still unresolved: lines that crossed a kink (discarded, see crossesKink). */
  kinks: number;
}

export interface NoiseMeasurement extends NoiseTable {
  /** The spacing at which each element got its σ (NaN where none did). */
  h: Float64Array;
  tries: NoiseTry[];
  /** Forward rows evaluated, offset 0 included once per try. */
  rows: number;
}

export const DEFAULT_NOISE_OPTIONS = { points: 7, h: 1e-3, maxTries: 4, accept: 0.9 };

/**
 * ECnoise with the adaptation of the paper: when the table says h is too small, try 100·h; too
 * large, h/100. Each element keeps the σ of the first spacing that resolved it (σ is a property
 * of the function's noise, not of h), so elements of very different scales resolve at different
 * spacings. The next spacing follows the majority of the still unresolved elements; a spacing is
 * never tried twice (after ×100 then ÷100 it falls back to ×10 or ÷10).
 */
export async function measureNoise(evaluate: EvaluateOffsets, elements: number, options: NoiseMeasureOptions = {}): Promise<NoiseMeasurement> {
  const points = options.points ?? DEFAULT_NOISE_OPTIONS.points;
  const measured = await adaptSpacing(async (offsets) => ecnoise(await evaluate(offsets), points, elements), elements, options);
  return { ...measured, rows: measured.tries.length * points };
}

/**
 * One try of the driver: evaluate G at the offsets and return ECnoise's table for every element
 * (a caller that batches many layers and samples into one set of forward rows builds the tables
 * itself, element block by element block, and never holds all the values at once).
 */
export type TryOffsets = (offsets: Float64Array) => Promise<NoiseTable>;

/** The driver of measureNoise on tables the caller builds; rows are the caller's to count. */
export async function adaptSpacing(tryOffsets: TryOffsets, elements: number, options: NoiseMeasureOptions = {}): Promise<Omit<NoiseMeasurement, 'rows'>> {
  const { points, h: h0, maxTries, accept } = { ...DEFAULT_NOISE_OPTIONS, ...options };
  if (!(h0 > 0) || !Number.isFinite(h0)) throw new RangeError(`the spacing h must be a finite number greater than 0, got ${h0}`);
  if (!Number.isInteger(maxTries) || maxTries < 1) throw new RangeError(`maxTries must be an integer of at least 1, got ${maxTries}`);
  const sigma = new Float64Array(elements).fill(Number.NaN);
  const status = new Uint8Array(elements).fill(NoiseStatus.hTooSmall);
  const order = new Uint8Array(elements);
  const spacing = new Float64Array(elements).fill(Number.NaN);
  const tries: NoiseTry[] = [];
  let resolved = 0;
  let h: number | null = h0;
  while (h !== null && tries.length < maxTries) {
    const offsets = Float64Array.from({ length: points }, (_, i) => i * h!);
    const table = await tryOffsets(offsets);
    const counts: NoiseTry = { h, ok: 0, hTooSmall: 0, hTooLarge: 0, kinks: 0 };
    for (let e = 0; e < elements; e++) {
      const s = table.status[e];
      if (s === NoiseStatus.ok) counts.ok++;
      if (status[e] === NoiseStatus.ok) continue;
      status[e] = s;
      if (s === NoiseStatus.ok) {
        sigma[e] = table.sigma[e];
        order[e] = table.order[e];
        spacing[e] = h;
        resolved++;
      } else if (s === NoiseStatus.hTooSmall) counts.hTooSmall++;
      else if (s === NoiseStatus.hTooLarge) counts.hTooLarge++;
      else if (s === NoiseStatus.kink) counts.kinks++;
    }
    tries.push(counts);
    if (resolved >= accept * elements) break;
    // Kink lines shrink h like "too large" ones: at h/100 a kink is 100× less likely on the line.
    h = nextSpacing(h, counts.hTooSmall >= counts.hTooLarge + counts.kinks, tries);
  }
  return { sigma, status, order, h: spacing, tries };
}

function nextSpacing(h: number, grow: boolean, tries: NoiseTry[]): number | null {
  const tried = (x: number) => tries.some((t) => Math.abs(t.h / x - 1) < 1e-9);
  for (const factor of grow ? [100, 10] : [0.01, 0.1]) {
    if (!tried(h * factor)) return h * factor;
  }
  return null;
}

/** A robust summary of the per-element σ (unresolved elements are left out and counted). */
export interface NoiseSummary {
  elements: number;
  resolved: number;
  median: number;
  /** The 90th percentile: the upper tail that a max over elements sees, without single misfires. */
  p90: number;
  /** Root mean square: what a mean over elements sees. */
  rms: number;
  max: number;
}

export function summarizeNoise(sigma: ArrayLike<number>): NoiseSummary {
  const ok = Float64Array.from(Array.prototype.filter.call(sigma, (s: number) => Number.isFinite(s)) as number[]).sort();
  const n = ok.length;
  if (n === 0) return { elements: sigma.length, resolved: 0, median: Number.NaN, p90: Number.NaN, rms: Number.NaN, max: Number.NaN };
  let squares = 0;
  for (const s of ok) squares += s * s;
  return { elements: sigma.length, resolved: n, median: quantile(ok, 0.5), p90: quantile(ok, 0.9), rms: Math.sqrt(squares / n), max: ok[n - 1] };
}

/** Linear interpolation between order statistics (NumPy's default). */
export function quantile(sorted: Float64Array, p: number): number {
  const x = p * (sorted.length - 1);
  const i = Math.floor(x);
  return i + 1 < sorted.length ? sorted[i] + (x - i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}
