/**
 * At most `maxLargeBodies` large request bodies are read and parsed at once: a JSON body near the
 * body limit costs seconds of main-thread parsing and many times its size in memory, and a few in
 * parallel stall the event loop for everyone. One more gets 503 with Retry-After; its body is read
 * into nothing first (never buffered or parsed), because a client that sends its whole body before
 * reading (Python's http.client, most scripts) sees a broken pipe, not the 503, when the server
 * answers and closes early. Model uploads (POST /v1/models) stream to disk, so they are not counted.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { AuditError } from '../../contract/errors.js';
import { formatBytes } from '../config.js';

export interface BodyGateOptions {
  /** Large bodies parsed at once; 0: no limit. */
  maxLargeBodies: number;
  /** Bodies over this many bytes (or of unknown length) are large. */
  largeBodyBytes: number;
}

const STREAMED_TO_DISK = new Set(['/v1/models']);

const bodyGate: FastifyPluginAsync<BodyGateOptions> = async (app, { maxLargeBodies, largeBodyBytes }) => {
  let parsing = 0;
  // How many are being read now (tests wait on it; a state, not a time).
  app.decorate('largeBodiesInFlight', () => parsing);
  const held = new WeakSet<FastifyRequest>();
  const release = (request: FastifyRequest): void => {
    if (!held.has(request)) return;
    held.delete(request);
    parsing--;
  };
  // A multipart handler calls this once it has read its parts (before its worker task runs).
  app.decorateRequest('bodyRead', function (this: FastifyRequest) {
    release(this);
  });
  if (maxLargeBodies <= 0) return;
  app.addHook('preParsing', async (request, reply, payload) => {
    if (request.method === 'GET' || request.method === 'HEAD' || STREAMED_TO_DISK.has(request.routeOptions.url ?? '')) return payload;
    const declared = request.headers['content-length'];
    if (declared === undefined && request.headers['transfer-encoding'] === undefined) return payload; // no body
    // A chunked body of unknown length counts as large.
    if (declared !== undefined && Number(declared) <= largeBodyBytes) return payload;
    if (parsing >= maxLargeBodies) {
      const busy = parsing;
      await drain(payload);
      throw new AuditError(
        'too_many_large_bodies',
        `${busy} large request bodies (over ${formatBytes(largeBodyBytes)}) are being read, the most this server reads at once (--max-large-bodies ${maxLargeBodies}); retry later`,
        { retryAfter: 1, limit: maxLargeBodies },
      );
    }
    parsing++;
    held.add(request);
    // Always released: when the body is parsed (JSON), when a multipart handler has read its parts, or when the exchange ends (an aborted upload).
    reply.raw.once('close', () => release(request));
    return payload;
  });
  app.addHook('preValidation', async (request) => {
    if (!request.isMultipart()) release(request);
  });
};

/** Read a body to its end (or its connection's end) and drop it; the body limit and the idle timeout still bound it. */
function drain(payload: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => resolve();
    payload.once('end', done);
    payload.once('error', done);
    payload.once('close', done);
    payload.resume();
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    largeBodiesInFlight: () => number;
  }
  interface FastifyRequest {
    /** The body has been read: its large-body slot (if it held one) is free again. */
    bodyRead: () => void;
  }
}

export const bodyGatePlugin = fp(bodyGate, { name: 'body-gate' });
