/**
 * Audit routes on a stored model: the full Hessian, activeness, Jacobian orthogonality, and all of
 * them on one set of latents. JSON by default; `Accept: text/html` returns the self-contained
 * report. Each runs in a worker, like the penalty.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { clientGone } from '../cancel.js';
import { z } from 'zod';
import {
  ActivenessResultSchema,
  AuditRequestSchema,
  AuditResultSchema,
  HessianResultSchema,
  OrthogonalityResultSchema,
  toAuditRequest,
} from '../../engine/audit-schema.js';
import type { AuditMetric } from '../../engine/audit-task.js';
import type { AuditContext } from '../context.js';
import { errorResponses } from '../errors.js';
import { acceptJob, jsonResult, prefersAsync } from '../jobs.js';
import { ModelId } from '../schemas.js';
import { unknownModel } from './models.js';

const ERRORS = errorResponses(400, 401, 404, 413, 422, 500, 503);

const ROUTES: { metric: AuditMetric; summary: string; result: z.ZodType }[] = [
  { metric: 'hessian', summary: 'Full Hessian of each layer: exact penalty, latent interaction matrix, diagonal-ness', result: HessianResultSchema },
  { metric: 'activeness', summary: 'Activeness of each latent per layer, and the unused latents', result: ActivenessResultSchema },
  { metric: 'orthogonality', summary: 'Jacobian orthogonality (OroJaR) of each layer', result: OrthogonalityResultSchema },
  { metric: 'audit', summary: 'Penalty, full Hessian, activeness and orthogonality on one set of latents', result: AuditResultSchema },
];

/** The report when the client prefers HTML (a browser), JSON otherwise (curl and fetch accept anything). */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  const html = accept.indexOf('text/html');
  const json = accept.indexOf('application/json');
  return html >= 0 && (json < 0 || html < json);
}

export const auditRoutes: FastifyPluginAsyncZod<AuditContext> = async (app, { store, pool, config, jobs }) => {
  for (const { metric, summary, result } of ROUTES) {
    app.post(
      `/v1/models/:id/${metric}`,
      {
        schema: {
          summary: `${summary}. Accept: text/html returns the HTML report instead`,
          tags: ['audit'],
          params: z.object({ id: ModelId }),
          body: AuditRequestSchema,
          response: { 200: result, 202: z.object({ id: z.string(), state: z.string() }).loose(), ...ERRORS },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        if (!(await store.has(id))) throw unknownModel(id);
        const format = wantsHtml(request.headers.accept) ? 'html' : 'json';
        const task = {
          kind: metric,
          modelId: id,
          modelPath: store.modelPath(id),
          request: toAuditRequest(request.body),
          limits: config.limits,
          format,
          ...(request.body.modelName ? { modelName: request.body.modelName } : {}),
        } as const;
        if (prefersAsync(request)) {
          return acceptJob(reply, jobs, metric, async (signal, onProgress) => {
            const value = await pool.audit(task, signal, onProgress);
            return format === 'html' ? { body: (value as { html: string }).html, contentType: 'text/html; charset=utf-8' } : jsonResult(value);
          });
        }
        const value = await pool.audit(task, clientGone(reply));
        if (format === 'html') return reply.type('text/html; charset=utf-8').send((value as { html: string }).html);
        return value;
      },
    );
  }
};
