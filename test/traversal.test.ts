/**
 * Latent traversals (src/report/traversal.ts): the points, the PNG grid against direct runs of G at
 * each traversal point, every bound and argument error, and the report section in headless
 * Chromium (screenshot in test/artifacts/traversal.png).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { PNG } from 'pngjs';
import t from 'tap';
import { AuditError } from '../dist/contract/errors.js';
import { resolveGroups } from '../dist/math/groups.js';
import { standardNormal } from '../dist/math/index.js';
import { STYLE } from '../dist/report/html.js';
import {
  imageShapeOf,
  orderByScore,
  pointRow,
  TRAVERSAL_LIMITS,
  TRAVERSAL_STEPS,
  traversalGrid,
  traversalPoints,
  traversalSection,
} from '../dist/report/traversal.js';
import { launchBrowser } from './helpers/browser.js';
import { modelBytes } from './helpers/reference.js';

const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;

async function runG(session: ort.InferenceSession, input: string, points: Float32Array, shape: number[]): Promise<Float32Array> {
  const out = await session.run({ [input]: new ort.Tensor('float32', points, shape) });
  return out[session.outputNames[0]].data as Float32Array;
}

/** The pixel a value is shown as, from the grid's range (the formula the grid documents). */
const level = (v: number, [lo, hi]: [number, number]): number => Math.round(255 * Math.min(1, Math.max(0, (v - lo) / (hi - lo))));

t.test('traversal points: z_i set to each step · extent, the rest unchanged', async (t) => {
  const z = Float32Array.from([0.5, -1, 2, 3, 0.25, -0.5]); // two samples of d = 3
  const plan = traversalPoints(z, 3, { samples: 2, extent: 1.5 });
  t.same(plan.labels, ['z0', 'z1', 'z2']);
  t.same(plan.steps, TRAVERSAL_STEPS);
  t.equal(plan.points.length, 3 * 2 * 5 * 3);
  for (let d = 0; d < 3; d++) {
    for (let s = 0; s < 2; s++) {
      for (let k = 0; k < 5; k++) {
        const row = Array.from(plan.points.subarray(pointRow(plan, d, s, k) * 3, pointRow(plan, d, s, k) * 3 + 3));
        const expected = Array.from(z.subarray(s * 3, s * 3 + 3));
        expected[d] = TRAVERSAL_STEPS[k] * 1.5;
        t.same(row, expected, `latent ${d} sample ${s} step ${k}`);
      }
    }
  }
  const some = traversalPoints(z, 3, { directions: { kind: 'axes', indices: [2] }, samples: 1, steps: [-1, 1] });
  t.same(Array.from(some.points), [0.5, -1, -1, 0.5, -1, 1]);
  t.same(some.labels, ['z2']);
  t.equal(traversalPoints(z, 3).samples, 2, 'default: up to 3 samples, here the 2 given');
});

t.test('along a group or a basis direction: z + step · extent · b', async (t) => {
  const z = Float32Array.from([1, 2, 3, 4]);
  const groups = resolveGroups('0+2,1+3', [4]);
  const plan = traversalPoints(z, 4, { directions: { kind: 'groups', groups }, samples: 1, steps: [-1, 2] });
  t.same(plan.labels, ['group 0', 'group 1']);
  t.same(Array.from(plan.points), [0, 2, 2, 4, 3, 2, 5, 4, 1, 1, 3, 3, 1, 4, 3, 6]);
  const basis = Float64Array.from([0.5, 0, 0, -0.5]);
  const along = traversalPoints(z, 4, { directions: { kind: 'basis', rows: 1, data: basis }, samples: 1, steps: [2], extent: 2 });
  t.same(Array.from(along.points), [3, 2, 3, 2]);
  t.same(along.labels, ['b0']);
});

t.test('the StyleGAN2 grid equals direct runs of G at every traversal point', async (t) => {
  const session = await ort.InferenceSession.create(modelBytes('stylegan2.onnx'));
  const d = 32;
  const z = standardNormal(2 * d, 7);
  const indices = [0, 5, 9, 31];
  const plan = traversalPoints(z, d, { directions: { kind: 'axes', indices }, samples: 2 });
  const outputs = await runG(session, 'z', plan.points, [plan.points.length / d, d]);
  const scores = [0.1, 0.9, null, 0.5];
  const order = orderByScore(scores);
  t.same(order, [1, 3, 0, 2], 'highest score first, null last');
  const shape = imageShapeOf([3, 32, 32])!;
  const grid = traversalGrid(outputs, plan, shape, order);
  t.same(grid.range, [-1, 1], 'tanh output shown as [-1, 1]');
  const png = PNG.sync.read(grid.png);
  t.equal(png.width, grid.width);
  t.equal(png.height, grid.height);
  t.equal(grid.width, 2 + 2 * (5 * 34 - 2) + 8 + 2);
  t.equal(grid.height, 4 * 34 + 2);
  let mismatches = 0;
  let maxDifference = 0;
  for (const [row, direction] of order.entries()) {
    for (let s = 0; s < 2; s++) {
      for (const [k, step] of TRAVERSAL_STEPS.entries()) {
        // The point built here from z alone, and G run on it alone.
        const point = Float32Array.from(z.subarray(s * d, (s + 1) * d));
        point[indices[direction]] = step;
        const image = await runG(session, 'z', point, [1, d]);
        const { x, y } = grid.cell(row, s, k);
        for (let py = 0; py < 32; py++) {
          for (let px = 0; px < 32; px++) {
            for (let c = 0; c < 3; c++) {
              const v = image[c * 1024 + py * 32 + px];
              const shown = png.data[((y + py) * grid.width + x + px) * 4 + c];
              const difference = Math.abs(shown - level(v, grid.range));
              maxDifference = Math.max(maxDifference, difference);
              if (difference !== 0) mismatches++;
            }
          }
        }
      }
    }
  }
  // A batch of one and a batch of 40 may round differently in the last bit of float32, which can
  // move a value across a pixel level's boundary: at most one level, rarely.
  t.ok(maxDifference <= 1, `largest pixel difference ${maxDifference}`);
  t.ok(mismatches <= 40 * 3072 * 1e-3, `${mismatches} of ${40 * 3072} channel values differ by one level`);
  // The background between cells is white.
  t.same(Array.from(png.data.subarray(0, 4)), [255, 255, 255, 255]);
  await session.release();
});

t.test("the VAE decoder's 784 outputs are a 28 × 28 grey image; a stretched range for other outputs", async (t) => {
  t.same(imageShapeOf([784]), [1, 28, 28]);
  t.same(imageShapeOf([28, 28]), [1, 28, 28]);
  t.same(imageShapeOf([1, 8, 8]), [1, 8, 8]);
  t.equal(imageShapeOf([5]), null);
  t.equal(imageShapeOf([4, 8, 8]), null);
  t.equal(imageShapeOf([2, 3, 4, 5]), null);
  const session = await ort.InferenceSession.create(modelBytes('vae_decoder.onnx'));
  const z = standardNormal(20, 3);
  const plan = traversalPoints(z, 20, { directions: { kind: 'axes', indices: [4] }, samples: 1, steps: [-2, 2] });
  const outputs = await runG(session, 'z', plan.points, [2, 20]);
  const grid = traversalGrid(outputs, plan, imageShapeOf([784])!);
  t.same(grid.range, [0, 1], 'sigmoid output shown as [0, 1]');
  const png = PNG.sync.read(grid.png);
  const direct = await runG(session, 'z', Float32Array.from(z, (v, i) => (i === 4 ? 2 : v)), [1, 20]);
  const { x, y } = grid.cell(0, 0, 1);
  const at = (py: number, px: number) => ((y + py) * grid.width + x + px) * 4;
  const worst = Math.max(...Array.from({ length: 784 }, (_, p) => Math.abs(png.data[at(Math.floor(p / 28), p % 28)] - level(direct[p], [0, 1]))));
  t.ok(worst <= 1, `grey cell equals G run directly (largest difference ${worst} level)`);
  t.equal(png.data[at(3, 3)], png.data[at(3, 3) + 1], 'grey: R = G');
  // Outputs outside [−1, 1] are stretched from their min to their max.
  const wide = traversalGrid(Float32Array.from([-3, 0, 5, 1]), { directions: 1, samples: 1, steps: [0] }, [1, 2, 2]);
  t.same(wide.range, [-3, 5]);
  const pixels = PNG.sync.read(wide.png);
  t.same([0, 1, 2, 3].map((p) => pixels.data[((2 + Math.floor(p / 2)) * wide.width + 2 + (p % 2)) * 4]), [0, 96, 255, 128]);
  await session.release();
});

t.test('counts, sizes and arguments are bounded and checked', async (t) => {
  const z = new Float32Array(8 * 4);
  const cases: [() => unknown, string, number, RegExp][] = [
    [() => traversalPoints(z, 4, { limits: { ...TRAVERSAL_LIMITS, images: 10 } }), 'limit_exceeded', 422, /the traversal needs 60 images, above the limit of 10/],
    [() => traversalPoints(new Float32Array(200 * 2), 200), 'limit_exceeded', 422, /needs 200 directions, above the limit of 128/],
    [() => traversalPoints(z, 4, { samples: 9 }), 'invalid_argument', 400, /samples must be a whole number from 1 to the 8 samples given, got 9/],
    [() => traversalPoints(z, 4, { samples: 0 }), 'invalid_argument', 400, /got 0/],
    [() => traversalPoints(z, 4, { steps: [] }), 'invalid_argument', 400, /steps must be a non-empty list/],
    [() => traversalPoints(z, 4, { steps: Array.from({ length: 12 }, (_, i) => i) }), 'limit_exceeded', 422, /needs 12 steps, above the limit of 11/],
    [() => traversalPoints(z, 4, { extent: 0 }), 'invalid_argument', 400, /extent must be a finite number greater than 0, got 0/],
    [() => traversalPoints(z, 4, { directions: { kind: 'axes', indices: [4] } }), 'invalid_argument', 400, /traversal latent 4 is outside the 4 latents/],
    [() => traversalPoints(z, 4, { directions: { kind: 'groups', groups: resolveGroups('blocks:1', [3]) } }), 'shape_mismatch', 422, /groups cover 3 coordinates, but the latents have 4/],
    [() => traversalPoints(z, 4, { directions: { kind: 'basis', rows: 2, data: new Float64Array(4) } }), 'shape_mismatch', 422, /basis holds 4 values, not 2 rows of 4/],
    [() => traversalPoints(new Float32Array(7), 4), 'shape_mismatch', 422, /hold 7 values, not a whole number of samples of 4/],
    [() => traversalGrid(new Float32Array(5), { directions: 1, samples: 1, steps: [0] }, [1, 2, 2]), 'shape_mismatch', 422, /outputs hold 5 values, not 1 images of 1×2×2/],
    [() => traversalGrid(new Float32Array(8), { directions: 2, samples: 1, steps: [0] }, [1, 2, 2], [1, 1]), 'invalid_argument', 400, /order must list distinct directions from 0 to 1/],
    [() => traversalGrid(new Float32Array(8), { directions: 2, samples: 1, steps: [0] }, [1, 2, 2], [0, 2]), 'invalid_argument', 400, /order must list distinct/],
    [() => traversalGrid(new Float32Array(4 * 64 * 64), { directions: 1, samples: 1, steps: [0, 1, 2, 3] }, [1, 64, 64], [0], { ...TRAVERSAL_LIMITS, pixels: 10_000 }), 'limit_exceeded', 422, /needs 18088 pixels, above the limit of 10000/],
  ];
  for (const [fn, code, status, message] of cases) {
    try {
      fn();
      t.fail(`accepted: ${message}`);
    } catch (err) {
      t.ok(err instanceof AuditError, String(err));
      const e = err as InstanceType<typeof AuditError>;
      t.equal(e.code, code, e.message);
      t.equal(e.status, status);
      t.match(e.message, message);
    }
  }
});

{
  t.test('the report section in headless Chromium: one grid image, labels aligned with rows, sorted by score', async (t) => {
    const session = await ort.InferenceSession.create(modelBytes('stylegan2.onnx'));
    const d = 32;
    const z = standardNormal(3 * d, 11);
    const indices = [0, 1, 2, 3, 4, 5];
    const plan = traversalPoints(z, d, { directions: { kind: 'axes', indices }, samples: 3 });
    const outputs = await runG(session, 'z', plan.points, [plan.points.length / d, d]);
    await session.release();
    const scores = [0.02, 0.31, 0.0, 0.12, 0.5, 0.07];
    const grid = traversalGrid(outputs, plan, [3, 32, 32], orderByScore(scores));
    const section = traversalSection({
      layer: 'image <w>', grid, labels: plan.labels, scores, scoreName: 'activeness', steps: plan.steps, extent: plan.extent, samples: plan.samples,
    });
    const html = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'"><style>${STYLE}</style></head><body><main>${section}</main></body></html>`;
    const dir = mkdtempSync(join(tmpdir(), 'audit-traversal-'));
    const file = join(dir, 'traversal.html');
    writeFileSync(file, html);
    mkdirSync(ARTIFACTS, { recursive: true });
    const browser = await launchBrowser(t);
    if (!browser) return;
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`file://${file}`);
    await page.waitForLoadState('load');
    t.equal(await page.locator('section#traversal img').count(), 1, 'the grid is one image');
    const [natural, shown] = await page.locator('section#traversal img').evaluate((img) => {
      const i = img as HTMLImageElement;
      return [[i.naturalWidth, i.naturalHeight], [i.getBoundingClientRect().width, i.getBoundingClientRect().height]];
    });
    t.same(natural, [grid.width, grid.height], 'decoded at its size');
    const scale = shown[0] / grid.width;
    t.equal(grid.width, 524);
    t.ok(Math.abs(scale - 900 / 524) < 0.01, `scaled to the 900 px width (×${scale.toFixed(3)}) rather than ×2`);
    const single = traversalSection({ layer: 'x', grid: traversalGrid(outputs.subarray(0, 5 * 3072), { directions: 1, samples: 1, steps: plan.steps }, [3, 32, 32]), labels: ['z0'], steps: plan.steps, extent: 1, samples: 1 });
    t.match(single, /width="344" height="72"/, 'a narrow grid: cells ×2, to about 64 px');
    const labels = await page.locator('.traversal-label').allTextContents();
    t.same(labels, ['z4 · 0.500', 'z1 · 0.310', 'z3 · 0.120', 'z5 · 0.0700', 'z0 · 0.0200', 'z2 · 0'], 'sorted by activeness');
    // Each label's box spans its row of images: same top (after the first gap) and height.
    const boxes = await page.locator('.traversal-label').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().top));
    const imageTop = await page.locator('section#traversal img').evaluate((img) => img.getBoundingClientRect().top);
    boxes.forEach((top, row) => t.ok(Math.abs(top - (imageTop + grid.cell(row, 0, 0).y * scale)) < 1.5, `label ${row} at its row`));
    t.match(await page.locator('section#traversal h2').textContent(), /Latent traversals — image <w>/, 'escaped name');
    t.match(await page.locator('section#traversal .note').textContent(), /−2, −1, 0, \+1, \+2/);
    t.same(errors, [], 'no console errors');
    await page.screenshot({ path: join(ARTIFACTS, 'traversal.png'), fullPage: true });
  });
}
