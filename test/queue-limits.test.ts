/**
 * The bounds of jobs on Redis (issue 28): the service's unfinished jobs (too_many_jobs), one
 * client's (client_limit), a result too large to keep, a body too large to accept; and the HTML
 * report kept as a job's non-JSON result. An app with the Redis backend, against a real redis-server.
 */
import t from 'tap';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { parseQueueUrl } from '../dist/server/redis-queue.js';
import { modelBytes } from './helpers/reference.js';
import { startRedis } from './helpers/redis.js';
import { until } from './helpers/serve-child.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const mlp = modelBytes('mlp.onnx');
const hanging = modelBytes('separable.onnx');
const REQUEST = { k: 2, seed: 1, latents: { samples: 2 } };
const ASYNC = { prefer: 'respond-async', 'content-type': 'application/json' };

type Json = Record<string, any>;

/** An app whose jobs are on a fresh Redis, the two models stored; closed at the end of the test. */
async function queued(t: Tap.Test, overrides: Parameters<typeof startApp>[1] = {}) {
  const redis = await startRedis(t);
  if (!redis) return null;
  const started = await startApp(t, {
    queue: parseQueueUrl(`${redis.url}/2`),
    limits: { ...DEFAULT_LIMITS },
    workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)}` },
    ...overrides,
  });
  const { app } = started;
  for (const bytes of [mlp, hanging]) {
    const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
    const r = await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
    if (r.statusCode !== 201) throw new Error(`upload: ${r.statusCode} ${r.body}`);
  }
  const submit = async (bytes: Uint8Array, request: unknown = REQUEST, headers: Record<string, string> = {}) => {
    const r = await app.inject({ method: 'POST', url: `/v1/models/${sha256(bytes)}/penalty`, headers: { ...ASYNC, ...headers }, payload: JSON.stringify(request) });
    return { status: r.statusCode, headers: r.headers, body: r.json() as Json };
  };
  const view = async (id: string): Promise<Json> => (await app.inject({ method: 'GET', url: `/v1/jobs/${id}` })).json() as Json;
  const cancel = (id: string) => app.inject({ method: 'DELETE', url: `/v1/jobs/${id}` });
  // Closed here, while its Redis still runs (the Redis is stopped at teardown).
  t.teardown(() => app.close());
  return { ...started, submit, view, cancel };
}

t.test('the service holds at most maxJobs unfinished jobs: one more is 503 too_many_jobs with Retry-After', async (t) => {
  const q = await queued(t, { jobs: { maxJobs: 2 } });
  if (!q) return;
  const first = await q.submit(hanging);
  const second = await q.submit(hanging);
  t.same([first.status, second.status], [202, 202]);
  await until(async () => (await q.view(first.body.id)).state === 'running', 'the first job running');
  t.equal((await q.view(second.body.id)).state, 'queued', 'the second waits in Redis (one worker)');
  const third = await q.submit(mlp);
  t.equal(third.status, 503);
  t.equal(third.body.error.code, 'too_many_jobs');
  t.equal(third.body.error.message, 'the service already holds 2 unfinished jobs (limit 2); retry when some have finished');
  t.equal(third.headers['retry-after'], '5');
  t.equal((await q.cancel(second.body.id)).statusCode, 200);
  const fourth = await q.submit(mlp);
  t.equal(fourth.status, 202, 'room again once one was cancelled');
  t.equal((await q.cancel(first.body.id)).statusCode, 200);
  await until(async () => (await q.view(fourth.body.id)).state === 'succeeded', 'the mlp job');
  const counts = await q.app.inject({ method: 'GET', url: '/metrics' });
  t.match(counts.body, /hessian_audit_jobs\{state="succeeded"\} 1/);
});

t.test('one client holds at most --max-per-client unfinished jobs in the service: 503 client_limit', async (t) => {
  const q = await queued(t, { maxPerClient: 1 });
  if (!q) return;
  const first = await q.submit(hanging);
  t.equal(first.status, 202);
  const second = await q.submit(mlp);
  t.equal(second.status, 503);
  t.equal(second.body.error.code, 'client_limit');
  t.equal(
    second.body.error.message,
    'this client (127.0.0.1) already has 1 jobs queued or running in the service, the most one client may have (per-client limit 1, --max-per-client); wait for one to finish',
  );
  t.equal(second.body.error.details.limit, 1);
  t.equal((await q.cancel(first.body.id)).statusCode, 200);
  // The running job ends on its server once the cancel has aborted it; then the client has room.
  let third = second;
  await until(async () => (third = await q.submit(mlp)).status === 202, 'room for the client');
  await until(async () => (await q.view(third.body.id)).state === 'succeeded', 'its job');
  t.pass('the client’s next job ran');
});

t.test('a result larger than a job keeps fails it with result_too_large; a body too large is 413 before any job', async (t) => {
  const q = await queued(t, { jobs: { maxResultBytes: 100 }, maxBodyBytes: 64 * 1024 });
  if (!q) return;
  const job = await q.submit(mlp);
  t.equal(job.status, 202);
  await until(async () => (await q.view(job.body.id)).state === 'failed', 'the job failing');
  const failed = await q.view(job.body.id);
  t.equal(failed.error.code, 'result_too_large');
  t.match(failed.error.message, /^the job's result is \d+ bytes, more than this server keeps for a job \(100\)/);
  t.equal(failed.error.details.limit, 100);
  const result = await q.app.inject({ method: 'GET', url: `/v1/jobs/${job.body.id}/result` });
  t.equal(result.statusCode, 409);
  t.equal(result.json().error.code, 'job_not_done');

  const big = await q.submit(mlp, { ...REQUEST, latents: Array.from({ length: 5000 }, () => Array.from({ length: 4 }, () => 0.5)) });
  t.equal(big.status, 413);
  t.equal(big.body.error.code, 'payload_too_large');
});

t.test("the HTML report as a job: named by its type in the view, sent as HTML by /result", async (t) => {
  const q = await queued(t);
  if (!q) return;
  const job = await q.submit(mlp, REQUEST, { accept: 'text/html' });
  t.equal(job.status, 202);
  await until(async () => (await q.view(job.body.id)).state === 'succeeded', 'the report job', 60_000);
  const done = await q.view(job.body.id);
  t.equal(done.resultType, 'text/html; charset=utf-8');
  t.notOk('result' in done);
  const result = await q.app.inject({ method: 'GET', url: `/v1/jobs/${job.body.id}/result` });
  t.equal(result.headers['content-type'], 'text/html; charset=utf-8');
  const sync = await q.app.inject({ method: 'POST', url: `/v1/models/${sha256(mlp)}/penalty`, headers: { 'content-type': 'application/json', accept: 'text/html' }, payload: JSON.stringify(REQUEST) });
  t.equal(sync.statusCode, 200);
  t.match(result.body, /^<!doctype html>/i);
  t.equal(result.body.length > 1000, true, 'a whole report');
});
