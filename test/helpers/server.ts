/** Helpers for the HTTP suites: temporary stores, apps with teardown, hand-built multipart bodies. */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDevice } from '../../dist/runtime/device.js';
import { buildApp } from '../../dist/server/app.js';
import { serverConfig, type ServerConfig } from '../../dist/server/config.js';

export const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export function tempDir(t: { teardown: (fn: () => void) => void }, prefix = 'ha-store-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function startApp(t: { teardown: (fn: () => Promise<void> | void) => void }, overrides: Partial<ServerConfig> = {}) {
  const dir = overrides.modelDir ?? tempDir(t);
  const built = await buildApp(serverConfig({ devices: [parseDevice('cpu')], modelDir: dir, logLevel: false, workers: 1, intraOpThreads: 1, ...overrides }));
  t.teardown(() => built.app.close());
  await built.context.pool.openProviders();
  return { ...built, dir };
}

export interface Part {
  name: string;
  data: string | Uint8Array;
  filename?: string;
  contentType?: string;
}

/** A multipart/form-data body, as curl -F builds it. */
export function multipart(parts: Part[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----ha${randomUUID()}`;
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.contentType ?? (p.filename ? 'application/octet-stream' : undefined)) {
      head += `Content-Type: ${p.contentType ?? 'application/octet-stream'}\r\n`;
    }
    chunks.push(Buffer.from(`${head}\r\n`), Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

/** Wait until a condition holds (state, not time: the loop only bounds a hung test). */
export async function until(condition: () => boolean, what: string, limitMs = 30_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
