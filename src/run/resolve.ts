/**
 * Bind a request to the model it is for. The request's own ranges were checked by its zod schema
 * (contract/request.ts); what is checked here needs the model or the deployment's limits: names of
 * inputs and layers, shapes, types, finiteness, the limits. What comes out is fully resolved.
 */
import { AuditError, clip, invalid } from '../contract/errors.js';
import { allocate, convert, formatShape, type NDArray, type NumericType, product } from '../io/ndarray.js';
import type { Dim, ModelDescription, TensorInfo } from '../onnx/describe.js';
import { FLOAT_TYPES } from '../onnx/types.js';
import {
  directionsAlongBasis,
  rademacherDirections,
  randomSeed,
  type Reduction,
  standardNormal,
  type VarianceKind,
} from '../math/index.js';
import { DEFAULTS, EPSILON_RANGE, type Limits, type MetricRequest } from '../contract/request.js';
import { groupBasis, resolveGroups } from '../math/groups.js';
import type { ExecutionMode } from '../contract/results.js';

export interface ExtraInput {
  name: string;
  array: NDArray;
  /** Batch-first input given per sample: its rows follow the rows of z. */
  perSample: boolean;
  /** Values per sample when perSample. */
  size: number;
}

export interface ResolvedRequest {
  wrt: TensorInfo;
  /** z, N × size, in the wrt input's element type. */
  latents: Float32Array | Float64Array;
  latentType: 'float32' | 'float64';
  /** Per-sample shape of z (without the batch dimension). */
  latentShape: number[];
  samples: number;
  size: number;
  extras: ExtraInput[];
  layers: string[];
  /** Layers that are not graph outputs and must be exposed. */
  expose: string[];
  k: number;
  epsilon: number;
  reduction: Reduction;
  variance: VarianceKind;
  seed: number;
  directions: Float32Array;
  explicitDirections: boolean;
  mode?: ExecutionMode;
  /** Rows b_1..b_m of the direction basis (m × size); the directions above are already vQ. */
  basis?: { rows: number; data: Float64Array };
  /** When the basis is a group basis (`groups`): how many groups and how they were given. */
  groups?: { count: number; description: string };
  /** The model's batch dimension is a fixed number, not symbolic. */
  fixedBatch: number | null;
  epsilons?: number[];
  /** Warnings found while resolving (sub-sampling). */
  warnings: { code: string; message: string }[];
}

const INT_TYPES = new Set(['int32', 'int64']);

export function resolveRequest(model: ModelDescription, request: MetricRequest, limits: Limits): ResolvedRequest {
  const seed = request.seed ?? randomSeed();
  const epsilon = request.epsilon ?? DEFAULTS.epsilon;
  checkEpsilonRange('epsilon', epsilon);
  const reduction = request.reduction ?? DEFAULTS.reduction;
  const variance = request.variance ?? DEFAULTS.variance;
  const epsilons = request.epsilons;
  for (const e of epsilons ?? []) checkEpsilonRange('each of epsilons', e);
  const maxSamples = request.maxSamples;
  const warnings: ResolvedRequest['warnings'] = [];

  const wrt = pickWrt(model, request.wrt);
  const latentType = wrt.type as 'float32' | 'float64';
  let latents = resolveLatents(wrt, request, seed, limits);
  let inputs = request.inputs ?? {};
  let givenDirections = request.directions;
  if (maxSamples !== undefined && maxSamples < latents.shape[0]) {
    warnings.push({
      code: 'subsampled',
      message: `auditing the first ${maxSamples} of ${latents.shape[0]} samples (maxSamples)`,
    });
    const all = latents.shape[0];
    latents = firstSamples(latents, maxSamples);
    inputs = Object.fromEntries(
      Object.entries(inputs).map(([name, a]) => [name, a.shape[0] === all && isBatched(model, name) ? firstSamples(a, maxSamples) : a]),
    );
    if (givenDirections && givenDirections.shape[1] === all) givenDirections = firstSamples(givenDirections, maxSamples, 1);
  }
  const [samples, ...latentShape] = latents.shape;
  const size = product(latentShape);

  const k = resolveK(request, limits);
  if (request.basis !== undefined && request.groups !== undefined) {
    throw invalid('give either basis or groups, not both (groups are a basis: one indicator row per group)');
  }
  const grouped = request.groups === undefined ? undefined : resolveGroups(request.groups, latentShape);
  if (grouped) checkLimit('groups', grouped.count, limits.maxK);
  // Sharing one sign per group is drawing directions along the group basis (math/groups.ts): bit-identical.
  const basis = grouped
    ? { rows: grouped.count, data: groupBasis(grouped) }
    : request.basis === undefined
      ? undefined
      : resolveBasis(request.basis, latentShape, limits);
  const directions = resolveDirections(givenDirections, k, basis ? [samples, basis.rows] : latents.shape, seed);
  if (basis) directions.data = directionsAlongBasis(directions.data, basis.data, basis.rows, size);
  const extras = resolveExtras(model, wrt, inputs, samples);
  const layers = resolveLayers(model, request.layers);
  const outputs = new Set(model.outputs.map((o) => o.name));
  const batchDim = wrt.shape?.[0];
  const fixedBatch = typeof batchDim === 'number' ? batchDim : null;
  if (fixedBatch !== null && fixedBatch !== samples) {
    throw new AuditError(
      'shape_mismatch',
      `input '${wrt.name}' has a fixed batch size of ${fixedBatch}, but ${samples} samples were given; ` +
        `give exactly ${fixedBatch} samples or export the model with a dynamic batch axis`,
    );
  }
  return {
    wrt,
    latents: latents.data as Float32Array | Float64Array,
    latentType,
    latentShape,
    samples,
    size,
    extras,
    layers,
    expose: layers.filter((l) => !outputs.has(l)),
    k,
    epsilon,
    reduction,
    variance,
    seed,
    directions: directions.data,
    explicitDirections: directions.explicit,
    ...(request.mode ? { mode: request.mode } : {}),
    ...(basis ? { basis } : {}),
    ...(grouped ? { groups: { count: grouped.count, description: grouped.description } } : {}),
    fixedBatch,
    ...(epsilons ? { epsilons } : {}),
    warnings,
  };
}

const isBatched = (model: ModelDescription, name: string): boolean => {
  const dim = model.inputs.find((i) => i.name === name)?.shape?.[0];
  return dim !== undefined && !isFixed(dim);
};

/** The first `count` entries along `axis` (0: samples; 1: samples of k × N × … directions). */
function firstSamples(array: NDArray, count: number, axis = 0): NDArray {
  const shape = [...array.shape];
  const outer = product(shape.slice(0, axis));
  const inner = product(shape.slice(axis + 1));
  const stride = shape[axis] * inner;
  shape[axis] = count;
  const parts = Array.from({ length: outer }, (_, o) => array.data.subarray(o * stride, o * stride + count * inner));
  const data = allocate(array.type, product(shape));
  let at = 0;
  for (const part of parts) {
    (data as Float32Array).set(part as Float32Array, at);
    at += part.length;
  }
  return { type: array.type, shape, data };
}

/** A step outside EPSILON_RANGE gives figures that are pure rounding, 0/0 or overflow: refused. */
function checkEpsilonRange(name: string, epsilon: number): void {
  if (epsilon >= EPSILON_RANGE.min && epsilon <= EPSILON_RANGE.max) return;
  throw new AuditError(
    'epsilon_out_of_range',
    `${name} is ${epsilon}; it must be from ${EPSILON_RANGE.min} to ${EPSILON_RANGE.max} (below, every difference is float rounding or ε² underflows; above, the step is not local and leaves float32's range); the reference uses 0.1`,
    { epsilon, min: EPSILON_RANGE.min, max: EPSILON_RANGE.max },
  );
}

function invalidValue(name: string, value: unknown, expected: string): never {
  throw invalid(`${name} must be ${expected}, got ${typeof value === 'string' ? `'${value}'` : String(value)}`);
}

function pickWrt(model: ModelDescription, name: string | undefined): TensorInfo {
  if (name === undefined) {
    const first = model.inputs.find((i) => FLOAT_TYPES.has(i.type));
    if (!first) throw new AuditError('no_float_input', 'the model has no floating-point input to take the penalty with respect to');
    return checkWrtType(first);
  }
  const input = model.inputs.find((i) => i.name === name);
  if (!input) throw unknownInput(model, name, 'wrt');
  return checkWrtType(input);
}

function checkWrtType(input: TensorInfo): TensorInfo {
  if (input.type !== 'float32' && input.type !== 'float64') {
    throw new AuditError(
      'unsupported_type',
      `the penalty is taken with respect to input '${input.name}', whose type ${input.type} is not float32 or float64; name a float32 input with wrt`,
    );
  }
  return input;
}

const unknownInput = (model: ModelDescription, name: string, where: string): AuditError =>
  new AuditError(
    'unknown_input',
    `${where} names input '${clip(name)}', which the model does not have; its inputs are ${model.inputs.map((i) => `'${i.name}'`).join(', ')}`,
  );

function resolveLatents(wrt: TensorInfo, request: MetricRequest, seed: number, limits: Limits): NDArray {
  const spec = request.latents ?? { samples: DEFAULTS.samples };
  let latents: NDArray;
  if ('samples' in spec) {
    const n = spec.samples;
    checkLimit('samples', n, limits.maxSamples);
    const perSample = wrt.shape?.slice(1) ?? [];
    if (wrt.shape === null || perSample.some((d) => typeof d !== 'number')) {
      throw new AuditError(
        'latents_required',
        `input '${wrt.name}' has shape ${wrt.shape ? formatShape(wrt.shape) : 'unknown'}, so latents cannot be drawn; pass the latents as an array`,
      );
    }
    const dims = perSample as number[];
    const data = standardNormal(n * product(dims), spec.seed ?? seed);
    latents = { type: 'float32', shape: [n, ...dims], data };
  } else {
    latents = spec;
    if (latents.type === 'int32' || latents.type === 'int64') {
      throw new AuditError('unsupported_type', `latents for '${wrt.name}' are ${latents.type}; give floating-point values`);
    }
    if (latents.shape.length === 0 || latents.shape[0] < 1) {
      throw new AuditError('shape_mismatch', `latents must be batch first with at least one sample (N × …), got shape ${formatShape(latents.shape)}`);
    }
    checkLimit('samples', latents.shape[0], limits.maxSamples);
    checkShape(wrt, latents.shape, 'latents');
    checkFinite(latents, 'latents');
  }
  return convert(latents, wrt.type as NumericType);
}

/** N against the deployment's sample limit. */
export const checkSamples = (samples: number, limits: Limits): void => checkLimit('samples', samples, limits.maxSamples);

function checkLimit(name: string, value: number, max: number): void {
  if (value > max) {
    throw new AuditError('limit_exceeded', `${name} is ${value}, above this server's limit of ${max}; audit a subset (maxSamples) or ask for a higher limit`, { limit: max });
  }
}

/** The array's shape must fit the model input's shape: same rank, fixed dimensions equal. */
function checkShape(input: TensorInfo, shape: number[], what: string): void {
  if (input.shape === null) return;
  const fits = input.shape.length === shape.length && input.shape.every((d, i) => i === 0 || !isFixed(d) || d === shape[i]);
  if (!fits) {
    throw new AuditError(
      'shape_mismatch',
      `${what} have shape ${formatShape(shape)} but input '${input.name}' expects ${formatShape(input.shape)} (batch first)`,
      { expected: input.shape, got: shape },
    );
  }
}

const isFixed = (d: Dim): d is number => typeof d === 'number' && d > 0;

function checkFinite(array: NDArray, what: string): void {
  if (array.type === 'int32' || array.type === 'int64') return;
  const data = array.data as Float32Array | Float64Array;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      const position = unravel(i, array.shape);
      throw new AuditError(
        'non_finite_input',
        `${what} hold ${data[i]} at index [${position.join(', ')}]; every value must be finite`,
        { index: position },
      );
    }
  }
}

function unravel(flat: number, shape: number[]): number[] {
  const index: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    index.unshift(flat % shape[d]);
    flat = Math.floor(flat / shape[d]);
  }
  return index;
}

function resolveK(request: MetricRequest, limits: Limits): number {
  const fromDirections = request.directions?.shape[0];
  const k = request.k ?? fromDirections ?? DEFAULTS.k;
  // k ≥ 2 is the schema's rule when k is given; directions with one row get the same words.
  if (k < 2) invalidValue('k', k, 'a whole number of at least 2 (the variance over directions needs two of them)');
  checkLimit('k', k, limits.maxK);
  return k;
}

function resolveDirections(
  given: NDArray | undefined,
  k: number,
  latentShape: number[],
  seed: number,
): { data: Float32Array; explicit: boolean } {
  const expected = [k, ...latentShape];
  if (!given) return { data: rademacherDirections(k, product(latentShape), seed), explicit: false };
  if (given.shape.length !== expected.length || given.shape.some((d, i) => d !== expected[i])) {
    throw new AuditError(
      'shape_mismatch',
      `directions have shape ${formatShape(given.shape)} but k × latents is ${formatShape(expected)}`,
      { expected, got: given.shape },
    );
  }
  checkFinite(given, 'directions');
  return { data: Float32Array.from(given.data as ArrayLike<number>, Number), explicit: true };
}

/** A basis is m rows of the latent's per-sample shape (or flat): m × … with finite values. */
function resolveBasis(basis: NDArray, latentShape: number[], limits: Limits): { rows: number; data: Float64Array } {
  const size = product(latentShape);
  const [rows, ...rest] = basis.shape;
  const fits = rest.length > 0 && (product(rest) === size && (rest.length === 1 || rest.every((d, i) => d === latentShape[i])));
  if (!fits || rows < 1) {
    throw new AuditError(
      'shape_mismatch',
      `basis has shape ${formatShape(basis.shape)} but its rows must be latent directions: m × ${formatShape(latentShape)} or m × [${size}]`,
      { expected: ['m', ...latentShape], got: basis.shape },
    );
  }
  checkLimit('basis rows', rows, limits.maxK);
  checkFinite(basis, 'basis');
  return { rows, data: Float64Array.from(basis.data as ArrayLike<number>, Number) };
}

function resolveExtras(model: ModelDescription, wrt: TensorInfo, given: Record<string, NDArray>, samples: number): ExtraInput[] {
  for (const name of Object.keys(given)) {
    if (!model.inputs.some((i) => i.name === name)) throw unknownInput(model, name, 'inputs');
    if (name === wrt.name) {
      throw invalid(`inputs names '${clip(name)}', which is the input the penalty is taken with respect to; give it as latents`);
    }
  }
  return model.inputs
    .filter((input) => input.name !== wrt.name)
    .map((input) => {
      const array = given[input.name];
      if (!array) {
        throw new AuditError(
          'missing_input',
          `the model needs input '${input.name}' (${input.type} ${input.shape ? formatShape(input.shape) : ''}); pass it with --input ${input.name}=FILE or "inputs": {"${input.name}": ...}`,
        );
      }
      return resolveExtra(input, array, samples);
    });
}

export function resolveExtra(input: TensorInfo, array: NDArray, samples: number): ExtraInput {
  const type = input.type as NumericType;
  if (!['float32', 'float64', 'int32', 'int64'].includes(type)) {
    throw new AuditError('unsupported_type', `input '${input.name}' has type ${input.type}, which cannot be given`);
  }
  if (INT_TYPES.has(type) && !INT_TYPES.has(array.type)) {
    const data = array.data as Float32Array | Float64Array;
    if (data.some((x) => !Number.isInteger(x))) {
      throw new AuditError('unsupported_type', `input '${input.name}' is ${input.type}, but the values given are not whole numbers`);
    }
  }
  if (!INT_TYPES.has(type)) checkFinite(array, `input '${input.name}'`);
  checkShape(input, array.shape, `input '${input.name}'`);
  const batchDim = input.shape?.[0];
  const perSample = input.shape !== null && input.shape.length > 0 && !isFixed(batchDim ?? null) && array.shape[0] === samples;
  if (input.shape !== null && input.shape.length > 0 && !isFixed(batchDim ?? null) && !perSample) {
    throw new AuditError(
      'shape_mismatch',
      `input '${input.name}' is batch first, so it needs one entry per sample (${samples}), but has shape ${formatShape(array.shape)}`,
    );
  }
  const converted = convert(array, type);
  return { name: input.name, array: converted, perSample, size: perSample ? product(array.shape.slice(1)) : 0 };
}

function resolveLayers(model: ModelDescription, asked: string[] | undefined): string[] {
  if (asked === undefined || asked.length === 0) return model.outputs.map((o) => o.name);
  const known = new Set([...model.outputs.map((o) => o.name), ...model.layers.map((l) => l.name)]);
  const seen = new Set<string>();
  for (const name of asked) {
    if (!known.has(name)) {
      const some = [...known].slice(0, 12).map((n) => `'${n}'`).join(', ');
      throw new AuditError(
        'unknown_layer',
        `layer '${clip(name)}' is not an output or intermediate tensor of the model; auditable tensors include ${some} (see 'hessian-audit inspect')`,
        // The name once, in the message, however long it was.
        name.length <= 200 ? { layer: name } : { layerLength: name.length },
      );
    }
    if (seen.has(name)) throw invalid(`layer '${clip(name)}' is named twice`);
    seen.add(name);
  }
  return asked;
}
