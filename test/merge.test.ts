/** The merge of a request split over lanes (metrics/merge.ts, run/sample-range.ts, pool.ts helpers): exact arithmetic. */
import t from 'tap';
import { concatSamples, mergeParts, reduceConcatenated, unionWarnings, weightedMean } from '../dist/metrics/merge.js';
import { requestSamples, splitSamples } from '../dist/pool/pool.js';
import { onlySamples } from '../dist/run/sample-range.js';

t.test('sample ranges: in order, covering every sample once, sizes within one', async (t) => {
  t.same(splitSamples(5, 2), [{ from: 0, to: 2, of: 5 }, { from: 2, to: 5, of: 5 }]);
  const ranges = splitSamples(17, 4);
  t.same(ranges.map((r) => r.to - r.from), [4, 4, 4, 5]);
  t.same(ranges.map((r) => r.from).slice(1), ranges.map((r) => r.to).slice(0, -1));
});

t.test('samples the server can tell without the model', async (t) => {
  t.equal(requestSamples({ latents: { samples: 12 } } as never), 12);
  t.equal(requestSamples({ latents: { type: 'float32', shape: [5, 3], data: new Float32Array(15) } } as never), 5);
  t.equal(requestSamples({} as never), 8, 'the default N');
  t.equal(requestSamples({ latents: { samples: 12 }, maxSamples: 4 } as never), 4);
  t.equal(requestSamples({ inputs: {} } as never), null, 'inputs (or a cut) may decide N');
  t.equal(requestSamples({ wrt: 'w' } as never), null);
  t.equal(requestSamples({ latents: { samples: 12 }, mode: 'per-pass' } as never), null, 'a pass is one batch of all N');
});

t.test('a part keeps its samples of the latents, of every direction and of per-sample inputs', async (t) => {
  // N = 3 samples of size 2, k = 2 directions stored k × N × size.
  const resolved = {
    samples: 3,
    size: 2,
    k: 2,
    latents: Float32Array.of(0, 1, 10, 11, 20, 21),
    directions: Float32Array.of(100, 101, 110, 111, 120, 121, 200, 201, 210, 211, 220, 221),
    extras: [
      { name: 'c', perSample: true, size: 1, array: { type: 'float32', shape: [3, 1], data: Float32Array.of(7, 8, 9) } },
      { name: 'shared', perSample: false, size: 1, array: { type: 'float32', shape: [1], data: Float32Array.of(5) } },
    ],
  };
  const part = onlySamples(resolved as never, { from: 1, to: 3, of: 3 });
  t.equal(part.samples, 2);
  t.same(Array.from(part.latents), [10, 11, 20, 21]);
  t.same(Array.from(part.directions), [110, 111, 120, 121, 210, 211, 220, 221]);
  t.same(part.extras[0].array.shape, [2, 1]);
  t.same(Array.from(part.extras[0].array.data as Float32Array), [8, 9]);
  t.equal(part.extras[1], resolved.extras[1], 'inputs shared by every sample stay whole');
  t.equal(onlySamples(resolved as never, undefined), resolved);
  t.throws(() => onlySamples(resolved as never, { from: 0, to: 2, of: 4 }), { code: 'split_refused', message: /samples 0\.\.2 of 4 do not fit a request of 3 samples/ });
  t.throws(() => onlySamples(resolved as never, { from: 2, to: 2, of: 3 }), { code: 'split_refused' });
});

t.test('merge arithmetic', async (t) => {
  t.same(weightedMean([[1, 10], [4, 40]], [0.25, 0.75]), [3.25, 32.5]);
  t.same(concatSamples([[1, null], [3]]), [1, null, 3]);
  t.equal(reduceConcatenated([1, 5, 3], 'max', false), 5);
  t.equal(reduceConcatenated([1, 5, 3], 'mean', false), 3);
  t.equal(reduceConcatenated([1, 5, 3], 'max', true), null, 'a part with NaN makes the layer undefined');
  const w = (code: string, message: string, layer?: string) => ({ code, message, ...(layer ? { layer } : {}) });
  t.same(
    unionWarnings([{ warnings: [w('a', 'x'), w('below_noise_floor', 'p', 'y')] }, { warnings: [w('a', 'x'), w('b', 'z'), w('below_noise_floor', 'q', 'y')] }], ['below_noise_floor']),
    [w('a', 'x'), w('b', 'z')],
    'repeats once; recomputed per-layer codes left out',
  );
});

/** A hessian part of `samples` samples whose every figure is `x`-based, over one 1×1×2 image layer. */
function hessianPart(samples: number, perSample: (number | null)[], x: number, extra: Record<string, unknown> = {}) {
  return {
    metric: 'hessian', model: 'm', samples, seed: 1, wrt: 'z', latents: 2, basis: null, rowsPerSample: 7, rows: 7 * samples, batches: 1,
    mode: 'stacked', executionProvider: 'cpu', warnings: [{ code: 'piecewise_linear', message: 'kinks' }],
    timings: { totalMs: 10 * samples, forwardMs: samples, reduceMs: 9 * samples }, epsilon: 0.1, reduction: 'max',
    penalty: perSample.includes(null) ? null : Math.max(...(perSample as number[])),
    layers: [{
      name: 'image', shape: [samples, 1, 1, 2], penalty: perSample.includes(null) ? null : Math.max(...(perSample as number[])), perSample,
      interaction: [[x, 2 * x], [2 * x, x]], diagonalFraction: x / 10, diagonalRatio: x, noiseFloor: x / 10,
      heatmap: { height: 1, width: 2, values: [[x, 3 * x]] }, elementHessian: Array.from({ length: samples }, () => [[x, 0], [0, x]]),
    }],
    ...extra,
  };
}

t.test('hessian parts: concatenated per sample, means weighted by samples, floor and warnings recomputed', async (t) => {
  const merged = mergeParts('hessian', [hessianPart(1, [2], 1), hessianPart(3, [4, 1, 3], 5)] as never[]) as any;
  t.equal(merged.samples, 4);
  t.equal(merged.lanes, 2);
  t.equal(merged.rows, 28);
  t.equal(merged.batches, 2);
  t.same(merged.timings, { totalMs: 30, forwardMs: 4, reduceMs: 36 });
  const layer = merged.layers[0];
  t.same(layer.shape, [4, 1, 1, 2]);
  t.same(layer.perSample, [2, 4, 1, 3]);
  t.equal(layer.penalty, 4);
  t.equal(merged.penalty, 4);
  // Weights 1/4 and 3/4: 0.25·1 + 0.75·5 = 4.
  t.same(layer.interaction, [[4, 8], [8, 4]]);
  t.equal(layer.diagonalFraction, 0.4);
  t.equal(layer.diagonalRatio, 4);
  t.same(layer.heatmap.values, [[4, 12]]);
  t.equal(layer.noiseFloor, 0.5, 'the larger part floor (the floor grows with the largest output)');
  t.equal(layer.elementHessian.length, 4);
  t.same(merged.warnings.map((w: { code: string }) => w.code), ['piecewise_linear', 'below_noise_floor'], '4 < 100 × 0.5: below the floor, once');
  t.match(merged.warnings[1].message, /the exact penalty 4\.00 is not well above the float rounding floor \(about 0\.500 at epsilon 0\.1\)/);

  const nan = mergeParts('hessian', [
    hessianPart(1, [2], 1, {}),
    { ...hessianPart(2, [null, 1], 1), warnings: [{ code: 'non_finite_output', layer: 'image', message: "layer 'image' produced NaN or infinite values in 3 elements; its figures are not defined" }] },
  ] as never[]) as any;
  t.equal(nan.penalty, null);
  t.same(nan.layers[0].perSample, [2, null, 1]);
  t.match(nan.warnings.find((w: { code: string }) => w.code === 'non_finite_output').message, /in 3 elements/);
  t.equal(mergeParts('hessian', [hessianPart(1, [2], 1)] as never[]).lanes, undefined, 'one part: as it is');
  t.throws(() => mergeParts('hessian', []), /nothing to merge/);
});

t.test('orthogonality and activeness parts', async (t) => {
  const ortho = (samples: number, perSample: (number | null)[]) => ({
    metric: 'orthogonality', samples, rows: samples, batches: 1, warnings: [], timings: { totalMs: 1, forwardMs: 1, reduceMs: 0 }, reduction: 'mean',
    score: perSample.includes(null) ? null : 0, layers: [{ name: 'y', shape: [samples, 2], score: perSample.includes(null) ? null : 0, perSample }],
  });
  const o = mergeParts('orthogonality', [ortho(2, [1, 2]), ortho(1, [6])] as never[]) as any;
  t.equal(o.score, 3);
  t.same(o.layers[0].perSample, [1, 2, 6]);
  t.same(o.layers[0].shape, [3, 2]);
  const bad = mergeParts('orthogonality', [ortho(2, [1, 2]), ortho(1, [null])] as never[]) as any;
  t.equal(bad.score, null);
  t.equal(bad.warnings[0].code, 'non_finite_output');

  const act = (samples: number, activeness: (number | null)[]) => ({
    metric: 'activeness', samples, rows: samples, batches: 1, warnings: [], timings: { totalMs: 1, forwardMs: 1, reduceMs: 0 }, latents: 3, threshold: 1e-6,
    layers: [{ name: 'y', shape: [samples, 2], activeness, unused: [] }], unused: [],
  });
  const a = mergeParts('activeness', [act(1, [4, 0, null]), act(3, [8, 0, 1])] as never[]) as any;
  t.same(a.layers[0].activeness, [7, 0, null]);
  t.same(a.layers[0].unused, [1]);
  t.same(a.unused, [1]);
});
