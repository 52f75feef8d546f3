/**
 * POST /v1/gate: the release gate on two stored models. The penalties run in the worker pool like
 * any penalty request; the comparison (a few milliseconds of arithmetic) runs here.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { OnTaskProgress } from '../../engine/pool.js';
import { clientGone } from '../cancel.js';
import { acceptJob, jsonResult, prefersAsync } from '../jobs.js';
import { gateSpec } from '../../gate/config.js';
import type { PenaltyRequest } from '../../engine/request.js';
import { auditFigures, type FigureSources, neededFigures } from '../../gate/figures.js';
import { type GateModel, runGate } from '../../gate/gate.js';
import { GateRequestSchema, GateResultSchema, gateArrays, jsonSafe } from '../../gate/schema.js';
import type { ModelDescription } from '../../onnx/describe.js';
import type { AuditContext } from '../context.js';
import { errorResponses } from '../errors.js';
import { unknownModel } from './models.js';

export const gateRoutes: FastifyPluginAsyncZod<AuditContext> = async (app, { store, pool, config, jobs }) => {
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
        const audit = (kind: 'hessian' | 'activeness') => (m: GateModel, auditRequest: PenaltyRequest) =>
          pool.audit({ kind, modelId: m.id, modelPath: store.modelPath(m.id), request: auditRequest, limits: config.limits, format: 'json' }, signal, report(m, kind));
        const sources = {
          hessian: audit('hessian') as FigureSources<GateModel>['hessian'],
          activeness: audit('activeness') as FigureSources<GateModel>['activeness'],
        };
        return jsonSafe(
          await runGate(models.candidate, models.baseline, spec, {
            evaluate: (m, penaltyRequest) => pool.penalty(m.id, store.modelPath(m.id), penaltyRequest, config.limits, signal, report(m, 'penalty')),
            ...(needed.size > 0 ? { figures: auditFigures(sources, needed) } : {}),
          }),
        );
      };
      if (prefersAsync(request)) return acceptJob(reply, jobs, 'gate', async (signal, onProgress) => jsonResult(await run(signal, onProgress)));
      return run(clientGone(reply));
    },
  );
};
