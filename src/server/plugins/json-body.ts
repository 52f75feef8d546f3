/**
 * JSON bodies over `largeBodyBytes` are parsed in a worker thread (server/json-body-worker.ts), so a
 * body of tens of MiB (seconds of JSON.parse) no longer stalls /healthz and every other client. Its
 * numeric array fields come back as one Float64Array each; the main thread checks their outer
 * lengths against the limits (plugins/array-bounds.ts) and makes each an array of packed blocks, one
 * per outer entry (io/nested.ts reads them as the nested arrays they were), never touching a number.
 * Smaller bodies keep Fastify's own parser. Same limits (bodyLimit), same refusals: a body that is
 * not JSON, or poisons a prototype, gets the error Fastify's parser gives.
 */
import { errorCodes, type FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import Tinypool from 'tinypool';
import type { Limits } from '../../contract/request.js';
import { packedBlocks } from '../../io/nested.js';
import type { PackedField, ParsedBody } from '../json-body-worker.js';
import { checkArrayBounds } from './array-bounds.js';

export interface JsonBodyOptions {
  /** Bodies over this many bytes are parsed off the event loop. */
  largeBodyBytes: number;
  /** Worker threads parsing at once (at least 1). */
  threads: number;
  limits: Limits;
}

const jsonBody: FastifyPluginAsync<JsonBodyOptions> = async (app, { largeBodyBytes, threads, limits }) => {
  const small = app.getDefaultJsonParser('error', 'error');
  let offLoop = 0;
  // Bodies parsed in the worker thread so far (tests check the path taken; a count, not a time).
  app.decorate('jsonBodiesParsedOffLoop', () => offLoop);
  // Started on the first large body; idle threads end, so a server without large bodies runs none.
  let pool: Tinypool | null = null;
  const parser = (): Tinypool =>
    (pool ??= new Tinypool({
      filename: new URL('../json-body-worker.js', import.meta.url).href,
      runtime: 'worker_threads',
      minThreads: 0,
      maxThreads: Math.max(1, threads),
      idleTimeout: 30_000,
    }));
  app.addHook('onClose', async () => {
    await pool?.destroy();
  });
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', (request, payload, done) => {
    const limit = request.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? Infinity;
    readBody(payload, Number(request.headers['content-length']), limit, (err, bytes) => {
      if (err) return done(err, undefined);
      if (bytes!.length <= largeBodyBytes) return small(request, Buffer.from(bytes!.buffer, bytes!.byteOffset, bytes!.length).toString('utf8'), done);
      offLoop++;
      // The body's own buffer moves to the thread: no copy on the event loop.
      parser()
        .run(bytes!.byteOffset === 0 && bytes!.length === bytes!.buffer.byteLength ? Tinypool.move(bytes!) : bytes)
        .then((parsed: ParsedBody) => {
          if ('invalid' in parsed) return done(new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY(), undefined);
          const body = parsed.body as Record<string, unknown>;
          const outer = (field: string): number | undefined => {
            const v = body[field];
            return parsed.packed.includes(field) ? (v as PackedField).packedShape[0] : Array.isArray(v) ? v.length : undefined;
          };
          checkArrayBounds({ latents: outer('latents'), directions: outer('directions') }, limits);
          for (const path of parsed.packed) unpackAt(body, path.split('.'));
          done(null, body);
        })
        .catch((error: Error) => done(error, undefined));
    });
  });
};

/**
 * Read a body as Fastify's own reader does (the same body limit, content-length and stream errors),
 * but into one buffer as its chunks arrive: its declared length up front, doubling when it is sent
 * in chunks of unknown total. The copying is spread over the body's arrival, never one long copy
 * at its end (Buffer.concat of 60 MiB is a stall of tens of milliseconds).
 */
function readBody(payload: NodeJS.ReadableStream & { receivedEncodedLength?: number }, declared: number, limit: number, done: (err: Error | null, bytes?: Uint8Array) => void): void {
  if (declared > limit) return done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
  let buffer = new Uint8Array(Number.isNaN(declared) ? 64 * 1024 : declared);
  let received = 0;
  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (received + bytes.length > limit || (payload.receivedEncodedLength ?? 0) > limit) {
      stop();
      return done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
    }
    if (received + bytes.length > buffer.length) {
      const grown = new Uint8Array(Math.min(limit, Math.max(buffer.length * 2, received + bytes.length)));
      grown.set(buffer.subarray(0, received));
      buffer = grown;
    }
    buffer.set(bytes, received);
    received += bytes.length;
  };
  const onEnd = (err?: Error & { statusCode?: number }): void => {
    stop();
    if (err) {
      if (!(typeof err.statusCode === 'number' && err.statusCode >= 400)) err.statusCode = 400;
      return done(err);
    }
    if (!Number.isNaN(declared) && (payload.receivedEncodedLength || received) !== declared) return done(new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH());
    done(null, received === buffer.length ? buffer : buffer.subarray(0, received));
  };
  const stop = (): void => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onEnd);
  };
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}

/** Replace the packed field at `path` by an array of its outer entries, each a packed block. */
function unpackAt(body: Record<string, unknown>, path: string[]): void {
  let parent = body;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string, unknown>;
  const key = path.at(-1)!;
  const { packedShape, data } = parent[key] as PackedField;
  parent[key] = packedBlocks(packedShape, data);
}

declare module 'fastify' {
  interface FastifyInstance {
    jsonBodiesParsedOffLoop: () => number;
  }
}

export const jsonBodyPlugin = fp(jsonBody, { name: 'json-body' });
