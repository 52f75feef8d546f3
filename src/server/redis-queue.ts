/**
 * Jobs on Redis with BullMQ (docs/server.md, "Jobs on Redis"): `serve --queue
 * redis://HOST:PORT[/DB]`. The URL, the connection options, and the start-up check: the server
 * reaches Redis through BullMQ before it listens, and a bad URL or an unreachable Redis is one line
 * and exit 2. The queue itself is redis-jobs.ts.
 */
import { Queue, type RedisOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { AuditError, invalid } from '../contract/errors.js';

/** Where the jobs live: a Redis (or Valkey) database. */
export interface QueueTarget {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  tls: boolean;
  /** The URL as logs and messages show it: the password, if any, never. */
  display: string;
}

/** BullMQ's queue of this service (its keys are prefixed by BullMQ's own "bull:"). */
export const QUEUE_NAME = 'hessian-audit-jobs';

const FORM = 'give redis://HOST:PORT[/DB] (rediss:// for TLS)';

/** Parse `--queue`; a malformed one is refused with what is wrong and the form expected. */
export function parseQueueUrl(text: string): QueueTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid(`--queue '${text}' is not a URL; ${FORM}`);
  }
  const shown = `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw invalid(`--queue ${shown}: the scheme must be redis:// or rediss://; ${FORM}`);
  if (!url.hostname) throw invalid(`--queue ${shown}: no host; ${FORM}`);
  const port = url.port === '' ? 6379 : Number(url.port);
  const path = url.pathname.replace(/^\//, '');
  if (!/^\d*$/.test(path) || Number(path) > 15 || url.search || url.hash) throw invalid(`--queue ${shown}: the database must be a number from 0 to 15; ${FORM}`);
  const db = path === '' ? 0 : Number(path);
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port,
    db,
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    tls: url.protocol === 'rediss:',
    display: `${url.protocol}//${url.username ? `${url.username}@` : ''}${url.host}/${db}`,
  };
}

/** ioredis's options for the target; BullMQ's blocking commands need no per-request retry limit. */
export function redisOptions(target: QueueTarget): RedisOptions {
  return {
    host: target.host,
    port: target.port,
    db: target.db,
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    ...(target.tls ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/** A connection to the target that fails at once (no retries) when Redis is not there; `failure` keeps the socket's own error. */
function connect(target: QueueTarget, timeoutMs: number, failure: { error?: Error }): Redis {
  // Start-up needs no reconnects: an unreachable Redis is reported at once.
  const connection = new Redis({ ...redisOptions(target), lazyConnect: true, connectTimeout: timeoutMs, retryStrategy: () => null });
  // ioredis rejects connect() with "Connection is closed."; the socket's error says why.
  connection.on('error', (err: Error) => (failure.error ??= err));
  return connection;
}

/**
 * Reach Redis and open the service's BullMQ queue on it, then close both: start-up refuses a Redis
 * it cannot use. Resolves to the server's version (logged).
 */
export async function checkQueue(target: QueueTarget, timeoutMs = 5000): Promise<{ version: string }> {
  const failure: { error?: Error } = {};
  const connection = connect(target, timeoutMs, failure);
  const unreachable = (err: Error): AuditError =>
    new AuditError('queue_unreachable', `cannot reach Redis at ${target.display} (--queue): ${(failure.error ?? err).message}; start it, or fix the URL`, { queue: target.display });
  try {
    await connection.connect().catch((err: Error) => {
      throw unreachable(err);
    });
    const queue = new Queue(QUEUE_NAME, { connection });
    queue.on('error', () => {});
    try {
      await queue.waitUntilReady().catch((err: Error) => {
        throw unreachable(err);
      });
      const info = await connection.info('server');
      return { version: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown' };
    } finally {
      await queue.close().catch(() => {});
    }
  } finally {
    connection.disconnect();
  }
}
