/** The penalty's text output says how it ran: the batch size and where it came from, the estimator and the bytes it copied. */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { formatPenalty } from '../dist/report/text.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const model = loadModel(new Uint8Array(readFileSync(new URL('../models/dcgan.onnx', import.meta.url))));
const sessions = new SessionCache(2);
t.teardown(() => sessions.clear());
const penalty = (request: Record<string, unknown>) => evaluateMetric('penalty', model, request as never, { device: { kind: 'cpu' }, sessions });

t.test('host: every row copied (4 samples × 5 rows × 3,072 floats)', async (t) => {
  const text = formatPenalty(await penalty({ latents: { samples: 4 }, k: 2, seed: 1, estimator: 'host' }), 'dcgan.onnx');
  t.match(text, /^execution {2}20 rows in 1 batch\(es\) of up to 20 rows \(memory budget\), stacked, cpu,/m);
  t.match(text, /^estimator {2}moments reduced on the host, 245\.8 KB copied out of onnxruntime$/m);
});

t.test('graph: per sample M2 and three figures in float64, whatever k; a batch size asked for is named', async (t) => {
  const text = formatPenalty(await penalty({ latents: { samples: 4 }, k: 8, seed: 1, estimator: 'graph', batchRows: 17 }), 'dcgan.onnx');
  t.match(text, /^execution {2}68 rows in 4 batch\(es\) of up to 17 rows \(batchRows asked\),/m);
  t.match(text, /^estimator {2}moments reduced in the graph, 98\.4 KB copied out of onnxruntime$/m);
});
