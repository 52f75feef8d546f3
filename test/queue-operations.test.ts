/**
 * Operating jobs on Redis (issue 29), with real servers and a real redis-server: SIGTERM drains the
 * jobs running on a server within --drain-timeout; a Redis killed and restarted (append-only file,
 * synced per write) loses no acknowledged job while /readyz says queue: down (503), then ready;
 * /metrics gives the service's backlog, the same figure on every server.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { startRedis } from './helpers/redis.js';
import { get, type ServerChild, spawnServer, until, upload } from './helpers/serve-child.js';
import { figureDifference } from './helpers/figures.js';
import { sha256 } from './helpers/server.js';

const mlp = modelBytes('mlp.onnx');
const hanging = modelBytes('separable.onnx');
const REQUEST = { k: 4, seed: 3, latents: { samples: 16 } };
const ASYNC = { prefer: 'respond-async' };
const LOCK = { HESSIAN_AUDIT_JOB_LOCK_MS: '1500' };

type Json = Record<string, any>;

const post = async (url: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Json }> => {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal: AbortSignal.timeout(120_000) });
  return { status: res.status, body: (await res.json()) as Json };
};
const view = async (url: string, id: string): Promise<Json> => (await get(url, `/v1/jobs/${id}`)).body as Json;

function folder(t: Tap.Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('SIGTERM mid-job: the job finishes on this server within --drain-timeout, then it exits 0', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const dir = folder(t, 'ha-drain-');
  const server = (env: Record<string, string> = {}): Promise<ServerChild> =>
    spawnServer(t, ['--queue', `${redis.url}/1`, '--workers', '1', '--drain-timeout', '20'], { dir, env: { ...LOCK, ...env } });
  // Two seconds of blocked worker before the normal run: SIGTERM arrives while the job runs.
  const a = await server({ HESSIAN_AUDIT_TEST_FAULTS: `delay=${sha256(mlp)}` });
  const id = (await upload(a.url, mlp)).body.id as string;
  const job = (await post(a.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC)).body.id as string;
  await until(async () => (await view(a.url, job)).state === 'running', 'the job running on A');
  a.proc.kill('SIGTERM');
  t.same(await a.exited, { code: 0, signal: null }, 'A exits 0');
  t.match(a.stderr(), /SIGTERM: finishing requests in flight and, for up to 20 s, the jobs running here \(the rest go back to the queue\), then exiting/);
  const b = await server();
  const done = await view(b.url, job);
  t.equal(done.state, 'succeeded', 'finished by A before it exited');
  const sync = await post(b.url, `/v1/models/${id}/penalty`, REQUEST);
  t.equal(figureDifference(done.result, sync.body), null, 'with the synchronous numbers');
});

t.test('Redis killed and restarted: /readyz 503 queue down, then ready; no acknowledged job lost', async (t) => {
  const data = folder(t, 'ha-redis-aof-');
  const redis = await startRedis(t, { dir: data });
  if (!redis) return;
  const dir = folder(t, 'ha-restart-');
  const a = await spawnServer(t, ['--queue', `${redis.url}/1`, '--workers', '1'], { dir, env: { ...LOCK, HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)}` } });
  const ready = await get(a.url, '/readyz');
  t.equal(ready.status, 200);
  t.equal(ready.body.queue, 'up');
  const [held, id] = [(await upload(a.url, hanging)).body.id as string, (await upload(a.url, mlp)).body.id as string];
  // The one worker is held: the acknowledged job waits in Redis when Redis dies.
  const blocker = (await post(a.url, `/v1/models/${held}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC)).body.id as string;
  await until(async () => (await view(a.url, blocker)).state === 'running', 'the blocker running');
  const accepted = await post(a.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC);
  t.equal(accepted.status, 202);
  const job = accepted.body.id as string;

  redis.proc.kill('SIGKILL');
  await redis.exited;
  await until(async () => (await get(a.url, '/readyz')).status === 503, '/readyz 503');
  const down = await get(a.url, '/readyz');
  t.equal(down.body.queue, 'down');
  t.equal(down.body.status, 'not_ready');
  const unreachable = await get(a.url, `/v1/jobs/${job}`);
  t.equal(unreachable.status, 503);
  t.equal(unreachable.body.error?.code, 'queue_unreachable');
  t.match(unreachable.body.error?.message, new RegExp(`^the job queue \\(Redis at redis://127\\.0\\.0\\.1:${redis.port}/1\\) cannot be reached now: .*; retry shortly$`));
  t.equal(unreachable.headers.get('retry-after'), '5');
  t.equal((await get(a.url, '/healthz')).status, 200, 'alive all along');

  const again = await startRedis(t, { dir: data, port: redis.port });
  t.ok(again, 'Redis restarted on the same port and folder');
  await until(async () => (await get(a.url, '/readyz')).status === 200, '/readyz 200 again', 60_000);
  t.equal((await get(a.url, '/readyz')).body.queue, 'up');
  t.equal((await view(a.url, job)).state, 'queued', 'the acknowledged job is still there');
  t.equal((await fetch(`${a.url}/v1/jobs/${blocker}`, { method: 'DELETE' })).status, 200);
  await until(async () => ['succeeded', 'failed'].includes((await view(a.url, job)).state), 'the job', 60_000);
  const done = await view(a.url, job);
  t.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const sync = await post(a.url, `/v1/models/${id}/penalty`, REQUEST);
  t.equal(figureDifference(done.result, sync.body), null, 'with the synchronous numbers');
});

t.test('roles: an api server with no worker accepts a job that a worker server started later finishes; /metrics gives the service backlog', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const dir = folder(t, 'ha-roles-');
  const api = await spawnServer(t, ['--queue', `${redis.url}/1`, '--role', 'api'], { dir, env: LOCK });
  t.match(api.stderr(), /role api: answers the API, runs no job \(synchronous calls wait on the queue\)/);
  const id = (await upload(api.url, mlp)).body.id as string;
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push((await post(api.url, `/v1/models/${id}/penalty`, { ...REQUEST, seed: i + 1 }, ASYNC)).body.id as string);
  // A second api server: the backlog is the service's, the same figure on both.
  const api2 = await spawnServer(t, ['--queue', `${redis.url}/1`, '--role', 'api'], { dir, env: LOCK });
  for (const server of [api, api2]) {
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    t.match(metrics, /\nhessian_audit_jobs_backlog 3\n/, 'three jobs waiting in the service');
    t.match(metrics, /\nhessian_audit_jobs\{state="queued"\} 3\n/);
  }
  t.equal((await view(api2.url, jobs[0])).state, 'queued', 'no worker: it waits');
  // A synchronous call on an api server waits on the queue like a job.
  const sync = post(api.url, `/v1/models/${id}/penalty`, REQUEST);

  const worker = await spawnServer(t, ['--queue', `${redis.url}/1`, '--role', 'worker'], { dir, env: LOCK });
  t.match(worker.stderr(), /role worker: runs jobs; only \/healthz, \/readyz and \/metrics answer/);
  t.equal((await get(worker.url, `/v1/jobs/${jobs[0]}`)).status, 404, 'a worker takes no client traffic');
  t.equal((await get(worker.url, '/readyz')).status, 200);
  const answered = await sync;
  t.equal(answered.status, 200, 'the synchronous call on the api server is answered');
  for (const job of jobs) await until(async () => (await view(api.url, job)).state === 'succeeded', 'the jobs', 60_000);
  const first = await view(api2.url, jobs[2]);
  t.equal(figureDifference(first.result, (await post(api.url, `/v1/models/${id}/penalty`, { ...REQUEST, seed: 3 })).body), null, 'the job = the synchronous call');
  t.equal(figureDifference(answered.body, first.result), null, 'the synchronous call through the queue = the job with the same request');
  t.equal(answered.body.seed, 3);
  const metrics = await (await fetch(`${api.url}/metrics`)).text();
  t.match(metrics, /\nhessian_audit_jobs_backlog 0\n/, 'nothing left');

  // A model the api server does not know: 404 at once, as on any server.
  const unknown = await post(api.url, `/v1/models/${'a'.repeat(64)}/penalty`, REQUEST);
  t.equal(unknown.status, 404);
  // A failure of the job is the synchronous call's own error, status and all.
  const bad = await post(api.url, `/v1/models/${id}/penalty`, { ...REQUEST, layers: ['nope'] });
  t.equal(bad.status, 422);
  t.equal(bad.body.error.code, 'unknown_layer');
});

t.test('--role without --queue, or an unknown role: exit 2 with the reason', async (t) => {
  const { spawnCli } = await import('./helpers/cli.js');
  const r = spawnCli('serve', '--port', '0', '--role', 'api');
  t.equal(r.code, 2);
  t.equal(r.stderr, 'error: --role api needs --queue: the API and the workers share their jobs through Redis\n');
  const bad = spawnCli('serve', '--port', '0', '--role', 'gpu');
  t.equal(bad.code, 2);
  t.equal(bad.stderr, 'error: --role gpu: give all, api or worker\n');
});

t.test('a synchronous call on an api server whose client hangs up: its job is cancelled where it runs', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const dir = folder(t, 'ha-roles-gone-');
  const api = await spawnServer(t, ['--queue', `${redis.url}/1`, '--role', 'api'], { dir, env: LOCK });
  const worker = await spawnServer(t, ['--queue', `${redis.url}/1`, '--role', 'worker'], { dir, env: { ...LOCK, HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)}` } });
  const [held, id] = [(await upload(api.url, hanging)).body.id as string, (await upload(api.url, mlp)).body.id as string];
  const backlog = async (): Promise<number> => Number(/\nhessian_audit_jobs_backlog (\d+)\n/.exec(await (await fetch(`${api.url}/metrics`)).text())![1]);
  const controller = new AbortController();
  const call = fetch(`${api.url}/v1/models/${held}/penalty`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ k: 2, seed: 1, latents: { samples: 2 } }), signal: controller.signal }).catch((err: Error) => err);
  await until(async () => (await backlog()) === 1, 'the call running as a job');
  controller.abort();
  t.type(await call, Error, 'the client gave up');
  await until(async () => (await backlog()) === 0, 'the job cancelled');
  // The worker's hung process was replaced: the next call runs.
  const next = await post(api.url, `/v1/models/${id}/penalty`, REQUEST);
  t.equal(next.status, 200, JSON.stringify(next.body.error));
  t.equal((await get(worker.url, '/readyz')).status, 200);
});
