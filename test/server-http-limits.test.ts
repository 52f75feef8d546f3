/**
 * The HTTP layer under hostile clients, over a real socket (`hessian-audit serve` as a child
 * process; issue 11, items 2, 6, 12, 13, 15, 17, 18): the token is never printed or logged;
 * stalled headers, stalled bodies and trickled bodies are cut by their timeouts (and a SIGTERM
 * ends a stalled upload within the grace period); deep nesting, ε outside its range and broken
 * multipart bodies get 4xx; sweep rows count against --max-rows; error messages stay short.
 * After each, the stored models are intact and the server still answers.
 */
import { connect, type Socket } from 'node:net';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { encode, linearModel, rawFloats } from './helpers/onnx-build.js';
import { spawnCli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { type Reply, spawnServer, until } from './helpers/serve-child.js';
import { multipart, sha256 } from './helpers/server.js';

const TOKEN = 'tok-4b1d-never-print-me';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const mlp = modelBytes('mlp.onnx');
const dcgan = modelBytes('dcgan.onnx');
const SMALL = { latents: { samples: 2 }, k: 2, seed: 1 };
const tmpFiles = (dir: string): string[] => (existsSync(join(dir, '.tmp')) ? readdirSync(join(dir, '.tmp')) : []);
const storeFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n !== '.tmp').sort();

async function reply(res: Response): Promise<Reply & { text: string }> {
  const text = await res.text();
  let body: Reply['body'];
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: res.status, headers: res.headers, body, text };
}
const post = async (url: string, path: string, body: unknown, headers: Record<string, string> = AUTH) =>
  reply(await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) }));
const send = async (url: string, path: string, form: { payload: Buffer; headers: Record<string, string> }, headers: Record<string, string> = AUTH) =>
  reply(await fetch(`${url}${path}`, { method: 'POST', headers: { ...form.headers, ...headers }, body: form.payload }));

/** A raw connection, for clients that stall or trickle; resolves with what the server sent when it closed. */
function rawClient(url: string): { socket: Socket; closed: Promise<string> } {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (received += d));
  socket.on('error', () => undefined);
  const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(received)));
  return { socket, closed };
}
const uploadHead = (boundary: string, length: number) =>
  `POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${length}\r\n\r\n`;
const partHead = (boundary: string) => `--${boundary}\r\nContent-Disposition: form-data; name="model"; filename="g.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n`;

/** y = z·W, then a Reshape to 7 elements that onnxruntime refuses at run time. */
const failsAtRun = encode(
  linearModel({
    node: [
      { opType: 'MatMul', name: 'mm', input: ['z', 'W'], output: ['y'] },
      { opType: 'Reshape', name: 'bad', input: ['y', 's'], output: ['r'] },
    ],
    initializer: [
      { name: 'W', dims: [3, 4], dataType: 1, rawData: rawFloats(Array.from({ length: 12 }, (_, i) => i)) },
      { name: 's', dims: [1], dataType: 7, int64Data: [7] },
    ],
    output: [{ name: 'r', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 7 }] } } } }],
  }),
);

/** JSON text of an array nested `depth` levels (JSON.stringify itself would overflow the stack). */
const deep = (depth: number): string => `${'['.repeat(depth)}0.5${']'.repeat(depth)}`;

t.test('one server, many hostile clients', async (t) => {
  const server = await spawnServer(
    t,
    ['--workers', '1', '--log-level', 'info', '--preload', modelPath('mlp.onnx'), '--headers-timeout', '1', '--body-idle-timeout', '1', '--receive-timeout', '3', '--max-rows', '20'],
    { env: { HESSIAN_AUDIT_TOKEN: TOKEN, HESSIAN_AUDIT_TEST_FAULTS: `delay=${sha256(dcgan)}` }, logs: true },
  );
  const id = sha256(mlp);
  await until(() => server.stderr().includes('curl -s'), 'the startup lines');
  const up = await send(server.url, '/v1/models', multipart([{ name: 'model', data: dcgan, filename: 'g.onnx' }]));
  t.equal(up.status, 201);
  const stored = storeFiles(server.dir);
  const baseline = await post(server.url, `/v1/models/${id}/penalty`, SMALL);
  t.equal(baseline.status, 200);
  const stillFine = async (what: string) => {
    const again = await post(server.url, `/v1/models/${id}/penalty`, SMALL);
    t.equal(again.status, 200, `${what}: the server still answers`);
    t.same(again.body.layers, baseline.body.layers, `${what}: with the same numbers`);
    t.same(storeFiles(server.dir), stored, `${what}: the stored models are intact`);
    t.same(tmpFiles(server.dir), [], `${what}: no temporary file left`);
  };

  t.test('the token is never printed or logged; the curl line has a placeholder', async (t) => {
    t.match(server.stderr(), `-H "authorization: Bearer $HESSIAN_AUDIT_TOKEN"`);
    t.notOk(server.stderr().includes(TOKEN), 'not on stderr');
    t.equal((await post(server.url, `/v1/models/${id}/penalty`, SMALL, { authorization: `Bearer ${TOKEN}x` })).status, 401);
    await until(() => server.logs().some((l) => l.msg === 'request completed'), 'log lines');
    t.notOk(JSON.stringify(server.logs()).includes(TOKEN), 'not in the JSON log');
  });

  t.test('/readyz lists worker pids only to a client with the token', async (t) => {
    const anonymous = await reply(await fetch(`${server.url}/readyz`));
    t.equal(anonymous.status, 200);
    const lanes = anonymous.body.lanes as Record<string, unknown>[];
    t.equal(lanes.length, 1);
    t.notOk('pids' in lanes[0], 'no pids');
    t.notOk('sessions' in lanes[0], 'no sessions by pid');
    t.notMatch(anonymous.text, /"pids"/);
    const known = await reply(await fetch(`${server.url}/readyz`, { headers: AUTH }));
    t.equal((known.body.lanes as { pids: number[] }[])[0].pids.length, 1);
  });

  t.test('headers that stop arriving: 408 after --headers-timeout', async (t) => {
    const { socket, closed } = rawClient(server.url);
    socket.write('POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multi');
    t.match(await closed, /^HTTP\/1\.1 408 /);
    await stillFine('stalled headers');
  });

  t.test('headers and two bytes of body, then silence: the connection is closed after --body-idle-timeout', async (t) => {
    const { socket, closed } = rawClient(server.url);
    socket.write(uploadHead('stall', 100_000) + '--');
    await closed;
    t.pass('the server closed the connection');
    await stillFine('two bytes');
  });

  t.test('a model part that stalls after two bytes: its temporary file is removed', async (t) => {
    const { socket, closed } = rawClient(server.url);
    socket.write(uploadHead('stall', 100_000) + partHead('stall') + 'ab');
    await until(() => tmpFiles(server.dir).length === 1, 'the upload to reach the store');
    await closed;
    await until(() => tmpFiles(server.dir).length === 0, 'the temporary file to be removed');
    await stillFine('stalled part');
  });

  t.test('a body trickled a byte at a time: 408 after --receive-timeout', async (t) => {
    const { socket, closed } = rawClient(server.url);
    socket.write(uploadHead('trickle', 100_000) + partHead('trickle'));
    let open = true;
    void closed.then(() => (open = false));
    const drip = setInterval(() => open && socket.write('x'), 250);
    t.teardown(() => clearInterval(drip));
    const received = await closed;
    clearInterval(drip);
    t.match(received, /^HTTP\/1\.1 408 /, 'Request Timeout, though no gap reached the idle limit');
    await until(() => tmpFiles(server.dir).length === 0, 'the temporary file to be removed');
    await stillFine('trickle');
  });

  t.test('a run longer than the body-idle timeout is not cut: the body was complete', async (t) => {
    // The worker holds dcgan's requests for two seconds (test fault): twice the idle limit.
    const slow = await post(server.url, `/v1/models/${sha256(dcgan)}/penalty`, SMALL);
    t.equal(slow.status, 200);
  });

  t.test('arrays nested 100,000 deep: 400 invalid_array in every place they are read', async (t) => {
    const cases: [string, string, string][] = [
      ['latents', `/v1/models/${id}/penalty`, `{"k": 2, "latents": ${deep(100_000)}}`],
      ['directions', `/v1/models/${id}/penalty`, `{"k": 2, "latents": [[0, 0, 0, 0, 0, 0, 0, 0]], "directions": ${deep(100_000)}}`],
      ['basis', `/v1/models/${id}/penalty`, `{"k": 2, "latents": {"samples": 2}, "basis": ${deep(100_000)}}`],
      ['hessian latents', `/v1/models/${id}/hessian`, `{"latents": ${deep(100_000)}}`],
      ['gate latents', '/v1/gate', `{"candidate": "${id}", "baseline": "${id}", "latents": ${deep(100_000)}}`],
    ];
    for (const [what, path, body] of cases) {
      const r = await post(server.url, path, body);
      t.equal(r.status, 400, `${what}: ${r.text.slice(0, 200)}`);
      t.equal(r.body.error?.code, 'invalid_array', what);
      t.match(r.body.error?.message, /nested more than 32 levels deep/, what);
    }
    // A body the JSON parser's prototype scan walks ("constructor" present) nested as deep.
    const scanned = await post(server.url, `/v1/models/${id}/penalty`, `{"constructor": 1, "latents": ${'['.repeat(200_000)}${']'.repeat(200_000)}}`);
    t.ok(scanned.status >= 400 && scanned.status < 500, `prototype scan: ${scanned.status} ${scanned.body.error?.code}`);
    const form = multipart([
      { name: 'model', data: mlp, filename: 'm.onnx' },
      { name: 'request', data: JSON.stringify({ k: 2 }) },
      { name: 'latents', data: deep(100_000), filename: 'z.json' },
    ]);
    const once = await send(server.url, '/v1/penalty', form);
    t.equal(once.status, 400);
    t.equal(once.body.error?.code, 'invalid_array');
    await stillFine('deep nesting');
  });

  t.test('epsilon outside 1e-12..1e6: 422 epsilon_out_of_range on every route; the edges work', async (t) => {
    const routes = ['penalty', 'hessian', 'activeness', 'orthogonality', 'audit'];
    for (const route of routes) {
      for (const epsilon of [1e-300, 1e300, 1e-13, 2e6]) {
        const r = await post(server.url, `/v1/models/${id}/${route}`, { ...SMALL, epsilon });
        t.equal(r.status, 422, `${route} ε=${epsilon}: ${r.text.slice(0, 200)}`);
        t.equal(r.body.error?.code, 'epsilon_out_of_range', `${route} ε=${epsilon}`);
        t.match(r.body.error?.message, /must be from 1e-12 to 1000000/);
      }
    }
    const sweep = await post(server.url, `/v1/models/${id}/penalty`, { ...SMALL, epsilons: [0.1, 1e-300] });
    t.equal(sweep.status, 422);
    t.equal(sweep.body.error?.code, 'epsilon_out_of_range');
    t.match(sweep.body.error?.message, /each of epsilons is 1e-300/);
    const gate = await post(server.url, '/v1/gate', { candidate: id, baseline: id, resamples: 100, penalty: { samples: 2, k: 2, seed: 1, epsilon: 1e300 } });
    t.equal(gate.status, 422, gate.text.slice(0, 300));
    t.equal(gate.body.error?.code, 'epsilon_out_of_range');
    for (const epsilon of [1e-12, 1e6]) {
      const r = await post(server.url, `/v1/models/${id}/penalty`, { ...SMALL, epsilon });
      t.equal(r.status, 200, `ε=${epsilon} is inside the range`);
      t.ok(Number.isFinite(r.body.penalty), `ε=${epsilon}: a finite penalty (${r.body.penalty})`);
    }
    await stillFine('epsilon');
  });

  t.test('multipart with no boundary, the wrong boundary, or cut short: 400', async (t) => {
    const good = multipart([{ name: 'model', data: mlp, filename: 'm.onnx' }]);
    for (const path of ['/v1/models', '/v1/penalty']) {
      const none = await send(server.url, path, { payload: good.payload, headers: { 'content-type': 'multipart/form-data' } });
      t.equal(none.status, 400, `${path} no boundary: ${none.text.slice(0, 200)}`);
      t.equal(none.body.error?.code, 'malformed_multipart');
      const wrong = await send(server.url, path, { payload: good.payload, headers: { 'content-type': 'multipart/form-data; boundary=not-the-one' } });
      t.equal(wrong.status, 400, `${path} wrong boundary: ${wrong.text.slice(0, 200)}`);
      t.equal(wrong.body.error?.code, 'malformed_multipart', wrong.text.slice(0, 300));
      const cut = good.payload.subarray(0, good.payload.length - 200);
      const truncated = await send(server.url, path, { payload: cut, headers: good.headers });
      t.equal(truncated.status, 400, `${path} truncated: ${truncated.text.slice(0, 200)}`);
      t.equal(truncated.body.error?.code, 'malformed_multipart', truncated.text.slice(0, 300));
    }
    await stillFine('multipart');
  });

  t.test('a second file in an upload is refused; nothing is stored', async (t) => {
    const two = multipart([
      { name: 'model', data: mlp, filename: 'm.onnx' },
      { name: 'model', data: failsAtRun, filename: 'other.onnx' },
    ]);
    const r = await send(server.url, '/v1/models', two);
    t.equal(r.status, 400);
    t.equal(r.body.error?.code, 'invalid_request');
    t.match(r.body.error?.message, /second part \('model'\) after the "model" file/);
    const field = await send(server.url, '/v1/models', multipart([{ name: 'model', data: failsAtRun, filename: 'o.onnx' }, { name: 'note', data: 'x' }]));
    t.equal(field.status, 400);
    t.notOk(existsSync(join(server.dir, `${sha256(failsAtRun)}.onnx`)));
    await stillFine('second file');
  });

  t.test('epsilons sweep rows count against --max-rows', async (t) => {
    // N·(2k+1) = 2·5 = 10 rows per ε; --max-rows is 20.
    t.equal((await post(server.url, `/v1/models/${id}/penalty`, { ...SMALL, epsilons: [0.2] })).status, 200, 'two ε: 20 rows');
    const r = await post(server.url, `/v1/models/${id}/penalty`, { ...SMALL, epsilons: [0.2, 0.3] });
    t.equal(r.status, 422);
    t.equal(r.body.error?.code, 'limit_exceeded');
    t.match(r.body.error?.message, /needs 30 forward rows .*for each of 3 ε.*above the limit of 20/);
  });

  t.test('a 1 MB layer name is not echoed back: a short message, the name at most once', async (t) => {
    const name = 'L'.repeat(1024 * 1024);
    const r = await post(server.url, `/v1/models/${id}/penalty`, { ...SMALL, layers: [name] });
    t.equal(r.status, 422);
    t.equal(r.body.error?.code, 'unknown_layer');
    t.ok(r.text.length < 4000, `the response has ${r.text.length} characters`);
    t.same(r.text.match(/L{100,}/g)?.map((run) => run.length), [200], 'the name appears once, cut to 200 characters');
    t.match(r.body.error?.message, /more characters\)/);
  });

  t.test("onnxruntime's source paths are not in model_run_failed", async (t) => {
    const stored = await send(server.url, '/v1/models', multipart([{ name: 'model', data: failsAtRun, filename: 'bad.onnx' }]));
    t.equal(stored.status, 201);
    const r = await post(server.url, `/v1/models/${sha256(failsAtRun)}/penalty`, { latents: [[1, 2, 3], [4, 5, 6]], k: 2, seed: 1 });
    t.equal(r.status, 422);
    t.equal(r.body.error?.code, 'model_run_failed');
    t.match(r.body.error?.message, /cannot be reshaped to the requested shape/);
    t.notMatch(r.body.error?.message, /onnxruntime_src|\.h:\d+|\.cc:\d+|ReshapeHelper\(/);
    t.equal((await fetch(`${server.url}/v1/models/${sha256(failsAtRun)}`, { method: 'DELETE', headers: AUTH })).status, 204);
  });

  t.test('after all of it, SIGTERM still exits 0 and the store is intact', async (t) => {
    server.proc.kill('SIGTERM');
    t.same(await server.exited, { code: 0, signal: null });
    t.same(storeFiles(server.dir), stored);
    t.same(tmpFiles(server.dir), []);
  });
  t.end();
});

t.test('SIGTERM while an upload stalls: the drain ends it, removes its file and exits 0', async (t) => {
  const server = await spawnServer(t, ['--workers', '1', '--body-idle-timeout', '600', '--receive-timeout', '600']);
  const form = multipart([{ name: 'model', data: mlp, filename: 'm.onnx' }]);
  t.equal((await send(server.url, '/v1/models', form, {})).status, 201);
  const stored = storeFiles(server.dir);
  const { socket, closed } = rawClient(server.url);
  socket.write(uploadHead('stall', 100_000).replace(`Authorization: Bearer ${TOKEN}\r\n`, '') + partHead('stall') + 'ab');
  await until(() => tmpFiles(server.dir).length === 1, 'the upload to reach the store');
  server.proc.kill('SIGTERM');
  // Only the drain can end it: its timeouts are ten minutes. The limit bounds a hung test.
  const exit = await Promise.race([server.exited, new Promise((r) => setTimeout(() => r('still running after 20 s'), 20_000))]);
  t.same(exit, { code: 0, signal: null });
  await closed;
  t.same(tmpFiles(server.dir), [], 'the stalled upload left no file');
  t.same(storeFiles(server.dir), stored, 'the stored model is intact');
});

t.test('a 507 is logged as a warning, not an error', async (t) => {
  const server = await spawnServer(t, ['--workers', '1', '--log-level', 'info', '--store-quota-mib', String(300 / 1024)], { logs: true });
  t.equal((await send(server.url, '/v1/models', multipart([{ name: 'model', data: dcgan, filename: 'g.onnx' }]), {})).status, 201);
  const full = await send(server.url, '/v1/models', multipart([{ name: 'model', data: modelBytes('dcgan_entangled.onnx'), filename: 'e.onnx' }]), {});
  t.equal(full.status, 507);
  const reqId = full.headers.get('x-request-id');
  await until(() => server.logs().some((l) => l.reqId === reqId && l.code === 'store_full'), 'the log line');
  const lines = server.logs().filter((l) => l.reqId === reqId && l.code === 'store_full');
  t.same(lines.map((l) => l.level), [40], 'one line, at warn (40)');
});

t.test('serve refuses timeouts that make no sense, with exit code 2', async (t) => {
  const zero = spawnCli('serve', '--headers-timeout', '0', '--model-dir', '/nonexistent-never-created');
  t.equal(zero.code, 2);
  t.match(zero.stderr, /--headers-timeout must be a number greater than 0, got '0'/);
  const negative = spawnCli('serve', '--body-idle-timeout', '-1', '--model-dir', '/nonexistent-never-created');
  t.equal(negative.code, 2);
  t.match(negative.stderr, /--body-idle-timeout must be a number of at least 0/);
  const longer = spawnCli('serve', '--headers-timeout', '700', '--receive-timeout', '600', '--model-dir', '/nonexistent-never-created');
  t.equal(longer.code, 2);
  t.match(longer.stderr, /--headers-timeout must not be longer than --receive-timeout/);
});
