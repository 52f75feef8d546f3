/**
 * POST /v1/models/:id/<metric> for every metric of the registry (penalty, hessian, activeness,
 * orthogonality, audit) on a stored model. JSON by default; `Accept: text/html` returns the
 * self-contained report. Each runs in a worker.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fromBody } from '../../contract/request.js';
import { METRIC_NAMES, metric } from '../../metrics/registry.js';
import { clientGone } from '../cancel.js';
import type { ServerContext } from '../context.js';
import { errorResponses, unknownModel } from '../errors.js';
import { acceptJob, prefersAsync } from '../jobs.js';
import type { MetricJob } from '../job-work.js';
import { JobAccepted, ModelId } from '../schemas.js';

const ERRORS = errorResponses(400, 401, 404, 413, 422, 500, 503);

/** The report when the client prefers HTML (a browser), JSON otherwise (curl and fetch accept anything). */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  const html = accept.indexOf('text/html');
  const json = accept.indexOf('application/json');
  return html >= 0 && (json < 0 || html < json);
}

/** A metric's own media type (the traversal's image/png) when the client lists it before JSON. */
export function wantsMedia(accept: string | undefined, type: string): boolean {
  if (!accept) return false;
  const at = accept.indexOf(type);
  const json = accept.indexOf('application/json');
  return at >= 0 && (json < 0 || at < json);
}

export const metricRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { store, jobs, run }) => {
  for (const name of METRIC_NAMES) {
    const { summary, request: body, result, media } = metric(name);
    app.post(
      `/v1/models/:id/${name}`,
      {
        schema: {
          summary: `${summary}. Accept: text/html returns the HTML report instead${media ? `; Accept: ${media.type} returns the ${media.type} alone` : ''}`,
          tags: [name === 'penalty' ? 'penalty' : 'audit'],
          params: z.object({ id: ModelId }),
          body,
          response: { 200: result, ...JobAccepted, ...ERRORS },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        if (!(await store.has(id))) throw unknownModel(id);
        const asMedia = media !== undefined && wantsMedia(request.headers.accept, media.type);
        const format: 'html' | 'json' = !asMedia && wantsHtml(request.headers.accept) ? 'html' : 'json';
        const { modelName } = request.body as { modelName?: string };
        const spec: MetricJob = {
          route: name,
          modelId: id,
          request: fromBody(request.body as Parameters<typeof fromBody>[0]),
          format,
          ...(modelName ? { modelName } : {}),
          client: request.ip,
        };
        // Prefer: respond-async: a job (routes/jobs.ts) runs it; the client polls or streams its progress.
        if (prefersAsync(request)) return acceptJob(reply, jobs, spec);
        const value = await run(spec, clientGone(reply));
        if (format === 'html') return reply.type('text/html; charset=utf-8').send((value as { html: string }).html);
        // The worker encoded it once (base64 in the result); the body is those bytes.
        if (asMedia) return reply.type(media.type).send(media.body(value as never));
        return value;
      },
    );
  }
};
