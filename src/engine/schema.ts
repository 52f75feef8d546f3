/**
 * The penalty request and result as zod schemas: one source for validation (HTTP routes, the gate),
 * the handlers' types and the OpenAPI document. Objects are strict, so an unknown field is
 * refused with its name instead of being silently ignored. Range checks that do not depend on the
 * model live here; checks against the model and the deployment's limits stay in resolvePenalty.
 */
import { z } from 'zod';
import { AuditError } from '../contract/errors.js';
import { type NDArray, type NumericType, product } from '../io/ndarray.js';
import { fromNested } from '../io/nested.js';
import type { PenaltyRequest } from './request.js';

/**
 * A nested JSON array, N × …. Its rectangularity and element types are checked by fromNested,
 * whose messages name the offending index; a recursive zod type would only say "invalid union".
 */
export const NestedArray = z
  .array(z.unknown())
  .meta({ description: 'Nested array of numbers in C order, batch first (N × …)', example: [[0.1, -0.3]] });

const seedSchema = z
  .number()
  .int('must be a whole number')
  .min(0, 'must be an integer from 0 to 2^53-1')
  .max(Number.MAX_SAFE_INTEGER, 'must be an integer from 0 to 2^53-1');

export const DrawnLatents = z
  .object({
    samples: z.number().int('must be a whole number').min(1, 'must be at least 1'),
    seed: seedSchema.optional().meta({ description: 'Seed for the latents (default: the request seed)' }),
  })
  .strict()
  .meta({ description: 'Draw N standard-normal latents' });

export const NUMERIC_TYPES = ['float32', 'float64', 'int32', 'int64'] as const;

export const InputArray = z
  .object({
    data: z.union([z.number(), NestedArray]).meta({ description: 'Values: a nested array, or a flat one with shape' }),
    shape: z.array(z.number().int().min(0)).optional().meta({ description: 'Reshape flat data to this shape' }),
    type: z.enum(NUMERIC_TYPES).optional().meta({ description: "Element type (default float64, converted to the input's type)" }),
  })
  .strict();

export const PenaltyRequestSchema = z
  .object({
    latents: z.union([NestedArray, DrawnLatents]).optional().meta({ description: 'z as an N × … array, or {samples, seed} to draw it' }),
    wrt: z.string().min(1).optional().meta({ description: 'Input to take the penalty with respect to (default: first float input)' }),
    inputs: z.record(z.string(), InputArray).optional().meta({ description: 'Extra inputs by name, held fixed for all passes' }),
    k: z
      .number()
      .int('must be a whole number')
      .min(2, 'must be at least 2 (the variance over directions needs two of them)')
      .optional()
      .meta({ description: 'Directions per sample (default 2)' }),
    epsilon: z
      .number()
      .gt(0, 'must be greater than 0 (the reference uses 0.1)')
      .optional()
      .meta({ description: 'Finite-difference step (default 0.1)' }),
    reduction: z.enum(['max', 'mean']).optional().meta({ description: 'Over elements and samples (default max)' }),
    variance: z.enum(['unbiased', 'biased']).optional().meta({ description: 'Over directions (default unbiased)' }),
    layers: z.array(z.string().min(1)).optional().meta({ description: 'Outputs or intermediate tensors (default: all outputs)' }),
    seed: seedSchema.optional().meta({ description: 'Seed for latents and directions (default: random, reported)' }),
    directions: NestedArray.optional().meta({ description: 'Explicit directions, k × N × … (k × N × m along a basis)' }),
    basis: NestedArray.optional().meta({ description: 'Latent directions as rows, m × …: the penalty is taken w.r.t. coefficients along them' }),
    epsilons: z
      .array(z.number().gt(0, 'must be greater than 0'))
      .min(1)
      .optional()
      .meta({ description: 'ε sweep: the penalty at each ε, on the same latents and directions' }),
    maxSamples: z
      .number()
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .optional()
      .meta({ description: 'Audit only the first maxSamples samples (saves memory)' }),
    allowNondeterministic: z
      .boolean()
      .optional()
      .meta({ description: 'Run a model with random ops anyway (results carry a warning)' }),
  })
  .strict()
  .meta({ id: 'PenaltyRequest' });

export type PenaltyRequestBody = z.infer<typeof PenaltyRequestSchema>;

export const WarningSchema = z.object({
  code: z.string(),
  message: z.string(),
  layer: z.string().optional(),
});

// Results are loose objects: a field the engine adds later reaches clients instead of being
// stripped by the response serializer.
export const LayerResultSchema = z.looseObject({
  name: z.string(),
  penalty: z.number().nullable(),
  shape: z.array(z.number()),
  op: z.string().optional(),
  perSample: z.array(z.number().nullable()),
  noiseFloor: z.number().meta({ description: 'Rounding noise floor of the penalty at this ε' }),
  determinism: z
    .object({ maxDifference: z.number(), secondDifferenceError: z.number() })
    .meta({ description: 'Two runs of the same G(z): largest difference, and 4δ/ε²' }),
});

export const SweepPointSchema = z.object({
  epsilon: z.number(),
  penalty: z.number().nullable(),
  layers: z.array(z.object({ name: z.string(), penalty: z.number().nullable(), noiseFloor: z.number() })),
});

export const PenaltyResultSchema = z
  .looseObject({
    model: z.string().meta({ description: 'SHA-256 of the model bytes' }),
    penalty: z.number().nullable().meta({ description: 'Sum over layers' }),
    layers: z.array(LayerResultSchema),
    k: z.number(),
    epsilon: z.number(),
    reduction: z.enum(['max', 'mean']),
    variance: z.enum(['unbiased', 'biased']),
    samples: z.number(),
    forwardPasses: z.number().meta({ description: '2k+1' }),
    rows: z.number(),
    batches: z.number(),
    mode: z.enum(['stacked', 'per-pass']),
    seed: z.number(),
    directions: z.enum(['rademacher', 'explicit']),
    wrt: z.string(),
    executionProvider: z.string(),
    sweep: z.array(SweepPointSchema).optional().meta({ description: 'Penalties for each ε of epsilons' }),
    warnings: z.array(WarningSchema),
    timings: z.object({ totalMs: z.number(), forwardMs: z.number(), reduceMs: z.number() }),
  })
  .meta({ id: 'PenaltyResult' });

/** Parse a request body from unknown JSON: a 400 AuditError naming every problem. */
export function parsePenaltyRequest(value: unknown, what = 'request'): PenaltyRequestBody {
  const parsed = PenaltyRequestSchema.safeParse(value);
  if (!parsed.success) throw requestError(parsed.error, what);
  return parsed.data;
}

/** zod issues → one readable sentence per issue, with the field path and any unknown keys. */
export function formatIssues(error: z.ZodError, what = 'request'): string {
  return error.issues
    .map((issue) => {
      const at = issue.path.length ? `${what}.${issue.path.join('.')}` : what;
      if (issue.code === 'unrecognized_keys') {
        return `${at} has unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
      }
      return `${at}: ${issue.message}`;
    })
    .join('; ');
}

export const requestError = (error: z.ZodError, what = 'request'): AuditError =>
  new AuditError('invalid_request', formatIssues(error, what), {
    issues: error.issues.map((i) => ({ path: i.path.map(String), code: i.code, message: i.message })),
  });

/** Validated JSON → the PenaltyRequest that evaluatePenalty takes (the CLI builds the same one). */
export function toPenaltyRequest(body: PenaltyRequestBody): PenaltyRequest {
  const request: PenaltyRequest = {};
  if (body.latents !== undefined) {
    request.latents = Array.isArray(body.latents) ? fromNested(body.latents, 'latents') : { ...body.latents };
  }
  if (body.directions !== undefined) request.directions = fromNested(body.directions, 'directions');
  if (body.basis !== undefined) request.basis = fromNested(body.basis, 'basis');
  if (body.inputs !== undefined) {
    request.inputs = Object.fromEntries(Object.entries(body.inputs).map(([name, spec]) => [name, inputArray(name, spec)]));
  }
  for (const key of ['wrt', 'k', 'epsilon', 'reduction', 'variance', 'layers', 'seed', 'epsilons', 'maxSamples', 'allowNondeterministic'] as const) {
    if (body[key] !== undefined) (request as Record<string, unknown>)[key] = body[key];
  }
  return request;
}

function inputArray(name: string, spec: z.infer<typeof InputArray>): NDArray {
  const what = `inputs.${name}.data`;
  const type: NumericType = spec.type ?? 'float64';
  const nested = typeof spec.data === 'number' ? [spec.data] : spec.data;
  // Read as float64 first so that whole-number checks see the values as sent.
  const array = fromNested(nested, what, 'float64');
  if ((type === 'int32' || type === 'int64') && (array.data as Float64Array).some((x) => !Number.isInteger(x))) {
    throw new AuditError('invalid_array', `${what} is declared ${type} but holds values that are not whole numbers`);
  }
  let shape = typeof spec.data === 'number' && spec.shape === undefined ? [] : array.shape;
  if (spec.shape !== undefined) {
    if (product(spec.shape) !== array.data.length) {
      throw new AuditError(
        'invalid_array',
        `inputs.${name} has ${array.data.length} values, which do not fill shape [${spec.shape.join(', ')}] (${product(spec.shape)} values)`,
      );
    }
    shape = spec.shape;
  }
  return type === 'float64' ? { ...array, shape } : { ...fromNested(Array.from(array.data as Float64Array), what, type), shape };
}
