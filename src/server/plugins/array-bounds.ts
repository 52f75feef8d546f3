/**
 * Cheap bounds before the expensive ones: a JSON body's `latents` and `directions` arrays are
 * counted (their outer length, O(1)) against the server's limits before the schema walks every
 * number and the arrays are flattened, so a body of a million rows is refused in microseconds
 * instead of seconds of event-loop time. The engine's own checks (resolve.ts) still run after.
 */
import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import type { Limits } from '../../contract/request.js';
import { AuditError } from '../../contract/errors.js';

const overLimit = (name: string, value: number, max: number): AuditError =>
  new AuditError('limit_exceeded', `${name} is ${value}, above this server's limit of ${max}; audit a subset (maxSamples) or ask for a higher limit`, {
    limit: max,
  });

/**
 * The outer lengths of `latents` and `directions` against the limits: the same refusals, in the same
 * words, as the engine gives later (resolve.ts checkLimit). The JSON body plugin checks a body parsed
 * off the event loop with it too, before it builds the body's arrays (plugins/json-body.ts).
 */
export function checkArrayBounds(lengths: { latents?: number | undefined; directions?: number | undefined }, limits: Limits): void {
  if (lengths.latents !== undefined && lengths.latents > limits.maxSamples) throw overLimit('samples', lengths.latents, limits.maxSamples);
  if (lengths.directions !== undefined && lengths.directions > limits.maxK) throw overLimit('k', lengths.directions, limits.maxK);
}

const arrayBounds: FastifyPluginAsync<{ limits: Limits }> = async (app, { limits }) => {
  app.addHook('preValidation', async (request) => {
    const body = request.body as { latents?: unknown; directions?: unknown } | undefined;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
    const length = (v: unknown): number | undefined => (Array.isArray(v) ? v.length : undefined);
    checkArrayBounds({ latents: length(body.latents), directions: length(body.directions) }, limits);
  });
};

export const arrayBoundsPlugin = fp(arrayBounds, { name: 'array-bounds' });
