/**
 * POST /v1/gate: the request is a gate config (the same schema as the config file) plus the two
 * stored models' ids and the arrays a file cannot carry; the result schema documents GateResult.
 */
import { z } from 'zod';
import { type AttachedArrays, InputArray, NestedArray, parseRequest } from '../contract/request.js';
import { WarningSchema } from '../contract/results.js';
import { gateConfigSchema } from './config.js';
import type { GateResult } from './gate.js';

const ModelId = z.string().regex(/^[0-9a-f]{64}$/, 'must be a model id: the SHA-256 of its bytes, 64 lowercase hex digits');

export const GateRequestSchema = gateConfigSchema
  .omit({ $schema: true })
  .extend({
    candidate: ModelId.meta({ description: 'Id of the stored candidate model' }),
    baseline: ModelId.meta({ description: 'Id of the stored baseline model' }),
    latents: NestedArray.optional().meta({ description: 'Explicit latents for both models, N × … (instead of penalty.samples)' }),
    inputs: z.record(z.string(), InputArray).optional().meta({ description: 'Extra inputs by name, the same for both models' }),
  })
  .meta({ id: 'GateRequest' });

export type GateRequestBody = z.infer<typeof GateRequestSchema>;

/** The arrays of a request body, as the engine takes them. */
export function gateArrays(body: Pick<GateRequestBody, 'latents' | 'inputs'>): AttachedArrays {
  const { latents, inputs } = parseRequest({
    ...(body.latents !== undefined ? { latents: body.latents } : {}),
    ...(body.inputs !== undefined ? { inputs: body.inputs } : {}),
  });
  return { ...(latents !== undefined && !('samples' in latents) ? { latents } : {}), ...(inputs !== undefined ? { inputs } : {}) };
}

/** Unbounded figures (a ratio over a zero baseline) are null in JSON. */
const Figure = z.number().nullable();

const Side = z.object({
  penalty: Figure,
  mean: Figure,
  figures: z.record(z.string(), Figure).optional(),
  noiseFloor: Figure.optional().meta({ description: 'Measured rounding noise floor of the penalty at this ε' }),
  halving: z
    .object({ growth: z.object({ up: Figure, down: Figure }), share: Figure, kinked: z.boolean() })
    .nullable()
    .optional()
    .meta({ description: 'Step-halving evidence beside the floor (docs/noise.md, The verdict)' }),
});

const LayerVerdictSchema = z.object({
  name: z.string(),
  baselineName: z.string(),
  baseline: Side,
  candidate: Side,
  ratio: z.object({ estimate: Figure, lower: Figure, upper: Figure }).nullable(),
  problem: z.string().optional(),
  rules: z.array(
    z.object({
      rule: z.string(),
      threshold: z.number(),
      limit: z.number(),
      value: Figure,
      verdict: z.enum(['pass', 'fail', 'error']),
      message: z.string(),
    }),
  ),
  verdict: z.enum(['pass', 'fail', 'error']),
});

const ModelRef = z.object({ model: z.string(), executionProvider: z.string() });

export const GateResultSchema = z
  .object({
    verdict: z.enum(['pass', 'fail']),
    candidate: ModelRef,
    baseline: ModelRef,
    settings: z.object({
      samples: z.number(),
      k: z.number(),
      epsilon: z.number(),
      reduction: z.string(),
      variance: z.string(),
      seed: z.number(),
      wrt: z.string(),
      confidence: z.number(),
      resamples: z.number(),
      statistic: z.string(),
      interval: z.string(),
    }),
    layers: z.array(LayerVerdictSchema),
    total: LayerVerdictSchema,
    warnings: z.array(WarningSchema.extend({ model: z.enum(['candidate', 'baseline']) })),
    timings: z.object({ totalMs: z.number() }),
  })
  .meta({ id: 'GateResult' });

/** The result as JSON carries it (what `--json` prints): non-finite numbers become null. */
export const jsonSafe = (result: GateResult): GateResult => JSON.parse(JSON.stringify(result)) as GateResult;
