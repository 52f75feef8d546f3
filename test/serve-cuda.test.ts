/**
 * `serve` with the deployment's device and CUDA settings: --devices, --cuda-*, the startup line
 * that says which settings are really in effect, and a CUDA lane that cannot start.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { BIN, spawnCli } from './helpers/cli.js';

const cudaInstalled = existsSync(
  join(dirname(dirname(createRequire(import.meta.url).resolve('onnxruntime-node'))), 'bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so'),
);

/** Start `serve` on a free port; resolves with its base URL and stderr once it listens. */
async function startServe(t: { teardown(fn: () => unknown): void }, ...args: string[]): Promise<{ base: string; stderr: () => string; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'serve-cuda-'));
  const child = spawn(process.execPath, [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--log-level', 'silent', ...args]);
  let stderr = '';
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  t.teardown(stop);
  const base = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  return { base, stderr: () => stderr, stop };
}

t.test('bad device lists and CUDA settings stop serve before it starts (exit 2)', async (t) => {
  const cases: [string[], string][] = [
    [['--devices', '0,0'], 'error: --devices lists GPU 0 twice'],
    [['--devices', 'gpu0'], "error: --devices takes GPU ordinals separated by commas (e.g. 0,1), got 'gpu0'"],
    [['--devices', '0', '--device', 'cpu'], 'error: give --device or --devices, not both'],
    [['--cuda-tf32', 'maybe'], "error: --cuda-tf32 takes on or off, got 'maybe'"],
    [['--cuda-memory-limit', '-5'], 'error: the CUDA memory limit must be a whole number of MiB ≥ 0 (0 = no limit), got -5'],
    [['--cuda-conv-algo-search', 'fast'], "error: option '--cuda-conv-algo-search <how>' argument 'fast' is invalid. Allowed choices are exhaustive, heuristic, default."],
  ];
  for (const [args, message] of cases) {
    const r = spawnCli('serve', '--port', '0', '--host', '127.0.0.1', ...args);
    t.equal(r.code, 2, args.join(' '));
    t.equal(r.stderr.split('\n')[0], message);
  }
});

t.test('the startup log states the CUDA settings in effect, and the workers get them', { timeout: 60_000 }, async (t) => {
  const server = await startServe(t, '--device', 'auto', '--cuda-memory-limit', '512', '--cuda-conv-algo-search', 'heuristic');
  t.match(
    server.stderr(),
    'CUDA provider settings: TF32 off (NVIDIA_TF32_OVERRIDE=0); ' +
      'memory limit 512 MiB requested but not forwarded by this onnxruntime-node; no cap in effect; ' +
      'cuDNN algorithm search heuristic requested but not forwarded by this onnxruntime-node; exhaustive in effect',
  );
  const ready = (await (await fetch(`${server.base}/readyz`)).json()) as { lanes: { pids: number[]; executionProvider: string; fallback?: string }[] };
  const environ = readFileSync(`/proc/${ready.lanes[0].pids[0]}/environ`, 'utf8').split('\0');
  t.ok(environ.includes('HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB=512'), 'the worker process has the memory limit');
  t.ok(environ.includes('HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH=heuristic'));
  t.ok(environ.includes('HESSIAN_AUDIT_CUDA_TF32=off'));
  if (!cudaInstalled) {
    t.match(server.stderr(), /auto: 1 worker\(s\) on cpu/, 'auto found no CUDA here and says so');
    t.equal(ready.lanes[0].executionProvider, 'cpu');
    t.match(ready.lanes[0].fallback, /CUDA execution provider cannot load/);
  }
  await server.stop();
});

t.test(
  '--device cuda without a usable CUDA provider: alive, not ready, and requests are refused, never run on the CPU',
  { timeout: 60_000, skip: cudaInstalled && 'the CUDA provider is installed here' },
  async (t) => {
    const server = await startServe(t, '--device', 'cuda');
    t.equal((await fetch(`${server.base}/healthz`)).status, 200, 'liveness: the process answers');
    const readyz = await fetch(`${server.base}/readyz`);
    t.equal(readyz.status, 503, 'readiness fails, so Kubernetes sends it no traffic');
    const body = (await readyz.json()) as { lanes: { device: string; executionProvider: string | null; probeError?: string }[] };
    t.same(body.lanes.map((l) => [l.device, l.executionProvider]), [['cuda:0', null]]);
    t.match(body.lanes[0].probeError, /^the CUDA execution provider cannot load: .*libonnxruntime_providers_cuda\.so.*ONNXRUNTIME_NODE_INSTALL=cuda12/);
    const form = new FormData();
    form.append('model', new Blob([readFileSync(new URL('../models/cubic.onnx', import.meta.url))]), 'cubic.onnx');
    form.append('request', JSON.stringify({ latents: { samples: 2 }, k: 2, seed: 1 }));
    const r = await fetch(`${server.base}/v1/penalty`, { method: 'POST', body: form });
    t.equal(r.status, 422);
    const error = ((await r.json()) as { error: { code: string; message: string } }).error;
    t.equal(error.code, 'device_unavailable');
    t.match(error.message, /the CUDA execution provider cannot load/);
    await server.stop();
  },
);
