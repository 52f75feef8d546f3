/**
 * The step-halving rows (math/step-halving.ts, docs/noise.md "The verdict"): the samples of
 * stepPlan(N) again at its spacings (2ε and ε/2; 2ε alone for N = 4 to 7), same latents and
 * directions, one run.units call for all of them. The centres are the penalty's own rows (kept by `capture`), so a sample costs
 * 2·2k rows; where the penalty's rows stay in the session (the in-graph estimator) it runs its
 * own centre, 4k+1. Cached on the session like the noise measurement, keyed by everything the
 * figures depend on.
 */
import { createHash } from 'node:crypto';
import type { Warning } from '../contract/results.js';
import { type Activations, type HalvingFigures, type LayerPenalty, LayerPenaltyAccumulator, type StepPlan } from '../math/index.js';
import type { UnitRow } from '../math/rows.js';
import type { ResolvedRequest } from '../run/resolve.js';
import type { Run, UnitConsumer } from '../run/run.js';
import { rowLimit } from './common.js';
import { captureCentres } from './noise.js';

export interface HalvingMeasurement {
  /** The samples measured (0 … samples−1). */
  samples: number;
  /** The spacings run besides ε, as factors of ε. */
  factors: number[];
  /** Figures of those samples per layer at 2ε, ε and ε/2 (ε's from the penalty's own rows). */
  layers: Record<string, HalvingFigures>;
  /** Forward rows this request spent on it (0 on a cache hit). */
  rows: number;
  cached: boolean;
  forwardMs: number;
}

export interface HalvingPlan {
  samples: number;
  factors: number[];
  /** Keeps the centre rows of the halving samples as the penalty computes them. */
  capture(consumers: Record<string, UnitConsumer>): Record<string, UnitConsumer>;
  /** The figures, from the cache or by running the rows; `at` the penalty's layers at ε. */
  measure(at: Record<string, LayerPenalty>): Promise<HalvingMeasurement>;
}

/** Why the halving did not run, said once; null when it runs (or was not wanted). */
export function halvingSkipped(run: Run, wanted: boolean, plan: StepPlan | null): Warning | null {
  if (!wanted) return null;
  if (run.executionMode === 'stacked') {
    if (plan) return null;
    const { samples, k } = run.resolved;
    return {
      code: 'halving_skipped',
      message: `the step-halving test did not run: with ${samples} sample${samples > 1 ? 's' : ''} one more at 2ε alone (${2 * k} rows) is more than 25% of the request's ${samples * (2 * k + 1)} rows; pass stepTest: true to run it anyway (${4 * k} rows); below_noise_floor rests on the measured floor alone`,
    };
  }
  return {
    code: 'halving_skipped',
    message: `the step-halving test did not run: rows interact in this model (${run.executionMode} mode), so it would cost all ${run.resolved.samples} samples again twice; below_noise_floor rests on the measured floor alone`,
  };
}

export function halvingPlan(run: Run, stage: string, plan: StepPlan): HalvingPlan {
  const { resolved } = run;
  const { samples, factors } = plan;
  const key = cacheKey(resolved, samples, factors);
  const centres: Record<string, Float64Array> = {};
  return {
    samples,
    factors,
    capture: captureCentres(run, samples, centres),
    measure: async (at) => {
      const known = run.open.facts.get(key) as Record<string, Omit<HalvingFigures, 'at'>> | undefined;
      const atSubset = Object.fromEntries(resolved.layers.map((name) => [name, subsetFigure(at[name], samples, resolved.reduction)]));
      if (known) {
        const layers = Object.fromEntries(resolved.layers.map((name) => [name, { ...known[name], at: atSubset[name] }]));
        return { samples, factors, layers, rows: 0, cached: true, forwardMs: 0 };
      }
      const shared = resolved.layers.every((name) => centres[name] !== undefined) ? centres : null;
      const measured = await runHalving(run, stage, samples, factors, shared);
      if (Object.values(run.preflight.determinism).every((d) => d === 0)) run.open.facts.set(key, measured.figures);
      const layers = Object.fromEntries(resolved.layers.map((name) => [name, { ...measured.figures[name], at: atSubset[name] }]));
      return { samples, factors, layers, rows: measured.rows, cached: false, forwardMs: measured.forwardMs };
    },
  };
}

/** The reduction over the first `samples` samples of the penalty's per-sample figures. */
function subsetFigure(p: LayerPenalty, samples: number, reduction: ResolvedRequest['reduction']): number {
  const part = p.perSample.subarray(0, samples);
  return reduction === 'max' ? Math.max(...part) : part.reduce((a, b) => a + b, 0) / part.length;
}

/** The figures depend on the halving samples' latents, directions and extra inputs, ε, k and the estimator's settings. */
function cacheKey(resolved: ResolvedRequest, samples: number, factors: readonly number[]): string {
  const { size, latents, directions, k } = resolved;
  const hash = createHash('sha256');
  const bytes = (a: ArrayLike<number> & { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) => hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  bytes(latents.subarray(0, samples * size));
  for (let j = 0; j < k; j++) bytes(directions.subarray(j * resolved.samples * size, (j * resolved.samples + samples) * size));
  for (const extra of resolved.extras) {
    const data = extra.array.data as unknown as ArrayLike<number> & { buffer: ArrayBufferLike; byteOffset: number; byteLength: number; subarray(a: number, b: number): typeof data };
    bytes(extra.perSample ? data.subarray(0, samples * extra.size) : data);
  }
  return JSON.stringify(['halving', factors, resolved.wrt.name, resolved.layers, resolved.epsilon, k, resolved.variance, resolved.reduction, resolved.fixedBatch, hash.digest('hex')]);
}

/** Both spacings in one units() call: per sample [centre?] then k (+, −) pairs at 2ε, k at ε/2. */
async function runHalving(run: Run, stage: string, samples: number, factors: readonly number[], centres: Record<string, Float64Array> | null) {
  const { resolved, shapes } = run;
  const { k, size, latents, directions } = resolved;
  const first = centres ? 0 : 1;
  const accumulators = factors.map((factor) =>
    Object.fromEntries(resolved.layers.map((name) => [name, new LayerPenaltyAccumulator(samples, shapes[name].size, k, factor * resolved.epsilon, resolved.variance)])),
  );
  if (centres) {
    for (const name of resolved.layers) {
      for (let n = 0; n < samples; n++) for (const acc of accumulators) acc[name].center(n, centres[name], n * shapes[name].size);
    }
  }
  const consumers = Object.fromEntries(
    resolved.layers.map((name) => [
      name,
      {
        unit(sample: number, unit: number, values: Activations[], offsets: number[]) {
          if (unit < first) {
            for (const acc of accumulators) acc[name].center(sample, values[0], offsets[0]);
            return;
          }
          const u = unit - first;
          accumulators[Math.floor(u / k)][name].direction(sample, values[0], offsets[0], values[1], offsets[1]);
        },
      },
    ]),
  );
  const perSample = first + 2 * factors.length * k;
  const fill = (rows: readonly UnitRow[], out: Float32Array | Float64Array): void => {
    rows.forEach(({ sample, index }, r) => {
      const z = sample * size;
      if (index < first) {
        for (let i = 0; i < size; i++) out[r * size + i] = latents[z + i];
        return;
      }
      const u = (index - first) >> 1;
      const step = ((index - first) % 2 === 0 ? 1 : -1) * factors[Math.floor(u / k)] * resolved.epsilon;
      const v = ((u % k) * resolved.samples + sample) * size;
      for (let i = 0; i < size; i++) out[r * size + i] = latents[z + i] + step * directions[v + i];
    });
  };
  const done = await run.units({
    stage,
    unitSizes: [...(first ? [1] : []), ...new Array<number>(factors.length * k).fill(2)],
    passes: 'each step-halving pass',
    tooMany: (n) => rowLimit(run, n, `${perSample} step-halving rows per sample`),
    fill,
    consumers,
    samples,
  });
  const figures: Record<string, Omit<HalvingFigures, 'at'>> = {};
  for (const name of resolved.layers) {
    const at = (factor: number): number => {
      const i = factors.indexOf(factor);
      return i < 0 ? Number.NaN : (accumulators[i][name].result(resolved.reduction).penalty ?? Number.NaN);
    };
    figures[name] = { double: at(2), half: at(0.5) };
  }
  return { figures, rows: done.plan.rows, forwardMs: done.forwardMs };
}
