/** The activeness suffix against ActivenessAccumulator (activeness.ts) on the same rows. */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { appendActivenessSuffix } from '../dist/onnx/suffix.js';
import { ActivenessAccumulator, activenessRows, activenessUnitSizes } from '../dist/math/activeness.js';
import { planUnits } from '../dist/run/plan.js';

function values(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

const SAMPLES = 3;
const EXTENT = 2;

for (const [model, d, layer] of [['ignoring', 4, 'y'], ['mlp', 8, 'out'], ['dcgan', 12, 'image']] as const) {
  t.test(`${model}: in-graph activeness equals the JavaScript accumulator`, async (t) => {
    const bytes = new Uint8Array(readFileSync(new URL(`../models/${model}.onnx`, import.meta.url)));
    const z = values(SAMPLES * d, 3);
    // Chunks of 7 rows: two units each, so a sample's latents spread over chunks.
    const plan = planUnits({ samples: SAMPLES, unitSizes: activenessUnitSizes(d), maxRows: 7 });
    const bare = await ort.InferenceSession.create(bytes);
    const suffix = appendActivenessSuffix(bytes, { layers: [layer] });
    const session = await ort.InferenceSession.create(suffix.bytes);
    let size = 0;
    let reference: InstanceType<typeof ActivenessAccumulator> | undefined;
    const sums = new Float64Array(d);
    const counts = new Float64Array(d);
    for (const chunk of plan.chunks) {
      const rows = chunk.batches[0];
      const feeds = { z: new ort.Tensor('float32', activenessRows(rows, z, EXTENT, d, new Float32Array(rows.length * d)) as Float32Array, [rows.length, d]) };
      const raw = (await bare.run(feeds, [layer]))[layer];
      size = raw.dims.slice(1).reduce((a, b) => a * Number(b), 1);
      reference ??= new ActivenessAccumulator(size, d);
      for (const unit of chunk.units) {
        reference.unit(unit.sample, unit.unit, unit.rows.map(() => raw.data as Float32Array), unit.rows.map((r) => r.row * size));
      }
      const index = BigInt64Array.from(chunk.units.flatMap((u) => u.rows.map((r) => BigInt(r.row))));
      const out = await session.run({ ...feeds, [suffix.inputs.rows]: new ort.Tensor('int64', index, [chunk.units.length, 3]) }, suffix.fetches);
      const varianceSum = out[suffix.outputs[layer].varianceSum].data as Float64Array;
      chunk.units.forEach((u, i) => {
        sums[u.unit] += varianceSum[i];
        counts[u.unit] += size;
      });
    }
    const expected = reference!.result();
    const actual = sums.map((s, i) => s / counts[i]);
    if (model === 'ignoring') t.equal(actual[3], 0, 'the ignored latent scores exactly 0 in the graph too');
    let worst = 0;
    expected.forEach((y, i) => (worst = Math.max(worst, y === 0 ? Math.abs(actual[i]) : Math.abs(actual[i] - y) / Math.abs(y))));
    t.ok(worst <= 1e-12, `worst relative difference ${worst.toExponential(2)} ≤ 1e-12 (same float64 operations)`);
    t.ok(Math.max(...expected) > 0);
    await bare.release();
    await session.release();
  });
}

t.test('activeness suffix argument errors', async (t) => {
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  t.throws(() => appendActivenessSuffix(bytes, { layers: [] }), /at least one layer/);
  t.throws(() => appendActivenessSuffix(bytes, { layers: ['out'], opset: 10 }), /opset 11 or later/);
  t.equal(appendActivenessSuffix(bytes, { layers: ['out'], accumulation: 'float32' }).accumulation, 'float32');
});
