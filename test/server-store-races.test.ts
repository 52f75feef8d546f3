/**
 * The store under concurrency and a full disk, over a real socket (issue 11, items 10, 11, 14):
 * concurrent uploads of one new model count it once; uploads and DELETEs of one id racing each
 * other, two DELETEs of one id, and a DELETE racing a queued request give only 2xx or 404, never
 * 500; the bytes counted always equal the bytes on disk. A failing write at each step of a
 * commit (ENOSPC injected through the store's write hook) is 507 and leaves nothing behind.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { WriteStep } from '../dist/store/index.js';
import { modelBytes } from './helpers/reference.js';
import { sha256, startApp } from './helpers/server.js';

const mlp = modelBytes('mlp.onnx');
const dcgan = modelBytes('dcgan.onnx');
const SMALL = { latents: { samples: 2 }, k: 2, seed: 1 };

type Started = Awaited<ReturnType<typeof startApp>>;

async function listening(t: Tap.Test, overrides: Parameters<typeof startApp>[1] = {}): Promise<Started & { url: string }> {
  const started = await startApp(t, overrides);
  await started.app.listen({ host: '127.0.0.1', port: 0 });
  const address = started.app.server.address() as { port: number };
  return { ...started, url: `http://127.0.0.1:${address.port}` };
}

const upload = async (url: string, bytes: Uint8Array): Promise<{ status: number; body: { error?: { code: string; message: string } } & Record<string, unknown> }> => {
  const form = new FormData();
  form.append('model', new Blob([bytes]), 'model.onnx');
  const res = await fetch(`${url}/v1/models`, { method: 'POST', body: form });
  return { status: res.status, body: await res.json() };
};
const remove = async (url: string, id: string): Promise<number> => (await fetch(`${url}/v1/models/${id}`, { method: 'DELETE' })).status;
const json = async (url: string, path: string, body: unknown) => {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
};

/** Bytes of models and descriptions in the folder: what the store's count must equal. */
const diskBytes = (dir: string): number =>
  readdirSync(dir).filter((n) => n.endsWith('.onnx') || n.endsWith('.json')).reduce((sum, n) => sum + statSync(join(dir, n)).size, 0);
const storeFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n !== '.tmp').sort();
const tmpFiles = (dir: string): string[] => readdirSync(join(dir, '.tmp'));
/** Each model has its description and each description its model. */
const paired = (dir: string): boolean => {
  const names = new Set(storeFiles(dir));
  return [...names].every((n) => names.has(n.endsWith('.onnx') ? `${n.slice(0, -5)}.json` : `${n.slice(0, -5)}.onnx`));
};

t.test('eight concurrent uploads of one new model: one 201, seven 200, counted once', async (t) => {
  const { url, dir, context } = await listening(t);
  const results = await Promise.all(Array.from({ length: 8 }, () => upload(url, mlp)));
  const statuses = results.map((r) => r.status).sort();
  t.same(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);
  t.same(results.map((r) => r.body.created).filter(Boolean), [true], 'exactly one says created');
  t.same(storeFiles(dir), [`${sha256(mlp)}.json`, `${sha256(mlp)}.onnx`]);
  t.equal(context.store.usedBytes, diskBytes(dir), 'counted usage equals the bytes on disk');
  t.same(tmpFiles(dir), [], 'the seven duplicates left no temporary file');
});

t.test('uploads and DELETEs of one id racing: only 2xx and 404, usage equals the disk, pairs intact', async (t) => {
  const { url, dir, context } = await listening(t, { storeQuotaBytes: 4 * 1024 * 1024 });
  const id = sha256(mlp);
  const seen: Record<string, number> = {};
  for (let round = 0; round < 6; round++) {
    const ops = [
      ...Array.from({ length: 3 }, () => upload(url, mlp).then((r) => `upload ${r.status}${r.body.error ? ` ${r.body.error.code}` : ''}`)),
      ...Array.from({ length: 3 }, () => remove(url, id).then((s) => `delete ${s}`)),
    ];
    for (const outcome of await Promise.all(ops)) seen[outcome] = (seen[outcome] ?? 0) + 1;
    t.equal(context.store.usedBytes, diskBytes(dir), `round ${round}: counted usage equals the bytes on disk`);
    t.ok(paired(dir), `round ${round}: every model has its description`);
  }
  t.comment(JSON.stringify(seen));
  for (const outcome of Object.keys(seen)) t.match(outcome, /^(upload 20[01]|delete 204|delete 404)$/, outcome);
  t.same(tmpFiles(dir), []);
  // The count never drifted, so the quota still admits what fits.
  t.equal((await upload(url, dcgan)).status, 201);
  t.equal(context.store.usedBytes, diskBytes(dir));
});

t.test('two DELETEs of one id: one 204 and one 404, never 500; a GET meanwhile is 200 or 404', async (t) => {
  const { url, dir, context } = await listening(t);
  const id = sha256(mlp);
  for (let round = 0; round < 5; round++) {
    t.equal((await upload(url, mlp)).status, 201);
    const [a, b, got] = await Promise.all([remove(url, id), remove(url, id), fetch(`${url}/v1/models/${id}`).then((r) => r.status)]);
    t.same([a, b].sort(), [204, 404], `round ${round}`);
    t.ok(got === 200 || got === 404, `GET during the deletes: ${got}`);
    t.same(storeFiles(dir), []);
    t.equal(context.store.usedBytes, 0);
  }
  const gone = await fetch(`${url}/v1/models/${id}`);
  t.equal(gone.status, 404);
  t.equal((await gone.json()).error.code, 'unknown_model');
});

t.test('a DELETE while a request for that model waits in the queue: the request gets 404 unknown_model', async (t) => {
  // The worker holds dcgan's requests for two seconds (test fault), so the mlp request queues behind.
  const { url, dir, context } = await listening(t, { workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `delay=${sha256(dcgan)}` }, maxQueue: 4 });
  t.equal((await upload(url, dcgan)).status, 201);
  t.equal((await upload(url, mlp)).status, 201);
  const busy = json(url, `/v1/models/${sha256(dcgan)}/penalty`, SMALL);
  await new Promise<void>((resolve) => {
    const poll = async () => ((await (await fetch(`${url}/readyz`)).json()).running === 1 ? resolve() : setTimeout(poll, 10));
    void poll();
  });
  const queued = json(url, `/v1/models/${sha256(mlp)}/penalty`, SMALL);
  await new Promise<void>((resolve) => {
    const poll = async () => ((await (await fetch(`${url}/readyz`)).json()).queued === 1 ? resolve() : setTimeout(poll, 10));
    void poll();
  });
  t.equal(await remove(url, sha256(mlp)), 204);
  const vanished = await queued;
  t.equal(vanished.status, 404);
  t.equal(vanished.body.error.code, 'unknown_model');
  t.match(vanished.body.error.message, /was deleted before its request ran/);
  t.equal((await busy).status, 200, 'the request ahead of it is unaffected');
  t.same(storeFiles(dir), [`${sha256(dcgan)}.json`, `${sha256(dcgan)}.onnx`]);
  t.equal(context.store.usedBytes, diskBytes(dir));
  t.equal((await json(url, `/v1/models/${sha256(dcgan)}/penalty`, SMALL)).status, 200, 'the server still answers');
});

t.test('a full disk at every write of an upload: 507 store_full, nothing left behind, the next upload succeeds', async (t) => {
  let failing: WriteStep | undefined;
  const beforeWrite = (step: WriteStep): void => {
    if (step === failing) throw Object.assign(new Error(`ENOSPC: no space left on device, write (${step})`), { code: 'ENOSPC', errno: -28 });
  };
  const { url, dir, context } = await listening(t, { storeBeforeWrite: beforeWrite });
  t.equal((await upload(url, mlp)).status, 201);
  const before = storeFiles(dir);
  const steps: WriteStep[] = ['stage', 'sync-model', 'write-description', 'place-description', 'place-model'];
  for (const step of steps) {
    failing = step;
    const r = await upload(url, dcgan);
    t.equal(r.status, 507, step);
    t.equal(r.body.error?.code, 'store_full', step);
    t.match(r.body.error?.message, /disk is full \(ENOSPC\); nothing was stored/, step);
    t.same(storeFiles(dir), before, `${step}: no file added`);
    t.same(tmpFiles(dir), [], `${step}: no temporary file left`);
    t.equal(context.store.usedBytes, diskBytes(dir), `${step}: usage equals the disk`);
  }
  // The one-shot route stages its model too.
  failing = 'stage';
  const form = new FormData();
  form.append('model', new Blob([dcgan]), 'g.onnx');
  form.append('request', JSON.stringify(SMALL));
  const once = await fetch(`${url}/v1/penalty`, { method: 'POST', body: form });
  t.equal(once.status, 507);
  t.equal((await once.json()).error.code, 'store_full');
  t.same(tmpFiles(dir), []);
  failing = undefined;
  t.equal((await upload(url, dcgan)).status, 201, 'with room again the upload succeeds');
  t.equal(context.store.usedBytes, diskBytes(dir));
  t.equal((await json(url, `/v1/models/${sha256(mlp)}/penalty`, SMALL)).status, 200, 'stored models still run');
});
