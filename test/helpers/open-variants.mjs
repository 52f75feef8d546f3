/**
 * Child process for the safety tests: loads model files and runs a small penalty request on each,
 * printing one JSON line per file, so that a native crash in onnxruntime takes down this process
 * and not the test runner (the parent sees which file was being opened).
 *
 * usage: node open-variants.mjs MANIFEST.json   (a list of {name, file})
 * Before and after the list it evaluates the good model `good` in the manifest the same way.
 */
import { readFileSync } from 'node:fs';
import { parseDevice } from '../../dist/runtime/device.js';
import { evaluatePenalty } from '../../dist/metrics/evaluate.js';
import { loadModel } from '../../dist/runtime/model.js';
import { SessionCache } from '../../dist/runtime/session.js';
import { AuditError } from '../../dist/contract/errors.js';

const manifest = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const device = parseDevice('cpu');
const sessions = new SessionCache(2);
const request = { latents: { samples: 2 }, k: 2, seed: 11 };

async function evaluate(file) {
  try {
    const model = loadModel(new Uint8Array(readFileSync(file)));
    const result = await evaluatePenalty(model, request, { device, sessions });
    return { outcome: 'ok', penalty: result.penalty, layers: result.layers.map((l) => [l.name, l.penalty]) };
  } catch (err) {
    if (err instanceof AuditError) return { outcome: 'refused', code: err.code, status: err.status, message: err.message };
    return { outcome: 'bug', message: String(err?.stack ?? err) };
  }
}

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
print({ name: 'good:before', ...(await evaluate(manifest.good)) });
for (const { name, file } of manifest.variants) {
  print({ name, started: true });
  print({ name, ...(await evaluate(file)) });
}
print({ name: 'good:after', ...(await evaluate(manifest.good)) });
await sessions.clear();
