/**
 * At most --max-large-bodies large bodies are read at once (issue 11, item 3): two clients that
 * send the headers of 2 MiB bodies and hold them make a third large request get 503 with
 * Retry-After before its body is read; small requests are served meanwhile; the slots come back.
 * Over a real socket, since the point is what happens while bodies are still arriving.
 */
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, until } from './helpers/server.js';

const { app, context } = await startApp(t, { maxLargeBodies: 2, largeBodyBytes: 1024 * 1024 });
const mlp = modelBytes('mlp.onnx');
const upload = multipart([{ name: 'model', filename: 'g.onnx', data: mlp }]);
await app.inject({ method: 'POST', url: '/v1/models', payload: upload.payload, headers: upload.headers });
await app.listen({ host: '127.0.0.1', port: 0 });
const { port } = app.server.address() as { port: number };
const path = `/v1/models/${sha256(mlp)}/penalty`;
const SIZE = 2 * 1024 * 1024;

/** A request whose headers promise SIZE bytes and whose body has only begun. */
function holding(): Promise<Socket> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${SIZE}\r\n\r\n{"k": 2, `);
      resolve(socket);
    });
    socket.on('error', () => {});
  });
}

const large = (): Promise<Response> =>
  fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    // 2 MiB of spaces around a small valid request: large, yet cheap to make.
    body: `{"k": 2, "seed": 1, "latents": {"samples": 2}}${' '.repeat(SIZE)}`,
  });
const small = (): Promise<Response> =>
  fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"k": 2, "seed": 1, "latents": {"samples": 2}}' });

t.test('two held large bodies: a third gets 503 too_many_large_bodies; small ones are served; then the slots come back', async (t) => {
  const expected = await (await small()).json();
  const held = [await holding(), await holding()];
  await until(() => app.largeBodiesInFlight() === 2, 'both held bodies to be inside the server');
  const refused = await large();
  t.equal(refused.status, 503, 'a third large body is refused');
  const body = await refused.json();
  t.equal(body.error.code, 'too_many_large_bodies');
  t.equal(body.error.message, '2 large request bodies (over 1 MiB) are being read, the most this server reads at once (--max-large-bodies 2); retry later');
  t.equal(refused.headers.get('retry-after'), '1');

  const meanwhile = await small();
  t.equal(meanwhile.status, 200, 'a small request is served while the large ones hang');
  t.same((await meanwhile.json()).layers, expected.layers);
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);

  for (const socket of held) socket.destroy();
  await until(() => app.largeBodiesInFlight() === 0, 'the held slots to come back');
  const after = await large();
  t.equal(after.status, 200, 'a large body is read again once the held ones were dropped');
  t.same((await after.json()).layers, expected.layers, 'the same numbers');
});

t.test('cheap bounds first: too many latent rows or directions are refused before the schema walks them', async (t) => {
  const rows = Array.from({ length: 4097 }, () => [0, 0, 0, 0, 0, 0, 0, 0]);
  const res = await app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ k: 2, latents: rows }) });
  t.equal(res.statusCode, 422);
  t.same(res.json().error, {
    code: 'limit_exceeded',
    message: "samples is 4097, above this server's limit of 4096; audit a subset (maxSamples) or ask for a higher limit",
    details: { limit: 4096 },
  });
  const directions = Array.from({ length: 4097 }, () => [[0]]);
  const k = await app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ k: 2, latents: { samples: 2 }, directions }) });
  t.equal(k.statusCode, 422);
  t.equal(k.json().error.message, "k is 4097, above this server's limit of 4096; audit a subset (maxSamples) or ask for a higher limit");
  // At the limit the rows reach the engine as before.
  const atLimit = await app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ k: 2, seed: 1, latents: rows.slice(0, 4), directions: undefined }) });
  t.equal(atLimit.statusCode, 200, atLimit.body);
  t.equal(atLimit.json().samples, 4);
});

t.test('.npy parts: the declared header is checked as it streams, before the data is buffered', async (t) => {
  const { writeNpy } = await import('../dist/io/npy.js');
  const oneShot = (latents: Uint8Array) => {
    const form = multipart([
      { name: 'model', filename: 'g.onnx', data: mlp },
      { name: 'request', data: '{"k": 2, "seed": 1}' },
      { name: 'latents', filename: 'z.npy', data: latents },
    ]);
    return app.inject({ method: 'POST', url: '/v1/penalty', payload: form.payload, headers: form.headers });
  };
  const rows = (n: number) => writeNpy({ type: 'float32', shape: [n, 8], data: new Float32Array(n * 8) });

  const tooMany = await oneShot(rows(4097));
  t.equal(tooMany.statusCode, 422);
  t.equal(tooMany.json().error.code, 'limit_exceeded');
  t.equal(tooMany.json().error.message, "samples is 4097, above this server's limit of 4096; audit a subset (maxSamples) or ask for a higher limit");

  // A header declaring 2^40 bytes with almost none sent: refused from the header alone.
  const header = rows(0);
  const latin1 = Buffer.from(header).toString('latin1');
  t.match(latin1, /\(0, 8\)/);
  // Same header length: the ten more digits take ten spaces of the padding.
  const huge = Buffer.from(latin1.replace('(0, 8)', '(34359738368, 8)').replace(`${' '.repeat(10)}\n`, '\n'), 'latin1');
  t.equal(huge.length, header.length);
  const declared = await oneShot(huge);
  t.equal(declared.statusCode, 413, declared.body);
  t.equal(declared.json().error.code, 'payload_too_large');

  const ok = await oneShot(rows(3));
  t.equal(ok.statusCode, 200, ok.body);
  t.equal(ok.json().samples, 3);
});

t.test('a large one-shot request frees its slot once its parts are read, before its worker task', async (t) => {
  const seen: number[] = [];
  const original = context.pool.evaluate.bind(context.pool);
  context.pool.evaluate = ((...args: Parameters<typeof original>) => {
    seen.push(app.largeBodiesInFlight());
    return original(...args);
  }) as typeof context.pool.evaluate;
  t.teardown(() => void (context.pool.evaluate = original));
  // 2 MiB of spaces in the "request" field make the body large.
  const form = multipart([
    { name: 'model', filename: 'g.onnx', data: mlp },
    { name: 'request', data: `{"k": 2, "seed": 1, "latents": {"samples": 2}}${' '.repeat(SIZE)}` },
  ]);
  const res = await fetch(`http://127.0.0.1:${port}/v1/penalty`, { method: 'POST', headers: form.headers, body: form.payload });
  t.equal(res.status, 200);
  t.same(seen, [0], 'no large-body slot held while the worker ran');
  t.equal(app.largeBodiesInFlight(), 0);
});
