/**
 * Bodies that stall. Node's own limits cover the headers (headersTimeout) and the whole request
 * (requestTimeout, both answered 408); this adds the gap between two chunks of a body
 * (bodyIdleTimeoutMs), which only applies while the body is still arriving, so a long penalty
 * run after its body came in is not cut. Draining (close) ends every request whose body is still
 * arriving: a client that sent headers and two bytes cannot hold a SIGTERM past its grace period.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

export interface BodyTimeoutOptions {
  /** Longest silence while a body is arriving, ms; 0: none. */
  bodyIdleTimeoutMs: number;
}

export const timeoutsPlugin = fp<BodyTimeoutOptions>(async (app: FastifyInstance, { bodyIdleTimeoutMs }) => {
  /** Requests whose bodies are still arriving, and how to stop waiting for each. */
  const receiving = new Map<IncomingMessage, () => void>();

  app.addHook('onRequest', async (request) => {
    const raw = request.raw;
    const socket = raw.socket;
    // inject() has no real socket, and nothing to time out.
    if (raw.complete || typeof socket?.setTimeout !== 'function') return;
    const stalled = (): void => {
      request.log.info({ bodyIdleTimeoutMs }, 'request body stalled: connection closed');
      socket.destroy();
    };
    const done = (): void => {
      if (!receiving.delete(raw)) return;
      socket.off('timeout', stalled);
      socket.setTimeout(0);
    };
    receiving.set(raw, done);
    raw.once('end', done);
    raw.once('close', done);
    if (bodyIdleTimeoutMs > 0) socket.setTimeout(bodyIdleTimeoutMs, stalled);
  });
  // A JSON body is parsed before preHandler: from here on the request waits for the server, not the client.
  app.addHook('preHandler', async (request) => {
    if (request.raw.complete) receiving.get(request.raw)?.();
  });
  app.addHook('preClose', async () => {
    for (const [raw, done] of [...receiving]) {
      done();
      raw.socket?.destroy();
    }
  });
});
