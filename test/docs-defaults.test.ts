/**
 * The defaults docs/server.md states are the code's (issue 11, item 18: the docs said --max-k
 * defaults to 1024 while the code used 4096).
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { SERVER_DEFAULTS } from '../dist/server/config.js';

const MiB = 1024 * 1024;
const doc = readFileSync(new URL('../docs/server.md', import.meta.url), 'utf8');
/** The default column of a flag's row in the settings table, as a number. */
const documented = (flag: string): number => {
  const row = doc.split('\n').find((line) => line.startsWith(`| \`${flag}\` |`));
  if (!row) throw new Error(`docs/server.md has no row for ${flag}`);
  return Number(row.split('|')[3].trim().replaceAll('`', '').replaceAll(',', ''));
};

t.test('docs/server.md states the defaults the code uses', async (t) => {
  const expected: [string, number][] = [
    ['--max-samples', DEFAULT_LIMITS.maxSamples],
    ['--max-k', DEFAULT_LIMITS.maxK],
    ['--max-rows', DEFAULT_LIMITS.maxRows],
    ['--memory-budget', DEFAULT_LIMITS.memoryBudget / MiB],
    ['--max-queue', SERVER_DEFAULTS.maxQueue],
    ['--request-timeout', SERVER_DEFAULTS.requestTimeoutMs / 1000],
    ['--headers-timeout', SERVER_DEFAULTS.headersTimeoutMs / 1000],
    ['--receive-timeout', SERVER_DEFAULTS.receiveTimeoutMs / 1000],
    ['--body-idle-timeout', SERVER_DEFAULTS.bodyIdleTimeoutMs / 1000],
    ['--max-upload-mib', SERVER_DEFAULTS.maxUploadMiB],
    ['--max-body-mib', SERVER_DEFAULTS.maxBodyMiB],
    ['--large-body-mib', SERVER_DEFAULTS.largeBodyMiB],
    ['--max-large-bodies', SERVER_DEFAULTS.maxLargeBodies],
    ['--session-cache', SERVER_DEFAULTS.sessionCacheSize],
    ['--batch-max-requests', SERVER_DEFAULTS.batchMaxRequests],
    ['--batch-delay-ms', SERVER_DEFAULTS.batchDelayMs],
  ];
  for (const [flag, value] of expected) t.equal(documented(flag), value, flag);
});
