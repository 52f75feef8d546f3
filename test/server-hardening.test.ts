/**
 * The service under hostile input and faults, over a real socket: `hessian-audit serve` runs as a
 * child process on 127.0.0.1, with its own worker processes, exactly as deployed.
 */
import { connect } from 'node:net';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { malformedCorpus } from './helpers/corpus.js';
import { chainModel, encode, externalWeight, linearModel, rawFloats } from './helpers/onnx-build.js';
import { modelBytes } from './helpers/reference.js';
import { get, penalty, type Reply, spawnServer, until, upload } from './helpers/serve-child.js';
import { sha256 } from './helpers/server.js';


const SMALL = { latents: { samples: 2 }, k: 2, seed: 11 };
const numbers = (r: Reply) => (r.body.layers as { name: string; penalty: number; perSample: number[] }[]).map((l) => [l.name, l.penalty, l.perSample]);
const storeFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n !== '.tmp');
const tmpFiles = (dir: string): string[] => (existsSync(join(dir, '.tmp')) ? readdirSync(join(dir, '.tmp')) : []);

t.test('malformed models over POST /v1/models: each gets a specific 4xx, the server stays up, good numbers unchanged', async (t) => {
  const server = await spawnServer(t, ['--workers', '1']);
  const good = modelBytes('mlp.onnx');
  t.equal((await upload(server.url, good)).status, 201);
  const before = await penalty(server.url, sha256(good), SMALL);
  t.equal(before.status, 200);

  const crafted: [string, Uint8Array, string, number][] = [
    ['external ../', encode(linearModel({ initializer: [externalWeight('../secret.bin')] })), 'external_data_not_allowed', 422],
    ['external absolute', encode(linearModel({ initializer: [externalWeight('/etc/passwd')] })), 'external_data_not_allowed', 422],
    ['external in working dir', encode(linearModel({ initializer: [externalWeight('package.json')] })), 'external_data_not_allowed', 422],
    ['2^40 elements', encode(linearModel({ initializer: [{ name: 'W', dims: [2 ** 20, 2 ** 20], dataType: 1, rawData: rawFloats([1]) }] })), 'tensor_data_mismatch', 422],
    ['100,000 nodes', encode(chainModel(100_000)), 'too_many_nodes', 413],
    ['opset 27', encode(linearModel({}, { opsetImport: [{ domain: '', version: 27 }] })), 'unsupported_opset', 422],
    ['custom op', encode(linearModel({ node: [{ opType: 'Warp', domain: 'com.example', input: ['z'], output: ['y'] }] })), 'custom_op_domain', 422],
  ];
  for (const [what, bytes, code, status] of crafted) {
    const r = await upload(server.url, bytes);
    t.equal(r.status, status, `${what}: ${r.body.error?.message}`);
    t.equal(r.body.error?.code, code, what);
  }

  // Every fourth variant of the seeded corpus (153 uploads), and a penalty request on some valid ones.
  const variants = malformedCorpus({ seed: 20261127 }).filter((_, i) => i % 4 === 0);
  const outcomes: Record<string, number> = {};
  let penalties = 0;
  for (const [i, v] of variants.entries()) {
    const r = await upload(server.url, v.bytes);
    const key = r.status < 300 ? 'stored' : (r.body.error?.code ?? String(r.status));
    outcomes[key] = (outcomes[key] ?? 0) + 1;
    if (r.status >= 300) {
      if (!(r.status >= 400 && r.status < 500 && r.body.error?.code)) t.fail(`${v.name}: ${r.status} ${JSON.stringify(r.body)}`);
    } else if (penalties < 30) {
      penalties++;
      const p = await penalty(server.url, r.body.id as string, SMALL);
      if (!(p.status === 200 || (p.status >= 400 && p.status < 500))) t.fail(`${v.name} penalty: ${p.status} ${JSON.stringify(p.body)}`);
    }
    if (i % 20 === 0) t.equal((await get(server.url, '/healthz')).status, 200);
  }
  t.comment(`uploads by outcome: ${JSON.stringify(outcomes)}; ${penalties} penalty requests on stored variants`);
  t.same(tmpFiles(server.dir), [], 'no partial upload left behind');
  const ready = await get(server.url, '/readyz');
  t.equal(ready.body.restarts, 0, 'no worker crashed');
  const after = await penalty(server.url, sha256(good), SMALL);
  t.same(numbers(after), numbers(before), 'the same numbers as before the corpus');
});

t.test('the upload checks take their limits from serve flags, at upload and when a stored model is loaded again', async (t) => {
  const server = await spawnServer(t, ['--workers', '1', '--max-nodes', '50', '--max-weights-mib', '0.1']);
  const chain = await upload(server.url, encode(chainModel(51)));
  t.equal(chain.status, 413);
  t.equal(chain.body.error?.code, 'too_many_nodes');
  t.match(chain.body.error?.message, /more than 50 nodes/);
  const dcgan = await upload(server.url, modelBytes('dcgan.onnx'));
  t.equal(dcgan.status, 413);
  t.equal(dcgan.body.error?.code, 'initializers_too_large');
  t.equal((await upload(server.url, encode(chainModel(50)))).status, 201, 'exactly at the node limit');
  const mlp = modelBytes('mlp.onnx');
  t.equal((await upload(server.url, mlp)).status, 201);
  t.equal((await penalty(server.url, sha256(mlp), SMALL)).status, 200);
  t.same(tmpFiles(server.dir), []);
});

t.test('a worker killed mid-request: that request fails cleanly, the next one succeeds with the same numbers', async (t) => {
  const server = await spawnServer(t, ['--workers', '1']);
  const dcgan = modelBytes('dcgan.onnx');
  const id = sha256(dcgan);
  t.equal((await upload(server.url, dcgan)).status, 201);
  const baseline = await penalty(server.url, id, SMALL);
  t.equal(baseline.status, 200);
  const readyz = async () => (await get(server.url, '/readyz')).body as { lanes: { pids: number[]; running: number }[]; restarts: number };
  const [pid] = (await readyz()).lanes[0].pids;

  const long = penalty(server.url, id, { latents: { samples: 512 }, k: 32, seed: 3 });
  await until(async () => (await readyz()).lanes[0].running === 1, 'the long request to reach the worker');
  process.kill(pid, 'SIGKILL');
  const failed = await long;
  t.ok(failed.status >= 500, `status ${failed.status}`);
  t.equal(failed.body.error?.code, 'worker_crashed');
  t.match(failed.body.error?.message, /worker .* died/);

  await until(async () => {
    const r = await readyz();
    return r.lanes[0].pids.length === 1 && r.lanes[0].pids[0] !== pid;
  }, 'a replacement worker');
  const next = await penalty(server.url, id, SMALL);
  t.equal(next.status, 200);
  t.same(numbers(next), numbers(baseline));
  t.equal((await get(server.url, '/healthz')).status, 200);
});

t.test('SIGTERM during load: requests in flight complete, new ones are refused, exit code 0', async (t) => {
  const server = await spawnServer(t, ['--workers', '1', '--max-queue', '16']);
  const dcgan = modelBytes('dcgan.onnx');
  const id = sha256(dcgan);
  t.equal((await upload(server.url, dcgan)).status, 201);
  const request = { latents: { samples: 32 }, k: 8, seed: 5 };
  const inFlight = Array.from({ length: 6 }, () => penalty(server.url, id, request));
  await until(async () => {
    const r = (await get(server.url, '/readyz')).body as { running: number; queued: number };
    return r.running + r.queued === 6;
  }, 'all six requests to reach the pool');
  server.proc.kill('SIGTERM');
  await until(() => /SIGTERM: finishing requests in flight/.test(server.stderr()), 'the server to start draining', 10_000);

  const late = await penalty(server.url, id, request).then(
    (r) => `status ${r.status} ${r.body.error?.code ?? ''}`,
    (err: Error) => `refused: ${(err.cause as { code?: string })?.code ?? err.message}`,
  );
  t.match(late, /^(refused: (ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET)|status 503 )/, late);

  const done = await Promise.all(inFlight);
  t.same(done.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
  // Draining closes each connection after its response, so idle keep-alive sockets cannot hold the exit.
  t.same(done.map((r) => r.headers.get('connection')), Array(6).fill('close'));
  for (const r of done.slice(1)) t.same(numbers(r), numbers(done[0]), 'same seed, same numbers');
  const exit = await server.exited;
  t.same(exit, { code: 0, signal: null });
});

t.test('an upload aborted halfway leaves no file in the store', async (t) => {
  const server = await spawnServer(t, ['--workers', '1']);
  const bytes = modelBytes('dcgan.onnx');
  const boundary = '----hardening-abort';
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="model"; filename="dcgan.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const { port } = new URL(server.url);
  const socket = connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(
    `POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${head.length + bytes.length + tail.length}\r\n\r\n`,
  );
  socket.write(head);
  socket.write(bytes.subarray(0, bytes.length / 2));
  await until(() => tmpFiles(server.dir).length === 1, 'the upload to start streaming into the store');
  socket.destroy();
  await until(() => tmpFiles(server.dir).length === 0, 'the partial file to be removed', 10_000);
  t.same(storeFiles(server.dir), [], 'nothing was stored');
  t.equal((await get(server.url, '/healthz')).status, 200);
  const full = await upload(server.url, bytes);
  t.equal(full.status, 201, 'the same model uploads completely afterwards');
  t.same(storeFiles(server.dir).sort(), [`${sha256(bytes)}.json`, `${sha256(bytes)}.onnx`]);
});

t.test('a store quota: an upload past it gets 507, and nothing already stored is lost', async (t) => {
  const server = await spawnServer(t, ['--workers', '1', '--store-quota-mib', String(300 / 1024)]);
  const dcgan = modelBytes('dcgan.onnx');
  const entangled = modelBytes('dcgan_entangled.onnx');
  const mlp = modelBytes('mlp.onnx');
  t.equal((await upload(server.url, dcgan)).status, 201);
  const before = await penalty(server.url, sha256(dcgan), SMALL);

  const full = await upload(server.url, entangled);
  t.equal(full.status, 507);
  t.equal(full.body.error?.code, 'store_full');
  t.match(full.body.error?.message, /quota of 300 KiB/);
  t.same(tmpFiles(server.dir), [], 'the refused upload left no partial file');
  t.notOk(existsSync(join(server.dir, `${sha256(entangled)}.onnx`)));

  t.equal((await get(server.url, `/v1/models/${sha256(dcgan)}`)).status, 200, 'the stored model is still there');
  t.same(numbers(await penalty(server.url, sha256(dcgan), SMALL)), numbers(before));
  t.equal((await upload(server.url, mlp)).status, 201, 'a model that fits is still accepted');
  t.equal((await upload(server.url, dcgan)).status, 200, 'the same bytes again take no space');

  const del = await fetch(`${server.url}/v1/models/${sha256(dcgan)}`, { method: 'DELETE' });
  t.equal(del.status, 204);
  t.equal((await upload(server.url, entangled)).status, 201, 'deleting makes room');
});
