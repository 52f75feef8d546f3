/** When the browser tests run, skip or fail: the decision test/report.test.ts takes (helpers/browser.ts). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { browserVerdict, CHROMIUM_INSTALL } from './helpers/browser.js';

const dir = mkdtempSync(join(tmpdir(), 'browser-verdict-'));
const present = join(dir, 'chromium');
writeFileSync(present, '');
const missing = join(dir, 'no-such-chromium');

t.test('a browser at the path runs the tests, CI or not', async (t) => {
  t.same(browserVerdict({ HESSIAN_AUDIT_CHROMIUM: present }), { run: present });
  t.same(browserVerdict({ HESSIAN_AUDIT_CHROMIUM: present, CI: 'true' }), { run: present });
});

t.test('no browser and CI unset (or false): skipped, with the one command that installs it', async (t) => {
  for (const env of [{}, { CI: '' }, { CI: 'false' }, { CI: '0' }]) {
    const verdict = browserVerdict({ HESSIAN_AUDIT_CHROMIUM: missing, ...env });
    t.same(Object.keys(verdict), ['skip'], JSON.stringify(env));
    t.equal((verdict as { skip: string }).skip, `the report test needs Chromium at ${missing} (HESSIAN_AUDIT_CHROMIUM overrides the path); install it with: ${CHROMIUM_INSTALL}`);
  }
});

t.test('no browser and CI set: a failure that says why', async (t) => {
  for (const CI of ['true', '1']) {
    t.same(browserVerdict({ HESSIAN_AUDIT_CHROMIUM: missing, CI }), {
      fail: `the report test needs Chromium at ${missing} (HESSIAN_AUDIT_CHROMIUM overrides the path); CI is set, so a missing browser is a failure`,
    });
  }
});

t.test('the default path is Debian’s chromium', async (t) => {
  const verdict = browserVerdict({ CI: 'true' });
  t.match(JSON.stringify(verdict), /\/usr\/bin\/chromium/);
});
