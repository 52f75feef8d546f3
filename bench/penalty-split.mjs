// Where a warm in-process penalty request's time goes, like for like (issue 13): the request at a
// fixed batch size (BATCH_ROWS, default 64) against bare onnxruntime runs of the same number of
// rows in batches of that size ON THE SAME SESSION, alternating request by request, so that the
// batch size, the session and the machine's moment are shared. N = 64, k = 8 (1,088 rows).
//   bareMs             the 1,088 rows through session.run alone
//   penaltyForwardMs   the request's time inside onnxruntime (timings.forwardMs)
//   penaltyMs          the request end to end; hostMs = penaltyMs − penaltyForwardMs
// With BEFORE=<root of an older checkout with its dist/ built> the older build's request runs too,
// in the same alternation on its own session (before.*). Medians over REPEATS (default 15);
// prints JSON with the load average.
//
//   npm run build && node bench/penalty-split.mjs [MODEL.onnx …]
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import * as ort from 'onnxruntime-node';
import { evaluatePenalty, SessionCache } from '../dist/metrics/evaluate.js';
import { standardNormal } from '../dist/math/sampling.js';
import { decodeModel } from '../dist/onnx/proto.js';
import { loadModel } from '../dist/runtime/model.js';
import { pathToFileURL } from 'node:url';

const before = process.env.BEFORE
  ? {
      ...(await import(pathToFileURL(`${process.env.BEFORE}/dist/metrics/evaluate.js`).href)),
      ...(await import(pathToFileURL(`${process.env.BEFORE}/dist/runtime/model.js`).href)),
    }
  : null;

const N = 64;
const K = 8;
const ROWS = N * (2 * K + 1);
const BATCH = Number(process.env.BATCH_ROWS ?? 64);
const REPEATS = Number(process.env.REPEATS ?? 15);
const paths = process.argv.slice(2);
if (paths.length === 0) for (const m of ['dcgan', 'dcgan64']) paths.push(new URL(`../models/${m}.onnx`, import.meta.url).pathname);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x, digits = 1) => Number(x.toFixed(digits));

const loadBefore = loadavg();
const models = [];
for (const path of paths) {
  const bytes = new Uint8Array(readFileSync(path));
  const model = loadModel(bytes);
  const input = decodeModel(bytes).graph.input[0];
  const latentShape = input.type.tensorType.shape.dim.slice(1).map((d) => Number(d.dimValue));
  const size = latentShape.reduce((a, b) => a * b, 1);
  const sessions = new SessionCache(2);
  const context = { device: { kind: 'cpu' }, sessions };
  const request = { latents: { samples: N }, k: K, seed: 1, batchRows: BATCH };
  await evaluatePenalty(model, request, context); // session, preflight, noise: cached from here on
  // The request's own session (default layers: the graph's outputs, nothing exposed).
  const { session } = await sessions.get(model.id, model.bytes, [], { kind: 'cpu' });
  const latents = standardNormal(ROWS * size, 3);
  const bare = async () => {
    const t = performance.now();
    for (let first = 0; first < ROWS; first += BATCH) {
      const count = Math.min(BATCH, ROWS - first);
      await session.run({ [input.name]: new ort.Tensor('float32', latents.slice(first * size, (first + count) * size), [count, ...latentShape]) });
    }
    return performance.now() - t;
  };
  await bare();
  const beforeModel = before?.loadModel(bytes);
  const beforeContext = before ? { device: { kind: 'cpu' }, sessions: new before.SessionCache(2) } : null;
  if (before) await before.evaluatePenalty(beforeModel, request, beforeContext);
  const ms = { bare: [], penalty: [], penaltyForward: [], host: [], beforePenalty: [], beforeHost: [] };
  for (let i = 0; i < REPEATS; i++) {
    ms.bare.push(await bare());
    const t = performance.now();
    const result = await evaluatePenalty(model, request, context);
    const total = performance.now() - t;
    ms.penalty.push(total);
    ms.penaltyForward.push(result.timings.forwardMs);
    ms.host.push(total - result.timings.forwardMs);
    if (before) {
      const t0 = performance.now();
      const old = await before.evaluatePenalty(beforeModel, request, beforeContext);
      const oldTotal = performance.now() - t0;
      ms.beforePenalty.push(oldTotal);
      ms.beforeHost.push(oldTotal - old.timings.forwardMs);
      if (old.penalty !== result.penalty) throw new Error(`the builds disagree: ${old.penalty} vs ${result.penalty}`);
    }
  }
  const bareMs = round(median(ms.bare));
  models.push({
    model: path.split('/').pop(),
    rows: ROWS,
    batchRows: BATCH,
    bareMs,
    penaltyMs: round(median(ms.penalty)),
    penaltyForwardMs: round(median(ms.penaltyForward)),
    hostMs: round(median(ms.host)),
    penaltyOverBare: round(median(ms.penalty) / bareMs, 3),
    forwardOverBare: round(median(ms.penaltyForward) / bareMs, 3),
    ...(before
      ? { before: { penaltyMs: round(median(ms.beforePenalty)), hostMs: round(median(ms.beforeHost)) }, hostAfterOverBefore: round(median(ms.host) / median(ms.beforeHost), 3) }
      : {}),
  });
  if (beforeContext) await beforeContext.sessions.clear();
  await sessions.clear();
}
console.log(
  JSON.stringify(
    {
      cpu: `${cpus()[0]?.model} × ${cpus().length}`,
      loadAverage: { before: loadBefore.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
      date: new Date().toISOString(),
      samples: N,
      k: K,
      repeats: REPEATS,
      models,
    },
    null,
    2,
  ),
);
