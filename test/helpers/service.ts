/**
 * What the running service really has — its default port and its GET routes — for the tests that
 * check the Docker image and the Kubernetes manifests against it.
 */
import { existsSync } from 'node:fs';

const dist = (path: string) => new URL(`../../dist/${path}`, import.meta.url);

/** The routes DESIGN.md's contract names (used only until the server is in this branch). */
const CONTRACT = { port: 8080, routes: ['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs'] };

export async function serviceContract(): Promise<{ port: number; routes: string[]; source: string }> {
  if (!existsSync(dist('server/config.js'))) return { ...CONTRACT, source: 'DESIGN.md contract' };
  const { SERVER_DEFAULTS } = (await import(dist('server/config.js').href)) as { SERVER_DEFAULTS: { port: number } };
  return { port: SERVER_DEFAULTS.port, routes: CONTRACT.routes, source: 'src/server/config.ts' };
}
