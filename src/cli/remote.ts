/**
 * A small client for the hessian-audit HTTP service, for commands run with --server: upload models
 * the server does not have yet (it addresses them by SHA-256, so a known model is never sent
 * twice) and call a route, as a job when the work is long (`Prefer: respond-async`, then polling
 * /v1/jobs/<id> for progress and the result). A busy server's 503 + Retry-After is waited out,
 * up to `waitMs` in all. Every failure is an AuditError, so the command exits 2 with its message.
 */
import { AuditError } from '../contract/errors.js';
import type { NDArray } from '../io/ndarray.js';
import type { Nested } from '../io/nested.js';

export interface RemoteOptions {
  server: string;
  token?: string;
  /** Milliseconds a long call (a gate run) may take. */
  timeoutMs?: number;
  /** Milliseconds, in all, this client may wait for a busy server (503 with Retry-After); default 10 min. */
  waitMs?: number;
  /** A job's progress as the server reports it. */
  onProgress?: (done: number, total: number, stage: string) => void;
  /** Milliseconds between two polls of a job. */
  pollMs?: number;
}

interface JobBody {
  state: 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
  route: string;
  progress?: { done: number; total: number; stage?: string };
  result?: unknown;
  error?: { code?: string; message?: string; details?: unknown };
}

export const DEFAULT_WAIT_MS = 600_000;

const SHORT_MS = 30_000;
const UPLOAD_MS = 300_000;

export class RemoteClient {
  private readonly base: URL;
  /** Milliseconds spent waiting out 503s so far, and why the last one came. */
  private waited = 0;

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

  /**
   * POST as a job and wait for its result: the same body the synchronous route returns. A server
   * that answers at once (200: it ignores the preference) is fine too.
   */
  async job(path: string, body: unknown): Promise<unknown> {
    const started = Date.now();
    const limit = this.options.timeoutMs ?? 900_000;
    const accepted = await this.call('POST', path, JSON.stringify(body), SHORT_MS, [], { prefer: 'respond-async' });
    if (accepted.status !== 202) return accepted.body;
    const location = accepted.location;
    if (!location) throw new AuditError('bad_response', `the server at ${this.base.origin} answered 202 to POST ${path} without a Location header`);
    for (;;) {
      const job = (await this.call('GET', location, undefined, SHORT_MS)).body as JobBody;
      const { done = 0, total = 0, stage } = job.progress ?? {};
      if (total > 0) this.options.onProgress?.(done, total, stage ?? job.route);
      if (job.state === 'succeeded') return job.result;
      if (job.state === 'failed' || job.state === 'cancelled') {
        const error = job.error ?? {};
        throw AuditError.relayed({
          code: error.code ?? 'job_failed',
          message: `the ${job.route} job on ${this.base.origin} ${job.state}: ${error.message ?? 'no reason given'}`,
          status: 500,
          details: error.details,
        });
      }
      if (Date.now() - started > limit) {
        await this.call('DELETE', location, undefined, SHORT_MS, [404]).catch(() => undefined);
        throw new AuditError('timeout', `the ${job.route} job on ${this.base.origin} did not finish within ${limit / 1000} s; it was cancelled`);
      }
      await sleep(this.options.pollMs ?? 1000);
    }
  }

  private async call(
    method: string,
    path: string,
    body: string | FormData | undefined,
    timeoutMs: number,
    accept: number[] = [],
    extraHeaders: Record<string, string> = {},
  ): Promise<{ status: number; body: unknown; location?: string }> {
    for (;;) {
      const answer = await this.once(method, path, body, timeoutMs, accept, extraHeaders);
      if ('body' in answer) return answer;
      // 503 with Retry-After: the server is busy, not broken. Wait its turn while the budget lasts.
      const budget = this.options.waitMs ?? DEFAULT_WAIT_MS;
      if (this.waited + answer.retryAfterMs > budget) {
        throw new AuditError(
          'gave_up',
          `gave up after waiting ${Math.round(this.waited / 1000)} s in all (--wait ${Math.round(budget / 1000)} s) for the server at ${this.base.origin}: it kept answering ${method} ${answer.pathname} with 503 (${answer.error.message})`,
          { waitedMs: this.waited, code: answer.error.code },
        );
      }
      this.waited += answer.retryAfterMs;
      await sleep(answer.retryAfterMs);
    }
  }

  /** One request: its answer, or the 503 + Retry-After to wait out. */
  private async once(
    method: string,
    path: string,
    body: string | FormData | undefined,
    timeoutMs: number,
    accept: number[],
    extraHeaders: Record<string, string>,
  ): Promise<{ status: number; body: unknown; location?: string } | { retryAfterMs: number; pathname: string; error: { code: string; message: string } }> {
    const url = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base : `${this.base.href}/`);
    const headers: Record<string, string> = { ...extraHeaders };
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
    const location = response.headers.get('location') ?? undefined;
    if (response.ok || accept.includes(response.status)) return { status: response.status, body: parsed, ...(location ? { location } : {}) };
    const error = (parsed as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
    const retryAfter = Number(response.headers.get('retry-after') ?? Number.NaN);
    if (response.status === 503 && Number.isFinite(retryAfter) && retryAfter >= 0) {
      return { retryAfterMs: Math.max(1, retryAfter) * 1000, pathname: url.pathname, error: { code: error?.code ?? 'unavailable', message: error?.message ?? 'unavailable' } };
    }
    throw AuditError.relayed({
      code: error?.code ?? 'server_error',
      message: `the server at ${this.base.origin} answered ${response.status} to ${method} ${url.pathname}: ${error?.message ?? text.slice(0, 200)}`,
      status: response.status >= 400 && response.status < 600 ? response.status : 500,
      details: error?.details,
    });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A --wait value: "90s", "10m", "1h" or plain seconds → milliseconds. */
export function parseWait(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new AuditError('invalid_argument', `--wait takes a duration such as 90s, 10m or 1h, got '${text}'`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * unit;
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
