/**
 * Optional bearer token: when one is configured, every route except the public operations routes
 * answers 401 without it. The decision is made from the route the router matched, never from the
 * raw URL: a path spelled differently (percent-encoding, case, a query) that still reaches a /v1
 * handler reaches it through the same check. Paths that match no route need the token too, so a
 * 404 tells an anonymous client nothing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { sendError } from '../errors.js';

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** Routes anyone may call: probes, metrics and the API documentation. */
const PUBLIC = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json']);
const isPublic = (route: string | undefined): boolean => route !== undefined && (PUBLIC.has(route) || route === '/docs' || route.startsWith('/docs/'));

declare module 'fastify' {
  interface FastifyRequest {
    /** True when no token is configured, or the request carries the right one. */
    authenticated: boolean;
  }
}

export const authPlugin = fp<{ token?: string }>(async (app: FastifyInstance, { token }) => {
  app.decorateRequest('authenticated', false);
  if (!token) {
    app.addHook('onRequest', async (request) => {
      request.authenticated = true;
    });
    return;
  }
  const expected = digest(token);
  const verdict = (request: FastifyRequest): 'ok' | 'missing' | 'invalid' => {
    const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
    if (!match) return 'missing';
    // Compare digests so the time taken does not depend on where the strings differ.
    return timingSafeEqual(digest(match[1].trim()), expected) ? 'ok' : 'invalid';
  };
  app.addHook('onRequest', async (request, reply) => {
    const result = verdict(request);
    request.authenticated = result === 'ok';
    if (result === 'ok' || isPublic(request.routeOptions.url)) return;
    if (result === 'missing') {
      reply.header('www-authenticate', 'Bearer');
      return sendError(reply, 401, 'unauthorized', 'this server needs a token: send the header "Authorization: Bearer <token>"');
    }
    reply.header('www-authenticate', 'Bearer error="invalid_token"');
    return sendError(reply, 401, 'unauthorized', 'the bearer token is not valid for this server');
  });
});
