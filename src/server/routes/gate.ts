/**
 * POST /v1/gate: the release gate on two stored models. The penalties, the audit figures and the
 * bootstrap all run in the worker pool, so a heavy gate never blocks the event loop; a client
 * that disconnects cancels whichever of them is queued or running.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { OnTaskProgress } from '../../pool/pool.js';
import { clientGone } from '../cancel.js';
import { acceptJob, jsonResult, prefersAsync } from '../jobs.js';
import { gateSpec } from '../../gate/config.js';
import { auditFigures, neededFigures } from '../../gate/figures.js';
import { type GateModel, runGate } from '../../gate/gate.js';
import { GateRequestSchema, GateResultSchema, gateArrays, jsonSafe } from '../../gate/schema.js';
import type { MetricRequest } from '../../contract/request.js';
import type { MetricName } from '../../metrics/registry.js';
import type { ModelDescription } from '../../onnx/describe.js';
import type { ServerContext } from '../context.js';
import { errorResponses } from '../errors.js';
import { unknownModel } from './models.js';

export const gateRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { store, pool, config, jobs }) => {
  app.post(
    '/v1/gate',
    {
      schema: {
        summary:
          'Release gate: compare a stored candidate with a stored baseline on the same latents and directions; verdict "fail" when a rule fails',
        tags: ['gate'],
        body: GateRequestSchema,
        response: { 200: GateResultSchema, 202: z.object({ id: z.string(), state: z.string() }).loose(), ...errorResponses(400, 401, 404, 413, 422, 500, 503) },
      },
    },
    async (request, reply) => {
      const { candidate, baseline, latents, inputs, ...gate } = request.body;
      const model = async (id: string): Promise<GateModel> => {
        const description = await store.description<ModelDescription>(id);
        if (!description) throw unknownModel(id);
        return { id, description };
      };
      const models = { candidate: await model(candidate), baseline: await model(baseline) };
      const spec = gateSpec([gate], gateArrays({ latents, inputs }));
      const needed = neededFigures(spec.rules, ...Object.values(spec.layers));
      /** Each pool task reports its chunks under a stage naming the model and the figure. */
      const run = async (signal: AbortSignal, onProgress?: OnTaskProgress) => {
        const side = (m: GateModel): string => (m === models.candidate ? 'candidate' : 'baseline');
        const report = (m: GateModel, what: string): OnTaskProgress | undefined =>
          onProgress && ((p) => onProgress({ ...p, stage: `${side(m)} ${p.stage ?? what}` }));
        const evaluate = (kind: MetricName, m: GateModel, metricRequest: MetricRequest) =>
          pool.evaluate({ kind, modelId: m.id, modelPath: store.modelPath(m.id), request: metricRequest, limits: config.limits }, signal, request.ip, report(m, kind));
        return jsonSafe(
          await runGate(models.candidate, models.baseline, spec, {
            evaluate: (m, penaltyRequest) =>
              pool.evaluate({ kind: 'penalty', modelId: m.id, modelPath: store.modelPath(m.id), request: penaltyRequest, limits: config.limits }, signal, request.ip, report(m, 'penalty')),
            compare: (input) => pool.compare(models.candidate.id, input, signal, request.ip),
            ...(config.limits.maxBootstrapDraws !== undefined ? { maxBootstrapDraws: config.limits.maxBootstrapDraws } : {}),
            ...(needed.size > 0 ? { figures: auditFigures(evaluate, needed) } : {}),
          }),
        );
      };
      if (prefersAsync(request)) return acceptJob(reply, jobs, 'gate', async (signal, onProgress) => jsonResult(await run(signal, onProgress)));
      return run(clientGone(reply));
    },
  );
};
