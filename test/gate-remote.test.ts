/**
 * The gate over HTTP: POST /v1/gate (inject) and the CLI's --server mode against a real socket on
 * 127.0.0.1. Remote and embedded runs must give the same numbers.
 */
import { createServer } from 'node:net';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { GateResult } from '../dist/gate/gate.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { sha256, startApp } from './helpers/server.js';

const TOKEN = 'gate-test-token';
const { app, dir: storeDir } = await startApp(t, { token: TOKEN });
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address() as { port: number };
const URL_ = `http://127.0.0.1:${address.port}`;
const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

const DCGAN = modelPath('dcgan.onnx');
const ENTANGLED = modelPath('dcgan_entangled.onnx');
const dir = mkdtempSync(join(tmpdir(), 'gate-remote-'));
const stored = (): string[] => readdirSync(storeDir).filter((n) => n.endsWith('.onnx')).sort();
const withoutTimings = (r: GateResult): Omit<GateResult, 'timings'> => {
  const { timings: _, ...rest } = r;
  return rest;
};
const remote = ['--server', URL_, '--token', TOKEN];

t.test('remote and embedded give the same numbers; known models are not uploaded again', async (t) => {
  const args = ['--candidate', ENTANGLED, '--baseline', DCGAN, '--samples', '12', '--k', '3', '--resamples', '400', '--seed', '3', '--json'];
  const first = await cli('gate', ...args, ...remote);
  t.equal(first.code, 1);
  t.match(first.stderr, /uploaded candidate .*dcgan_entangled\.onnx \(sha256 5224f00fb427\)/);
  t.match(first.stderr, /uploaded baseline .*dcgan\.onnx/);
  t.same(stored(), [`${sha256(modelBytes('dcgan.onnx'))}.onnx`, `${sha256(modelBytes('dcgan_entangled.onnx'))}.onnx`].sort());

  const local = await cli('gate', ...args);
  t.equal(local.code, 1);
  t.same(withoutTimings(JSON.parse(first.stdout)), withoutTimings(JSON.parse(local.stdout)), 'identical results');

  const again = await cli('gate', ...args, ...remote);
  t.equal(again.stderr, '', 'nothing uploaded the second time');
  t.same(withoutTimings(JSON.parse(again.stdout)), withoutTimings(JSON.parse(local.stdout)));

  // The table and the summary are made from the same result, so they agree too.
  const table = await cli('gate', ...args.slice(0, -1), ...remote);
  const localTable = await cli('gate', ...args.slice(0, -1));
  t.equal(table.stdout.replace(/^settings.*$/m, ''), localTable.stdout.replace(/^settings.*$/m, ''));
});

t.test('remote with extra inputs, explicit latents and a config file', async (t) => {
  const label = join(dir, 'label.json');
  const truncation = join(dir, 'truncation.json');
  const latents = join(dir, 'latents.json');
  const config = join(dir, 'gate.json');
  writeFileSync(label, JSON.stringify([3, 1, 4, 1, 5, 9]));
  writeFileSync(truncation, JSON.stringify([0.6]));
  writeFileSync(latents, JSON.stringify(Array.from({ length: 6 }, (_, i) => Array.from({ length: 8 }, (_, j) => Math.cos(i + 2 * j)))));
  writeFileSync(config, JSON.stringify({ $schema: 'x', resamples: 300, rules: { maxPenalty: 100 }, penalty: { k: 3 } }));
  const model = modelPath('conditional.onnx');
  const args = ['--candidate', model, '--baseline', model, '--latents', latents, '--input', `label=${label}`, '--input', `truncation=${truncation}`, '--config', config, '--json'];
  const local = await cli('gate', ...args);
  const viaServer = await cli('gate', ...args, ...remote);
  t.equal(local.code, 0);
  t.equal(viaServer.code, 0, viaServer.stderr);
  const result = JSON.parse(viaServer.stdout) as GateResult;
  t.equal(result.settings.samples, 6);
  t.equal(result.settings.k, 3);
  t.same(result.layers[0].rules.map((r) => r.rule), ['maxIncrease', 'maxPenalty', 'minNoiseMargin']);
  t.same(withoutTimings(result), withoutTimings(JSON.parse(local.stdout)));
});

t.test('remote errors exit 2 with the reason', async (t) => {
  const noToken = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, '--server', URL_);
  t.equal(noToken.code, 2);
  t.match(noToken.stderr, /the server at http:\/\/127\.0\.0\.1:\d+ answered 401 to GET \/v1\/models\/[0-9a-f]{64}: this server needs a token/);

  const incompatible = await cli('gate', '--candidate', DCGAN, '--baseline', modelPath('cubic.onnx'), ...remote);
  t.equal(incompatible.code, 2);
  t.match(incompatible.stderr, /^error: the candidate and the baseline cannot be given the same inputs/);
  t.notOk(stored().includes(`${sha256(modelBytes('cubic.onnx'))}.onnx`), 'checked before uploading');

  const badKey = join(dir, 'bad.json');
  writeFileSync(badKey, JSON.stringify({ layers: { image: { maxIncrese: 1 } } }));
  const typo = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, '--config', badKey, ...remote);
  t.equal(typo.code, 2);
  t.match(typo.stderr, /bad\.json: layers\.image\.maxIncrese: unknown key/);

  const budget = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, '--memory-budget', '64', ...remote);
  t.equal(budget.code, 2);
  t.match(budget.stderr, /--memory-budget applies to local runs; with --server the server's limits apply/);

  const badUrl = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, '--server', 'ftp://example');
  t.equal(badUrl.code, 2);
  t.match(badUrl.stderr, /--server must be an http:\/\/ or https:\/\/ URL, got 'ftp:\/\/example'/);
});

t.test('an unreachable server: exit 2 naming it', async (t) => {
  // A port that was free a moment ago: nothing listens there.
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
  const r = await cli('gate', '--candidate', DCGAN, '--baseline', DCGAN, '--server', `http://127.0.0.1:${port}`);
  t.equal(r.code, 2);
  t.equal(r.stderr, `error: cannot reach the server at http://127.0.0.1:${port}: ECONNREFUSED\n`);
  t.equal(r.stdout, '');
});

t.test('POST /v1/gate: contract errors', async (t) => {
  const ids = { candidate: sha256(modelBytes('dcgan.onnx')), baseline: sha256(modelBytes('dcgan.onnx')) };
  const post = (body: unknown) => app.inject({ method: 'POST', url: '/v1/gate', headers: auth, payload: JSON.stringify(body) });
  const error = (res: { statusCode: number; json: () => unknown }) => [res.statusCode, (res.json() as { error: { code: string; message: string } }).error];

  const [status, unknown] = error(await post({ ...ids, baseline: 'a'.repeat(64) }));
  t.equal(status, 404);
  t.equal(unknown.code, 'unknown_model');
  t.match(unknown.message, /no model with id 'a{64}'/);

  const [s400, typo] = error(await post({ ...ids, rules: { maxIncrese: 0.1 } }));
  t.equal(s400, 400);
  t.match(typo.message, /request\.rules has unknown field 'maxIncrese'/);

  const [s400b, badId] = error(await post({ ...ids, candidate: 'model.onnx' }));
  t.equal(s400b, 400);
  t.match(badId.message, /request\.candidate: must be a model id/);

  const [s422, layer] = error(await post({ ...ids, penalty: { samples: 4 }, layers: { nope: { maxPenalty: 1 } } }));
  t.equal(s422, 422);
  t.match(layer.message, /layers\.nope: not a compared layer \(compared: 'image'\)/);

  const ok = await post({ ...ids, penalty: { samples: 4, k: 2 }, resamples: 100 });
  t.equal(ok.statusCode, 200);
  t.same(ok.json().layers[0].ratio, { estimate: 1, lower: 1, upper: 1 });

  const spec = await app.inject({ method: 'GET', url: '/openapi.json' });
  t.ok(spec.json().paths['/v1/gate']?.post, 'documented in the OpenAPI document');
});

t.test('figure rules run on the server too, with the same figures as embedded', async (t) => {
  const args = ['--candidate', modelPath('ignoring.onnx'), '--baseline', modelPath('ignoring.onnx'), '--samples', '4', '--max-unused-latents', '0', '--min-diagonal-fraction', '0.5', '--json'];
  const remoteRun = await cli('gate', ...args, ...remote);
  const localRun = await cli('gate', ...args);
  t.equal(remoteRun.code, 1, remoteRun.stderr);
  t.equal(localRun.code, 1, localRun.stderr);
  const figures = (r: { stdout: string }) => JSON.parse(r.stdout).layers.map((l: { candidate: { figures: unknown } }) => l.candidate.figures);
  t.same(figures(remoteRun), figures(localRun));
  t.equal(figures(remoteRun)[0].unusedLatents, 1);
});
