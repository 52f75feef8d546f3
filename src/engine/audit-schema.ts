/**
 * The audit routes' request and results as zod schemas (validation, handler types, OpenAPI), in
 * the manner of engine/schema.ts: the request is the penalty request plus the audit's settings,
 * strict, so an unknown field is refused by name.
 */
import { z } from 'zod';
import type { AuditRequest } from './audit.js';
import { PenaltyRequestSchema, PenaltyResultSchema, requestError, toPenaltyRequest, WarningSchema } from './schema.js';

export const AuditRequestSchema = PenaltyRequestSchema.extend({
  extent: z.number().gt(0, 'must be greater than 0').optional().meta({ description: 'Activeness sets z_i to −extent, 0, +extent (default 2)' }),
  threshold: z.number().min(0, 'must be at least 0').optional().meta({ description: 'Activeness below this marks a latent unused (default 1e-6)' }),
  element: z
    .number()
    .int('must be a whole number')
    .min(0, 'must be at least 0')
    .optional()
    .meta({ description: 'Hessian: also return the full d×d Hessian of this element (flat index within a sample)' }),
  modelName: z.string().max(200).optional().meta({ description: 'How the HTML report names the model (default: its id)' }),
})
  .strict()
  .meta({ id: 'AuditRequest' });

export type AuditRequestBody = z.infer<typeof AuditRequestSchema>;

export function parseAuditRequest(value: unknown, what = 'request'): AuditRequestBody {
  const parsed = AuditRequestSchema.safeParse(value);
  if (!parsed.success) throw requestError(parsed.error, what);
  return parsed.data;
}

export function toAuditRequest(body: AuditRequestBody): AuditRequest {
  const { extent, threshold, element, modelName: _name, ...penalty } = body;
  const request: AuditRequest = toPenaltyRequest(penalty);
  if (extent !== undefined) request.extent = extent;
  if (threshold !== undefined) request.threshold = threshold;
  if (element !== undefined) request.element = element;
  return request;
}

const nullable = z.number().nullable();
const Timings = z.object({ totalMs: z.number(), forwardMs: z.number(), reduceMs: z.number() });

const RunInfo = {
  model: z.string().meta({ description: 'SHA-256 of the model bytes' }),
  samples: z.number(),
  seed: z.number(),
  wrt: z.string(),
  latents: z.number().meta({ description: 'd: latent components, or basis rows along a basis' }),
  basis: z.number().nullable().meta({ description: 'Rows of the basis; null without one' }),
  rowsPerSample: z.number(),
  rows: z.number(),
  batches: z.number(),
  mode: z.enum(['stacked', 'per-pass']),
  executionProvider: z.string(),
  warnings: z.array(WarningSchema),
  timings: Timings,
};

const LayerBase = { name: z.string(), shape: z.array(z.number()), op: z.string().optional() };

export const HessianResultSchema = z
  .object({
    metric: z.literal('hessian'),
    ...RunInfo,
    epsilon: z.number(),
    reduction: z.enum(['max', 'mean']),
    penalty: nullable.meta({ description: 'Exact penalty, sum over layers' }),
    layers: z.array(
      z.object({
        ...LayerBase,
        penalty: nullable.meta({ description: '2·Σ_{i≠j} H_ij² per element, reduced like the estimator' }),
        perSample: z.array(nullable),
        interaction: z.array(z.array(z.number())).meta({ description: 'd×d mean over elements and samples of H_ij²' }),
        diagonalFraction: z.number().meta({ description: 'Share of elements whose largest |H_ij| is diagonal' }),
        diagonalRatio: z.number().meta({ description: 'Mean of mean|H_ii| / (mean_{i≠j}|H_ij| + 1e-8)' }),
        noiseFloor: z.number(),
        heatmap: z
          .object({ height: z.number(), width: z.number(), values: z.array(z.array(z.number())) })
          .optional()
          .meta({ description: 'Image-shaped layers: per-element penalty, mean over samples and channels' }),
        elementHessian: z.array(z.array(z.array(z.number()))).optional().meta({ description: 'N × d × d, when element is given' }),
      }),
    ),
  })
  .meta({ id: 'HessianResult' });

export const ActivenessResultSchema = z
  .object({
    metric: z.literal('activeness'),
    ...RunInfo,
    extent: z.number(),
    threshold: z.number(),
    layers: z.array(z.object({ ...LayerBase, activeness: z.array(nullable), unused: z.array(z.number()) })),
    unused: z.array(z.number()).meta({ description: 'Latents below the threshold in every layer' }),
  })
  .meta({ id: 'ActivenessResult' });

export const OrthogonalityResultSchema = z
  .object({
    metric: z.literal('orthogonality'),
    ...RunInfo,
    k: z.number(),
    epsilon: z.number(),
    reduction: z.enum(['max', 'mean']),
    variance: z.enum(['unbiased', 'biased']),
    directions: z.enum(['rademacher', 'explicit']),
    score: nullable.meta({ description: 'Sum over layers of Var_v ‖Jv‖², reduced over samples' }),
    layers: z.array(z.object({ ...LayerBase, score: nullable, perSample: z.array(nullable) })),
  })
  .meta({ id: 'OrthogonalityResult' });

export const AuditResultSchema = z
  .object({
    metric: z.literal('audit'),
    model: z.string(),
    samples: z.number(),
    seed: z.number(),
    wrt: z.string(),
    latents: z.number(),
    basis: z.number().nullable(),
    penalty: PenaltyResultSchema,
    hessian: HessianResultSchema.nullable().meta({ description: 'null when d is too large for the row limit (see warnings)' }),
    activeness: ActivenessResultSchema,
    orthogonality: OrthogonalityResultSchema,
    warnings: z.array(WarningSchema),
    timings: z.object({ totalMs: z.number() }),
  })
  .meta({ id: 'AuditResult' });
