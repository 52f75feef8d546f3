import type { FastifyReply } from 'fastify';

/**
 * Aborts when the client goes away before its response is written, so the work it asked for is
 * cancelled (dropped from the queue, or stopped on its worker) instead of running for nobody.
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}
