// The Hessian's, activeness's and orthogonality's two estimators (issue 13, item 1) in process, alternating in one
// run: --estimator host (every row copied out, reduced in JavaScript) against --estimator graph (the
// suffix in a companion session, per-sample figures copied out). Prints the bytes fetched out of
// onnxruntime, the median wall time of each and their ratio, and the largest relative difference
// of the figures (exits 1 above RTOL, default 1e-6: both accumulate in float64).
//
//   npm run build && node bench/hessian-graph.mjs            # MODEL, SAMPLES (8), ROUNDS (5), DEVICE (cpu)
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { AuditRequestSchema, DEFAULT_LIMITS, parseRequest } from '../dist/contract/request.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { parseDevice } from '../dist/runtime/device.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const MODEL = process.env.MODEL ?? 'models/dcgan.onnx';
const SAMPLES = Number(process.env.SAMPLES ?? 8);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const RTOL = Number(process.env.RTOL ?? 1e-6);
const device = parseDevice(process.env.DEVICE ?? 'cpu');

const model = loadModel(new Uint8Array(readFileSync(MODEL)));
const sessions = new SessionCache(4);
const context = { device, sessions, limits: DEFAULT_LIMITS };
const run = (metric, estimator) =>
  evaluateMetric(metric, model, parseRequest({ latents: { samples: SAMPLES }, seed: 1, estimator }, {}, AuditRequestSchema), context);

function worstRelative(a, b) {
  if (typeof a === 'number' && typeof b === 'number') return a === b ? 0 : Math.abs(a - b) / Math.abs(b);
  if (a === null || b === null || typeof a !== 'object') return a === b ? 0 : Infinity;
  return Math.max(0, ...Object.keys(b).map((key) => worstRelative(a[key], b[key])));
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const mb = (bytes) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(2)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);

let commit = 'unknown';
try {
  commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
} catch {}
console.log(`${MODEL}, N = ${SAMPLES}, ${ROUNDS} rounds alternating host/graph, device ${process.env.DEVICE ?? 'cpu'}`);
console.log(`${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}; ${new Date().toISOString()}; commit ${commit}; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log('');
console.log('| metric | rows | host fetched | graph fetched | bytes host/graph | host ms | graph ms | time graph/host | worst relative difference |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
let failed = false;
for (const metric of ['hessian', 'activeness', 'orthogonality']) {
  // Warm-up: both sessions open, the tuner measured (it counts as warm-up).
  const first = { host: await run(metric, 'host'), graph: await run(metric, 'graph') };
  if (first.graph.estimator !== 'graph') throw new Error(`${metric}: the graph estimator fell back to the host: ${first.graph.warnings.map((w) => w.message).join('; ')}`);
  const ms = { host: [], graph: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const estimator of round % 2 === 0 ? ['host', 'graph'] : ['graph', 'host']) {
      const started = performance.now();
      await run(metric, estimator);
      ms[estimator].push(performance.now() - started);
    }
  }
  const worst = worstRelative({ p: first.graph.penalty ?? null, l: first.graph.layers }, { p: first.host.penalty ?? null, l: first.host.layers });
  if (!(worst <= RTOL)) failed = true;
  const [h, g] = [median(ms.host), median(ms.graph)];
  console.log(
    `| ${metric} | ${first.host.rows} | ${mb(first.host.fetchedBytes)} | ${mb(first.graph.fetchedBytes)} | ${(first.host.fetchedBytes / first.graph.fetchedBytes).toFixed(1)}× | ` +
      `${h.toFixed(0)} | ${g.toFixed(0)} | ${(g / h).toFixed(2)} | ${worst.toExponential(1)} |`,
  );
}
console.log('');
console.log(`load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
sessions.clear();
process.exit(failed ? 1 : 0);
