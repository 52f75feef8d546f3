/**
 * The real service as a child process on 127.0.0.1 (a free port), for tests that need a socket,
 * signals and worker processes: `hessian-audit serve` exactly as users start it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BIN = new URL('../../dist/cli/main.js', import.meta.url).pathname;

export interface ServerChild {
  url: string;
  dir: string;
  proc: ChildProcess;
  stderr: () => string;
  /** The JSON log lines on stdout (only with options.logs, and a --log-level in args). */
  logs: () => Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

interface Teardown {
  teardown: (fn: () => void | Promise<void>) => void;
}

export async function spawnServer(t: Teardown, args: string[] = [], options: { dir?: string; env?: Record<string, string>; logs?: boolean } = {}): Promise<ServerChild> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'ha-serve-'));
  if (!options.dir) t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--device', 'cpu', '--log-level', 'silent', '--threads', '1', ...args],
    { stdio: ['ignore', options.logs ? 'pipe' : 'ignore', 'pipe'], env: { ...process.env, ...options.env } },
  );
  const logs: Record<string, unknown>[] = [];
  let out = '';
  proc.stdout?.setEncoding('utf8');
  proc.stdout?.on('data', (chunk: string) => {
    const lines = (out + chunk).split('\n');
    out = lines.pop()!;
    for (const line of lines) if (line.startsWith('{')) logs.push(JSON.parse(line));
  });
  let stderr = '';
  proc.stderr!.setEncoding('utf8');
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start in 60 s:\n${stderr}`)), 60_000);
    proc.stderr!.on('data', (chunk: string) => {
      stderr += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code} before listening:\n${stderr}`));
    });
  });
  return { url, dir, proc, stderr: () => stderr, logs: () => logs, exited };
}

export interface Reply {
  status: number;
  headers: Headers;
  body: { error?: { code: string; message: string; details?: unknown } } & Record<string, unknown>;
}

async function reply(res: Response): Promise<Reply> {
  const text = await res.text();
  let body: Reply['body'];
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: res.status, headers: res.headers, body };
}

export async function upload(url: string, bytes: Uint8Array, name = 'model.onnx'): Promise<Reply> {
  const form = new FormData();
  form.append('model', new Blob([bytes]), name);
  return reply(await fetch(`${url}/v1/models`, { method: 'POST', body: form, signal: AbortSignal.timeout(60_000) }));
}

export async function penalty(url: string, id: string, request: unknown): Promise<Reply> {
  return reply(
    await fetch(`${url}/v1/models/${id}/penalty`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(request),
      signal: AbortSignal.timeout(120_000),
    }),
  );
}

export async function get(url: string, path: string): Promise<Reply> {
  return reply(await fetch(`${url}${path}`, { signal: AbortSignal.timeout(30_000) }));
}

/** Poll until a condition holds (a state, not a time: the limit only bounds a hung test). */
export async function until(condition: () => Promise<boolean> | boolean, what: string, limitMs = 30_000): Promise<void> {
  const start = Date.now();
  while (!(await condition())) {
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
