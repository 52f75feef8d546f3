/**
 * Whether the browser tests can run here. A developer without Chromium gets them skipped with the
 * one command that installs it; CI (the CI variable set, as .ci/run does) must not skip silently.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';

export const CHROMIUM_INSTALL = 'sudo apt-get install -y chromium';

export type BrowserVerdict = { run: string } | { skip: string } | { fail: string };

/** Any non-empty CI value but "false"/"0" means CI, as most CI services set it to "true" or "1". */
export const isCi = (env: NodeJS.ProcessEnv): boolean => env.CI !== undefined && env.CI !== '' && env.CI !== 'false' && env.CI !== '0';

export function browserVerdict(env: NodeJS.ProcessEnv = process.env): BrowserVerdict {
  const path = env.HESSIAN_AUDIT_CHROMIUM || '/usr/bin/chromium';
  if (existsSync(path)) return { run: path };
  const missing = `the report test needs Chromium at ${path} (HESSIAN_AUDIT_CHROMIUM overrides the path)`;
  return isCi(env) ? { fail: `${missing}; CI is set, so a missing browser is a failure` } : { skip: `${missing}; install it with: ${CHROMIUM_INSTALL}` };
}

/** The part of a tap test that a verdict is said on. */
export interface VerdictTest {
  fail(message: string): unknown;
  skip(message: string): unknown;
  teardown(fn: () => unknown): unknown;
}

/** A run verdict's path; or null, with the skip or the failure said on `t` (browser and Redis alike). */
export function pathOrSay(t: VerdictTest, verdict: { run: string } | { skip: string } | { fail: string }): string | null {
  if ('fail' in verdict) t.fail(verdict.fail);
  else if ('skip' in verdict) t.skip(verdict.skip);
  else return verdict.run;
  return null;
}

/**
 * Headless Chromium for one test, closed at its teardown; null when the verdict above skipped or
 * failed the test (said on `t`), so every browser test treats a missing browser alike.
 */
export async function launchBrowser(t: VerdictTest): Promise<BrowserContext | null> {
  const path = pathOrSay(t, browserVerdict());
  if (path === null) return null;
  const userDataDir = mkdtempSync(join(tmpdir(), 'audit-chromium-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: path,
    headless: true,
    viewport: { width: 1200, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  t.teardown(async () => {
    await browser.close();
    rmSync(userDataDir, { recursive: true, force: true });
  });
  return browser;
}
