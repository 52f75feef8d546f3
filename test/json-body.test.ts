/**
 * Large JSON bodies are parsed off the event loop (issue 26, item 3; server/plugins/json-body.ts):
 * the same answers as Fastify's own parser, word for word, for valid and broken bodies alike; and
 * over a real socket, four 60 MiB bodies at once leave /healthz answering. A client refused by
 * --max-large-bodies that sends its whole body before reading still reads the 503.
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { spawnServer, upload } from './helpers/serve-child.js';
import { multipart, sha256, startApp, until as untilHere } from './helpers/server.js';

const mlp = modelBytes('mlp.onnx');
const SENDER = new URL('./helpers/json-sender.mjs', import.meta.url).pathname;
const path = `/v1/models/${sha256(mlp)}/penalty`;

t.test('worker-parsed and loop-parsed bodies get the same answers', async (t) => {
  const offLoop = await startApp(t, { largeBodyBytes: 1024 });
  const inline = await startApp(t);
  for (const { app } of [offLoop, inline]) {
    const body = multipart([{ name: 'model', filename: 'g.onnx', data: mlp }]);
    await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
  }
  const rows = Array.from({ length: 32 }, (_, n) => Array.from({ length: 8 }, (_, i) => Math.sin(n * 8 + i + 0.123456789)));
  const valid = JSON.stringify({ k: 3, seed: 5, latents: rows, directions: [rows.map((r) => r.map((x) => Math.sign(x) || 1)), rows.map((r) => r.map((x) => -Math.sign(x) || 1)), rows.map(() => r8(1))] });
  const cases: Record<string, string> = {
    valid,
    'not JSON': valid.slice(0, -20),
    '__proto__ in the body': `{"__proto__": {"polluted": true}, ${valid.slice(1)}`,
    'constructor.prototype in the body': `{"constructor": {"prototype": {"polluted": true}}, ${valid.slice(1)}`,
    'a string among the latents': JSON.stringify({ k: 2, seed: 5, latents: [...rows.slice(0, 31), [0, 1, 'x', 3, 4, 5, 6, 7]] }),
    'ragged latents': JSON.stringify({ k: 2, seed: 5, latents: [...rows.slice(0, 31), [0, 1, 2]] }),
    'empty rows': JSON.stringify({ k: 2, seed: 5, latents: Array.from({ length: 600 }, () => []) }),
    'too many columns': JSON.stringify({ k: 2, seed: 5, latents: rows.map((r) => [...r, 0]) }),
    'a flat list of latents': JSON.stringify({ k: 2, seed: 5, latents: rows.flat() }),
  };
  for (const [name, payload] of Object.entries(cases)) {
    t.ok(payload.length > 1024, `${name}: ${payload.length} bytes, a large body for the first app`);
    const before = offLoop.app.jsonBodiesParsedOffLoop();
    const [a, b] = await Promise.all(
      [offLoop, inline].map(({ app }) => app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/json' }, payload })),
    );
    t.equal(offLoop.app.jsonBodiesParsedOffLoop(), before + 1, `${name}: parsed in the worker thread`);
    t.equal(inline.app.jsonBodiesParsedOffLoop(), 0, `${name}: parsed on the loop by the other app`);
    t.equal(a.statusCode, b.statusCode, `${name}: status ${b.statusCode}`);
    if (b.statusCode === 200) {
      t.same(a.json().layers, b.json().layers, `${name}: the same figures`);
      t.same(a.json().samples, 32);
    } else t.same(a.json().error, b.json().error, `${name}: ${b.json().error.code}: ${b.json().error.message}`);
  }
});

/** A row of 8 equal values. */
function r8(v: number): number[] {
  return Array.from({ length: 8 }, () => v);
}

t.test('four 60 MiB bodies at once (--max-large-bodies 4): /healthz answers throughout', async (t) => {
  const server = await spawnServer(t, ['--max-large-bodies', '4']);
  t.equal((await upload(server.url, mlp)).status, 201);
  // The bodies come from a process of their own: this one only probes.
  const sender = spawn(process.execPath, [SENDER, `${server.url}${path}`, '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sender.stdout.setEncoding('utf8');
  sender.stdout.on('data', (chunk: string) => (out += chunk));
  const exited = new Promise<void>((resolve) => sender.on('exit', () => resolve()));
  let running = true;
  void exited.then(() => (running = false));
  const latencies: number[] = [];
  let answered = 0;
  while (running) {
    const started = performance.now();
    const res = await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(30_000) });
    await res.arrayBuffer();
    latencies.push(performance.now() - started);
    if (res.status === 200) answered++;
    await new Promise((r) => setTimeout(r, 20));
  }
  const { bytes, replies } = JSON.parse(out) as { bytes: number; replies: { status: number; body: { error: { code: string; message: string } } }[] };
  t.ok(bytes > 59 * 1024 * 1024, `${(bytes / 1024 / 1024).toFixed(1)} MiB a body`);
  t.equal(replies.length, 4);
  for (const reply of replies) {
    t.equal(reply.status, 422, JSON.stringify(reply.body));
    t.equal(reply.body.error.code, 'limit_exceeded', 'the latent rows are counted against --max-samples once parsed');
    t.match(reply.body.error.message, /^samples is \d+, above this server's limit of 4096/);
  }
  t.ok(latencies.length > 10, `${latencies.length} probes while the bodies were sent and parsed`);
  t.equal(answered, latencies.length, 'every /healthz probe answered 200');
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number): string => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);
  t.comment(`/healthz while four 60 MiB bodies were parsed: ${latencies.length} probes, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`);
});

t.test('a refused client that sends its whole body before reading reads the 503 and its Retry-After', async (t) => {
  const { app } = await startApp(t, { maxLargeBodies: 1, largeBodyBytes: 1024 * 1024 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as { port: number };
  const SIZE = 2 * 1024 * 1024;
  // One client holds the only slot: its headers promise SIZE bytes, its body has only begun.
  const holder = connect(port, '127.0.0.1');
  holder.on('error', () => {});
  t.teardown(() => holder.destroy());
  holder.on('connect', () => holder.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${SIZE}\r\n\r\n{"k": 2, `));
  await untilHere(() => app.largeBodiesInFlight() === 1, 'the held body to take the slot');
  // The way Python's http.client sends: the whole body, then it reads.
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
    socket.on('connect', () => {
      const body = `{"k": 2, "seed": 1, "latents": {"samples": 2}}${' '.repeat(SIZE)}`;
      socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
      socket.write(body, (err) => (err ? reject(err) : undefined));
    });
  });
  t.match(reply, /^HTTP\/1\.1 503 /, 'the status line is read, not a broken pipe');
  t.match(reply, /\r\nretry-after: 1\r\n/i);
  t.match(reply, /"code":"too_many_large_bodies"/);
});
