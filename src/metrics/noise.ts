/**
 * The measured rounding noise of each layer (issue 14; the method and the floor: docs/noise.md).
 * ECnoise (math/ecnoise.ts) along direction 0 of sample 0 at a tiny spacing h: G(z + t·v) for
 * t = 0, h, …, (m)·h, one try = one run.units() call on the request's own Run and session, so the
 * arithmetic measured is the device's as it runs the penalty (TF32, the cuDNN algorithm, float16).
 * The spacing adapts between tries (adaptSpacing). The summaries are cached on the session per
 * input signature and layer (OpenSession.facts, like the preflight): a cache hit costs no row.
 *
 * The penalty plans it (`noisePlan`) and hands it its own centre rows G(z_n), so a try costs m
 * rows instead of m+1 per sample measured. The metric below runs it alone (`hessian-audit noise`, POST …/noise).
 */
import { NoiseRequestSchema, type MetricRequest } from '../contract/request.js';
import { type NoiseResult, NoiseResultSchema, type NoiseSigma, type Warning } from '../contract/results.js';
import {
  adaptSpacing,
  DEFAULT_NOISE_OPTIONS,
  ecnoise,
  MEASURED_NOISE_MARGIN,
  measuredFloor,
  type NoiseSummary,
  type NoiseTable,
  NoiseStatus,
  type NoiseTry,
  secondDifferenceNoise,
  summarizeNoise,
} from '../math/index.js';
import type { Activations } from '../math/second-difference.js';
import type { UnitRow } from '../math/rows.js';
import { formatNoise } from '../report/text.js';
import { tf32InEffect } from '../runtime/cuda.js';
import { type HostState, type Run, timings, type UnitConsumer } from '../run/run.js';
import type { ResolvedRequest } from '../run/resolve.js';
import { opOf, rowLimit } from './common.js';
import { defineMetric } from './types.js';

/** What the cache keeps per layer and what a result reports of it. */
export interface LayerNoise {
  summary: NoiseSummary;
  /** The spacings tried (shared by every layer of the measurement) and how many elements each resolved. */
  tries: NoiseTry[];
  /** Samples whose elements were measured (1, or N when rows interact and a pass is all N rows). */
  samples: number;
  /** Lines that crossed a kink (NoiseStatus.kink) over every try: the layer is piecewise linear there. */
  kinkLines: number;
}

export interface NoiseMeasurement {
  layers: Record<string, LayerNoise>;
  /** Forward rows this request spent on it (0 on a cache hit). */
  rows: number;
  batches: number;
  /** Rows of the largest batch it ran (0 on a cache hit). */
  batchRows: number;
  forwardMs: number;
  /** Every layer came from the session's cache. */
  cached: boolean;
  points: number;
}

/** The centre row G(z₀) of every layer, as the penalty's own units computed it. */
export type Centres = Record<string, Float64Array>;

export interface NoisePlan {
  /** The measurement, from the cache or by running the tries. */
  measure(centres?: Centres): Promise<NoiseMeasurement>;
  /** A consumer wrapper that keeps the centre rows of the samples measured; null on a cache hit. */
  capture: ((consumers: Record<string, UnitConsumer>) => Record<string, UnitConsumer>) | null;
  centres: Centres;
}

/**
 * The key of one layer's measurement: the preflight's input signature (wrt input, its shape, the
 * layers, a fixed batch, the extra inputs' shapes) and the ECnoise settings.
 */
function cacheKey(resolved: ResolvedRequest, layer: string): string {
  return JSON.stringify([
    'noise',
    resolved.wrt.name,
    resolved.latentShape,
    resolved.fixedBatch,
    resolved.extras.map((e) => [e.name, e.perSample, e.array.shape.slice(e.perSample ? 1 : 0)]),
    layer,
    DEFAULT_NOISE_OPTIONS.points,
    DEFAULT_NOISE_OPTIONS.h,
  ]);
}

/**
 * Plan the noise measurement of a Run: what the cache has, and how to keep the penalty's centre
 * rows. Stacked: sample 0 is measured. Per-pass mode runs every sample in each pass (rows
 * interact), so it measures all N samples.
 */
export function noisePlan(run: Run, stage: string): NoisePlan {
  const { resolved } = run;
  const cached = Object.fromEntries(resolved.layers.map((name) => [name, run.open.facts.get(cacheKey(resolved, name)) as LayerNoise | undefined]));
  const missing = resolved.layers.some((name) => cached[name] === undefined);
  const centres: Centres = {};
  const samples = measuredSamples(run);
  const capture = missing ? captureCentres(run, samples, centres) : null;
  return {
    capture,
    centres,
    measure: async (given?: Centres) => {
      if (!missing) return { layers: cached as Record<string, LayerNoise>, rows: 0, batches: 0, batchRows: 0, forwardMs: 0, cached: true, points: DEFAULT_NOISE_OPTIONS.points };
      const complete = given && resolved.layers.every((name) => given[name] !== undefined) ? given : undefined;
      const measured = await runTries(run, stage, complete);
      // Like the preflight: a model whose outputs differ between two runs is measured again each time.
      if (Object.values(run.preflight.determinism).every((d) => d === 0)) {
        for (const [name, layer] of Object.entries(measured.layers)) run.open.facts.set(cacheKey(resolved, name), layer);
      }
      return measured;
    },
  };
}

/** Samples a measurement covers: sample 0, or all N when rows interact (a pass is all N rows). */
const measuredSamples = (run: Run): number => (run.executionMode === 'stacked' ? 1 : run.resolved.samples);

/**
 * Wrap a penalty's consumers so that the centre rows (unit 0) of its first `samples` samples are
 * also kept in `centres`, per layer: the noise measurement and the step test reuse them instead of
 * running them again.
 */
export function captureCentres(run: Run, samples: number, centres: Record<string, Float64Array>) {
  return (consumers: Record<string, UnitConsumer>): Record<string, UnitConsumer> =>
    Object.fromEntries(
      Object.entries(consumers).map(([name, consumer]) => [
        name,
        {
          unit(sample: number, unit: number, values: Activations[], offsets: number[]) {
            consumer.unit(sample, unit, values, offsets);
            if (unit !== 0 || sample >= samples) return;
            const size = run.shapes[name].size;
            centres[name] ??= new Float64Array(samples * size);
            copyRow(values[0], offsets[0], size, centres[name], sample * size);
          },
        },
      ]),
    );
}

function copyRow(values: Activations, offset: number, size: number, into: Float64Array, at: number): void {
  for (let e = 0; e < size; e++) into[at + e] = values[offset + e];
}

/** The tries of adaptSpacing, each one units() call over every layer (and sample) at once. */
async function runTries(run: Run, stage: string, centres: Centres | undefined): Promise<NoiseMeasurement> {
  const { resolved, shapes } = run;
  const { points } = DEFAULT_NOISE_OPTIONS;
  const samples = measuredSamples(run);
  // Element blocks: layer by layer, sample by sample, in one vector for the driver.
  const start: Record<string, number> = {};
  let elements = 0;
  for (const name of resolved.layers) {
    start[name] = elements;
    elements += samples * shapes[name].size;
  }
  const shared = centres !== undefined;
  let rows = 0;
  let batches = 0;
  let batchRows = 0;
  let forwardMs = 0;
  const kinkLines: Record<string, number> = Object.fromEntries(resolved.layers.map((name) => [name, 0]));
  const measured = await adaptSpacing(
    async (offsets) => {
      const table: NoiseTable = { sigma: new Float64Array(elements), status: new Uint8Array(elements), order: new Uint8Array(elements) };
      const consumers = Object.fromEntries(resolved.layers.map((name) => [name, blockConsumer(shapes[name].size, start[name], points, shared ? centres[name] : undefined, table)]));
      const first = shared ? 1 : 0;
      const done = await run.units({
        stage,
        unitSizes: [points - first],
        passes: 'each noise measurement pass',
        tooMany: (n) => rowLimit(run, n, `${points - first} noise rows per sample`),
        fill: (list, out) => offsetRows(list, resolved, offsets, first, out),
        consumers,
        samples,
      });
      rows += done.plan.rows;
      batches += done.batches;
      batchRows = Math.max(batchRows, done.batchRows);
      forwardMs += done.forwardMs;
      for (const name of resolved.layers) {
        const block = table.status.subarray(start[name], start[name] + samples * shapes[name].size);
        for (const s of block) if (s === NoiseStatus.kink) kinkLines[name]++;
      }
      return table;
    },
    elements,
    { points },
  );
  const layers: Record<string, LayerNoise> = {};
  for (const name of resolved.layers) {
    const block = measured.sigma.subarray(start[name], start[name] + samples * shapes[name].size);
    layers[name] = { summary: summarizeNoise(block), tries: measured.tries, samples, kinkLines: kinkLines[name] };
  }
  return { layers, rows, batches, batchRows, forwardMs, cached: false, points };
}

/** One layer's consumer of a try: each sample's [points][E] table through ECnoise, into its block. */
function blockConsumer(size: number, start: number, points: number, centres: Float64Array | undefined, table: NoiseTable): UnitConsumer {
  return {
    unit(sample, _unit, values, offsets) {
      const first = centres ? 1 : 0;
      const block = new Float64Array(points * size);
      if (centres) block.set(centres.subarray(sample * size, (sample + 1) * size));
      values.forEach((v, r) => {
        const at = (r + first) * size;
        for (let e = 0; e < size; e++) block[at + e] = v[offsets[r] + e];
      });
      const result = ecnoise(block, points, size);
      const to = start + sample * size;
      table.sigma.set(result.sigma, to);
      table.status.set(result.status, to);
      table.order.set(result.order, to);
    },
  };
}

/** Row i of a sample: z_n + t·v_{0,n} with t = offsets[i + first] (first = 1 when the centre is the penalty's). */
function offsetRows(rows: readonly UnitRow[], resolved: ResolvedRequest, offsets: Float64Array, first: number, out: Float32Array | Float64Array): void {
  const { latents, directions, size } = resolved;
  rows.forEach(({ sample, index }, r) => {
    const t = offsets[index + first];
    const z = sample * size;
    const v = sample * size; // direction 0 of sample n: (0·N + n)·size
    for (let i = 0; i < size; i++) out[r * size + i] = t === 0 ? latents[z + i] : latents[z + i] + t * directions[v + i];
  });
}

/** σ with NaN (nothing resolved) as null, for JSON. */
export function sigmaResult(summary: NoiseSummary): NoiseSigma {
  const n = (x: number): number | null => (Number.isFinite(x) ? x : null);
  return { elements: summary.elements, resolved: summary.resolved, median: n(summary.median), p90: n(summary.p90), rms: n(summary.rms), max: n(summary.max) };
}

/** The layer's floor at ε from its σ; null when no element resolved. */
export function floorAt(run: Run, noise: LayerNoise, name: string, epsilon: number): number | null {
  const { resolved } = run;
  const floor = measuredFloor({
    noise: noise.summary,
    epsilon,
    k: resolved.k,
    variance: resolved.variance,
    reduction: resolved.reduction,
    count: resolved.samples * run.shapes[name].size,
  });
  return Number.isFinite(floor) ? floor : null;
}

/** The device's arithmetic as far as it is known: TF32 where it applies. */
export const precisionOf = (run: Run): { tf32: boolean | null } => ({ tf32: tf32InEffect(run.executionProvider) });

/** A layer no element of which resolved: its floor is unknown, said once per layer. */
export function unresolved(name: string, noise: LayerNoise): Warning {
  return {
    code: 'noise_unresolved',
    layer: name,
    message: `layer '${name}': the rounding noise could not be measured (none of its ${noise.summary.elements} elements resolved at spacings ${noise.tries.map((t) => t.h).join(', ')}); the floor falls back to the output's rounding unit`,
  };
}

/**
 * Host bytes per element of one measured sample: its points in a float64 block, its centre, and σ,
 * status and order in the try's table and in ECnoise's own (8·points + 8 + 2·10).
 */
export const NOISE_TABLE_BYTES = 8 * DEFAULT_NOISE_OPTIONS.points + 8 + 20;

/** The noise metric measures one sample (stacked; per-pass mode measures all, which the batches check). */
function noiseHostState(): HostState {
  return { what: "the noise measurement's float64 tables", fixed: NOISE_TABLE_BYTES, perSample: 0 };
}

export const noise = defineMetric<NoiseResult>({
  name: 'noise',
  summary: 'Rounding noise of each layer, measured on the device (ECnoise), and the penalty floor it sets at ε',
  request: NoiseRequestSchema,
  result: NoiseResultSchema,
  flags: { steps: true, directions: true, basis: true },
  hostState: noiseHostState,
  evaluate: runNoise,
  format: formatNoise,
  report: (noise) => ({ noise }),
});

export async function runNoise(run: Run, _request: MetricRequest): Promise<NoiseResult> {
  const started = performance.now();
  const { resolved, shapes } = run;
  const measured = await noisePlan(run, 'noise').measure();
  const warnings: Warning[] = [...run.warnings];
  const layers = resolved.layers.map((name) => {
    const layer = measured.layers[name];
    const floor = floorAt(run, layer, name, resolved.epsilon);
    if (layer.summary.resolved === 0) warnings.push(unresolved(name, layer));
    const op = opOf(run, name);
    return {
      name,
      shape: [resolved.samples, ...shapes[name].shape],
      ...(op ? { op } : {}),
      type: shapes[name].type,
      sigma: sigmaResult(layer.summary),
      samples: layer.samples,
      floor,
      secondDifferenceNoise: layer.summary.resolved > 0 ? secondDifferenceNoise(layer.summary.p90, resolved.epsilon) : null,
    };
  });
  return {
    metric: 'noise',
    model: run.model.id,
    samples: resolved.samples,
    seed: resolved.seed,
    wrt: resolved.wrt.name,
    epsilon: resolved.epsilon,
    k: resolved.k,
    reduction: resolved.reduction,
    variance: resolved.variance,
    points: measured.points,
    margin: MEASURED_NOISE_MARGIN,
    tries: measured.layers[resolved.layers[0]].tries,
    cached: measured.cached,
    rows: measured.rows,
    batches: measured.batches,
    batchRows: measured.batchRows,
    mode: run.executionMode,
    executionProvider: run.executionProvider,
    precision: precisionOf(run),
    layers,
    warnings,
    timings: timings(started, measured.forwardMs),
  };
}
