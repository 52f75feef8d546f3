/** Liveness, readiness (workers, their real execution providers, models), for orchestrators. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ServerContext } from '../context.js';

const Lane = z.object({
  device: z.string(),
  workers: z.number(),
  pids: z.array(z.number()).optional().meta({ description: 'Worker process ids; left out for a client without the token when one is configured' }),
  executionProvider: z.string().nullable().meta({ description: 'The provider a session really opened with' }),
  fallback: z.string().optional(),
  probeError: z.string().optional(),
  running: z.number(),
  sessions: z.record(z.string(), z.number()).optional().meta({ description: 'Sessions cached, by worker pid (left out like pids)' }),
});

const Readiness = z.object({
  status: z.enum(['ready', 'not_ready']),
  lanes: z.array(Lane),
  queued: z.number(),
  running: z.number(),
  restarts: z.number(),
  models: z.number().meta({ description: 'Models in the store' }),
  queue: z.enum(['memory', 'up', 'down']).meta({ description: 'Where jobs live: this process (memory), or Redis reached (up) or not (down, and 503)' }),
});

export const healthRoutes: FastifyPluginAsyncZod<ServerContext> = async (app, { pool, store, jobs }) => {
  app.get(
    '/healthz',
    { schema: { summary: 'The process is alive', tags: ['operations'], response: { 200: z.object({ status: z.literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Workers are up and the job queue reached; which execution provider each device really uses; models stored',
        tags: ['operations'],
        response: { 200: Readiness, 503: Readiness },
      },
    },
    async (request, reply) => {
      const queue = jobs.kind === 'memory' ? ('memory' as const) : jobs.reachable() ? ('up' as const) : ('down' as const);
      const ready = pool.ready() && queue !== 'down';
      const status = pool.status();
      const { queued, running, restarts } = status;
      // Process ids help an attacker on the host; only a client with the token sees them.
      const lanes = request.authenticated ? status.lanes : status.lanes.map(({ pids: _pids, sessions: _sessions, ...lane }) => lane);
      const body = { status: ready ? ('ready' as const) : ('not_ready' as const), lanes, queued, running, restarts, models: (await store.list()).length, queue };
      if (!ready) reply.code(503).header('retry-after', '1');
      return body;
    },
  );
};
