/**
 * A real Redis for the queue tests: Debian's redis-server on a free port on 127.0.0.1, nothing
 * saved to disk, stopped at the test's teardown. Without it a developer's run skips the test with the
 * command that installs it; with CI set (as .ci/run sets it) a missing server is a failure.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { isCi, pathOrSay, type VerdictTest } from './browser.js';

export const REDIS_INSTALL = 'sudo apt-get install -y redis-server';

export type RedisVerdict = { run: string } | { skip: string } | { fail: string };

export function redisVerdict(env: NodeJS.ProcessEnv = process.env): RedisVerdict {
  const path = env.HESSIAN_AUDIT_REDIS_SERVER || '/usr/bin/redis-server';
  if (existsSync(path)) return { run: path };
  const missing = `the queue tests need redis-server at ${path} (HESSIAN_AUDIT_REDIS_SERVER overrides the path)`;
  return isCi(env) ? { fail: `${missing}; CI is set, so a missing Redis is a failure` } : { skip: `${missing}; install it with: ${REDIS_INSTALL}` };
}

/** A port nothing listens on now (the kernel's choice, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  url: string;
  port: number;
  proc: ChildProcess;
  exited: Promise<void>;
}

/**
 * redis-server for one test, or null when the verdict skipped or failed it (said on `t`). With
 * `dir`, every write is in an append-only file there, synced before Redis answers (as
 * deploy/redis.yaml runs it), so a restart on the same port and folder loses nothing acknowledged.
 */
export async function startRedis(t: VerdictTest, options: { dir?: string; port?: number } = {}): Promise<RedisServer | null> {
  const path = pathOrSay(t, redisVerdict());
  if (path === null) return null;
  const port = options.port ?? (await freePort());
  const persistence = options.dir ? ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', options.dir] : ['--appendonly', 'no'];
  const proc = spawn(path, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await exited;
  });
  let out = '';
  proc.stdout!.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start in 10 s:\n${out}`)), 10_000);
    proc.stdout!.on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code}:\n${out}`));
    });
  });
  return { url: `redis://127.0.0.1:${port}`, port, proc, exited };
}
