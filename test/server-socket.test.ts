/**
 * The real thing: `hessian-audit serve` as a child process on 127.0.0.1 and a free port. Numbers
 * equal the `penalty` command's; request ids reach the JSON log; a restart keeps the store;
 * SIGTERM lets the request in flight finish and exits 0.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { writeNpy } from '../dist/io/npy.js';
import { BIN, spawnCli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { sha256, tempDir, until } from './helpers/server.js';

interface Server {
  proc: ChildProcess;
  base: string;
  logs: Record<string, unknown>[];
  stderr: () => string;
  exit: Promise<number | null>;
}

const crashing = modelBytes('linear_orthogonal.onnx');
const slow = modelBytes('mlp.onnx');
const FAULTS = `abort=${sha256(crashing)},delay=${sha256(slow)}`;

async function serve(t: Tap.Test, modelDir: string, extra: string[] = [], env: Record<string, string> = {}): Promise<Server> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', modelDir, '--workers', '1', '--threads', '1', ...extra], {
    env: { ...process.env, HESSIAN_AUDIT_TEST_FAULTS: FAULTS, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let err = '';
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    const lines = out.split('\n');
    out = lines.pop()!;
    for (const line of lines) if (line.startsWith('{')) logs.push(JSON.parse(line));
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    await exit;
  });
  await Promise.race([
    until(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(err), 'the server to listen'),
    exit.then((code) => {
      throw new Error(`serve exited with ${code}: ${err}`);
    }),
  ]);
  const base = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(err)![1];
  return { proc, base, logs, stderr: () => err, exit };
}

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

async function upload(base: string, bytes: Uint8Array): Promise<Response> {
  const form = new FormData();
  form.append('model', new Blob([bytes]), 'model.onnx');
  return fetch(`${base}/v1/models`, { method: 'POST', body: form });
}

/** What must agree between the command and the service: everything but the timings. */
const numbers = (r: { timings?: unknown }) => ({ ...r, timings: undefined });

const dcgan = modelBytes('dcgan.onnx');
const dcganId = sha256(dcgan);
const modelDir = tempDir(t);
const files = tempDir(t, 'ha-arrays-');
const [N, K, D] = [3, 4, 12];
const latents = Array.from({ length: N }, (_, n) => Array.from({ length: D }, (_, i) => (((n * 5 + i * 3) % 9) - 4) / 4));
const directions = Array.from({ length: K }, (_, j) => Array.from({ length: N }, (_, n) => Array.from({ length: D }, (_, i) => ((i * 7 + n * 3 + j * 5) % 3 === 0 ? -1 : 1))));
const layers = ['/block1/block1.2/LeakyRelu_output_0', 'image'];
writeFileSync(join(files, 'z.json'), JSON.stringify(latents));
writeFileSync(join(files, 'v.json'), JSON.stringify(directions));
let first: Record<string, unknown>;

t.test('a served penalty equals the penalty command on the same inputs, seed and directions', async (t) => {
  const server = await serve(t, modelDir);
  const up = await upload(server.base, dcgan);
  t.equal(up.status, 201);
  t.equal((await up.json()).id, dcganId);

  const cli = spawnCli('penalty', modelPath('dcgan.onnx'), '--latents', join(files, 'z.json'), '--directions', join(files, 'v.json'), '--k', String(K), '--epsilon', '0.05', '--layers', layers.join(','), '--seed', '11', '--json');
  t.equal(cli.code, 0, cli.stderr);
  const expected = JSON.parse(cli.stdout);
  const res = await post(`${server.base}/v1/models/${dcganId}/penalty`, { latents, directions, k: K, epsilon: 0.05, layers, seed: 11 });
  t.equal(res.status, 200);
  first = await res.json();
  t.same(numbers(first), numbers(expected));
  t.ok((first.penalty as number) > 0);

  const drawn = spawnCli('penalty', modelPath('dcgan.onnx'), '--samples', '4', '--seed', '7', '--k', '3', '--json');
  const served = await (await post(`${server.base}/v1/models/${dcganId}/penalty`, { latents: { samples: 4 }, seed: 7, k: 3 })).json();
  t.same(numbers(served), numbers(JSON.parse(drawn.stdout)), 'drawn latents and directions agree too');

  const form = new FormData();
  form.append('model', new Blob([dcgan]), 'dcgan.onnx');
  form.append('request', JSON.stringify({ k: K, epsilon: 0.05, layers, seed: 11 }));
  const npy = (shape: number[], values: unknown[]) => new Blob([writeNpy({ type: 'float32', shape, data: Float32Array.from(values.flat(2) as number[]) })]);
  form.append('latents', npy([N, D], latents), 'z.npy');
  form.append('directions', npy([K, N, D], directions), 'v.npy');
  const once = await fetch(`${server.base}/v1/penalty`, { method: 'POST', body: form });
  t.equal(once.status, 200);
  // Only the noise measurement's and the step-halving's bookkeeping differ: the worker's session has them cached by now.
  const again = await once.json();
  t.same({ ...numbers(again), noise: undefined, halving: undefined }, { ...numbers(expected), noise: undefined, halving: undefined }, 'the one-shot route gives the same numbers again');
  t.same([again.noise.cached, again.noise.rows], [true, 0]);

  server.proc.kill('SIGTERM');
  t.equal(await server.exit, 0);
});

t.test('a crash is a 500 whose request id is in the response header and the JSON log; the server keeps serving', async (t) => {
  const server = await serve(t, modelDir, ['--preload', modelPath('dcgan.onnx')]);
  await until(() => server.stderr().includes('curl -s'), 'the startup lines');
  t.match(server.stderr(), `model dcgan.onnx registered as ${dcganId}`, 'preloading prints the id');
  t.match(server.stderr(), `curl -s -X POST ${server.base}/v1/models/${dcganId}/penalty -H 'content-type: application/json'`, 'and a curl line');
  t.equal((await upload(server.base, crashing)).status, 201);
  const res = await post(`${server.base}/v1/models/${sha256(crashing)}/penalty`, { k: 2, seed: 1, latents: { samples: 2 } });
  t.equal(res.status, 500);
  const body = await res.json();
  t.equal(body.error.code, 'worker_crashed');
  const id = res.headers.get('x-request-id')!;
  t.match(id, /^[0-9a-f-]{36}$/);
  await until(() => server.logs.some((l) => l.reqId === id && l.level === 50), 'the error log line');
  const line = server.logs.find((l) => l.reqId === id && l.level === 50)!;
  t.equal(line.code, 'worker_crashed');
  const after = await post(`${server.base}/v1/models/${dcganId}/penalty`, { latents, directions, k: K, epsilon: 0.05, layers, seed: 11 });
  t.equal(after.status, 200);
  t.same(numbers(await after.json()), numbers(first), 'the store survived the restart and the numbers are the same');
  const ready = await (await fetch(`${server.base}/readyz`)).json();
  t.equal(ready.restarts, 1);

  // A client that hangs up halfway through an upload: the partial file is removed, nothing is stored.
  const before = readdirSync(modelDir).sort();
  const tmp = join(modelDir, '.tmp');
  const socket = connect(Number(new URL(server.base).port), '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write(
    'POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=cut\r\nContent-Length: 10000000\r\n\r\n' +
      '--cut\r\nContent-Disposition: form-data; name="model"; filename="g.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n',
  );
  socket.write(Buffer.from(dcgan.subarray(0, 100_000)));
  await until(() => readdirSync(tmp).length === 1, 'the upload to start');
  socket.destroy();
  await until(() => readdirSync(tmp).length === 0, 'the partial upload to be removed');
  t.same(readdirSync(modelDir).sort(), before, 'an aborted upload leaves nothing');
  t.equal(ready.status, 'ready');
  server.proc.kill('SIGTERM');
  t.equal(await server.exit, 0);
});

t.test('SIGTERM: the request in flight finishes, new ones are refused, the exit code is 0', async (t) => {
  const server = await serve(t, modelDir, [], { HESSIAN_AUDIT_MAX_K: '3' });
  t.equal((await upload(server.base, slow)).status, 201);
  const port = new URL(server.base).port;
  const busy = spawnCli('serve', '--host', '127.0.0.1', '--port', port, '--model-dir', modelDir, '--workers', '1');
  t.equal(busy.code, 2);
  t.match(busy.stderr, `port ${port} on 127.0.0.1 is already in use; choose another --port`);
  const limited = await post(`${server.base}/v1/models/${sha256(slow)}/penalty`, { k: 4 });
  t.equal(limited.status, 422);
  t.match((await limited.json()).error.message, /k is 4, above this server's limit of 3/, 'settings come from environment variables');
  // The worker holds this model's requests for two seconds (test fault), so it is surely in flight.
  const inFlight = post(`${server.base}/v1/models/${sha256(slow)}/penalty`, { k: 2, seed: 3, latents: { samples: 2 } }, { 'x-request-id': 'drain-1' });
  await until(() => server.logs.some((l) => l.reqId === 'drain-1'), 'the request to arrive');
  server.proc.kill('SIGTERM');
  await until(() => /SIGTERM: finishing requests in flight/.test(server.stderr()), 'the shutdown to begin');
  const late = await fetch(`${server.base}/healthz`).then(
    (r) => r.status,
    () => 'refused',
  );
  t.ok(late === 'refused' || late === 503, `a new request is refused (${late})`);
  const res = await inFlight;
  t.equal(res.status, 200);
  t.equal((await res.json()).model, sha256(slow));
  t.equal(await server.exit, 0);
  t.ok(server.logs.some((l) => l.reqId === 'drain-1' && l.msg === 'request completed'), 'the log records the completed request');
});

t.test('serve refuses bad settings with exit code 2', async (t) => {
  const device = spawnCli('serve', '--device', 'tpu', '--model-dir', modelDir);
  t.equal(device.code, 2);
  t.match(device.stderr, /unknown device 'tpu': use auto, cpu, cuda, cuda:N or webgpu/);
  const workers = spawnCli('serve', '--workers', '0', '--model-dir', modelDir);
  t.equal(workers.code, 2);
  t.match(workers.stderr, /--workers must be a whole number of at least 1, got '0'/);
});
