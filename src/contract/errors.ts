/**
 * The error catalogue: every failure a user can cause is an AuditError with a stable `code`, and
 * the code alone decides the HTTP status (and the CLI's exit code 2). Throw sites say what went
 * wrong and how to fix it; they never choose a status. Anything that is not an AuditError is a bug.
 */

/** 499: the client closed the connection (never seen by it; logged and counted). */
export type ErrorStatus = 400 | 401 | 404 | 409 | 413 | 422 | 499 | 500 | 503 | 507;

/** Code → status. 400: malformed whatever the model; 422: well-formed but does not fit the model. */
export const ERROR_CATALOGUE = {
  // 400: the request itself is malformed
  invalid_request: 400,
  invalid_argument: 400,
  invalid_array: 400,
  invalid_config: 400,
  malformed_json: 400,
  malformed_multipart: 400,
  missing_model: 400,
  unsupported_media_type: 400,
  file_not_found: 400,
  file_not_written: 400,
  write_failed: 400,
  bad_request: 400,
  unauthorized: 401,
  // 404, 409
  unknown_model: 404,
  unknown_job: 404,
  job_not_done: 409,
  // 413: too large for this server
  payload_too_large: 413,
  graph_too_deep: 413,
  initializers_too_large: 413,
  too_many_nodes: 413,
  // 422: valid, but does not fit the model or the deployment's limits
  ambiguous_encoding: 422,
  bootstrap_too_large: 422,
  custom_op_domain: 422,
  device_unavailable: 422,
  epsilon_out_of_range: 422,
  external_data_not_allowed: 422,
  hessian_too_large: 422,
  incompatible_models: 422,
  invalid_element: 422,
  invalid_graph: 422,
  invalid_groups: 422,
  invalid_model: 422,
  invalid_tensor: 422,
  latents_required: 422,
  layer_not_batched: 422,
  limit_exceeded: 422,
  memory_budget_exceeded: 422,
  missing_input: 422,
  missing_layer: 422,
  model_run_failed: 422,
  no_float_input: 422,
  no_image_layer: 422,
  non_finite_input: 422,
  nondeterministic_model: 422,
  output_shape_changed: 422,
  shape_mismatch: 422,
  tensor_data_mismatch: 422,
  uncuttable: 422,
  unknown_input: 422,
  unknown_layer: 422,
  unknown_tensor: 422,
  unsupported_ir_version: 422,
  unsupported_opset: 422,
  unsupported_type: 422,
  wrt_unused: 422,
  // 499, 5xx
  cancelled: 499,
  internal: 500,
  /** A part of a request split over lanes could not run as a part (the pool runs it whole instead). */
  split_refused: 500,
  worker_crashed: 500,
  bad_response: 500,
  result_too_large: 500,
  overloaded: 503,
  too_many_jobs: 503,
  gave_up: 503,
  client_limit: 503,
  too_many_large_bodies: 503,
  server_unreachable: 503,
  queue_unreachable: 503,
  shutting_down: 503,
  timeout: 503,
  store_full: 507,
} as const satisfies Record<string, ErrorStatus>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** Extra facts for the client (limits, offending index, nodes …). */
export type ErrorDetails = Record<string, unknown>;

export class AuditError extends Error {
  readonly code: string;
  readonly status: ErrorStatus;
  readonly details?: ErrorDetails;

  constructor(code: ErrorCode, message: string, details?: ErrorDetails) {
    super(message);
    this.name = 'AuditError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code];
    this.details = details;
  }

  /**
   * An error relayed from another process or server (a worker's outcome, a remote server's reply):
   * its code and status are kept as they came, even a code this build does not know.
   */
  static relayed(error: { code: string; message: string; status: number; details?: unknown }): AuditError {
    const known = (ERROR_CATALOGUE as Record<string, ErrorStatus>)[error.code];
    const relayed = new AuditError('internal', error.message, error.details as ErrorDetails | undefined);
    Object.assign(relayed, { code: error.code, status: known ?? validStatus(error.status) });
    return relayed;
  }

  /** The same error with more context in front of its message (which model, which side …). */
  prefixed(prefix: string): AuditError {
    return AuditError.relayed({ code: this.code, message: `${prefix}${this.message}`, status: this.status, details: this.details });
  }

  toJSON(): { code: string; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

const STATUSES = new Set<number>([400, 401, 404, 409, 413, 422, 499, 500, 503, 507]);
const validStatus = (status: number): ErrorStatus => (STATUSES.has(status) ? (status as ErrorStatus) : status >= 400 && status < 500 ? 400 : 500);

/** Malformed request: a value outside its allowed range, whatever the model. */
export const invalid = (message: string, details?: ErrorDetails): AuditError => new AuditError('invalid_argument', message);

/** A client-supplied string as it may appear inside a message: at most `max` characters. */
export function clip(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}
