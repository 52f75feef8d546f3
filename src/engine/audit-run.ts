/**
 * What the audit metrics share with the penalty: one resolved request (one set of latents), one
 * cached session, the shape probe, the memory-budget batch size, and a runner that streams a
 * unit plan's batches through G into per-layer accumulators.
 */
import * as ort from 'onnxruntime-node';
import { AuditError } from '../errors.js';
import { type Activations, planUnits, type Row, type UnitPlan, type UnitRow } from '../penalty/index.js';
import {
  bytesPerRow,
  chooseMode,
  type EvaluateContext,
  probeOnce,
  refuseRandomOps,
  runSession,
  type Warning,
} from './evaluate.js';
import type { LoadedModel } from './model.js';
import type { LayerShape, Probe } from './preflight.js';
import { DEFAULT_LIMITS, type Limits, type PenaltyRequest } from './request.js';
import { resolvePenalty, type ResolvedPenalty } from './resolve.js';
import type { OpenSession } from './session.js';
import { batchFeeds, extraFeeds, outputValues } from './tensors.js';

/** Progress of one stage of a long run: chunks done out of the total. */
export type Progress = (done: number, total: number, stage: string) => void;

export interface AuditContext extends Omit<EvaluateContext, 'onProgress'> {
  onProgress?: Progress;
  /** Keep the first few generated images of image-shaped layers for the HTML report. */
  previews?: boolean;
}

export interface Prepared {
  model: LoadedModel;
  resolved: ResolvedPenalty;
  open: OpenSession;
  limits: Limits;
  probed: Probe;
  shapes: Record<string, LayerShape>;
  warnings: Warning[];
  /** Milliseconds spent inside onnxruntime so far. */
  forwardMs: number;
  started: number;
}

/** Validate, refuse random ops, open the cached session and probe it, exactly as the penalty does. */
export async function prepare(model: LoadedModel, request: PenaltyRequest, context: AuditContext): Promise<Prepared> {
  const started = performance.now();
  const limits = context.limits ?? DEFAULT_LIMITS;
  const resolved = resolvePenalty(model.description, request, limits);
  const warnings: Warning[] = [...resolved.warnings];
  refuseRandomOps(model, request.allowNondeterministic === true, warnings);
  const open = await context.sessions.get(model.id, model.bytes, resolved.expose, context.device);
  if (open.fallback) warnings.push({ code: 'device_fallback', message: open.fallback });
  const p: Prepared = { model, resolved, open, limits, probed: undefined as unknown as Probe, shapes: {}, warnings, forwardMs: 0, started };
  p.probed = await probeOnce(open, resolved, (rows: Row[]) => run(p, batchFeeds(resolved, rows)));
  p.shapes = p.probed.shapes;
  return p;
}

export async function run(p: Prepared, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const t = performance.now();
  try {
    return await runSession(p.open, feeds, p.resolved.layers);
  } finally {
    p.forwardMs += performance.now() - t;
  }
}

/** Per layer, whatever combines a unit's rows. */
export interface UnitConsumer {
  unit(sample: number, unit: number, values: Activations[], offsets: number[]): void;
}

export interface UnitRun {
  plan: UnitPlan;
  batches: number;
}

/** The plan for `unitSizes` per sample, refused if it exceeds the row limit (`tooMany` says why). */
export function planFor(p: Prepared, unitSizes: number[], passes: string, tooMany: (rows: number) => AuditError): UnitPlan {
  const perSample = unitSizes.reduce((a, b) => a + b, 0);
  if (perSample * p.resolved.samples > p.limits.maxRows) throw tooMany(perSample * p.resolved.samples);
  const warnings: Warning[] = [];
  const mode = chooseMode(p.model, p.resolved, p.probed, warnings, passes);
  for (const w of warnings) if (!p.warnings.some((x) => x.message === w.message)) p.warnings.push(w);
  const bytes = bytesPerRow(p.resolved, p.shapes);
  const maxRows = Math.max(1, Math.floor(p.limits.memoryBudget / bytes));
  try {
    return planUnits({ samples: p.resolved.samples, unitSizes, maxRows, mode });
  } catch (err) {
    if (err instanceof AuditError) err.message = `${err.message} (about ${bytes} bytes per row for the layers asked, budget ${p.limits.memoryBudget} bytes)`;
    throw err;
  }
}

/**
 * Stream the plan through G: `fill` writes the latent rows of a batch, each chunk's units go to
 * every layer's consumer as soon as the chunk is back.
 */
export async function runUnits(
  p: Prepared,
  plan: UnitPlan,
  fill: (rows: readonly UnitRow[], out: Float32Array | Float64Array) => void,
  consumers: Record<string, UnitConsumer>,
  stage: string,
  onProgress?: Progress,
): Promise<UnitRun> {
  const { resolved, shapes } = p;
  let done = 0;
  let batches = 0;
  for (const chunk of plan.chunks) {
    const outputs: Record<string, Activations>[] = [];
    for (const batch of chunk.batches) {
      const out = resolved.latentType === 'float64' ? new Float64Array(batch.length * resolved.size) : new Float32Array(batch.length * resolved.size);
      fill(batch, out);
      const feeds = { [resolved.wrt.name]: new ort.Tensor(resolved.latentType, out, [batch.length, ...resolved.latentShape]), ...extraFeeds(resolved, batch) };
      const result = await run(p, feeds);
      outputs.push(Object.fromEntries(resolved.layers.map((name) => [name, outputValues(result[name])])));
      batches++;
    }
    for (const { sample, unit, rows } of chunk.units) {
      for (const name of resolved.layers) {
        const size = shapes[name].size;
        consumers[name].unit(
          sample,
          unit,
          rows.map((r) => outputs[r.batch][name]),
          rows.map((r) => r.row * size),
        );
      }
    }
    onProgress?.(++done, plan.chunks.length, stage);
  }
  return { plan, batches };
}

export const round = (ms: number): number => Math.round(ms * 100) / 100;
