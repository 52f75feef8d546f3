/**
 * A worker exits with its server (issue 11, item 7): after `kill -9` of the server in the middle
 * of a blocking run, the worker's watchdog thread sees its parent gone and ends the process.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { sha256 } from './helpers/server.js';
import { get, spawnServer, until, upload } from './helpers/serve-child.js';

/** Alive and not a zombie (a zombie has exited; it only waits to be reaped). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

t.test('kill -9 of the server during a blocking session.run: the worker is gone soon after', async (t) => {
  const hanging = modelBytes('separable.onnx');
  const server = await spawnServer(t, ['--workers', '1', '--request-timeout', '600'], {
    env: { HESSIAN_AUDIT_TEST_FAULTS: `hang=${sha256(hanging)}` },
  });
  t.equal((await upload(server.url, hanging)).status, 201);
  const pids = ((await get(server.url, '/readyz')).body.lanes as { pids: number[] }[]).flatMap((l) => l.pids);
  t.equal(pids.length, 1, 'one worker');
  t.ok(running(pids[0]), 'the worker runs');

  // Started, never answered: the worker blocks in the hang fault (like a native call that never returns).
  const request = fetch(`${server.url}/v1/models/${sha256(hanging)}/penalty`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"k": 2, "seed": 1, "latents": {"samples": 2}}',
  }).catch((err: Error) => err);
  await until(async () => (await get(server.url, '/readyz')).body.running === 1, 'the hanging run to start');

  server.proc.kill('SIGKILL');
  await server.exited;
  t.type(await request, Error, 'the client lost its connection');
  // Bounds only a broken watchdog (it polls every 250 ms); no timing is asserted.
  await until(() => !running(pids[0]), 'the orphaned worker to exit', 20_000);
  t.notOk(running(pids[0]), 'the worker exited with its server');
});
