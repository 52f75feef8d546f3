/**
 * scripts/docker-smoke.sh: the image's build and start steps on the CPU provider, for real —
 * pack, production install, `hessian-audit serve`, the probe paths the image and the manifests
 * use, one penalty request with an exact answer, SIGTERM.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';

const ROOT = new URL('..', import.meta.url).pathname;
const SERVE = join(ROOT, 'dist/cli/commands/serve.js');

// The probe paths the deployments really use: the image's HEALTHCHECK and the Deployments' probes.
const healthcheck = /HEALTHCHECK[^]*?http:\/\/127\.0\.0\.1:\d+(\/[a-z]+)/.exec(readFileSync(join(ROOT, 'docker/Dockerfile'), 'utf8'))![1];
const containers = ['deploy/api.yaml', 'deploy/worker.yaml'].map((f) => parseAllDocuments(readFileSync(join(ROOT, f), 'utf8'))[0].toJS().spec.template.spec.containers[0]);
const probes = [...new Set([healthcheck, ...containers.flatMap((c) => ['startupProbe', 'livenessProbe', 'readinessProbe'].map((p) => c[p].httpGet.path as string))])];

t.test(
  'the image’s steps, without Docker: install, serve, probes, one penalty, stop',
  {
    skip: !existsSync(SERVE) && 'dist/cli/commands/serve.js is missing: the HTTP server (branch server) is not in this build',
    timeout: 300_000,
  },
  async (t) => {
    const r = spawnSync('bash', [join(ROOT, 'scripts/docker-smoke.sh')], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, SMOKE_PROBES: probes.join(' ') },
      timeout: 280_000,
      killSignal: 'SIGKILL',
    });
    t.equal(r.status, 0, `docker-smoke.sh succeeded\n${r.stderr.slice(-4000)}`);
    if (r.status !== 0) return;
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    t.same(Object.keys(result.probed).sort(), [...probes].sort(), `probed ${probes.join(', ')}`);
    for (const path of probes) t.equal(result.probed[path].status, 200, `GET ${path} → 200`);
    const readyz = result.probed['/readyz']?.body;
    t.ok(readyz?.lanes?.length >= 1, '/readyz lists the workers');
    t.ok(readyz.lanes.every((l: { executionProvider: string }) => l.executionProvider === 'cpu'), '/readyz states the provider each worker really runs on');
    // Exact: y0 = z0·z1 has vᵀHv = ±2 → unbiased variance over the two directions 8;
    // y1 = z0²·z1 has vᵀHv = 2z1 ± 4z0 → 32·z0², largest for z0 = −3: 288.
    t.ok(Math.abs(result.penalty.layers.y0 - 8) < 8e-4, `y0 ${result.penalty.layers.y0} ≈ 8`);
    t.ok(Math.abs(result.penalty.layers.y1 - 288) < 288e-4, `y1 ${result.penalty.layers.y1} ≈ 288`);
    t.equal(result.penalty.executionProvider, 'cpu');
    t.match(result.penalty.model, /^[0-9a-f]{64}$/, 'the content address of the model');
    t.ok([0, 143].includes(result.exitStatus), `the server stopped on SIGTERM (status ${result.exitStatus})`);
  },
);
