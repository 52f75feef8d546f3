/**
 * One memory gate for every run (issue 26): a request is refused with 422 memory_budget_exceeded
 * before any row runs when its smallest batch cannot fit, counting onnxruntime's largest tensor, the
 * outputs fetched into JavaScript and the metric's float64 accumulators (docs/harden.md). Over a
 * real socket, against the real service; the worker's peak RSS (VmHWM) shows nothing ran.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { encode, wideRowModel } from './helpers/onnx-build.js';
import { spawnCli } from './helpers/cli.js';
import { get, spawnServer, upload, type Reply } from './helpers/serve-child.js';

const MiB = 1024 * 1024;
const BUDGET = 512 * MiB; // the default --memory-budget
const bomb = encode(wideRowModel(2 ** 26)); // one row is 256 MiB
const accumulatorsOnly = encode(wideRowModel(2 ** 22)); // 16 MiB a row: fits as a tensor, not with its accumulators
const fits = encode(wideRowModel(2 ** 20)); // 4 MiB a row: fits with everything

const server = await spawnServer(t);
const ids: Record<string, string> = {};
const uploads: Record<string, number> = {};
for (const [name, bytes] of Object.entries({ bomb, accumulatorsOnly, fits })) {
  const res = await upload(server.url, bytes, `${name}.onnx`);
  uploads[name] = res.status;
  ids[name] = res.body.id as string;
}

async function post(path: string, body: unknown): Promise<Reply> {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: JSON.parse(text) };
}

/** Peak resident memory of each worker process since it started, bytes (VmHWM). */
async function workerPeaks(): Promise<number[]> {
  const ready = (await get(server.url, '/readyz')).body as unknown as { lanes: { pids: number[] }[] };
  const pids = ready.lanes.flatMap((l) => l.pids);
  return pids.map((pid) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024);
}

const refused = (t: Tap.Test, res: Reply, what: RegExp): void => {
  t.equal(res.status, 422, JSON.stringify(res.body));
  t.equal(res.body.error?.code, 'memory_budget_exceeded');
  t.match(res.body.error?.message, what);
  t.match(res.body.error?.message, new RegExp(`: over the memory budget of ${BUDGET} bytes \\(--memory-budget\\), so the model is not run$`));
};

const request = { latents: { samples: 4 }, seed: 1 };
const metrics = ['penalty', 'hessian', 'activeness', 'orthogonality', 'audit', 'noise', 'traversal'] as const;

t.test('a 256 MiB row: every metric and the gate refused before any row runs; the worker stays small', async (t) => {
  t.same(uploads, { bomb: 201, accumulatorsOnly: 201, fits: 201 }, 'the models upload (nothing runs at upload)');
  for (const metric of metrics) {
    const res = await post(`/v1/models/${ids.bomb}/${metric}`, request);
    refused(t, res, /^(tensor 'y' \(Expand\)|the outputs of layer 'y' fetched into JavaScript|.*accumulators.*|.*tables.*|.*images.*) (would have shape|for \d+ samples? would have shape)/);
    t.match(res.body.error?.message, /tensor 'y' \(Expand\)/, `${metric}: names onnxruntime's largest tensor`);
  }
  const gate = await post('/v1/gate', { candidate: ids.bomb, baseline: ids.bomb, penalty: { samples: 4, seed: 1 } });
  refused(t, gate, /tensor 'y' \(Expand\)/);
  const peaks = await workerPeaks();
  t.ok(peaks.length > 0);
  for (const peak of peaks) t.ok(peak < 1024 * MiB, `worker peak RSS ${Math.round(peak / MiB)} MiB is under 1 GiB`);
});

t.test('the penalty: what it holds is named, part by part, with its shape and bytes', async (t) => {
  const res = await post(`/v1/models/${ids.bomb}/penalty`, request);
  // The preflight's 4 rows, its two runs' outputs compared, and one sample's accumulators:
  // 8 (sums) + 84 (noise tables) + 8 (one step-test centre) + 24 (a sample in flight) bytes per element.
  const E = 2 ** 26;
  t.equal(
    res.body.error?.message,
    `the penalty's float64 accumulators for 1 sample would have shape [1, ${E}], ${124 * E} bytes, for a batch of 4 rows, ` +
      `with the outputs of layer 'y' fetched into JavaScript ([8, ${E}], ${32 * E} bytes) and tensor 'y' (Expand) ([4, ${E}], ${16 * E} bytes): ${172 * E} bytes in all: ` +
      `over the memory budget of ${BUDGET} bytes (--memory-budget), so the model is not run`,
  );
  t.match(res.body.error?.details, { part: "the penalty's float64 accumulators for 1 sample", bytes: 124 * E, total: 172 * E, budget: BUDGET, tensor: 'y', op: 'Expand' });
});

t.test('a row that fits as a tensor but not with its accumulators is refused too (the old check let it run)', async (t) => {
  const res = await post(`/v1/models/${ids.accumulatorsOnly}/penalty`, request);
  refused(t, res, /^the penalty's float64 accumulators for 1 sample would have shape \[1, 4194304\]/);
});

t.test('a model under the budget still runs and gives the exact penalty', async (t) => {
  // Directions (1, 1) and (1, −1) for every sample: q = vᵀHv = ±2, so the unbiased variance is 8.
  const directions = [Array.from({ length: 4 }, () => [1, 1]), Array.from({ length: 4 }, () => [1, -1])];
  const res = await post(`/v1/models/${ids.fits}/penalty`, { latents: [[0.5, -1], [1, 2], [-0.25, 0.75], [2, 1]], directions, k: 2 });
  t.equal(res.status, 200, JSON.stringify(res.body.error));
  const layer = (res.body.layers as { name: string; penalty: number }[])[0];
  t.equal(layer.name, 'y');
  t.ok(Math.abs(layer.penalty - 8) < 8e-3, `penalty ${layer.penalty} is 8`);
});

t.test('the command line: exit 2 and the same words', async (t) => {
  const path = join(server.dir, 'bomb-cli.onnx');
  writeFileSync(path, bomb);
  const http = await post(`/v1/models/${ids.bomb}/penalty`, request);
  const cli = spawnCli('penalty', path, '--samples', '4', '--seed', '1');
  t.equal(cli.code, 2, cli.stderr);
  t.ok(cli.stderr.includes(http.body.error!.message), cli.stderr);
});

t.test('nothing lost: the server still answers and no worker was replaced', async (t) => {
  const ready = (await get(server.url, '/readyz')).body as { restarts: number; status: string };
  t.equal(ready.status, 'ready');
  t.equal(ready.restarts, 0);
});
