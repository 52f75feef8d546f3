/**
 * POST /v1/gate: the release gate on two stored models. The penalties, the audit figures and the
 * bootstrap all run in the worker pool, so a heavy gate never blocks the event loop; a client
 * that disconnects cancels whichever of them is queued or running.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { clientGone } from '../cancel.js';
import { gateSpec } from '../../gate/config.js';
import type { PenaltyResult } from '../../contract/results.js';
import { auditFigures, neededFigures } from '../../gate/figures.js';
import { type GateModel, runGate } from '../../gate/gate.js';
import { GateRequestSchema, GateResultSchema, gateArrays, jsonSafe } from '../../gate/schema.js';
import type { MetricRequest } from '../../contract/request.js';
import type { MetricName } from '../../metrics/registry.js';
import type { ModelDescription } from '../../onnx/describe.js';
import type { ServerContext } from '../context.js';
import { errorResponses } from '../errors.js';
import { unknownModel } from './models.js';

export const gateRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { store, pool, config }) => {
  app.post(
    '/v1/gate',
    {
      schema: {
        summary:
          'Release gate: compare a stored candidate with a stored baseline on the same latents and directions; verdict "fail" when a rule fails',
        tags: ['gate'],
        body: GateRequestSchema,
        response: { 200: GateResultSchema, ...errorResponses(400, 401, 404, 413, 422, 500, 503) },
      },
    },
    async (request, reply) => {
      const cancel = clientGone(reply);
      const { candidate, baseline, latents, inputs, ...gate } = request.body;
      const model = async (id: string): Promise<GateModel> => {
        const description = await store.description<ModelDescription>(id);
        if (!description) throw unknownModel(id);
        return { id, description };
      };
      const models = { candidate: await model(candidate), baseline: await model(baseline) };
      const spec = gateSpec([gate], gateArrays({ latents, inputs }));
      const evaluate = (kind: MetricName, m: GateModel, metricRequest: MetricRequest) =>
        pool.evaluate({ kind, modelId: m.id, modelPath: store.modelPath(m.id), request: metricRequest, limits: config.limits }, cancel, request.ip);
      const needed = neededFigures(spec.rules, ...Object.values(spec.layers));
      const result = await runGate(models.candidate, models.baseline, spec, {
        evaluate: (m, penaltyRequest) => pool.evaluate({ kind: 'penalty', modelId: m.id, modelPath: store.modelPath(m.id), request: penaltyRequest, limits: config.limits }, cancel, request.ip),
        compare: (input) => pool.compare(models.candidate.id, input, cancel, request.ip),
        ...(config.limits.maxBootstrapDraws !== undefined ? { maxBootstrapDraws: config.limits.maxBootstrapDraws } : {}),
        ...(needed.size > 0 ? { figures: auditFigures(evaluate, needed) } : {}),
      });
      return jsonSafe(result);
    },
  );
};
