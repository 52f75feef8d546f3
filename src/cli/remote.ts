/**
 * A small client for the hessian-audit HTTP service, for commands run with --server: upload models
 * the server does not have yet (it addresses them by SHA-256, so a known model is never sent
 * twice) and call a route. Every failure is an AuditError, so the command exits 2 with its message.
 */
import { AuditError } from '../contract/errors.js';
import type { NDArray } from '../io/ndarray.js';
import type { Nested } from '../io/nested.js';

export interface RemoteOptions {
  server: string;
  token?: string;
  /** Milliseconds a long call (a gate run) may take. */
  timeoutMs?: number;
}

const SHORT_MS = 30_000;
const UPLOAD_MS = 300_000;

export class RemoteClient {
  private readonly base: URL;

  constructor(private readonly options: RemoteOptions) {
    let base: URL;
    try {
      base = new URL(options.server);
    } catch {
      base = new URL('invalid:');
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new AuditError('invalid_argument', `--server must be an http:// or https:// URL, got '${options.server}'`);
    }
    this.base = base;
  }

  /** Make sure the server stores this model: GET by id, upload only on 404. */
  async ensureModel(id: string, bytes: Uint8Array, filename: string): Promise<'stored' | 'uploaded'> {
    const found = await this.call('GET', `/v1/models/${id}`, undefined, SHORT_MS, [404]);
    if (found.status === 200) return 'stored';
    const form = new FormData();
    form.append('model', new Blob([new Uint8Array(bytes)]), filename);
    const uploaded = (await this.call('POST', '/v1/models', form, UPLOAD_MS)).body as { id?: string };
    if (uploaded.id !== id) {
      throw new AuditError('bad_response', `the server stored ${filename} as '${uploaded.id}', not as its SHA-256 '${id}'`);
    }
    return 'uploaded';
  }

  async post(path: string, body: unknown): Promise<unknown> {
    const response = await this.call('POST', path, JSON.stringify(body), this.options.timeoutMs ?? 900_000);
    return response.body;
  }

  private async call(
    method: string,
    path: string,
    body: string | FormData | undefined,
    timeoutMs: number,
    accept: number[] = [],
  ): Promise<{ status: number; body: unknown }> {
    const url = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base : `${this.base.href}/`);
    const headers: Record<string, string> = {};
    if (typeof body === 'string') headers['content-type'] = 'application/json';
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    let response: Response;
    try {
      response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : (e.cause?.code ?? e.cause?.message ?? e.message);
      throw new AuditError('server_unreachable', `cannot reach the server at ${this.base.origin}: ${why}`);
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text.length > 0 ? JSON.parse(text) : null;
    } catch {
      throw new AuditError('bad_response', `${method} ${url.pathname} on ${this.base.origin} answered ${response.status} with non-JSON: ${text.slice(0, 120)}`);
    }
    if (response.ok || accept.includes(response.status)) return { status: response.status, body: parsed };
    const error = (parsed as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
    throw AuditError.relayed({
      code: error?.code ?? 'server_error',
      message: `the server at ${this.base.origin} answered ${response.status} to ${method} ${url.pathname}: ${error?.message ?? text.slice(0, 200)}`,
      status: response.status >= 400 && response.status < 600 ? response.status : 500,
      details: error?.details,
    });
  }
}

/** An array as the API's JSON takes it: nested, batch first. */
export function toNested(array: NDArray): Nested {
  const values = Array.from(array.data as ArrayLike<number | bigint>, Number);
  const build = (offset: number, depth: number): Nested => {
    if (depth === array.shape.length) return values[offset];
    const stride = array.shape.slice(depth + 1).reduce((a, b) => a * b, 1);
    return Array.from({ length: array.shape[depth] }, (_, i) => build(offset + i * stride, depth + 1));
  };
  return build(0, 0);
}

/** An extra input as the API's `inputs` entry: flat data with its shape and element type. */
export const toInputArray = (array: NDArray): { data: number[]; shape: number[]; type: NDArray['type'] } => ({
  data: Array.from(array.data as ArrayLike<number | bigint>, Number),
  shape: array.shape,
  type: array.type,
});
