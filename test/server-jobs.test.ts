/**
 * Jobs over a real socket (Prefer: respond-async): progress advances and the result equals the
 * synchronous one for the same seed; DELETE stops the work; a worker crash is a failed job with its
 * error; the bounds (count, result size, time to live); a restart forgets jobs; auth applies.
 */
import t from 'tap';
import { DEFAULT_LIMITS } from '../dist/contract/request.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, tempDir, until } from './helpers/server.js';

const mlp = modelBytes('mlp.onnx');
const hanging = modelBytes('separable.onnx');
const crashing = modelBytes('cubic.onnx');
const REQUEST = { k: 4, seed: 3, latents: { samples: 32 } };

type App = Awaited<ReturnType<typeof startApp>>;

/** An app on 127.0.0.1:0 with the three models stored; a small memory budget makes several chunks. */
async function serve(t: Parameters<typeof startApp>[0], overrides: Parameters<typeof startApp>[1] = {}): Promise<App & { base: string }> {
  const started = await startApp(t, {
    limits: { ...DEFAULT_LIMITS, memoryBudget: 20_000 },
    workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)},abort=${sha256(crashing)}` },
    ...overrides,
  });
  for (const bytes of [mlp, hanging, crashing]) {
    const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
    const r = await started.app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: { ...body.headers, ...(overrides.token ? { authorization: `Bearer ${overrides.token}` } : {}) } });
    if (r.statusCode !== 201 && r.statusCode !== 200) throw new Error(`upload: ${r.statusCode} ${r.body}`);
  }
  await started.app.listen({ host: '127.0.0.1', port: 0 });
  return { ...started, base: `http://127.0.0.1:${(started.app.server.address() as { port: number }).port}` };
}

const post = (base: string, path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
const ASYNC = { prefer: 'respond-async' };

/** Timings differ between two runs of the same work; everything else must not. */
/** Timings, and whether the noise measurement and the step-halving were cached (the second run's are), differ between two runs. */
const withoutTimings = (value: unknown): unknown =>
  JSON.parse(
    JSON.stringify(value, (key, v) => (key === 'timings' || ((key === 'noise' || key === 'halving') && v !== null && typeof v === 'object' && 'cached' in v) ? undefined : v)),
  );

/** The events of a job's stream until its "done" event; `opened` runs once the first event has arrived. */
async function events(
  url: string,
  opened?: () => Promise<void>,
): Promise<{ event: string; data: { state: string; progress: { done: number; total: number }; error?: { code: string } } }[]> {
  const response = await fetch(url);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let first = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (first && text.includes('\n\n')) {
      first = false;
      await opened?.();
    }
  }
  return text
    .split('\n\n')
    .filter((block) => block.trim().length > 0)
    .map((block) => {
      const lines = block.split('\n');
      return { event: lines.find((l) => l.startsWith('event: '))!.slice(7), data: JSON.parse(lines.find((l) => l.startsWith('data: '))!.slice(6)) };
    });
}

const job = async (base: string, location: string) => (await fetch(`${base}${location}`)).json() as Promise<Record<string, any>>;

t.test('a penalty job: 202 with Location, progress that advances over the stream, the synchronous result', async (t) => {
  const { base, context } = await serve(t, { requestTimeoutMs: 60_000 });
  const id = sha256(mlp);
  // The one worker is held by a hanging job, so the job under test waits in the queue until the
  // stream is open: then the hanging one is cancelled and every chunk of the other is seen.
  const blocker = await post(base, `/v1/models/${sha256(hanging)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  await until(() => context.pool.status().running === 1, 'the hanging job to run');
  const accepted = await post(base, `/v1/models/${id}/penalty`, REQUEST, ASYNC);
  t.equal(accepted.status, 202);
  t.equal(accepted.headers.get('preference-applied'), 'respond-async');
  const location = accepted.headers.get('location')!;
  const body = (await accepted.json()) as { id: string; state: string };
  t.equal(location, `/v1/jobs/${body.id}`);
  t.equal(body.state, 'queued');
  await until(() => context.pool.status().queued === 1, 'the job to queue');

  t.equal((await job(base, blocker.headers.get('location')!)).state, 'running', 'a job is running once a worker has it');
  const queuedView = await job(base, location);
  t.equal(queuedView.state, 'queued');
  t.equal(queuedView.progress.done, 0);
  const stream = await events(`${base}${location}/events`, async () => {
    await fetch(`${base}${blocker.headers.get('location')!}`, { method: 'DELETE' });
  });
  t.equal(stream[0].data.state, 'queued', 'the stream starts with the current state');
  // The penalty's own chunks (its rounding-noise measurement reports as a stage of its own).
  const progress = stream.filter((e) => e.event === 'progress' && e.data.progress.done > 0 && e.data.progress.stage === 'penalty').map((e) => e.data.progress);
  t.ok(progress.length >= 3, `several chunks reported (${progress.length})`);
  t.equal(progress[0].done, 1, 'from the first chunk');
  t.same(progress.map((p) => p.done), progress.map((_, i) => progress[0].done + i), 'done advances one chunk at a time');
  t.equal(progress.at(-1)!.done, progress.at(-1)!.total);
  t.equal(stream.at(-1)!.event, 'done');
  t.equal(stream.at(-1)!.data.state, 'succeeded');

  const done = await job(base, location);
  t.equal(done.state, 'succeeded');
  t.equal(done.progress.done, done.progress.total);
  t.type(done.progress.elapsedMs, 'number');
  const sync = await (await post(base, `/v1/models/${id}/penalty`, REQUEST)).json();
  t.same(withoutTimings(done.result), withoutTimings(sync), 'the same numbers as the synchronous route, same seed');
  t.same(withoutTimings(await (await fetch(`${base}${location}/result`)).json()), withoutTimings(sync), '/result: the synchronous body');

  // The same answer through Accept: text/event-stream on the job itself (a finished job: one done event).
  const again = await fetch(`${base}${location}`, { headers: { accept: 'text/event-stream' } });
  t.match(again.headers.get('content-type'), /^text\/event-stream/);
  t.match(await again.text(), /^event: done\n/);
});

t.test('audit metrics, the one-shot penalty and the gate as jobs give the synchronous results', async (t) => {
  const { base, context } = await serve(t, { requestTimeoutMs: 60_000 });
  const id = sha256(mlp);
  const request = { seed: 2, latents: { samples: 4 } };
  for (const metric of ['hessian', 'activeness', 'orthogonality', 'audit']) {
    const accepted = await post(base, `/v1/models/${id}/${metric}`, request, ASYNC);
    t.equal(accepted.status, 202, metric);
    const location = accepted.headers.get('location')!;
    await events(`${base}${location}/events`);
    const done = await job(base, location);
    t.equal(done.state, 'succeeded', metric);
    t.equal(done.route, metric);
    t.same(withoutTimings(done.result), withoutTimings(await (await post(base, `/v1/models/${id}/${metric}`, request)).json()), metric);
  }
  // The HTML report as a job: the result is fetched from /result with its content type.
  const html = await post(base, `/v1/models/${id}/hessian`, request, { ...ASYNC, accept: 'text/html' });
  const htmlLocation = html.headers.get('location')!;
  await events(`${base}${htmlLocation}/events`);
  t.equal((await job(base, htmlLocation)).resultType, 'text/html; charset=utf-8');
  const report = await fetch(`${base}${htmlLocation}/result`);
  t.match(report.headers.get('content-type'), /^text\/html/);
  t.match(await report.text(), /^<!doctype html>/i);

  const form = new FormData();
  form.append('model', new Blob([new Uint8Array(mlp)]), 'mlp.onnx');
  form.append('request', JSON.stringify(REQUEST));
  const oneShot = await fetch(`${base}/v1/penalty`, { method: 'POST', headers: ASYNC, body: form });
  t.equal(oneShot.status, 202, 'one-shot');
  const oneShotLocation = oneShot.headers.get('location')!;
  await events(`${base}${oneShotLocation}/events`);
  const sync = await (await post(base, `/v1/models/${id}/penalty`, REQUEST)).json();
  t.same(withoutTimings((await job(base, oneShotLocation)).result), withoutTimings(sync), 'one-shot job = stored sync');

  const gate = { candidate: id, baseline: id, penalty: { samples: 8, seed: 1 }, resamples: 200 };
  // As in the first test: the gate waits behind a hanging job until its stream is open.
  const blocker = await post(base, `/v1/models/${sha256(hanging)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  await until(() => context.pool.status().running === 1, 'the hanging job to run');
  const gated = await post(base, '/v1/gate', gate, ASYNC);
  t.equal(gated.status, 202, 'gate');
  const gateLocation = gated.headers.get('location')!;
  const gateEvents = await events(`${base}${gateLocation}/events`, async () => {
    await fetch(`${base}${blocker.headers.get('location')!}`, { method: 'DELETE' });
  });
  const stages = new Set(gateEvents.map((e) => (e.data.progress as { stage?: string }).stage).filter(Boolean));
  t.ok(stages.has('candidate penalty') && stages.has('baseline penalty'), `stages ${[...stages].join(', ')}`);
  const gateJob = await job(base, gateLocation);
  t.equal(gateJob.state, 'succeeded');
  t.same(withoutTimings(gateJob.result), withoutTimings(await (await post(base, '/v1/gate', gate)).json()));
});

t.test('DELETE cancels: the work stops (its worker is replaced), the job says cancelled', async (t) => {
  const { app, base, context } = await serve(t, { requestTimeoutMs: 60_000 });
  const accepted = await post(base, `/v1/models/${sha256(hanging)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  const location = accepted.headers.get('location')!;
  await until(() => context.pool.status().running === 1, 'the hanging task to start');
  const before = context.pool.status().restarts;
  const cancelled = await fetch(`${base}${location}`, { method: 'DELETE' });
  t.equal(cancelled.status, 200);
  t.equal(((await cancelled.json()) as { state: string }).state, 'cancelled');
  await until(() => context.pool.status().running === 0, 'the running task to stop');
  await until(() => context.pool.status().restarts === before + 1 && context.pool.ready(), 'a replacement worker');
  const after = await job(base, location);
  t.equal(after.state, 'cancelled');
  t.equal(after.error.code, 'cancelled');
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /hessian_audit_jobs\{state="cancelled"\} 1/);
  // A finished job is forgotten by DELETE.
  t.equal((await fetch(`${base}${location}`, { method: 'DELETE' })).status, 200);
  const gone = await fetch(`${base}${location}`);
  t.equal(gone.status, 404);
  t.equal(((await gone.json()) as { error: { code: string } }).error.code, 'unknown_job');
});

t.test('a worker crash is a failed job carrying the error envelope; the next job runs', async (t) => {
  const { base } = await serve(t);
  const accepted = await post(base, `/v1/models/${sha256(crashing)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  const location = accepted.headers.get('location')!;
  const stream = await events(`${base}${location}/events`);
  t.equal(stream.at(-1)!.data.state, 'failed');
  const failed = await fetch(`${base}${location}`);
  t.equal(failed.status, 200, 'the job exists; its state says it failed');
  const body = (await failed.json()) as { state: string; error: { code: string; message: string } };
  t.equal(body.state, 'failed');
  t.equal(body.error.code, 'worker_crashed');
  t.match(body.error.message, /the worker running this penalty task died/);
  const notDone = await fetch(`${base}${location}/result`);
  t.equal(notDone.status, 409);
  t.same(await notDone.json(), { error: { code: 'job_not_done', message: `job '${location.split('/').at(-1)}' is failed; its result exists once it has succeeded`, details: { state: 'failed' } } });
  const next = await post(base, `/v1/models/${sha256(mlp)}/penalty`, REQUEST, ASYNC);
  await events(`${base}${next.headers.get('location')!}/events`);
  t.equal((await job(base, next.headers.get('location')!)).state, 'succeeded');
});

t.test('bounds: a full store answers 503 with Retry-After; a too large result fails the job; finished jobs expire', async (t) => {
  const { base, context } = await serve(t, { jobs: { maxJobs: 1, maxResultBytes: 100, ttlMs: 1 } });
  const first = await post(base, `/v1/models/${sha256(hanging)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  await until(() => context.pool.status().running === 1, 'the hanging job to run');
  const full = await post(base, `/v1/models/${sha256(mlp)}/penalty`, REQUEST, ASYNC);
  t.equal(full.status, 503);
  t.equal(full.headers.get('retry-after'), '5');
  t.same(await full.json(), {
    error: { code: 'too_many_jobs', message: 'this server already holds 1 unfinished jobs (limit 1); retry when some have finished', details: { retryAfter: 5 } },
  });
  await fetch(`${base}${first.headers.get('location')!}`, { method: 'DELETE' });
  await until(() => context.pool.status().running === 0 && context.pool.ready(), 'the worker to be replaced');

  // The cancelled job is finished, so it makes room; this result (a few KiB) is over 100 bytes.
  const big = await post(base, `/v1/models/${sha256(mlp)}/penalty`, REQUEST, ASYNC);
  t.equal(big.status, 202);
  const stream = await events(`${base}${big.headers.get('location')!}/events`);
  const last = stream.at(-1)!.data as unknown as { state: string; error: { code: string; message: string; details: { limit: number } } };
  t.equal(last.state, 'failed');
  t.equal(last.error.code, 'result_too_large');
  t.equal(last.error.details.limit, 100);
  // ttl 1 ms: the finished job is forgotten once that has passed.
  let status = 200;
  for (let i = 0; i < 100 && status !== 404; i++) {
    status = (await fetch(`${base}${big.headers.get('location')!}`)).status;
    await new Promise((r) => setTimeout(r, 5));
  }
  t.equal(status, 404, 'expired');
});

t.test('a restart: unfinished jobs are cancelled at shutdown, and the new process knows no job', async (t) => {
  const dir = tempDir(t);
  const first = await serve(t, { modelDir: dir, requestTimeoutMs: 60_000 });
  const accepted = await post(first.base, `/v1/models/${sha256(hanging)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } }, ASYNC);
  const location = accepted.headers.get('location')!;
  await until(() => first.context.pool.status().running === 1, 'the hanging job to run');
  // Closed once the stream is open: its last event then comes from the shutdown.
  const last = (await events(`${first.base}${location}/events`, () => first.app.close())).at(-1)!;
  t.equal(last.event, 'done');
  t.equal(last.data.state, 'cancelled');
  t.equal(last.data.error!.code, 'shutting_down');

  const second = await serve(t, { modelDir: dir });
  const gone = await fetch(`${second.base}${location}`);
  t.equal(gone.status, 404);
  const body = (await gone.json()) as { error: { code: string; message: string } };
  t.equal(body.error.code, 'unknown_job');
  t.match(body.error.message, /the server restarted since \(jobs are kept in memory only\); submit it again/);
});

t.test('a token-protected server protects /v1/jobs too', async (t) => {
  const { base } = await serve(t, { token: 'secret' });
  const auth = { authorization: 'Bearer secret' };
  const accepted = await post(base, `/v1/models/${sha256(mlp)}/penalty`, REQUEST, { ...ASYNC, ...auth });
  t.equal(accepted.status, 202);
  const location = accepted.headers.get('location')!;
  for (const path of [location, `${location}/events`, `${location}/result`]) {
    const r = await fetch(`${base}${path}`);
    t.equal(r.status, 401, path);
    t.equal(((await r.json()) as { error: { code: string } }).error.code, 'unauthorized');
  }
  t.equal((await fetch(`${base}${location}`, { method: 'DELETE' })).status, 401);
  const stream = await fetch(`${base}${location}/events`, { headers: auth });
  t.match(await stream.text(), /event: done/);
});
