/** The model registry: upload (multipart), describe, delete. Models are addressed by SHA-256. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AuditError, clip } from '../../contract/errors.js';
import type { StagedModel } from '../../store/index.js';
import type { ModelDescription } from '../../onnx/describe.js';
import type { ServerContext } from '../context.js';
import { registerModel } from '../register-model.js';
import { errorResponses, notMultipart, unknownModel, uploadTooLarge } from '../errors.js';
import { ModelId, ModelSchema, modelWarnings, UploadForm } from '../schemas.js';

export const modelRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { store, pool, config }) => {

  app.post(
    '/v1/models',
    {
      config: { form: UploadForm },
      schema: {
        summary: 'Upload an ONNX model (multipart/form-data, file field "model"); the same bytes always get the same id',
        tags: ['models'],
        consumes: ['multipart/form-data'],
        response: { 200: ModelSchema, 201: ModelSchema, ...errorResponses(400, 401, 413, 422, 500, 503, 507) },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart()) throw notMultipart();
      let staged: StagedModel | undefined;
      try {
        for await (const part of request.parts()) {
          if (part.type === 'file') part.file.on('error', () => undefined);
          if (staged || part.fieldname !== 'model' || part.type !== 'file') {
            if (part.type === 'file') part.file.resume();
            throw extraPart(part.fieldname, part.type === 'file', staged !== undefined);
          }
          staged = await store.stage(part.file);
          if (part.file.truncated) throw uploadTooLarge(config.maxUploadBytes);
        }
      } catch (err) {
        if (staged) await store.discard(staged);
        throw err;
      }
      if (!staged) throw new AuditError('missing_model', 'the upload has no file; send the model as the multipart file field "model"');
      const { created, description } = await registerModel({ store, pool }, staged);
      reply.code(created ? 201 : 200);
      return { id: staged.id, size: staged.size, created, ...description, warnings: modelWarnings(description) };
    },
  );

  app.get(
    '/v1/models/:id',
    {
      schema: {
        summary: 'Describe a stored model: inputs, outputs, auditable layers',
        tags: ['models'],
        params: z.object({ id: ModelId }),
        response: { 200: ModelSchema, ...errorResponses(401, 404) },
      },
    },
    async (request) => {
      const { id } = request.params;
      const description = await store.description<ModelDescription>(id);
      const size = await store.size(id);
      // Either read finds nothing when a DELETE came first or in between: the model is gone.
      if (!description || size === undefined) throw unknownModel(id);
      return { id, size, created: false, ...description, warnings: modelWarnings(description) };
    },
  );

  app.delete(
    '/v1/models/:id',
    {
      schema: {
        summary: 'Remove a stored model',
        tags: ['models'],
        params: z.object({ id: ModelId }),
        response: { 204: z.null().meta({ description: 'Deleted' }), ...errorResponses(401, 404) },
      },
    },
    async (request, reply) => {
      if (!(await store.delete(request.params.id))) throw unknownModel(request.params.id);
      return reply.code(204).send(null);
    },
  );
};

/** An upload is one file named "model": anything else is refused rather than silently ignored. */
function extraPart(name: string, isFile: boolean, afterModel: boolean): AuditError {
  const shown = clip(name, 100);
  if (afterModel) {
    return new AuditError('invalid_request', `the upload has a second part ('${shown}') after the "model" file; upload one model per request`);
  }
  return isFile
    ? new AuditError('invalid_request', `the file field is named '${shown}'; name it "model" (curl -F model=@generator.onnx)`)
    : new AuditError('invalid_request', `the upload has a field '${shown}'; send only the file field "model" (curl -F model=@generator.onnx)`);
}
