/**
 * The request: one contract for HTTP and the command line. The zod schemas are the validation, the
 * types (z.infer) and the OpenAPI document. The CLI builds the same JSON body from its flags and
 * attaches the arrays it read from files, then goes through the same parseRequest as HTTP, so both
 * word every error the same. Objects are strict: an unknown field is refused by name. Range checks
 * that do not depend on the model live here; checks against the model stay in run/resolve.ts.
 */
import { z } from 'zod';
import { AuditError } from './errors.js';
import { type NDArray, type NumericType, product } from '../io/ndarray.js';
import { fromNested } from '../io/nested.js';
import type { ExecutionMode } from './results.js';
import { GroupSpecSchema } from '../math/groups.js';

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
    wrt: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "Input, or intermediate tensor (the graph is cut there: StyleGAN's w), to take the penalty with respect to (default: first float input)" }),
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
    groups: GroupSpecSchema.optional(),
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
    noise: z
      .boolean()
      .optional()
      .meta({
        description:
          'Measure the rounding noise on the device (ECnoise) for the floor, below_noise_floor and the recommended ε (default true; m rows once per session and input signature, then cached)',
      }),
    stepTest: z
      .boolean()
      .optional()
      .meta({
        description:
          'Run the step-halving test beside the noise measurement (default true): the first ⌊N/8⌋ samples again at 2ε and ε/2, 2·2k rows each (20% of the request at k = 2, under 25% at any k; N = 4 to 7: one sample at 2ε alone; below 4 only when true is asked for; noise.stepRows), cached per session; it decides below_noise_floor with the measured floor and gives each layer its regime',
      }),
    batchRows: z
      .number()
      .int('must be a whole number')
      .min(1, 'must be at least 1')
      .optional()
      .meta({ description: 'Rows per batch, at most (default: the memory budget, or the size tuned on the session for requests of 1,024 rows or more)' }),
    estimator: z
      .enum(['auto', 'graph', 'host'])
      .optional()
      .meta({
        description:
          "Where the penalty's moments (and the Hessian's, activeness's and orthogonality's figures) are reduced: 'graph' in the session (ONNX ops appended to the model; only per-sample figures leave onnxruntime), 'host' in JavaScript; 'auto' (default): graph on CUDA/WebGPU, host on the CPU. Per-pass runs use the host; the traversal ignores it",
      }),
  })
  .strict()
  .meta({ id: 'PenaltyRequest' });

/** The noise metric's request: the penalty's, without the sweep (ε, k, variance, reduction set the floor it reports). */
export const NoiseRequestSchema = PenaltyRequestSchema.omit({ epsilons: true, noise: true, stepTest: true, estimator: true }).strict().meta({ id: 'NoiseRequest' });


/** The audit metrics' request: the penalty request plus their own settings. */
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


export type PenaltyRequestBody = z.infer<typeof PenaltyRequestSchema>;
export type AuditRequestBody = z.infer<typeof AuditRequestSchema>;

/** Arrays given beside the JSON body (the CLI's files, the one-shot route's parts), already typed. */
export interface AttachedArrays {
  latents?: NDArray;
  directions?: NDArray;
  basis?: NDArray;
  inputs?: Record<string, NDArray>;
}

/** The request the engine reads: the validated body with its arrays typed. */
export type MetricRequest = Omit<AuditRequestBody, 'latents' | 'directions' | 'basis' | 'inputs' | 'modelName'> & {
  latents?: NDArray | z.infer<typeof DrawnLatents>;
  directions?: NDArray;
  basis?: NDArray;
  inputs?: Record<string, NDArray>;
  /** Force an execution mode (tests, benchmarks); by default stacked unless the model requires per-pass. */
  mode?: ExecutionMode;
};

export const DEFAULTS = {
  k: 2,
  epsilon: 0.1,
  reduction: 'max' as const,
  variance: 'unbiased' as const,
  samples: 8,
};

/**
 * The finite-difference steps accepted. Below 1e-12 the step is under float64's resolution for
 * any latent of size 1e-4 or more (and under float32's far earlier), so every difference is
 * rounding; ε² underflows near 1e-162 and the figures become 0/0. Above 1e6 nothing about the
 * step is local, and z ± ε·v leaves float32's range near 1e38. Outside this range: 422.
 */
export const EPSILON_RANGE = { min: 1e-12, max: 1e6 } as const;

/** Limits a deployment sets; each one is a documented setting. */
export interface Limits {
  maxSamples: number;
  maxK: number;
  maxRows: number;
  /** Bytes of layer outputs one batch may hold. */
  memoryBudget: number;
  /** Release gate: most samples × resamples bootstrap draws (gate.ts DEFAULT_MAX_BOOTSTRAP_DRAWS when absent). */
  maxBootstrapDraws?: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxSamples: 4096,
  maxK: 4096,
  maxRows: 1_000_000,
  memoryBudget: 512 * 1024 * 1024,
};

/**
 * Unknown JSON (and any attached arrays) → the engine's request, or a 400 AuditError naming every
 * problem. `schema` is the metric's request schema (the penalty's, or the audit metrics').
 */
export function parseRequest(
  body: unknown,
  attached: AttachedArrays = {},
  schema: z.ZodType<PenaltyRequestBody | AuditRequestBody> = AuditRequestSchema,
  what = 'request',
): MetricRequest {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw requestError(parsed.error, what);
  return fromBody(parsed.data as AuditRequestBody, attached);
}

/** A body the route's schema has validated already → the engine's request. */
export const fromBody = (body: PenaltyRequestBody | AuditRequestBody, attached: AttachedArrays = {}): MetricRequest =>
  withArrays(toRequest(body as AuditRequestBody), attached);

/** zod issues → one readable sentence per issue, with the field path and any unknown keys. */
export function formatIssues(error: z.ZodError | readonly z.core.$ZodIssue[], what = 'request'): string {
  const issues = Array.isArray(error) ? error : (error as z.ZodError).issues;
  return issues.flatMap((issue) => describe(issue, [], what)).join('; ');
}

function describe(issue: z.core.$ZodIssue, parent: PropertyKey[], what: string): string[] {
  const path = [...parent, ...issue.path];
  // A union (latents: an array or {samples, seed}) says only "Invalid input": explain with the
  // alternative that got furthest, the one the sender evidently meant.
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    const depth = (list: z.core.$ZodIssue[]): number => Math.max(...list.map((i) => i.path.length + (i.code === 'invalid_type' ? 0 : 0.5)));
    const best = [...issue.errors].sort((a, b) => depth(b) - depth(a))[0];
    return best.flatMap((inner) => describe(inner, path, what));
  }
  const at = path.length ? `${what}.${path.map(String).join('.')}` : what;
  if (issue.code === 'unrecognized_keys') {
    return [`${at} has unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`];
  }
  return [`${at}: ${issue.message}`];
}

export const requestError = (error: z.ZodError, what = 'request'): AuditError =>
  new AuditError('invalid_request', formatIssues(error, what), {
    issues: error.issues.map((i) => ({ path: i.path.map(String), code: i.code, message: i.message })),
  });

/** Validated JSON → the engine's request: nested arrays become typed arrays. */
function toRequest(body: AuditRequestBody): MetricRequest {
  const { latents, directions, basis, inputs, modelName: _name, ...settings } = body;
  const request: MetricRequest = { ...settings };
  if (latents !== undefined) request.latents = Array.isArray(latents) ? fromNested(latents, 'latents') : { ...latents };
  if (directions !== undefined) request.directions = fromNested(directions, 'directions');
  if (basis !== undefined) request.basis = fromNested(basis, 'basis');
  if (inputs !== undefined) request.inputs = Object.fromEntries(Object.entries(inputs).map(([name, spec]) => [name, inputArray(name, spec)]));
  return request;
}

/** Attached arrays join the request; the same array given both ways is refused. */
function withArrays(request: MetricRequest, attached: AttachedArrays): MetricRequest {
  const twice = (name: string): AuditError =>
    new AuditError('invalid_request', `${name} is given both in the "request" JSON and as a part; give it once`);
  for (const name of ['latents', 'directions', 'basis'] as const) {
    const array = attached[name];
    if (array === undefined) continue;
    if (request[name] !== undefined) throw twice(name);
    request[name] = array;
  }
  for (const [name, array] of Object.entries(attached.inputs ?? {})) {
    request.inputs ??= {};
    if (request.inputs[name]) throw twice(`inputs.${name}`);
    request.inputs[name] = array;
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
