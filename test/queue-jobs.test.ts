/**
 * Jobs on Redis (issue 28): two real servers on one redis-server and one model folder, as two pods
 * share a Redis and a volume. A job submitted to A is read, streamed, fetched and cancelled through B;
 * a server killed mid-job has its job finished by another with the synchronous numbers; a job that
 * stalls twice fails with worker_crashed; a model deleted before its job runs is unknown_model.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
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
const HANG = (bytes: Uint8Array) => ({ HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(bytes)}` });
/** Short locks: a killed server's job is taken again within seconds, not BullMQ's default 30 s. */
const LOCK = { HESSIAN_AUDIT_JOB_LOCK_MS: '1500' };

type Json = Record<string, any>;

const post = async (url: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Json }> => {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal: AbortSignal.timeout(120_000) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Json };
};
const view = async (url: string, id: string): Promise<Json> => (await get(url, `/v1/jobs/${id}`)).body as Json;


/** One Redis and one model folder for a test; `server` starts a server on both. */
async function cluster(t: Tap.Test) {
  const redis = await startRedis(t);
  if (!redis) return null;
  const dir = mkdtempSync(join(tmpdir(), 'ha-queue-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = (env: Record<string, string> = {}, args: string[] = []): Promise<ServerChild> =>
    spawnServer(t, ['--queue', `${redis.url}/1`, '--workers', '1', ...args], { dir, env: { ...LOCK, ...env } });
  return { redis, dir, server };
}

/** The events of a job's stream until its "done" event. */
async function events(url: string): Promise<{ event: string; data: Json }[]> {
  const text = await (await fetch(url, { signal: AbortSignal.timeout(60_000) })).text();
  return text
    .split('\n\n')
    .filter((block) => block.trim().length > 0)
    .map((block) => {
      const lines = block.split('\n');
      return { event: lines.find((l) => l.startsWith('event: '))!.slice(7), data: JSON.parse(lines.find((l) => l.startsWith('data: '))!.slice(6)) as Json };
    });
}

t.test('the comparison of two results: figures to float rounding, plan and timings aside', async (t) => {
  const base = { penalty: 2.5, layers: [{ name: 'image', penalty: 2.5 }], seed: 3, batches: 1, batchRows: 40, timings: { totalMs: 3 } };
  t.equal(figureDifference(base, { ...base, batches: 2, batchRows: 20, timings: { totalMs: 9 } }), null, 'plan and timings aside');
  t.equal(figureDifference(base, { ...base, penalty: 2.5 * (1 + 1e-8) }), null, 'float rounding');
  t.equal(figureDifference(base, { ...base, layers: [{ name: 'image', penalty: 2.6 }] }), '$.layers[0].penalty: 2.5 ≠ 2.6');
  t.equal(figureDifference(base, { ...base, seed: 4 }), '$.seed: 3 ≠ 4');
  t.equal(figureDifference(base, { ...base, layers: [] }), '$.layers: 1 items ≠ 0');
});

t.test('a job submitted to A: read, streamed and fetched through B, with the synchronous numbers', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  const [a, b] = await Promise.all([c.server(), c.server()]);
  const id = (await upload(a.url, mlp)).body.id as string;
  const accepted = await post(a.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC);
  t.equal(accepted.status, 202);
  const location = accepted.headers.get('location')!;
  t.match(location, /^\/v1\/jobs\/[0-9a-f-]{36}$/);
  const job = accepted.body.id as string;
  const stream = await events(`${b.url}${location}/events`);
  t.equal(stream.at(-1)!.event, 'done', 'the stream from B ends with done');
  t.equal(stream.at(-1)!.data.state, 'succeeded');
  const done = await view(b.url, job);
  t.equal(done.state, 'succeeded');
  t.equal(done.route, 'penalty');
  t.ok(done.progress.done > 0 && done.progress.done === done.progress.total, 'progress counted to the end');
  const sync = await post(b.url, `/v1/models/${id}/penalty`, REQUEST);
  t.equal(sync.status, 200);
  t.equal(figureDifference(done.result, sync.body), null, 'the job equals the synchronous route');
  const result = await get(a.url, `${location}/result`);
  t.equal(result.status, 200);
  t.equal(figureDifference(result.body, sync.body), null, 'GET …/result from A too');
  t.equal((await get(b.url, '/v1/jobs/00000000-0000-0000-0000-000000000000')).body.error?.code, 'unknown_job');
  // Forgotten through A: gone for B as well.
  t.equal((await fetch(`${a.url}${location}`, { method: 'DELETE' })).status, 200);
  const gone = await get(b.url, location);
  t.equal(gone.status, 404);
  t.equal(gone.body.error?.code, 'unknown_job');
});

t.test('the one-shot penalty and the gate as jobs on Redis give the synchronous results', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  const [a, b] = await Promise.all([c.server(), c.server()]);
  const form = (): FormData => {
    const f = new FormData();
    f.append('model', new Blob([mlp]), 'g.onnx');
    f.append('request', JSON.stringify(REQUEST));
    return f;
  };
  const accepted = await fetch(`${a.url}/v1/penalty`, { method: 'POST', body: form(), headers: ASYNC });
  t.equal(accepted.status, 202);
  const location = accepted.headers.get('location')!;
  await until(async () => ['succeeded', 'failed'].includes((await get(b.url, location)).body.state as string), 'the one-shot job');
  const oneShot = (await get(b.url, location)).body;
  t.equal(oneShot.state, 'succeeded', JSON.stringify(oneShot.error));
  const sync = (await (await fetch(`${b.url}/v1/penalty`, { method: 'POST', body: form() })).json()) as Json;
  t.equal(figureDifference(oneShot.result, sync), null, 'one-shot job = synchronous one-shot');
  t.same(readdirSync(join(c.dir, '.jobs')), [], "the job's copy of the upload is gone once it ended");
  t.same(readdirSync(c.dir).filter((name) => name.endsWith('.onnx')), [], 'and nothing was stored');

  const id = (await upload(a.url, mlp)).body.id as string;
  const gate = { candidate: id, baseline: id, penalty: { samples: 8, seed: 1 }, resamples: 200 };
  const gated = await post(b.url, '/v1/gate', gate, ASYNC);
  t.equal(gated.status, 202);
  await until(async () => ['succeeded', 'failed'].includes((await view(a.url, gated.body.id)).state), 'the gate job');
  const gateJob = await view(a.url, gated.body.id);
  t.equal(gateJob.state, 'succeeded', JSON.stringify(gateJob.error));
  const gateSync = await post(a.url, '/v1/gate', gate);
  t.equal(figureDifference(gateJob.result, gateSync.body), null, 'gate job = synchronous gate');
  // Refused before a job exists, as without Redis.
  const unknown = await post(b.url, '/v1/gate', { ...gate, baseline: 'a'.repeat(64) }, ASYNC);
  t.equal(unknown.status, 404);
  t.equal(unknown.body.error.code, 'unknown_model');
});

t.test('a job running on A is streamed and cancelled through B; A goes on serving', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  const a = await c.server(HANG(hanging));
  const id = (await upload(a.url, hanging)).body.id as string;
  const accepted = await post(a.url, `/v1/models/${id}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  const job = accepted.body.id as string;
  await until(async () => (await view(a.url, job)).state === 'running', 'the job running on A');
  // B starts after A took the job: the cancel must cross to A.
  const b = await c.server();
  const streamed = events(`${b.url}/v1/jobs/${job}/events`);
  await until(async () => (await view(b.url, job)).state === 'running', 'B seeing it running');
  const cancelled = await fetch(`${b.url}/v1/jobs/${job}`, { method: 'DELETE' });
  t.equal(cancelled.status, 200);
  t.equal(((await cancelled.json()) as Json).state, 'cancelled');
  const stream = await streamed;
  t.equal(stream.at(-1)!.event, 'done');
  t.equal(stream.at(-1)!.data.state, 'cancelled');
  t.equal(stream.at(-1)!.data.error.code, 'cancelled');
  t.equal((await view(a.url, job)).state, 'cancelled', 'A says cancelled too');
  // A's worker was replaced: A's next job runs.
  const mlpId = (await upload(a.url, mlp)).body.id as string;
  const next = await post(a.url, `/v1/models/${mlpId}/penalty`, REQUEST, ASYNC);
  await until(async () => (await view(b.url, next.body.id)).state === 'succeeded', 'the next job', 60_000);
  t.pass('the next job succeeded');
});

t.test('A killed mid-job: B takes the job again and finishes it with the synchronous numbers', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  // A hangs on the model (a stuck native call); B runs it normally.
  const a = await c.server(HANG(mlp));
  const id = (await upload(a.url, mlp)).body.id as string;
  const accepted = await post(a.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC);
  const job = accepted.body.id as string;
  await until(async () => (await view(a.url, job)).state === 'running', 'the job running on A');
  a.proc.kill('SIGKILL');
  await a.exited;
  const b = await c.server();
  await until(async () => ['succeeded', 'failed'].includes((await view(b.url, job)).state), 'B finishing the job', 60_000);
  const done = await view(b.url, job);
  t.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const sync = await post(b.url, `/v1/models/${id}/penalty`, REQUEST);
  t.equal(figureDifference(done.result, sync.body), null, 'the rerun equals the synchronous route');
});

t.test('A stopped with SIGTERM, its job still running at the end of the drain: A exits 0 and hands it back; B finishes it', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  const a = await c.server(HANG(mlp), ['--drain-timeout', '1']);
  const id = (await upload(a.url, mlp)).body.id as string;
  const job = (await post(a.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC)).body.id as string;
  await until(async () => (await view(a.url, job)).state === 'running', 'the job running on A');
  a.proc.kill('SIGTERM');
  t.same(await a.exited, { code: 0, signal: null }, 'A exits 0');
  // Back in BullMQ's wait list at once (a killed server's job stays active until its lock expires).
  const redis = new Redis({ host: '127.0.0.1', port: c.redis.port, db: 1, lazyConnect: true });
  t.teardown(() => redis.disconnect());
  await redis.connect();
  t.ok((await redis.lrange('bull:hessian-audit-jobs:wait', 0, -1)).includes(job), 'in the wait list');
  t.same(await redis.lrange('bull:hessian-audit-jobs:active', 0, -1), [], 'and not active');
  const b = await c.server();
  await until(async () => ['succeeded', 'failed'].includes((await view(b.url, job)).state), 'B finishing the job', 60_000);
  const done = await view(b.url, job);
  t.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const sync = await post(b.url, `/v1/models/${id}/penalty`, REQUEST);
  t.equal(figureDifference(done.result, sync.body), null, 'the same numbers as the synchronous route');
});

t.test('a job that stalls twice fails with worker_crashed, not forever', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  const first = await c.server(HANG(mlp));
  const id = (await upload(first.url, mlp)).body.id as string;
  const job = (await post(first.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC)).body.id as string;
  await until(async () => (await view(first.url, job)).state === 'running', 'the job running on the first server');
  const firstStart = (await view(first.url, job)).startedAt as string;
  first.proc.kill('SIGKILL');
  await first.exited;
  // The second server takes it again once the first one's lock expired, and hangs as well.
  const second = await c.server(HANG(mlp));
  await until(async () => {
    const v = await view(second.url, job);
    return v.state === 'running' && v.startedAt !== firstStart;
  }, 'the job taken again', 60_000);
  second.proc.kill('SIGKILL');
  await second.exited;
  const third = await c.server();
  await until(async () => (await view(third.url, job)).state === 'failed', 'the job failing', 60_000);
  const failed = await view(third.url, job);
  t.equal(failed.error.code, 'worker_crashed');
  t.match(failed.error.message, /stopped \(killed, or out of memory\) twice/);
});

t.test('a model deleted before its job runs: the job fails with unknown_model, the server goes on', async (t) => {
  const c = await cluster(t);
  if (!c) return;
  // One worker, held by a hanging job: the next job waits in Redis.
  const a = await c.server(HANG(hanging));
  const [held, id] = [(await upload(a.url, hanging)).body.id as string, (await upload(a.url, mlp)).body.id as string];
  const blocker = (await post(a.url, `/v1/models/${held}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC)).body.id as string;
  await until(async () => (await view(a.url, blocker)).state === 'running', 'the blocker running');
  const job = (await post(a.url, `/v1/models/${id}/penalty`, REQUEST, ASYNC)).body.id as string;
  t.equal((await view(a.url, job)).state, 'queued');
  t.equal((await fetch(`${a.url}/v1/models/${id}`, { method: 'DELETE' })).status, 204);
  t.equal((await fetch(`${a.url}/v1/jobs/${blocker}`, { method: 'DELETE' })).status, 200);
  await until(async () => (await view(a.url, job)).state === 'failed', 'the job failing', 60_000);
  const failed = await view(a.url, job);
  t.equal(failed.error.code, 'unknown_model');
  t.match(failed.error.message, new RegExp(`no model with id '${id}' is stored here`));
  t.equal((await get(a.url, '/healthz')).status, 200);
});
