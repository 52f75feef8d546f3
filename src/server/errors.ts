/**
 * One error body for every failure: {"error": {"code", "message", "details"?}}. AuditErrors carry
 * their code and status; Fastify's own errors (bad JSON, body limits, multipart limits, schema
 * validation) are translated here so that each one names the problem and the limit.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { formatIssues } from '../contract/request.js';
import { z } from 'zod';
import { AuditError, clip } from '../contract/errors.js';
import { formatBytes } from './config.js';

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable machine-readable code' }),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  })
  .meta({ id: 'Error' });

export type ErrorBody = z.infer<typeof ErrorSchema>;

/** The error responses a route documents, by status. */
export const errorResponses = (...statuses: number[]): Record<number, typeof ErrorSchema> =>
  Object.fromEntries(statuses.map((s) => [s, ErrorSchema]));

export interface ErrorLimits {
  maxBodyBytes: number;
  maxUploadBytes: number;
}

/** Longest message an error body carries: a message that echoes client input (a layer name of 1 MB) is cut. */
export const MAX_MESSAGE_CHARS = 2000;

export function sendError(reply: FastifyReply, status: number, code: string, message: string, details?: unknown): FastifyReply {
  const retryAfter = (details as { retryAfter?: number } | undefined)?.retryAfter;
  if (status === 503 && retryAfter !== undefined) reply.header('retry-after', String(retryAfter));
  return reply.code(status).send({ error: { code, message: clip(message, MAX_MESSAGE_CHARS), ...(details === undefined ? {} : { details: boundedDetails(details) }) } });
}

/** Details are for machines: small numbers and codes. Any that grew past the message limit are dropped. */
function boundedDetails(details: unknown): unknown {
  const text = JSON.stringify(details);
  return text !== undefined && text.length > MAX_MESSAGE_CHARS ? { truncated: true } : details;
}

/** busboy's own errors (plain Errors): a body that is not the multipart it says it is. */
const MULTIPART_FAULTS = [/^Multipart: Boundary not found/, /^Boundary required/, /Unexpected end of (multipart data|form)/, /terminated early/, /Malformed part header/];
const malformedMultipart = (reason: string): AuditError =>
  new AuditError(
    'malformed_multipart',
    `the multipart body cannot be read (${reason}); send multipart/form-data with a boundary in Content-Type and the whole body (curl -F model=@generator.onnx)`,
  );

/** Fastify or plugin error → the contract's status, code and message. */
export function translate(error: FastifyError, limits: ErrorLimits): AuditError {
  if (error instanceof AuditError) return error;
  if (hasZodFastifySchemaValidationErrors(error)) {
    const where = (error as { validationContext?: string }).validationContext ?? 'request';
    const what = where === 'body' ? 'request' : where;
    // The route's zod issues, rebuilt from Fastify's validation entries and worded by the contract's
    // own formatter: the CLI, which parses with parseRequest, says exactly the same.
    const issues = error.validation.map(
      (v) => ({ ...(v.params as object), code: v.keyword, path: v.instancePath.split('/').filter(Boolean), message: v.message }) as unknown as z.core.$ZodIssue,
    );
    const message = formatIssues(issues, what);
    return new AuditError('invalid_request', message, {
      issues: error.validation.map((v) => ({ path: v.instancePath, code: v.keyword, message: v.message })),
    });
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return new AuditError('malformed_json', `the request is not valid JSON: ${error.message}`);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AuditError('malformed_json', 'the JSON body is empty; send a penalty request object such as {"k": 4}');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AuditError('payload_too_large', `the request body is larger than this server's limit of ${formatBytes(limits.maxBodyBytes)} (--max-body-mib)`, {
        limit: limits.maxBodyBytes,
      });
    case 'FST_REQ_FILE_TOO_LARGE':
      return uploadTooLarge(limits.maxUploadBytes);
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new AuditError('payload_too_large', `the multipart request has too many parts (${error.message})`);
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return notMultipart();
    case 'FST_MP_PREMATURE_CLOSE':
      return malformedMultipart('the body ended before the multipart data was complete');
    case 'FST_PROTO_VIOLATION':
      return new AuditError('invalid_request', 'a multipart field name is not allowed (__proto__ or constructor)');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AuditError('unsupported_media_type', `${error.message}; send application/json (or multipart/form-data for uploads)`);
  }
  if (!error.code && MULTIPART_FAULTS.some((re) => re.test(error.message))) return malformedMultipart(error.message);
  if (error instanceof SyntaxError) return new AuditError('malformed_json', `the request is not valid JSON: ${error.message}`);
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) return new AuditError('bad_request', error.message);
  return new AuditError('internal', 'internal server error');
}

export const uploadTooLarge = (limit: number): AuditError =>
  new AuditError('payload_too_large', `the uploaded file is larger than this server's limit of ${formatBytes(limit)} (--max-upload-mib); nothing was stored`, {
    limit,
  });

export const notMultipart = (): AuditError =>
  new AuditError('invalid_request', 'send multipart/form-data with a file field named "model" (curl -F model=@generator.onnx)');

export const errorsPlugin = fp<ErrorLimits>(async (app: FastifyInstance, limits) => {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const audit = translate(error, limits);
    // A full store (507) is the operator's to fix, not a fault of the server: a warning.
    if (audit.status === 507) request.log.warn({ code: audit.code }, `request refused: ${audit.message}`);
    else if (audit.status >= 500 && audit.code !== 'overloaded' && audit.code !== 'shutting_down') {
      request.log.error({ err: error, code: audit.code }, `request failed: ${clip(audit.message, MAX_MESSAGE_CHARS)}`);
    }
    // A body refused before it was read to the end would wedge a keep-alive connection: end it.
    if (!request.raw.complete) reply.header('connection', 'close');
    const message = audit.code === 'internal' ? `internal server error (request id ${request.id}); the server log has the details` : audit.message;
    return sendError(reply, audit.status, audit.code, message, audit.details);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, 404, 'not_found', `no route ${request.method} ${clip(request.url.split('?')[0])}; see /docs for the API`),
  );
});

/** A model id the store does not hold (a route, or a job whose model was deleted meanwhile). */
export const unknownModel = (id: string): AuditError =>
  new AuditError('unknown_model', `no model with id '${clip(id, 100)}' is stored here; upload it with POST /v1/models (the id is the SHA-256 of its bytes)`);
