/**
 * Every failure a user can cause is an AuditError: a stable `code`, a message that names the
 * problem and the fix, and the HTTP status the contract gives it. The CLI maps any AuditError
 * to exit code 2; anything else is a bug.
 */
/** 499: the client closed the connection (never seen by it; logged and counted). */
export type ErrorStatus = 400 | 404 | 409 | 413 | 422 | 499 | 500 | 503 | 507;

export class AuditError extends Error {
  readonly code: string;
  readonly status: ErrorStatus;
  readonly details?: unknown;

  constructor(code: string, message: string, status: ErrorStatus = 422, details?: unknown) {
    super(message);
    this.name = 'AuditError';
    this.code = code;
    this.status = status;
    this.details = details;
  }

  toJSON(): { code: string; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** Malformed request: a value outside its allowed range, whatever the model. */
export const invalid = (message: string, details?: unknown): AuditError =>
  new AuditError('invalid_argument', message, 400, details);

/** A client-supplied string as it may appear inside a message: at most `max` characters. */
export function clip(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}
