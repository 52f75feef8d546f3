/**
 * The one-shot penalty: multipart with the model file, a "request" JSON field (the same body as
 * POST /v1/models/:id/penalty) and optional .npy parts. The parts are attached to the request and
 * parsed as the CLI's files are, so the one-shot route, the stored-model route and the CLI give the
 * same numbers and the same errors.
 */
import type { Multipart, MultipartFile } from '@fastify/multipart';
import { clientGone } from '../cancel.js';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { type AttachedArrays, PenaltyRequestSchema, parseRequest } from '../../contract/request.js';
import { type PenaltyResult, PenaltyResultSchema } from '../../contract/results.js';
import { AuditError } from '../../contract/errors.js';
import type { NDArray } from '../../io/ndarray.js';
import { fromNested } from '../../io/nested.js';
import { isNpy, readNpy, readNpyHeader } from '../../io/npy.js';
import type { Limits } from '../../contract/request.js';
import type { StagedModel } from '../../store/index.js';
import type { ServerContext } from '../context.js';
import { errorResponses, notMultipart, uploadTooLarge } from '../errors.js';
import { acceptJob, prefersAsync } from '../jobs.js';
import type { MetricJob } from '../job-work.js';
import { JobAccepted, OneShotForm } from '../schemas.js';

const ERRORS = errorResponses(400, 401, 404, 413, 422, 500, 503, 507);

/** A job refused at submission: it never existed, so its upload is this route's to remove. */
const REFUSED: readonly string[] = ['too_many_jobs', 'client_limit', 'queue_unreachable'];

/** Multipart parts of the one-shot route besides "model" and "request". */
const ARRAY_PART = /^(latents|directions|inputs\.(.+))$/;

export const oneShotRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { store, pool, config, jobs, run }) => {
  app.post(
    '/v1/penalty',
    {
      config: { form: OneShotForm },
      schema: {
        summary:
          'One shot: multipart with the "model" file, a "request" JSON field (the same body as /v1/models/:id/penalty) and optional .npy parts "latents", "directions", "inputs.<name>"',
        tags: ['penalty'],
        consumes: ['multipart/form-data'],
        response: { 200: PenaltyResultSchema, ...JobAccepted, ...ERRORS },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart()) throw notMultipart();
      let staged: StagedModel | undefined;
      /** Set when a job took over the staged file: the job discards it when it ends. */
      let handedOver = false;
      try {
        let json: unknown = {};
        const arrays: Record<string, NDArray> = {};
        for await (const part of request.parts()) {
          if (part.fieldname === 'model' && part.type === 'file') {
            if (staged) throw new AuditError('invalid_request', 'the "model" part is given twice');
            staged = await store.stage(part.file);
            if (part.file.truncated) throw uploadTooLarge(config.maxUploadBytes);
          } else if (part.fieldname === 'request') {
            json = await requestJson(part, config.maxBodyBytes);
          } else if (ARRAY_PART.test(part.fieldname)) {
            if (arrays[part.fieldname]) throw new AuditError('invalid_request', `the "${part.fieldname}" part is given twice`);
            arrays[part.fieldname] = await arrayPart(part, config.maxUploadBytes, config.limits);
          } else {
            if (part.type === 'file') part.file.resume();
            throw new AuditError(
              'invalid_request',
              `unknown multipart part '${part.fieldname}'; the parts are "model", "request", "latents", "directions" and "inputs.<name>"`,
            );
          }
        }
        request.bodyRead();
        if (!staged) throw new AuditError('missing_model', 'the one-shot request has no "model" file part');
        const penaltyRequest = parseRequest(json, attached(arrays), PenaltyRequestSchema);
        // Already stored: use the stored copy (its worker session may be cached). Otherwise run
        // from the uploaded file, which is removed afterwards: a one-shot request stores nothing.
        const known = await store.has(staged.id);
        const spec: MetricJob = { route: 'penalty', modelId: staged.id, request: penaltyRequest, format: 'json', client: request.ip };
        if (prefersAsync(request)) {
          // The job owns the upload from here (store/.jobs), wherever and whenever it runs.
          if (!known) {
            spec.ownFile = await store.adopt(staged);
            handedOver = true;
          }
          try {
            return await acceptJob(reply, jobs, spec);
          } catch (err) {
            if (spec.ownFile) await store.releaseJobFile(spec.ownFile);
            throw err;
          }
        }
        if (known) return (await run(spec, clientGone(reply))) as PenaltyResult;
        if (config.role === 'api') {
          // Run elsewhere: the upload goes with the job, which removes it.
          const ownFile = await store.adopt(staged);
          spec.ownFile = ownFile;
          handedOver = true;
          try {
            return (await run(spec, clientGone(reply))) as PenaltyResult;
          } catch (err) {
            // Refused before a job existed: nothing else will remove the upload.
            if (err instanceof AuditError && REFUSED.includes(err.code)) await store.releaseJobFile(ownFile);
            throw err;
          }
        }
        return await pool.evaluate({ kind: 'penalty', modelId: staged.id, modelPath: staged.path, request: penaltyRequest, limits: config.limits }, clientGone(reply), request.ip);
      } finally {
        if (staged && !handedOver) await store.discard(staged);
      }
    },
  );
};

async function requestJson(part: Multipart, limit: number): Promise<unknown> {
  let text: string;
  if (part.type === 'file') {
    text = (await part.toBuffer()).toString('utf8');
  } else {
    if (part.valueTruncated) {
      throw new AuditError('payload_too_large', `the "request" field is larger than this server's limit of ${limit} bytes (--max-body-mib)`, { limit });
    }
    // A field sent with Content-Type application/json arrives parsed already.
    if (typeof part.value !== 'string') return part.value;
    text = part.value;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AuditError('malformed_json', `the "request" part is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * A file part, buffered with its .npy header checked as soon as it has arrived: a declared shape
 * past the limits is refused before the data is read into memory.
 */
async function bufferNpyChecked(part: MultipartFile, limit: number, limits: Limits): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let checked = false;
  for await (const chunk of part.file as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    if (checked) continue;
    const head = chunks.length === 1 ? chunk : Buffer.concat(chunks);
    if (head.length >= 6 && !isNpy(head)) checked = true; // JSON text: checked when parsed
    const header = checked ? null : readNpyHeader(head, part.fieldname);
    if (!header) continue;
    checked = true;
    const refusal = npyRefusal(part.fieldname, header.shape, header.type, limit, limits);
    if (refusal) {
      part.file.resume();
      throw refusal;
    }
  }
  return Buffer.concat(chunks);
}

function npyRefusal(name: string, shape: number[], type: string, limit: number, limits: Limits): AuditError | null {
  const bytes = shape.reduce((a, b) => a * b, 1) * (type === 'float64' || type === 'int64' ? 8 : 4);
  if (bytes > limit) return uploadTooLarge(limit);
  const over = (what: string, max: number): AuditError =>
    new AuditError('limit_exceeded', `${what} is ${shape[0]}, above this server's limit of ${max}; audit a subset (maxSamples) or ask for a higher limit`, { limit: max });
  if (name === 'latents' && (shape[0] ?? 0) > limits.maxSamples) return over('samples', limits.maxSamples);
  if (name === 'directions' && (shape[0] ?? 0) > limits.maxK) return over('k', limits.maxK);
  return null;
}

async function arrayPart(part: Multipart, limit: number, limits: Limits): Promise<NDArray> {
  const what = part.fieldname;
  let bytes: Buffer;
  if (part.type === 'file') {
    bytes = await bufferNpyChecked(part as MultipartFile, limit, limits);
    if ((part as MultipartFile).file.truncated) throw uploadTooLarge(limit);
  } else {
    bytes = Buffer.from(String(part.value), 'utf8');
  }
  if (isNpy(bytes)) return readNpy(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), what);
  try {
    return fromNested(JSON.parse(bytes.toString('utf8')), what);
  } catch (err) {
    if (err instanceof AuditError) throw err;
    throw new AuditError('invalid_array', `the "${what}" part is neither a .npy file nor a JSON array; save it with np.save`);
  }
}

/** The array parts by name → the request's attached arrays. */
function attached(arrays: Record<string, NDArray>): AttachedArrays {
  const out: AttachedArrays = {};
  for (const [name, array] of Object.entries(arrays)) {
    if (name === 'latents' || name === 'directions') out[name] = array;
    else (out.inputs ??= {})[name.slice('inputs.'.length)] = array;
  }
  return out;
}
