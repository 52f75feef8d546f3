/**
 * `serve` with the deployment's device and CUDA settings: --devices, --cuda-*, and the startup
 * line that says which settings are really in effect.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { BIN, spawnCli } from './helpers/cli.js';

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
  const dir = mkdtempSync(join(tmpdir(), 'serve-cuda-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--device', 'auto', '--host', '127.0.0.1', '--port', '0', '--model-dir', dir, '--log-level', 'silent', '--cuda-memory-limit', '512', '--cuda-conv-algo-search', 'heuristic'],
  );
  t.teardown(() => child.kill('SIGKILL'));
  let stderr = '';
  const listening = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  t.match(
    stderr,
    'CUDA provider settings: TF32 off (NVIDIA_TF32_OVERRIDE=0); ' +
      'memory limit 512 MiB requested but not forwarded by this onnxruntime-node; no cap in effect; ' +
      'cuDNN algorithm search heuristic requested but not forwarded by this onnxruntime-node; exhaustive in effect',
  );
  t.match(stderr, /auto: 1 worker\(s\) on cpu/, 'auto found no CUDA here and says so');
  const ready = (await (await fetch(`${listening}/readyz`)).json()) as { lanes: { pids: number[]; executionProvider: string; fallback?: string }[] };
  t.equal(ready.lanes[0].executionProvider, 'cpu');
  t.match(ready.lanes[0].fallback, /CUDA execution provider cannot load/);
  const environ = readFileSync(`/proc/${ready.lanes[0].pids[0]}/environ`, 'utf8').split('\0');
  t.ok(environ.includes('HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB=512'), 'the worker process has the memory limit');
  t.ok(environ.includes('HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH=heuristic'));
  t.ok(environ.includes('HESSIAN_AUDIT_CUDA_TF32=off'));
  child.kill('SIGTERM');
  await new Promise((resolve) => child.on('exit', resolve));
});
