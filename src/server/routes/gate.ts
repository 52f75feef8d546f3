/**
 * POST /v1/gate: the release gate on two stored models. The penalties, the audit figures and the
 * bootstrap all run in the worker pool (job-work.ts), so a heavy gate never blocks the event loop;
 * a client that disconnects cancels whichever of them is queued or running.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { clientGone } from '../cancel.js';
import { acceptJob, prefersAsync } from '../jobs.js';
import { type GateJob, prepareGate } from '../job-work.js';
import type { GateResult } from '../../gate/gate.js';
import { GateRequestSchema, GateResultSchema } from '../../gate/schema.js';
import type { ServerContext } from '../context.js';
import { errorResponses } from '../errors.js';
import { JobAccepted } from '../schemas.js';

export const gateRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { store, jobs, run }) => {
  app.post(
    '/v1/gate',
    {
      schema: {
        summary:
          'Release gate: compare a stored candidate with a stored baseline on the same latents and directions; verdict "fail" when a rule fails',
        tags: ['gate'],
        body: GateRequestSchema,
        response: { 200: GateResultSchema, ...JobAccepted, ...errorResponses(400, 401, 404, 413, 422, 500, 503) },
      },
    },
    async (request, reply) => {
      const spec: GateJob = { route: 'gate', body: request.body, client: request.ip };
      if (prefersAsync(request)) {
        // Refused now, not as a failed job: unknown models and rules that cannot hold.
        await prepareGate(store, spec.body);
        return acceptJob(reply, jobs, spec);
      }
      return (await run(spec, clientGone(reply))) as GateResult;
    },
  );
};
