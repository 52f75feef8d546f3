import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { AuditError } from '../dist/contract/errors.js';
import { ModelStore } from '../dist/store/index.js';
import { modelBytes } from './helpers/reference.js';
import { tempDir } from './helpers/server.js';

/** What the folder really holds: every model and description file, by stat. */
const onDisk = (dir: string): number =>
  readdirSync(dir)
    .filter((n) => n.endsWith('.onnx') || n.endsWith('.json'))
    .reduce((sum, n) => sum + statSync(join(dir, n)).size, 0);

const description = { note: 'stands in for a model description' };

t.test('the quota counts models and descriptions; a commit past it is refused with 507 and leaves nothing', async (t) => {
  const dir = tempDir(t);
  const dcgan = modelBytes('dcgan.onnx');
  const store = await ModelStore.open(dir, { quotaBytes: dcgan.length + 1000 });
  const first = await store.stage(dcgan);
  t.same(await store.commit(first, description), { created: true });
  t.equal(store.usedBytes, onDisk(dir));

  const second = await store.stage(modelBytes('mlp.onnx'));
  let err: unknown;
  try {
    await store.commit(second, description);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof AuditError);
  t.match(err, { code: 'store_full', status: 507, message: /quota of 219 KiB/ });
  t.same((err as AuditError).details, { quotaBytes: dcgan.length + 1000, usedBytes: onDisk(dir), neededBytes: modelBytes('mlp.onnx').length + JSON.stringify(description).length });
  await store.discard(second);
  t.same(readdirSync(join(dir, '.tmp')), []);
  t.same(await store.list(), [first.id]);

  // The same bytes again need no room; deleting frees what the files took.
  const again = await store.stage(dcgan);
  t.same(await store.commit(again, description), { created: false });
  t.equal(store.usedBytes, onDisk(dir));
  t.ok(await store.delete(first.id));
  t.equal(store.usedBytes, 0);
});

t.test('a reopened store counts what is already in its folder', async (t) => {
  const dir = tempDir(t);
  const store = await ModelStore.open(dir);
  for (const name of ['mlp.onnx', 'cubic.onnx']) await store.commit(await store.stage(modelBytes(name)), description);
  const reopened = await ModelStore.open(dir, { quotaBytes: onDisk(dir) + 10 });
  t.equal(reopened.usedBytes, onDisk(dir));
  const err = await reopened.commit(await reopened.stage(modelBytes('quadratic.onnx')), description).then(() => null, (e: unknown) => e);
  t.match(err, { code: 'store_full', status: 507 });
  t.equal((await ModelStore.open(dir)).quotaBytes, 0, 'no quota unless one is set');
});
