/**
 * checkRunMemory infers the largest tensor once per model and input shapes (every batch of a plan
 * has one of a few shapes): a remembered answer refuses and passes exactly as a fresh one.
 */
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { loadModel } from '../dist/runtime/model.js';
import { checkRunMemory, inferredSizes } from '../dist/runtime/memory-check.js';
import { encode, expandModel } from './helpers/onnx-build.js';

const feeds = (rows: number) => ({ z: new ort.Tensor('float32', new Float32Array(rows * 3), [rows, 3]) });
const refusal = (rows: number, budget: number) =>
  `tensor 'y' (Expand) would have shape [${rows}, 3, 1024], ${rows * 3 * 1024 * 4} bytes, for a batch of ${rows} rows: ` +
  `over the memory budget of ${budget} bytes (--memory-budget), so the model is not run`;

t.test('the same shapes give the same answer, asked again and under another budget', async (t) => {
  const model = loadModel(encode(expandModel(1024)));
  for (let i = 0; i < 2; i++) {
    t.throws(() => checkRunMemory(model, feeds(4), 40_000), { code: 'memory_budget_exceeded', message: refusal(4, 40_000) }, `4 rows, call ${i + 1}`);
    t.doesNotThrow(() => checkRunMemory(model, feeds(4), 4 * 3 * 1024 * 4), `4 rows within a budget of exactly their bytes, call ${i + 1}`);
    t.doesNotThrow(() => checkRunMemory(model, feeds(2), 40_000), `2 rows (24,576 bytes) within 40,000, call ${i + 1}`);
    t.throws(() => checkRunMemory(model, feeds(8), 40_000), { message: refusal(8, 40_000) }, `8 rows, call ${i + 1}`);
  }
  // Another model with the same input shapes has its own answer.
  const wider = loadModel(encode(expandModel(4096)));
  t.throws(() => checkRunMemory(wider, feeds(2), 40_000), { message: /shape \[2, 3, 4096\], 98304 bytes/ });
});

t.test('more shapes than the memory keeps (256 per model): every answer is still right', async (t) => {
  const model = loadModel(encode(expandModel(1024)));
  const budget = 100 * 3 * 1024 * 4; // 100 rows fit exactly
  let wrong = 0;
  for (const rows of [...Array.from({ length: 300 }, (_, i) => i + 1), 1, 100, 101, 300]) {
    let refused = false;
    try {
      checkRunMemory(model, feeds(rows), budget);
    } catch (err) {
      refused = (err as { code?: string }).code === 'memory_budget_exceeded';
    }
    if (refused !== rows > 100) wrong++;
  }
  t.equal(wrong, 0, 'rows ≤ 100 pass and rows > 100 are refused, before and after the memory starts over');
});

t.test('held parts count with the largest tensor; the refusal names the largest part first, then the rest', async (t) => {
  const model = loadModel(encode(expandModel(1024)));
  const tensor = 4 * 3 * 1024 * 4; // 49,152 bytes for 4 rows
  const held = [
    { what: 'the outputs fetched', shape: [4, 3072], bytes: tensor },
    { what: 'the accumulators for 1 sample', shape: [1, 3072], bytes: 3 * tensor },
  ];
  t.doesNotThrow(() => checkRunMemory(model, feeds(4), 5 * tensor, held), 'exactly the budget: the sum of the three parts');
  t.throws(() => checkRunMemory(model, feeds(4), 5 * tensor - 1, held), {
    code: 'memory_budget_exceeded',
    message:
      `the accumulators for 1 sample would have shape [1, 3072], ${3 * tensor} bytes, for a batch of 4 rows, with tensor 'y' (Expand) ([4, 3, 1024], ${tensor} bytes) ` +
      `and the outputs fetched ([4, 3072], ${tensor} bytes): ${5 * tensor} bytes in all: over the memory budget of ${5 * tensor - 1} bytes (--memory-budget), so the model is not run`,
  });
  for (let i = 0; i < 2; i++) {
    const { largest, named } = inferredSizes(model, feeds(4), ['y', 'z', 'nowhere']);
    t.same(largest, { name: 'y', op: 'Expand', shape: [4, 3, 1024], bytes: tensor }, `the largest, call ${i + 1}`);
    t.same(named, { y: { name: 'y', op: 'Expand', shape: [4, 3, 1024], bytes: tensor }, z: null, nowhere: null }, `by name (an input is not computed), call ${i + 1}`);
  }
});
