/**
 * /v1/jobs/:id: a job's state and progress (and its result once done), its progress as server-sent
 * events, its result as the synchronous route sent it, and DELETE to cancel it. Jobs are created
 * by the heavy routes when called with `Prefer: respond-async` (../jobs.ts).
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { isFinished, type JobQueue, type JobView } from '../jobs.js';
import { errorResponses } from '../errors.js';
import { JobSchema } from '../schemas.js';

const Params = z.object({ id: z.string().min(1).max(64) });

export const jobRoutes: FastifyPluginAsyncZod<{ jobs: JobQueue }> = async (app, { jobs }) => {
  /** One event per change, `progress` while it runs and `done` (the final state) last; then the stream ends. */
  const streamEvents = async (id: string, reply: import('fastify').FastifyReply, requestId: string): Promise<void> => {
    const first = await jobs.get(id);
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
      'x-request-id': requestId,
    });
    let unsubscribe = (): void => {};
    let ended = false;
    const send = (view: JobView): void => {
      if (ended) return;
      const done = isFinished(view.state);
      reply.raw.write(`event: ${done ? 'done' : 'progress'}\nid: ${view.progress.done}\ndata: ${JSON.stringify(view)}\n\n`);
      if (done) {
        ended = true;
        unsubscribe();
        reply.raw.end();
      }
    };
    send(first);
    if (ended) return;
    reply.raw.once('close', () => {
      ended = true;
      unsubscribe();
    });
    try {
      const stop = await jobs.subscribe(id, send);
      if (ended) stop();
      else unsubscribe = stop;
    } catch (err) {
      // Forgotten between the first view and the subscription (a DELETE of a finished job).
      reply.raw.end();
      if ((err as { code?: string }).code !== 'unknown_job') throw err;
    }
  };

  app.get(
    '/v1/jobs/:id',
    {
      schema: {
        summary:
          'State and progress of a job (chunks done / total, elapsed, estimate); its result, the body the synchronous route returns, once it has succeeded; the error envelope when it failed. Accept: text/event-stream streams it',
        tags: ['jobs'],
        params: Params,
        response: { 200: JobSchema, ...errorResponses(401, 404) },
      },
    },
    async (request, reply) => {
      if ((request.headers.accept ?? '').includes('text/event-stream')) return streamEvents(request.params.id, reply, request.id);
      return jobs.get(request.params.id);
    },
  );

  app.get(
    '/v1/jobs/:id/events',
    { schema: { summary: 'Progress of a job as server-sent events: "progress" events, then one "done" event', tags: ['jobs'], params: Params } },
    async (request, reply) => streamEvents(request.params.id, reply, request.id),
  );

  app.get(
    '/v1/jobs/:id/result',
    {
      schema: {
        summary: 'The result of a succeeded job exactly as the synchronous route sends it (JSON, or the HTML report); 409 before then',
        tags: ['jobs'],
        params: Params,
      },
    },
    async (request, reply) => {
      const result = await jobs.result(request.params.id);
      return reply.type(result.contentType).send(result.body);
    },
  );

  app.delete(
    '/v1/jobs/:id',
    {
      schema: {
        summary: 'Cancel an unfinished job (its work stops: dropped from the queue, or its worker replaced); forget a finished one',
        tags: ['jobs'],
        params: Params,
        response: { 200: JobSchema, ...errorResponses(401, 404) },
      },
    },
    async (request) => jobs.cancel(request.params.id),
  );
};
