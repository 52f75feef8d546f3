/** Optional bearer token: when one is configured, every /v1 route answers 401 without it. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { sendError } from '../errors.js';

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

export const authPlugin = fp<{ token?: string }>(async (app: FastifyInstance, { token }) => {
  if (!token) return;
  const expected = digest(token);
  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/v1/') && request.url !== '/v1') return;
    const header = request.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (!match) {
      reply.header('www-authenticate', 'Bearer');
      return sendError(reply, 401, 'unauthorized', 'this server needs a token: send the header "Authorization: Bearer <token>"');
    }
    // Compare digests so the time taken does not depend on where the strings differ.
    if (!timingSafeEqual(digest(match[1].trim()), expected)) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"');
      return sendError(reply, 401, 'unauthorized', 'the bearer token is not valid for this server');
    }
  });
});
