import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { parseRequest, PenaltyRequestSchema } from '../dist/contract/request.js';

const parsePenalty = (body: unknown) => parseRequest(body, {}, PenaltyRequestSchema);
import { AuditError } from '../dist/contract/errors.js';
import { ModelStore } from '../dist/store/index.js';
import { modelBytes } from './helpers/reference.js';
import { sha256, tempDir } from './helpers/server.js';

t.test('the request schema refuses unknown fields by name, at any depth', async (t) => {
  t.throws(() => parsePenalty({ k: 4, kk: 2 }), { code: 'invalid_request', status: 400, message: "request has unknown field 'kk'" });
  t.throws(() => parsePenalty({ latents: { samples: 2, sede: 1 } }), /request\.latents has unknown field 'sede'/);
  t.throws(() => parsePenalty({ inputs: { label: { data: [1], dtype: 'int64' } } }), /request\.inputs\.label has unknown field 'dtype'/);
});

t.test('k < 2, epsilon <= 0 and bad enums are refused with the field named', async (t) => {
  t.throws(() => parsePenalty({ k: 1 }), { status: 400, message: /^request\.k: must be at least 2/ });
  t.throws(() => parsePenalty({ k: 2.5 }), /request\.k: must be a whole number/);
  t.throws(() => parsePenalty({ epsilon: 0 }), /request\.epsilon: must be greater than 0/);
  t.throws(() => parsePenalty({ epsilon: -0.1 }), /request\.epsilon: must be greater than 0/);
  t.throws(() => parsePenalty({ reduction: 'median' }), /request\.reduction: /);
  t.throws(() => parsePenalty({ seed: -1 }), /request\.seed: must be an integer from 0/);
  t.throws(() => parsePenalty([]), /^request: /);
});

t.test('valid JSON becomes the PenaltyRequest the CLI builds', async (t) => {
  const body = parsePenalty({
    latents: [[1, 2], [3, 4.5]],
    directions: [[[1, -1], [-1, 1]], [[1, 1], [-1, -1]]],
    inputs: { label: { data: [3, 1], type: 'int64' }, truncation: { data: 0.7 }, grid: { data: [1, 2, 3, 4, 5, 6], shape: [2, 3] } },
    k: 2,
    epsilon: 0.05,
    layers: ['y0'],
    seed: 9,
  });
  const r = body;
  t.same(r.latents, { type: 'float64', shape: [2, 2], data: Float64Array.from([1, 2, 3, 4.5]) });
  t.same(r.directions!.shape, [2, 2, 2]);
  t.same(r.inputs!.label, { type: 'int64', shape: [2], data: BigInt64Array.from([3n, 1n]) });
  t.same(r.inputs!.truncation, { type: 'float64', shape: [], data: Float64Array.from([0.7]) });
  t.same(r.inputs!.grid.shape, [2, 3]);
  t.same({ k: r.k, epsilon: r.epsilon, layers: r.layers, seed: r.seed }, { k: 2, epsilon: 0.05, layers: ['y0'], seed: 9 });
  t.same((parsePenalty({ latents: { samples: 3, seed: 4 } })).latents, { samples: 3, seed: 4 });
});

t.test('arrays that do not fit are refused with the index or shape named', async (t) => {
  t.throws(() => (parsePenalty({ latents: [[1, 2], [3]] })), { code: 'invalid_array', status: 400, message: /latents is not rectangular: latents\[1\] has 1 entries/ });
  t.throws(() => (parsePenalty({ latents: [[1, 'a']] })), /latents\[0\]\[1\] is "a", not a number/);
  t.throws(() => (parsePenalty({ inputs: { g: { data: [1, 2, 3], shape: [2, 2] } } })), /inputs\.g has 3 values, which do not fill shape \[2, 2\]/);
  t.throws(() => (parsePenalty({ inputs: { g: { data: [1.5], type: 'int64' } } })), /declared int64 but holds values that are not whole numbers/);
});

t.test('store: same bytes give the same id; a reopened store still has the model', async (t) => {
  const dir = tempDir(t);
  const bytes = modelBytes('mlp.onnx');
  const store = await ModelStore.open(dir);
  const first = await store.stage(bytes);
  t.equal(first.id, sha256(bytes));
  t.equal(first.size, bytes.length);
  t.same(await store.commit(first, { note: 'one' }), { created: true });
  const second = await store.stage(Readable.from([bytes.subarray(0, 100), bytes.subarray(100)]));
  t.equal(second.id, first.id, 'streamed in pieces, same id');
  t.same(await store.commit(second, { note: 'one' }), { created: false });
  const reopened = await ModelStore.open(dir);
  t.ok(await reopened.has(first.id));
  t.same(await reopened.description(first.id), { note: 'one' });
  t.same(await reopened.list(), [first.id]);
  t.same(readdirSync(join(dir, '.tmp')), []);
  t.ok(await reopened.delete(first.id));
  t.notOk(await reopened.delete(first.id));
  t.notOk(await reopened.has(first.id));
  t.equal(await reopened.description(first.id), undefined);
  t.notOk(await reopened.has('../../etc/passwd'), 'ids are validated before touching the disk');
});

t.test('store: an upload that fails midway leaves nothing behind', async (t) => {
  const dir = tempDir(t);
  const store = await ModelStore.open(dir);
  const broken = new Readable({
    read() {
      this.push(Buffer.alloc(1000, 1));
      this.destroy(new Error('client hung up'));
    },
  });
  await t.rejects(store.stage(broken), /client hung up/);
  t.same(readdirSync(join(dir, '.tmp')), []);
  t.same(readdirSync(dir), ['.tmp']);
  const staged = await store.stage(new Uint8Array([1, 2, 3]));
  await store.discard(staged);
  t.notOk(existsSync(staged.path));
  t.same(await store.list(), []);
});

t.test('store: leftovers of a crash during upload are removed on open', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, '.tmp'));
  writeFileSync(join(dir, '.tmp', 'abc.part'), 'partial');
  await ModelStore.open(dir);
  t.same(readdirSync(join(dir, '.tmp')), []);
  t.ok(new AuditError('x', 'y') instanceof Error);
});
