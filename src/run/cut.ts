/**
 * `wrt` naming an intermediate tensor t (StyleGAN's w): the Run audits the suffix t → layers (the
 * function whose Hessian is measured) at values of t that are either given (latents of t's
 * shape), computed by running the prefix once on the model's own inputs given, or computed from
 * the model's own float inputs drawn with the request's seed. Cuts decode and re-encode the
 * model, so they are made once per (model, tensor, layers, shape) and kept in the SessionCache.
 */
import * as ort from 'onnxruntime-node';
import { AuditError, invalid } from '../contract/errors.js';
import { DEFAULTS, type Limits, type MetricRequest } from '../contract/request.js';
import { formatShape, type NDArray, type NumericType, product } from '../io/ndarray.js';
import { standardNormal, randomSeed } from '../math/index.js';
import { describeModel, type Dim, type TensorInfo } from '../onnx/describe.js';
import { cutPrefix, cutSuffix, type PrefixModel, type SuffixModel, wrtCandidates } from '../onnx/cut.js';
import { exposeTensors } from '../onnx/expose.js';
import type { Device } from '../runtime/device.js';
import { checkRunMemory, inferredSizes } from '../runtime/memory-check.js';
import type { LoadedModel } from '../runtime/model.js';
import type { SessionCache } from '../runtime/session.js';
import { checkSamples, resolveExtra } from './resolve.js';

/** What the result says about a cut: the tensor, its shape, and where its values came from. */
export interface CutInfo {
  tensor: string;
  /** N × per-sample shape of the tensor audited. */
  shape: number[];
  /** latents: t given directly; inputs: the prefix ran on the inputs given; drawn: on inputs drawn. */
  source: 'latents' | 'inputs' | 'drawn';
  /** The model inputs the prefix read (none when t was given). */
  inputs: string[];
  /** Those of them drawn standard normal with the request's seed. */
  drawn: string[];
}

export interface OpenedCut {
  /** The suffix as the model the Run audits (the original model's id, so results name it). */
  model: LoadedModel;
  /** The suffix's key in the session cache. */
  sessionKey: string;
  /** The request rewritten for the suffix: latents are t's values, inputs only those it reads. */
  request: MetricRequest;
  info: CutInfo;
}

/** Whether `wrt` asks for a cut: it names something that is not a graph input. */
export const isCut = (model: LoadedModel, request: MetricRequest): boolean =>
  request.wrt !== undefined && !model.description.inputs.some((i) => i.name === request.wrt);

export async function openCut(model: LoadedModel, request: MetricRequest, sessions: SessionCache, device: Device, limits: Limits): Promise<OpenedCut> {
  const tensor = request.wrt as string;
  const prefix = sessions.derived(`${model.id}|prefix|${tensor}`, () => {
    try {
      return cutPrefix(model.bytes, tensor);
    } catch (err) {
      // Not a tensor at all (rather than a weight): name the inputs and the tensors that wrt can name.
      if (err instanceof AuditError && err.code === 'unknown_tensor' && !err.message.includes('weight')) refuseUnknown(model, tensor);
      throw err;
    }
  });
  const given = request.inputs ?? {};
  const suffixOnly = (inputs: Record<string, NDArray>, suffix: SuffixModel): Record<string, NDArray> =>
    Object.fromEntries(Object.entries(inputs).filter(([name]) => suffix.extraInputs.includes(name)));
  for (const name of Object.keys(given)) {
    if (!model.description.inputs.some((i) => i.name === name)) {
      throw new AuditError('unknown_input', `inputs names input '${name}', which the model does not have; its inputs are ${model.description.inputs.map((i) => `'${i.name}'`).join(', ')}`);
    }
  }
  let values: NDArray;
  let source: CutInfo['source'];
  let drawn: string[] = [];
  if (request.latents !== undefined && !('samples' in request.latents)) {
    values = request.latents;
    source = 'latents';
  } else {
    const seed = request.seed ?? randomSeed();
    const computed = await runPrefix(model, prefix, tensor, request, seed, sessions, device, limits);
    values = computed.values;
    drawn = computed.drawn;
    source = drawn.length > 0 ? 'drawn' : 'inputs';
    request = { ...request, seed };
  }
  const perSample = await tensorShape(model, prefix, tensor, values, source, sessions, device);
  const layers = request.layers ?? [];
  const key = `${model.id}|suffix|${tensor}|${layers.join('\u0000')}|${perSample?.join(',') ?? '?'}`;
  const { suffix, description } = sessions.derived(key, () => {
    const suffix = cutSuffix(model.bytes, tensor, layers, perSample ? { shape: perSample } : {});
    return { suffix, description: describeModel(suffix.bytes) };
  });
  if (source === 'latents') {
    const unused = prefix.inputs.filter((name) => given[name] !== undefined && !suffix.extraInputs.includes(name));
    if (unused.length > 0) {
      throw invalid(`give either latents of tensor '${tensor}' or the model inputs it is computed from (${unused.map((n) => `'${n}'`).join(', ')}), not both`);
    }
  }
  const { latents: _l, inputs: _i, ...rest } = request;
  const inputs = suffixOnly(given, suffix);
  return {
    model: { id: model.id, bytes: suffix.bytes, description },
    sessionKey: key,
    request: { ...rest, wrt: tensor, latents: values, layers: suffix.layers, ...(Object.keys(inputs).length > 0 ? { inputs } : {}) },
    info: {
      tensor,
      shape: [...values.shape],
      source,
      inputs: source === 'latents' ? [] : prefix.inputs,
      drawn,
    },
  };
}

/** A name that is neither an input nor a tensor: the inputs, and a few tensors wrt can name (named ones first). */
function refuseUnknown(model: LoadedModel, tensor: string): never {
  const candidates = wrtCandidates(model.bytes);
  // Named tensors first (w, ws): exporters call the anonymous ones /module/Op_output_0.
  const named = [...candidates].sort((a, b) => Number(a.name.includes('/')) - Number(b.name.includes('/')));
  const some = named.slice(0, 6).map((c) => `'${c.name}'`).join(', ');
  throw new AuditError(
    'unknown_tensor',
    `wrt names '${tensor}', which is neither an input nor a tensor of the model; its inputs are ${model.description.inputs.map((i) => `'${i.name}'`).join(', ')}` +
      (some ? ` and tensors wrt can name include ${some} (see 'hessian-audit inspect')` : ''),
    { wrt: tensor },
  );
}

/** t's values from the prefix: the model's own inputs, given or drawn, through it once. */
async function runPrefix(
  model: LoadedModel,
  prefix: PrefixModel,
  tensor: string,
  request: MetricRequest,
  seed: number,
  sessions: SessionCache,
  device: Device,
  limits: Limits,
): Promise<{ values: NDArray; drawn: string[] }> {
  const given = request.inputs ?? {};
  const infos = prefix.inputs.map((name) => model.description.inputs.find((i) => i.name === name) as TensorInfo);
  // Only batch-first inputs say how many samples there are (a truncation [1] does not).
  const batched = (i: TensorInfo): boolean => i.shape !== null && i.shape.length > 0 && !(typeof i.shape[0] === 'number' && i.shape[0] > 0);
  const batches = infos.filter((i) => given[i.name] !== undefined && given[i.name].shape.length > 0 && batched(i)).map((i) => given[i.name].shape[0]);
  const spec = request.latents as { samples: number; seed?: number } | undefined;
  const samples = spec?.samples ?? batches[0] ?? DEFAULTS.samples;
  checkSamples(samples, limits);
  if (spec && batches.length > 0 && batches[0] !== samples) {
    throw new AuditError('shape_mismatch', `latents asks for ${samples} samples, but the inputs given have ${batches[0]}; give one or the other`);
  }
  const drawn: string[] = [];
  const feeds: Record<string, ort.Tensor> = {};
  infos.forEach((input) => {
    const array = given[input.name];
    if (array) {
      const extra = resolveExtra(input, array, samples);
      feeds[input.name] = new ort.Tensor(extra.array.type, extra.array.data, extra.array.shape);
      return;
    }
    const perSample = input.shape?.slice(1) ?? null;
    if (input.type !== 'float32' && input.type !== 'float64') {
      throw new AuditError('missing_input', `tensor '${tensor}' is computed from input '${input.name}' (${input.type}), which cannot be drawn; pass it with --input ${input.name}=FILE or "inputs"`);
    }
    const first = input.shape?.[0];
    if (typeof first === 'number' && first > 0 && first !== samples) {
      throw new AuditError('missing_input', `tensor '${tensor}' is computed from input '${input.name}' of shape ${formatShape(input.shape!)}, which is not one entry per sample, so it is not drawn; pass it with --input ${input.name}=FILE or "inputs"`);
    }
    if (perSample === null || perSample.some((d) => typeof d !== 'number')) {
      throw new AuditError('latents_required', `input '${input.name}' has shape ${input.shape ? formatShape(input.shape) : 'unknown'}, so it cannot be drawn to compute tensor '${tensor}'; pass it with --input or give the latents of '${tensor}'`);
    }
    const dims = [samples, ...(perSample as number[])];
    // The first drawn input uses the seed itself: z drawn for a cut equals z drawn for wrt=z.
    const data = standardNormal(product(dims), (spec?.seed ?? seed) + drawn.length);
    feeds[input.name] = new ort.Tensor(input.type as 'float32', input.type === 'float64' ? Float64Array.from(data) : data, dims);
    drawn.push(input.name);
  });
  // The prefix's tensors and the one fetched, before its session opens (runtime/memory-check.ts).
  const fetched = inferredSizes(prefix, feeds, [tensor]).named[tensor];
  checkRunMemory(prefix, feeds, limits.memoryBudget, fetched ? [{ what: `tensor '${tensor}' fetched into JavaScript`, shape: fetched.shape, bytes: fetched.bytes }] : []);
  const open = await sessions.get(`${model.id}|prefix|${tensor}`, prefix.bytes, [], device);
  let out: ort.Tensor;
  try {
    out = (await open.session.run(feeds, [tensor]))[tensor];
  } catch (err) {
    throw new AuditError('model_run_failed', `onnxruntime could not run the model up to tensor '${tensor}': ${(err as Error).message.split('\n')[0]}`);
  }
  const dims = out.dims.map(Number);
  if (dims[0] !== samples) {
    throw new AuditError('layer_not_batched', `tensor '${tensor}' has shape ${formatShape(dims)} for ${samples} samples: its first dimension is not the batch, so it cannot be audited per sample`, { wrt: tensor });
  }
  return { values: { type: out.type as NumericType, shape: dims, data: out.data as Float32Array }, drawn };
}

/**
 * t's per-sample shape: when t was computed, the one it came out with; when given, the model's
 * declaration, else learnt once by running the prefix on one sample of zeros (cached).
 */
async function tensorShape(
  model: LoadedModel,
  prefix: PrefixModel,
  tensor: string,
  values: NDArray,
  source: CutInfo['source'],
  sessions: SessionCache,
  device: Device,
): Promise<number[] | null> {
  if (source !== 'latents') return values.shape.slice(1);
  const declared = prefix.output.shape?.slice(1);
  if (declared && declared.every((d) => typeof d === 'number' && d > 0)) return declared as number[];
  return sessions.derived(`${model.id}|shape|${tensor}`, async () => {
    const feeds = zeroFeeds(model.description.inputs.filter((i) => prefix.inputs.includes(i.name)), 1);
    if (!feeds) return null;
    try {
      const open = await sessions.get(`${model.id}|prefix|${tensor}`, prefix.bytes, [], device);
      return (await open.session.run(feeds, [tensor]))[tensor].dims.slice(1).map(Number);
    } catch {
      // Unknown: the latents' own shape is then taken, and onnxruntime checks it.
      return null;
    }
  });
}

/** One batch of zeros for these inputs, or null if a per-sample dimension is not a number. */
function zeroFeeds(inputs: TensorInfo[], batch: number): Record<string, ort.Tensor> | null {
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of inputs) {
    const perSample = input.shape?.slice(1);
    if (!perSample || perSample.some((d) => typeof d !== 'number' || d < 1)) return null;
    const first = input.shape?.[0];
    const dims = [typeof first === 'number' && first > 0 ? first : batch, ...(perSample as number[])];
    const n = product(dims);
    const type = input.type;
    if (type === 'float32') feeds[input.name] = new ort.Tensor('float32', new Float32Array(n), dims);
    else if (type === 'float64') feeds[input.name] = new ort.Tensor('float64', new Float64Array(n), dims);
    else if (type === 'int64') feeds[input.name] = new ort.Tensor('int64', new BigInt64Array(n), dims);
    else if (type === 'int32') feeds[input.name] = new ort.Tensor('int32', new Int32Array(n), dims);
    else return null;
  }
  return feeds;
}

export interface WrtTensor {
  name: string;
  type: string;
  /** Batch first ("batch"), learnt by one run of the model on zeros when not declared; null if unknown. */
  shape: Dim[] | null;
  op: string;
}

/**
 * The tensors `wrt` can name, with shapes: declared ones as they are, the others from one run of
 * the model on two samples of zeros with every candidate exposed (torch exports declare none).
 */
export async function wrtTensors(model: LoadedModel): Promise<WrtTensor[]> {
  const candidates = wrtCandidates(model.bytes);
  const unknown = candidates.filter((c) => c.shape === null).map((c) => c.name);
  const learnt = new Map<string, Dim[]>();
  const feeds = unknown.length > 0 ? zeroFeeds(model.description.inputs, 2) : null;
  if (feeds) {
    try {
      const session = await ort.InferenceSession.create(exposeTensors(model.bytes, unknown), { logSeverityLevel: 3 });
      try {
        const outputs = await session.run(feeds, unknown);
        const batch = Object.values(feeds)[0]?.dims[0];
        for (const name of unknown) {
          const dims = outputs[name].dims.map(Number);
          learnt.set(name, dims[0] === batch && batch === 2 ? ['batch', ...dims.slice(1)] : dims);
        }
      } finally {
        await session.release();
      }
    } catch {
      // A model that does not run on zeros keeps its shapes unknown; inspect still lists the names.
    }
  }
  return candidates.map((c) => ({ name: c.name, type: c.type, shape: c.shape ?? learnt.get(c.name) ?? null, op: c.op }));
}
