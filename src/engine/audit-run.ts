/**
 * The audit metrics' runner: the memory-budget batch size for a unit plan, and a loop that streams
 * the plan's batches through G into per-layer accumulators (the shared set-up is prepare.ts).
 */
import * as ort from 'onnxruntime-node';
import { AuditError } from '../contract/errors.js';
import { type Activations, planUnits, type UnitPlan, type UnitRow } from '../penalty/index.js';
import type { EvaluateContext } from './evaluate.js';
import { chooseMode, planWithinBudget, type Prepared, run, type Warning } from './prepare.js';
import { extraFeeds, outputValues } from './tensors.js';

/** Progress of one stage of a long run: chunks done out of the total. */
export type Progress = (done: number, total: number, stage: string) => void;

export interface AuditContext extends Omit<EvaluateContext, 'onProgress'> {
  onProgress?: Progress;
  /** Keep the first few generated images of image-shaped layers for the HTML report. */
  previews?: boolean;
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
  return planWithinBudget(p.resolved, p.shapes, p.limits, (maxRows) => planUnits({ samples: p.resolved.samples, unitSizes, maxRows, mode }));
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
