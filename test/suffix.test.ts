/**
 * The in-graph penalty (src/onnx/suffix.ts + src/penalty/moments.ts) against the JavaScript
 * reference accumulator (second-difference.ts through estimate.ts) on the same rows of every
 * example generator, with chunks that keep whole samples and chunks that split a sample's
 * directions (merged by Chan's formula).
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { fetchedBytes, suffixFeeds, suffixFetches, suffixOutputs } from '../dist/runtime/suffix-run.js';
import { appendPenaltySuffix, defaultOpset } from '../dist/onnx/suffix.js';
import { modelProto } from '../dist/onnx/proto.js';
import { chunkFeeds, estimatePenaltyInGraph, mergeMoments, MomentsPenaltyAccumulator } from '../dist/math/moments.js';
import { perturbedRows } from '../dist/math/perturb.js';
import { LayerPenaltyAccumulator, penaltyRow, penaltyUnitSizes } from '../dist/math/second-difference.js';
import { planUnits } from '../dist/run/plan.js';

type UnitRow = { sample: number; index: number };
type Plan = ReturnType<typeof planUnits>;

/** The penalty's plan with each split sample's center repeated, as the in-graph path runs it. */
const planPenalty = ({ samples, k, maxRows, mode }: { samples: number; k: number; maxRows: number; mode?: 'stacked' | 'per-pass' }) =>
  planUnits({ samples, unitSizes: penaltyUnitSizes(k), maxRows, mode, repeatCenter: true });

/** The host reference: every output row to LayerPenaltyAccumulator, unit by unit (the Run's path). */
async function estimatePenalty(
  plan: Plan,
  sizes: Record<string, number>,
  evaluate: (rows: UnitRow[]) => Promise<Record<string, ArrayLike<number>>>,
  settings: { k: number; epsilon: number; reduction: 'max' | 'mean'; variance: 'unbiased' | 'biased' },
) {
  const accumulators = Object.fromEntries(
    Object.entries(sizes).map(([name, size]) => [name, new LayerPenaltyAccumulator(plan.samples, size, settings.k, settings.epsilon, settings.variance)]),
  );
  for (const chunk of plan.chunks) {
    const outputs = [];
    for (const batch of chunk.batches) outputs.push(await evaluate(batch));
    for (const { sample, unit, rows } of chunk.units) {
      for (const [name, size] of Object.entries(sizes)) {
        accumulators[name].unit(sample, unit, rows.map((r) => outputs[r.batch][name]), rows.map((r) => r.row * size));
      }
    }
  }
  return Object.fromEntries(Object.entries(accumulators).map(([name, a]) => [name, a.result(settings.reduction)]));
}

type Row = { sample: number; direction: number; sign: -1 | 0 | 1 };
type Accumulation = 'float64' | 'float32';

/** Deterministic values in [−1, 1): a fixed LCG, so every run checks the same rows. */
function values(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

interface Case {
  model: string;
  latents: number;
  layers: string[];
  extra?: (rows: readonly Row[]) => Record<string, ort.Tensor>;
}

const labels = [3, 1, 4, 1, 5, 9];
const CASES: Case[] = [
  { model: 'cubic', latents: 2, layers: ['y0', 'y1'] },
  { model: 'quadratic', latents: 4, layers: ['y'] },
  { model: 'mlp', latents: 8, layers: ['out'] },
  { model: 'dcgan', latents: 12, layers: ['image'] },
  { model: 'dcgan_smooth', latents: 12, layers: ['image'] },
  {
    model: 'conditional',
    latents: 8,
    layers: ['out'],
    extra: (rows) => ({
      label: new ort.Tensor('int64', BigInt64Array.from(rows, (r) => BigInt(labels[r.sample % labels.length])), [rows.length]),
      truncation: new ort.Tensor('float32', Float32Array.of(0.7), [1]),
    }),
  },
];

const N = 3;
const K = 5;
const EPSILON = 0.1;
const settings = { k: K, epsilon: EPSILON, reduction: 'max' as const, variance: 'unbiased' as const };

async function compare(c: Case, maxRows: number, accumulation: Accumulation) {
  const bytes = new Uint8Array(readFileSync(new URL(`../models/${c.model}.onnx`, import.meta.url)));
  const z = values(N * c.latents, 7);
  const directions = values(K * N * c.latents, 11);
  const plan = planPenalty({ samples: N, k: K, maxRows });
  const feedsOf = (rows: readonly UnitRow[]) => ({
    z: new ort.Tensor('float32', perturbedRows(rows.map(penaltyRow), z, directions, EPSILON, c.latents, N) as Float32Array, [rows.length, c.latents]),
    ...c.extra?.(rows),
  });

  const bare = await ort.InferenceSession.create(bytes);
  const probe = await bare.run(feedsOf(plan.chunks[0].batches[0].slice(0, 1)), c.layers);
  const sizes = Object.fromEntries(c.layers.map((l) => [l, probe[l].dims.slice(1).reduce((a, b) => a * Number(b), 1)]));
  const expected = await estimatePenalty(
    plan,
    sizes,
    async (rows: UnitRow[]) => {
      const out = await bare.run(feedsOf(rows), c.layers);
      return Object.fromEntries(c.layers.map((l) => [l, out[l].data as Float32Array]));
    },
    settings,
  );

  const suffix = appendPenaltySuffix(bytes, { layers: c.layers, accumulation });
  const session = await ort.InferenceSession.create(suffix.bytes);
  let fetched = 0;
  const actual = await estimatePenaltyInGraph(
    plan,
    K,
    sizes,
    async (rows: UnitRow[], layout) => {
      const out = await session.run({ ...feedsOf(rows), ...suffixFeeds(suffix, layout, EPSILON) }, suffixFetches(suffix, layout, K));
      fetched += fetchedBytes(out);
      return suffixOutputs(suffix, out);
    },
    settings,
  );
  await bare.release();
  await session.release();
  return { expected, actual, sizes, fetched, plan };
}

/** Largest |a − b| / (|b| + floor) over the figures a LayerPenalty reports. */
function worst(expected: Record<string, any>, actual: Record<string, any>, floor: number) {
  let rel = 0;
  for (const [layer, e] of Object.entries(expected)) {
    const a = actual[layer];
    const pairs: [number, number][] = [[a.penalty, e.penalty], [a.maxAbsOutput, e.maxAbsOutput]];
    e.perSample.forEach((x: number, i: number) => pairs.push([a.perSample[i], x]));
    e.elementMean.forEach((x: number, i: number) => pairs.push([a.elementMean[i], x]));
    for (const [x, y] of pairs) rel = Math.max(rel, Math.abs(x - y) / (Math.abs(y) + floor));
  }
  return rel;
}

for (const c of CASES) {
  t.test(`${c.model}: in-graph float64 moments equal the JavaScript reference`, async (t) => {
    // maxRows 64: whole samples per chunk; 5: one sample, two directions per chunk (5 = 2·2+1), so
    // every sample's k = 5 directions arrive split 2 + 2 + 1 and are merged by Chan's formula.
    for (const maxRows of [64, 5]) {
      const { expected, actual, plan } = await compare(c, maxRows, 'float64');
      if (maxRows === 5) t.equal(plan.chunks.length, N * 3, 'the plan splits every sample over three chunks');
      for (const layer of c.layers) {
        t.equal(actual[layer].nonFinite, 0);
        t.equal(actual[layer].maxAbsOutput, expected[layer].maxAbsOutput, `${layer}: max |g| is the same value`);
        t.ok(expected[layer].penalty! > 0, `${layer}: a penalty to compare (${expected[layer].penalty})`);
      }
      // Same q in float64 (same operations, same order); only the moments' summation differs
      // (two-pass in the graph, Welford in JS): relative 1e-9, with a floor of 1e-12 of the scale.
      const scale = Math.max(...c.layers.map((l) => expected[l].penalty!));
      const rel = worst(expected, actual, 1e-12 * scale);
      t.ok(rel <= 1e-9, `maxRows ${maxRows}: worst relative difference ${rel.toExponential(2)} ≤ 1e-9`);
    }
  });
}

t.test('float32 accumulation stays within its rounding bound', async (t) => {
  // q in float32: |δq| ≲ 4u·max|g|/ε² (u = 2⁻²⁴: the rounding of g+ − 2g, of the size of |g|), so
  // |δ Var q| ≲ 2·sqrt(Var q)·δq + δq², plus the k-term sums' k·u relative. The bound checked is
  // relative 1e-3 with an absolute floor of (4u·max|g|/ε²)²·k on every figure.
  for (const c of CASES.filter((c) => ['mlp', 'dcgan', 'conditional'].includes(c.model))) {
    const { expected, actual } = await compare(c, 5, 'float32');
    const maxG = Math.max(...c.layers.map((l) => expected[l].maxAbsOutput));
    const dq = (4 * 2 ** -24 * maxG) / EPSILON ** 2;
    const rel = worst(expected, actual, (dq * dq * K) / 1e-3);
    t.ok(rel <= 1e-3, `${c.model}: worst relative difference ${rel.toExponential(2)} ≤ 1e-3 (floor ${(dq * dq * K).toExponential(1)})`);
  }
});

t.test('what leaves the session per request does not grow with k', async (t) => {
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  const suffix = appendPenaltySuffix(bytes, { layers: ['out'] });
  const session = await ort.InferenceSession.create(suffix.bytes);
  const perK: number[][] = [];
  for (const k of [2, 8, 32]) {
    const plan = planPenalty({ samples: 4, k, maxRows: 4 * (2 * k + 1) });
    const z = values(4 * 8, 3);
    const directions = values(k * 4 * 8, 5);
    let bytesOut = 0;
    let whole = 0;
    for (const chunk of plan.chunks) {
      const rows = chunk.batches[0];
      const feeds = { z: new ort.Tensor('float32', perturbedRows(rows.map(penaltyRow), z, directions, EPSILON, 8, 4) as Float32Array, [rows.length, 8]) };
      const layout = chunkFeeds(chunk);
      bytesOut += fetchedBytes(await session.run({ ...feeds, ...suffixFeeds(suffix, layout, EPSILON) }, suffix.fetches));
      whole += fetchedBytes(await session.run({ ...feeds, ...suffixFeeds(suffix, layout, EPSILON) }, suffixFetches(suffix, layout, k)));
    }
    perK.push([bytesOut, whole]);
  }
  // 4 slots: count, max_abs, non_finite (3·4 doubles) + mean and m2 (2·4·16 doubles), 8 bytes each;
  // whole samples need no means: 3·4 + 4·16 doubles.
  t.same(perK, [[8 * (3 * 4 + 2 * 4 * 16), 8 * (3 * 4 + 4 * 16)], [1120, 608], [1120, 608]]);
  await session.release();
});

t.test('Chan merge of partial moments equals the moments of all values', async (t) => {
  const xs = Array.from(values(40, 99), (v) => 3 + 0.01 * v);
  const moments = (part: number[]) => {
    const mean = part.reduce((a, b) => a + b, 0) / part.length;
    return { count: part.length, mean: Float64Array.of(mean), m2: Float64Array.of(part.reduce((a, x) => a + (x - mean) ** 2, 0)) };
  };
  const whole = moments(xs);
  for (const cuts of [[1], [20], [7, 19, 33], [1, 2, 3, 39]]) {
    const merged = { count: 0, mean: new Float64Array(1), m2: new Float64Array(1) };
    const bounds = [0, ...cuts, xs.length];
    for (let i = 0; i + 1 < bounds.length; i++) mergeMoments(merged, moments(xs.slice(bounds[i], bounds[i + 1])));
    mergeMoments(merged, { count: 0, mean: [NaN], m2: [NaN] });
    t.equal(merged.count, 40);
    t.ok(Math.abs(merged.mean[0] - whole.mean[0]) <= 1e-15 * 3, `cuts ${cuts}: mean`);
    t.ok(Math.abs(merged.m2[0] - whole.m2[0]) <= 1e-12 * whole.m2[0], `cuts ${cuts}: m2 ${merged.m2[0]} vs ${whole.m2[0]}`);
  }
});

t.test('non-finite outputs are counted in the graph and by the merge', async (t) => {
  // log.onnx: y = log(z), NaN for a negative latent. Sample 1's center is negative in element 0.
  const bytes = new Uint8Array(readFileSync(new URL('../models/log.onnx', import.meta.url)));
  const suffix = appendPenaltySuffix(bytes, { layers: ['y'] });
  const session = await ort.InferenceSession.create(suffix.bytes);
  const plan = planPenalty({ samples: 2, k: 2, maxRows: 10 });
  const z = Float32Array.of(1, 2, -1, 3);
  const directions = Float32Array.of(1, 0, 0, 1, 0, 1, 1, 0);
  const accumulator = new MomentsPenaltyAccumulator(2, 2, 2, 'unbiased');
  for (const chunk of plan.chunks) {
    const rows = chunk.batches[0];
    const layout = chunkFeeds(chunk);
    const feeds = { z: new ort.Tensor('float32', perturbedRows(rows.map(penaltyRow), z, directions, EPSILON, 2, 2) as Float32Array, [rows.length, 2]) };
    const out = suffixOutputs(suffix, await session.run({ ...feeds, ...suffixFeeds(suffix, layout, EPSILON) }, suffix.fetches)).y;
    t.same(Array.from(out.nonFinite!), [0, 1], 'the graph counts sample 1’s one bad element');
    accumulator.chunk(layout.samples, out);
  }
  const result = accumulator.result('max');
  t.equal(result.nonFinite, 1);
  t.equal(result.penalty, null);
  await session.release();
});

t.test('layout and argument errors', async (t) => {
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  t.equal(defaultOpset(bytes), 14);
  t.throws(() => appendPenaltySuffix(bytes, { layers: [] }), /at least one layer/);
  t.throws(() => appendPenaltySuffix(bytes, { layers: ['out'], opset: 10 }), /opset 11 or later/);
  const type = modelProto();
  const noOpset = type.encode(type.fromObject({ irVersion: 7, graph: { name: 'g' } })).finish();
  t.throws(() => defaultOpset(noOpset), /no default-domain opset/);
  const perPass = planPenalty({ samples: 2, k: 1, maxRows: 8, mode: 'per-pass' });
  t.throws(() => chunkFeeds(perPass.chunks[1]), /single-batch chunks only/);
  const orphan = { batches: [[]], units: [{ sample: 0, unit: 1, rows: [{ batch: 0, row: 0 }, { batch: 0, row: 1 }] }] };
  t.throws(() => chunkFeeds(orphan), /without its center/);
  const accumulator = new MomentsPenaltyAccumulator(1, 1, 2, 'biased');
  const twice = { count: [3], mean: [0], m2: [0], maxAbs: [0] };
  t.throws(() => accumulator.chunk([0], twice), /more than k directions/);
  const split = new MomentsPenaltyAccumulator(1, 1, 2, 'biased');
  t.throws(() => split.chunk([0], { count: [1], m2: [0], maxAbs: [0] }), /split, so its means are needed/);
  const unfinished = new MomentsPenaltyAccumulator(1, 1, 2, 'biased');
  unfinished.chunk([0], { count: [1], mean: [0], m2: [0], maxAbs: [0] });
  t.throws(() => unfinished.result('mean'), /did not receive k directions/);
});

t.test('opsets before 13 and 18 get the reductions’ attribute signatures', async (t) => {
  // The same suffix built for opset 12 and 18 signatures: ReduceSum/ReduceMax axes as attribute or input.
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  const decode = (b: Uint8Array) => (modelProto().toObject(modelProto().decode(b), { arrays: true }) as any).graph.node;
  const tail = (opset: number) => decode(appendPenaltySuffix(bytes, { layers: ['out'], opset }).bytes).filter((n: any) => n.opType.startsWith('Reduce'));
  const withAttr = (nodes: any[]) => nodes.map((n) => `${n.opType}:${n.input.length}:${n.attribute.some((a: any) => a.name === 'axes')}`);
  t.same(withAttr(tail(12)), ['ReduceSum:1:true', 'ReduceSum:1:true', 'ReduceSum:1:true', 'ReduceMax:1:true', 'ReduceSum:1:true']);
  t.same(withAttr(tail(14)), ['ReduceSum:2:false', 'ReduceSum:2:false', 'ReduceSum:2:false', 'ReduceMax:1:true', 'ReduceSum:2:false']);
  t.same(withAttr(tail(18)), ['ReduceSum:2:false', 'ReduceSum:2:false', 'ReduceSum:2:false', 'ReduceMax:2:false', 'ReduceSum:2:false']);
});

t.test('float16 and float64 layers are widened inside the graph: same figures as the reference', async (t) => {
  const { outputValues } = await import('../dist/runtime/tensors.js');
  // y16 = Cast<float16>(z0·z1·z0), y64 = Cast<double>(z0·z1·z0), for z of shape [N, 2].
  const type = modelProto();
  const dims = (...d: (number | string)[]) => ({ dim: d.map((x) => (typeof x === 'number' ? { dimValue: x } : { dimParam: x })) });
  const bytes = type
    .encode(
      type.fromObject({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 13 }],
        graph: {
          name: 'widths',
          node: [
            { opType: 'ReduceProd', input: ['z'], output: ['p'], attribute: [{ name: 'axes', type: 7, ints: [1] }, { name: 'keepdims', type: 2, i: 1 }] },
            { opType: 'Mul', input: ['p', 'z'], output: ['q'] },
            { opType: 'Cast', input: ['q'], output: ['y16'], attribute: [{ name: 'to', type: 2, i: 10 }] },
            { opType: 'Cast', input: ['q'], output: ['y64'], attribute: [{ name: 'to', type: 2, i: 11 }] },
          ],
          input: [{ name: 'z', type: { tensorType: { elemType: 1, shape: dims('batch', 2) } } }],
          output: [
            { name: 'y16', type: { tensorType: { elemType: 10, shape: dims('batch', 2) } } },
            { name: 'y64', type: { tensorType: { elemType: 11, shape: dims('batch', 2) } } },
          ],
        },
      }),
    )
    .finish();
  const layers = ['y16', 'y64'];
  const z = values(4 * 2, 21);
  const directions = values(3 * 4 * 2, 22);
  const plan = planPenalty({ samples: 4, k: 3, maxRows: 5 });
  const feedsOf = (rows: readonly UnitRow[]) => ({
    z: new ort.Tensor('float32', perturbedRows(rows.map(penaltyRow), z, directions, 0.25, 2, 4) as Float32Array, [rows.length, 2]),
  });
  const s = { k: 3, epsilon: 0.25, reduction: 'mean' as const, variance: 'biased' as const };
  const bare = await ort.InferenceSession.create(bytes);
  const expected = await estimatePenalty(plan, { y16: 2, y64: 2 }, async (rows: UnitRow[]) => {
    const out = await bare.run(feedsOf(rows));
    return { y16: outputValues(out.y16), y64: outputValues(out.y64) };
  }, s);
  const suffix = appendPenaltySuffix(bytes, { layers });
  const session = await ort.InferenceSession.create(suffix.bytes);
  const actual = await estimatePenaltyInGraph(plan, 3, { y16: 2, y64: 2 }, async (rows: UnitRow[], layout) =>
    suffixOutputs(suffix, await session.run({ ...feedsOf(rows), ...suffixFeeds(suffix, layout, 0.25) }, suffixFetches(suffix, layout, 3))), s);
  for (const layer of layers) t.ok(expected[layer].penalty! > 0, `${layer}: ${expected[layer].penalty}`);
  const rel = worst(expected, actual, 1e-12);
  t.ok(rel <= 1e-9, `worst relative difference ${rel.toExponential(2)} ≤ 1e-9`);
  await bare.release();
  await session.release();
});
