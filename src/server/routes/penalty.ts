/**
 * Penalty routes: on a stored model (JSON body), and one-shot (multipart: the model file, a
 * "request" JSON field, optional .npy parts). Both build the same PenaltyRequest as the CLI and
 * run evaluatePenalty in a worker, so all three give the same numbers.
 */
import type { Multipart, MultipartFile } from '@fastify/multipart';
import { clientGone } from '../cancel.js';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { PenaltyRequestSchema, PenaltyResultSchema, parsePenaltyRequest, toPenaltyRequest } from '../../engine/schema.js';
import type { PenaltyResult } from '../../engine/evaluate.js';
import type { PenaltyRequest } from '../../engine/request.js';
import { AuditError } from '../../errors.js';
import type { NDArray } from '../../io/ndarray.js';
import { fromNested } from '../../io/nested.js';
import { isNpy, readNpy } from '../../io/npy.js';
import type { StagedModel } from '../../store/index.js';
import type { AuditContext } from '../context.js';
import { errorResponses, notMultipart, uploadTooLarge } from '../errors.js';
import { acceptJob, jsonResult, prefersAsync } from '../jobs.js';
import { ModelId, OneShotForm } from '../schemas.js';
import { unknownModel } from './models.js';

const ERRORS = errorResponses(400, 401, 404, 413, 422, 500, 503, 507);
/** With `Prefer: respond-async`: the job, and where to find it. */
const ACCEPTED = { 202: z.object({ id: z.string(), state: z.string() }).loose() };

/** Multipart parts of the one-shot route besides "model" and "request". */
const ARRAY_PART = /^(latents|directions|inputs\.(.+))$/;

export const penaltyRoutes: FastifyPluginAsyncZod<AuditContext> = async (app, { store, pool, config, jobs }) => {
  app.post(
    '/v1/models/:id/penalty',
    {
      schema: {
        summary: 'Hessian Penalty of each layer of a stored model',
        tags: ['penalty'],
        params: z.object({ id: ModelId }),
        body: PenaltyRequestSchema,
        response: { 200: PenaltyResultSchema, ...ACCEPTED, ...ERRORS },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await store.has(id))) throw unknownModel(id);
      const penalty = toPenaltyRequest(request.body);
      if (prefersAsync(request)) {
        return acceptJob(reply, jobs, 'penalty', async (signal, onProgress) =>
          jsonResult(await pool.penalty(id, store.modelPath(id), penalty, config.limits, signal, onProgress)),
        );
      }
      return asResponse(await pool.penalty(id, store.modelPath(id), penalty, config.limits, clientGone(reply)));
    },
  );

  app.post(
    '/v1/penalty',
    {
      config: { form: OneShotForm },
      schema: {
        summary:
          'One shot: multipart with the "model" file, a "request" JSON field (the same body as /v1/models/:id/penalty) and optional .npy parts "latents", "directions", "inputs.<name>"',
        tags: ['penalty'],
        consumes: ['multipart/form-data'],
        response: { 200: PenaltyResultSchema, ...ACCEPTED, ...ERRORS },
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
            if (staged) throw new AuditError('invalid_request', 'the "model" part is given twice', 400);
            staged = await store.stage(part.file);
            if (part.file.truncated) throw uploadTooLarge(config.maxUploadBytes);
          } else if (part.fieldname === 'request') {
            json = await requestJson(part, config.maxBodyBytes);
          } else if (ARRAY_PART.test(part.fieldname)) {
            if (arrays[part.fieldname]) throw new AuditError('invalid_request', `the "${part.fieldname}" part is given twice`, 400);
            arrays[part.fieldname] = await arrayPart(part, config.maxUploadBytes);
          } else {
            if (part.type === 'file') part.file.resume();
            throw new AuditError(
              'invalid_request',
              `unknown multipart part '${part.fieldname}'; the parts are "model", "request", "latents", "directions" and "inputs.<name>"`,
              400,
            );
          }
        }
        if (!staged) throw new AuditError('missing_model', 'the one-shot request has no "model" file part', 400);
        const penaltyRequest = withArrays(toPenaltyRequest(parsePenaltyRequest(json)), arrays);
        // Already stored: use the stored copy (its worker session may be cached). Otherwise run
        // from the staged file, which is removed afterwards: a one-shot request stores nothing.
        const known = await store.has(staged.id);
        const path = known ? store.modelPath(staged.id) : staged.path;
        if (prefersAsync(request)) {
          const mine = staged;
          const job = acceptJob(reply, jobs, 'penalty', async (signal, onProgress) => {
            try {
              return jsonResult(await pool.penalty(mine.id, path, penaltyRequest, config.limits, signal, onProgress));
            } finally {
              await store.discard(mine);
            }
          });
          handedOver = true;
          return job;
        }
        return asResponse(await pool.penalty(staged.id, path, penaltyRequest, config.limits, clientGone(reply)));
      } finally {
        if (staged && !handedOver) await store.discard(staged);
      }
    },
  );
};

/** The result schema is loose (fields the engine adds pass through), so its type has an index signature. */
const asResponse = (result: PenaltyResult): z.output<typeof PenaltyResultSchema> => result as unknown as z.output<typeof PenaltyResultSchema>;

async function requestJson(part: Multipart, limit: number): Promise<unknown> {
  let text: string;
  if (part.type === 'file') {
    text = (await part.toBuffer()).toString('utf8');
  } else {
    if (part.valueTruncated) {
      throw new AuditError('payload_too_large', `the "request" field is larger than this server's limit of ${limit} bytes (--max-body-mib)`, 413, { limit });
    }
    // A field sent with Content-Type application/json arrives parsed already.
    if (typeof part.value !== 'string') return part.value;
    text = part.value;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AuditError('malformed_json', `the "request" part is not valid JSON: ${(err as Error).message}`, 400);
  }
}

async function arrayPart(part: Multipart, limit: number): Promise<NDArray> {
  const what = part.fieldname;
  let bytes: Buffer;
  if (part.type === 'file') {
    bytes = await (part as MultipartFile).toBuffer();
    if ((part as MultipartFile).file.truncated) throw uploadTooLarge(limit);
  } else {
    bytes = Buffer.from(String(part.value), 'utf8');
  }
  if (isNpy(bytes)) return readNpy(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), what);
  try {
    return fromNested(JSON.parse(bytes.toString('utf8')), what);
  } catch (err) {
    if (err instanceof AuditError) throw err;
    throw new AuditError('invalid_array', `the "${what}" part is neither a .npy file nor a JSON array; save it with np.save`, 400);
  }
}

/** Arrays sent as parts join the JSON request; the same array given both ways is refused. */
function withArrays(request: PenaltyRequest, arrays: Record<string, NDArray>): PenaltyRequest {
  const twice = (name: string): AuditError =>
    new AuditError('invalid_request', `${name} is given both in the "request" JSON and as a part; give it once`, 400);
  for (const [name, array] of Object.entries(arrays)) {
    if (name === 'latents' || name === 'directions') {
      if (request[name] !== undefined) throw twice(name);
      request[name] = array;
    } else {
      const input = name.slice('inputs.'.length);
      request.inputs ??= {};
      if (request.inputs[input]) throw twice(name);
      request.inputs[input] = array;
    }
  }
  return request;
}
