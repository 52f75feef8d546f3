/**
 * Fair share of the workers (issue 11, item 16): one client's slow backlog does not hold the single
 * worker for everyone, and a client past its own limit gets a 503 that names that limit.
 * Clients are told apart by address: 127.0.0.1 and 127.0.0.2 over a real socket.
 */
import { request as httpRequest } from 'node:http';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, until } from './helpers/server.js';

const slow = modelBytes('separable.onnx');
const fast = modelBytes('mlp.onnx');
const { app, context } = await startApp(t, {
  workers: 1,
  maxQueue: 8,
  maxPerClient: 2,
  requestTimeoutMs: 60_000,
  // Each run of the slow model holds the worker for 2 s first.
  workerEnv: { HESSIAN_AUDIT_TEST_FAULTS: `delay=${sha256(slow)}` },
});
for (const bytes of [slow, fast]) {
  const body = multipart([{ name: 'model', filename: 'g.onnx', data: bytes }]);
  await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: body.headers });
}
await app.listen({ host: '127.0.0.1', port: 0 });
const { port } = app.server.address() as { port: number };

interface Answer {
  status: number;
  retryAfter?: string;
  body: { error?: { code: string; message: string }; layers?: unknown };
}

function send(bytes: Uint8Array, from: string, finished: string[], name: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      localAddress: from,
      method: 'POST',
      path: `/v1/models/${sha256(bytes)}/penalty`,
      headers: { 'content-type': 'application/json' },
    });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        finished.push(name);
        resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined, body: JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.end('{"k": 2, "seed": 1, "latents": {"samples": 2}}');
  });
}

t.test('a second client is served before the first client\'s backlog; the per-client limit is a 503 naming it', async (t) => {
  const finished: string[] = [];
  const a1 = send(slow, '127.0.0.1', finished, 'a1');
  await until(() => context.pool.status().running === 1, 'a1 to run');
  const a2 = send(slow, '127.0.0.1', finished, 'a2');
  await until(() => context.pool.status().queued === 1, 'a2 to queue');

  const a3 = await send(slow, '127.0.0.1', finished, 'a3');
  t.equal(a3.status, 503);
  t.equal(a3.body.error!.code, 'client_limit');
  t.match(a3.body.error!.message, /this client \(127\.0\.0\.1\) already has 2 requests queued or running, the most one client may have \(per-client limit 2, --max-per-client\)/);
  t.ok(Number(a3.retryAfter) >= 1, 'with Retry-After');

  const b1 = send(fast, '127.0.0.2', finished, 'b1');
  await until(() => context.pool.status().queued === 2, 'b1 to queue behind a2');
  const answers = await Promise.all([a1, a2, b1]);
  t.same(answers.map((a) => a.status), [200, 200, 200]);
  t.same(finished, ['a3', 'a1', 'b1', 'a2'], 'b1 took the worker before a2, though it arrived later');

  // Nothing lost: the same numbers as a lone request.
  const alone = await send(fast, '127.0.0.2', [], 'alone');
  t.same(alone.body.layers, answers[2].body.layers);
  t.equal(context.pool.status().queued, 0);
});
