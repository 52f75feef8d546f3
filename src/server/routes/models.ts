/** The model registry: upload (multipart), describe, delete. Models are addressed by SHA-256. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AuditError } from '../../contract/errors.js';
import type { ModelDescription } from '../../onnx/describe.js';
import type { ServerContext } from '../context.js';
import { registerModel } from '../register-model.js';
import { errorResponses, notMultipart, uploadTooLarge } from '../errors.js';
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
      const part = await request.file();
      if (!part) throw new AuditError('missing_model', 'the upload has no file; send the model as the multipart file field "model"');
      if (part.fieldname !== 'model') {
        part.file.resume();
        throw new AuditError('invalid_request', `the file field is named '${part.fieldname}'; name it "model" (curl -F model=@generator.onnx)`);
      }
      const staged = await store.stage(part.file);
      if (part.file.truncated) {
        await store.discard(staged);
        throw uploadTooLarge(config.maxUploadBytes);
      }
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
      if (!description) throw unknownModel(id);
      return { id, size: await store.size(id), created: false, ...description, warnings: modelWarnings(description) };
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

export const unknownModel = (id: string): AuditError =>
  new AuditError('unknown_model', `no model with id '${id}' is stored here; upload it with POST /v1/models (the id is the SHA-256 of its bytes)`);

