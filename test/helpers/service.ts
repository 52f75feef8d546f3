/**
 * What the running service really has — its default port and the GET routes it serves — for the
 * tests that check the Docker image and the Kubernetes manifests against it. Built from the real
 * app factory (src/server/app.ts) with the real defaults (src/server/config.ts).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dist = (path: string) => new URL(`../../dist/${path}`, import.meta.url);

export interface Service {
  /** The serve command's default port. */
  port: number;
  /** Whether the app answers GET on this path. */
  serves(path: string): boolean;
  /** Where the answers come from, for messages. */
  source: string;
  close(): Promise<void>;
}

/** docs/design.md's contract, used only while this branch has no server (dist/server/app.js). */
const CONTRACT = { port: 8080, routes: ['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs'] };

export async function openService(): Promise<Service> {
  if (!existsSync(dist('server/app.js'))) {
    return { port: CONTRACT.port, serves: (p) => CONTRACT.routes.includes(p), source: 'DESIGN.md contract (no server in this build)', close: async () => {} };
  }
  const { SERVER_DEFAULTS, serverConfig } = await import(dist('server/config.js').href);
  const { buildApp } = await import(dist('server/app.js').href);
  const modelDir = mkdtempSync(join(tmpdir(), 'hessian-audit-routes-'));
  const { app } = await buildApp(serverConfig({ modelDir, devices: [{ kind: 'cpu' }], workers: 1, logLevel: false }));
  return {
    port: SERVER_DEFAULTS.port,
    serves: (url) => app.hasRoute({ method: 'GET', url }),
    source: 'src/server (buildApp, SERVER_DEFAULTS)',
    close: async () => {
      await app.close();
      rmSync(modelDir, { recursive: true, force: true });
    },
  };
}
