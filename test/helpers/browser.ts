/**
 * Whether the browser tests can run here. A developer without Chromium gets them skipped with the
 * one command that installs it; CI (the CI variable set, as .ci/run does) must not skip silently.
 */
import { existsSync } from 'node:fs';

export const CHROMIUM_INSTALL = 'sudo apt-get install -y chromium';

export type BrowserVerdict = { run: string } | { skip: string } | { fail: string };

export function browserVerdict(env: NodeJS.ProcessEnv = process.env): BrowserVerdict {
  const path = env.HESSIAN_AUDIT_CHROMIUM || '/usr/bin/chromium';
  if (existsSync(path)) return { run: path };
  const missing = `the report test needs Chromium at ${path} (HESSIAN_AUDIT_CHROMIUM overrides the path)`;
  // Any non-empty CI value but "false"/"0" means CI, as most CI services set it to "true" or "1".
  const ci = env.CI !== undefined && env.CI !== '' && env.CI !== 'false' && env.CI !== '0';
  return ci ? { fail: `${missing}; CI is set, so a missing browser is a failure` } : { skip: `${missing}; install it with: ${CHROMIUM_INSTALL}` };
}
