/**
 * Jobs on Redis, first step (issue 28): `serve --queue redis://HOST:PORT[/DB]` reaches Redis through
 * BullMQ before it listens; a malformed URL or an unreachable Redis is one line and exit 2, no stack
 * trace. Against a real redis-server on a free port (helpers/redis.ts).
 */
import { Redis } from 'ioredis';
import t from 'tap';
import { spawnCli } from './helpers/cli.js';
import { freePort, REDIS_INSTALL, redisVerdict, startRedis } from './helpers/redis.js';
import { get, spawnServer } from './helpers/serve-child.js';

t.test('when the queue tests run, skip or fail', async (t) => {
  t.same(redisVerdict({ HESSIAN_AUDIT_REDIS_SERVER: '/bin/sh' }), { run: '/bin/sh' });
  const missing = '/nowhere/redis-server';
  t.same(redisVerdict({ HESSIAN_AUDIT_REDIS_SERVER: missing }), {
    skip: `the queue tests need redis-server at ${missing} (HESSIAN_AUDIT_REDIS_SERVER overrides the path); install it with: ${REDIS_INSTALL}`,
  });
  t.same(redisVerdict({ HESSIAN_AUDIT_REDIS_SERVER: missing, CI: 'true' }), {
    fail: `the queue tests need redis-server at ${missing} (HESSIAN_AUDIT_REDIS_SERVER overrides the path); CI is set, so a missing Redis is a failure`,
  });
});

t.test('a malformed --queue: exit 2 and what is wrong, before anything starts', async (t) => {
  const form = 'give redis://HOST:PORT[/DB] (rediss:// for TLS)';
  const cases: [string, string][] = [
    ['http://127.0.0.1:6379', `--queue http://127.0.0.1:6379: the scheme must be redis:// or rediss://; ${form}`],
    ['127.0.0.1:6379', `--queue '127.0.0.1:6379' is not a URL; ${form}`],
    ['not a url', `--queue 'not a url' is not a URL; ${form}`],
    ['redis://127.0.0.1:6379/16', `--queue redis://127.0.0.1:6379/16: the database must be a number from 0 to 15; ${form}`],
    ['redis://127.0.0.1:6379/jobs', `--queue redis://127.0.0.1:6379/jobs: the database must be a number from 0 to 15; ${form}`],
  ];
  for (const [url, message] of cases) {
    const r = spawnCli('serve', '--port', '0', '--queue', url);
    t.equal(r.code, 2, url);
    t.equal(r.stderr, `error: ${message}\n`, `${url}: one line`);
  }
});

t.test('an unreachable Redis: exit 2 with the reason, from the flag or the environment', async (t) => {
  const port = await freePort();
  const r = spawnCli('serve', '--port', '0', '--queue', `redis://127.0.0.1:${port}/2`);
  t.equal(r.code, 2);
  t.equal(r.stderr, `error: cannot reach Redis at redis://127.0.0.1:${port}/2 (--queue): connect ECONNREFUSED 127.0.0.1:${port}; start it, or fix the URL\n`);
  const fromEnv = spawnCliWithEnv({ HESSIAN_AUDIT_QUEUE: `redis://127.0.0.1:${port}` }, 'serve', '--port', '0');
  t.equal(fromEnv.code, 2);
  t.match(fromEnv.stderr, new RegExp(`^error: cannot reach Redis at redis://127\\.0\\.0\\.1:${port}/0 \\(--queue\\): connect ECONNREFUSED`));
});

t.test('a reachable Redis: the server starts, says so, and BullMQ has made its queue there', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const server = await spawnServer(t, ['--queue', `${redis.url}/3`]);
  t.match(server.stderr(), new RegExp(`queue: jobs on Redis 7\\.[0-9.]+ at redis://127\\.0\\.0\\.1:${redis.port}/3 \\(BullMQ queue hessian-audit-jobs\\)`));
  t.equal((await get(server.url, '/healthz')).status, 200);
  const client = new Redis({ port: redis.port, host: '127.0.0.1', db: 3, lazyConnect: true });
  t.teardown(() => client.disconnect());
  await client.connect();
  t.ok((await client.keys('bull:hessian-audit-jobs:*')).length > 0, "BullMQ's keys for the service's queue, in database 3");
  t.same(await client.select(0).then(() => client.keys('bull:*')), [], 'and nothing in database 0');
});

function spawnCliWithEnv(env: Record<string, string>, ...argv: string[]) {
  const previous = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return spawnCli(...argv);
  } finally {
    for (const [k, v] of Object.entries(previous)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
