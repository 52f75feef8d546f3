/**
 * Clients that wait, over a real socket: `penalty`, `audit` and `gate` with --server run as jobs and
 * print what a local run prints; a server answering 503 + Retry-After is waited out (then the call
 * succeeds), up to --wait, after which the command exits 2 saying how long it waited and why.
 * Plus the progress reporter and the --wait parser, on their own.
 */
import t from 'tap';
import { progressReporter } from '../dist/cli/progress.js';
import { parseWait } from '../dist/cli/remote.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { multipart, sha256, startApp, until } from './helpers/server.js';

const hanging = modelBytes('separable.onnx');
const { app, context } = await startApp(t, {
  maxQueue: 0,
  requestTimeoutMs: 60_000,
  workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)}` },
});
const upload = multipart([{ name: 'model', filename: 'separable.onnx', data: hanging }]);
await app.inject({ method: 'POST', url: '/v1/models', payload: upload.payload, headers: upload.headers });
await app.listen({ host: '127.0.0.1', port: 0 });
const URL_ = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
const MLP = modelPath('mlp.onnx');
const ARGS = ['--samples', '8', '--seed', '3', '--k', '3', '--json'];
/** Timings, and whether the noise measurement was cached (a second run's is), differ between two runs. */
const withoutTimings = (text: string): unknown =>
  JSON.parse(text, (key, v) => (key === 'timings' || (key === 'noise' && v !== null && typeof v === 'object' && 'cached' in v) ? undefined : v));

/** Occupy the one worker (the queue holds nothing: maxQueue 0), so every other task gets 503. */
async function holdTheWorker(): Promise<() => Promise<void>> {
  const accepted = await app.inject({
    method: 'POST',
    url: `/v1/models/${sha256(hanging)}/penalty`,
    headers: { 'content-type': 'application/json', prefer: 'respond-async' },
    payload: { k: 2, seed: 1, latents: { samples: 2 } },
  });
  if (accepted.statusCode !== 202) throw new Error(`the blocker was not accepted: ${accepted.statusCode} ${accepted.body}`);
  await until(() => context.pool.status().running === 1, 'the blocker to run');
  return async () => {
    await app.inject({ method: 'DELETE', url: accepted.headers.location as string });
    await until(() => context.pool.status().running === 0 && context.pool.ready(), 'the worker to be replaced', 60_000);
  };
}

const served503 = async (): Promise<number> => {
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  return [...metrics.matchAll(/hessian_audit_http_requests_total\{method="POST",route="[^"]+",status="503"\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
};

t.test('penalty and audit with --server print what the local run prints', async (t) => {
  for (const command of ['penalty', 'audit']) {
    const remote = await cli(command, MLP, ...ARGS, '--server', URL_, '--quiet');
    t.equal(remote.code, 0, remote.stderr);
    t.match(remote.stderr, command === 'penalty' ? /uploaded .*mlp\.onnx \(sha256 [0-9a-f]{12}\)/ : /^$/, 'uploaded once');
    const local = await cli(command, MLP, ...ARGS);
    t.equal(local.code, 0, local.stderr);
    // The batch cut of a request of 1,024+ rows is the session's tuned size, measured (timed) per
    // session: two sessions may cut differently, the numbers may not differ.
    const perSession = new Set(['device', 'executionProvider', 'batches', 'batchRows', 'batchRowsFrom']);
    // The step-halving's rows are spent by the session's first request on these latents (its cache).
    const strip = (r: unknown) =>
      JSON.parse(JSON.stringify(r, (key, v) => (perSession.has(key) ? undefined : key === 'halving' && v && 'cached' in v ? { ...v, rows: undefined, cached: undefined } : v)));
    t.same(strip(withoutTimings(remote.stdout)), strip(withoutTimings(local.stdout)), `${command}: the same numbers`);
  }
});

t.test('local-only flags are refused with --server, before anything is sent', async (t) => {
  const r = await cli('audit', MLP, '--server', URL_, '--report', '/tmp/x.html');
  t.equal(r.code, 2);
  t.match(r.stderr, /^error: --report applies to local runs; with --server, ask the server for the report \(Accept: text\/html, docs\/server\.md\)/);
  const w = await cli('penalty', MLP, '--server', URL_, '--wait', 'soon');
  t.equal(w.code, 2);
  t.match(w.stderr, /^error: --wait takes a duration such as 90s, 10m or 1h, got 'soon'/);
});

t.test('a client facing 503s waits its turn, then succeeds', async (t) => {
  const release = await holdTheWorker();
  const before = await served503();
  const pending = cli('penalty', MLP, ...ARGS, '--server', URL_, '--wait', '60s', '--quiet');
  // State, not time: release the worker once the client has really been turned away.
  for (let i = 0; i < 3000 && (await served503()) === before; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok((await served503()) > before, 'the server answered 503');
  await release();
  const r = await pending;
  t.equal(r.code, 0, r.stderr);
  const local = await cli('penalty', MLP, ...ARGS);
  t.same((withoutTimings(r.stdout) as { penalty: number }).penalty, (withoutTimings(local.stdout) as { penalty: number }).penalty);
});

t.test('past --wait the client gives up with exit 2, saying how long it waited and why', async (t) => {
  const release = await holdTheWorker();
  t.teardown(release);
  const busy = /it kept answering POST \/v1\/(models\/[0-9a-f]{64}\/penalty|gate) with 503 \(all 1 workers are busy and 0 requests are waiting \(queue limit 0\); retry later\)$/;
  const r = await cli('penalty', MLP, ...ARGS, '--server', URL_, '--wait', '2s');
  t.equal(r.code, 2);
  t.match(r.stderr.trim(), /^error: gave up after waiting 2 s in all \(--wait 2 s\) for the server at http:\/\/127\.0\.0\.1:\d+: /);
  t.match(r.stderr.trim(), busy);
  t.equal(r.stdout, '');
  const g = await cli('gate', '--candidate', MLP, '--baseline', MLP, '--samples', '4', '--server', URL_, '--wait', '1s');
  t.equal(g.code, 2);
  t.match(g.stderr.trim(), /^error: gave up after waiting 1 s in all \(--wait 1 s\)/);
  t.match(g.stderr.trim(), busy);
});

t.test('--wait durations', async (t) => {
  t.equal(parseWait('90s'), 90_000);
  t.equal(parseWait('10m'), 600_000);
  t.equal(parseWait('1h'), 3_600_000);
  t.equal(parseWait('250ms'), 250);
  t.equal(parseWait('3'), 3000);
  t.throws(() => parseWait('-1s'), { code: 'invalid_argument' });
});

t.test('progress: a bar on a terminal, a line every few seconds elsewhere, nothing when quiet', async (t) => {
  let now = 0;
  const lines: string[] = [];
  const plain = progressReporter({ stream: { isTTY: false, write: (s: string) => lines.push(s) }, everyMs: 5000, now: () => now })!;
  plain(1, 8, 'penalty');
  now = 4999;
  plain(2, 8, 'penalty');
  t.same(lines, [], 'nothing before the first interval');
  now = 5000;
  plain(3, 8, 'penalty');
  now = 6000;
  plain(4, 8, 'penalty');
  now = 10_000;
  plain(5, 8, 'hessian');
  t.same(lines, ['penalty 3/8 chunks (5 s)\n', 'hessian 5/8 chunks (10 s)\n']);

  const drawn: string[] = [];
  const bar = progressReporter({ stream: { isTTY: true, write: (s: string) => drawn.push(s) } })!;
  bar(1, 2, 'penalty');
  bar(1, 2, 'penalty');
  bar(2, 2, 'penalty');
  t.same(drawn, [`\r${'penalty'.padEnd(13)} [${'#'.repeat(15)}${'-'.repeat(15)}] 1/2`, `\r${'penalty'.padEnd(13)} [${'#'.repeat(30)}] 2/2`, '\n'], 'a repeated point is drawn once');
  t.equal(progressReporter({ quiet: true, stream: { isTTY: true, write: () => t.fail('quiet writes nothing') } }), undefined);
});
