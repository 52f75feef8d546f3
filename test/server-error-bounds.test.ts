/**
 * Bounds on what an error can carry back (issue 11, item 18), onnxruntime messages without source
 * paths, and a store that reopens cleanly after a crash between its two renames.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { withoutSourcePaths } from '../dist/onnx/ort-message.js';
import { ModelStore } from '../dist/store/index.js';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp, tempDir } from './helpers/server.js';

t.test('a validation error about 5,000 values: the message is cut, the details dropped, the status right', async (t) => {
  const { app } = await startApp(t);
  const form = multipart([{ name: 'model', data: modelBytes('mlp.onnx'), filename: 'm.onnx' }]);
  t.equal((await app.inject({ method: 'POST', url: '/v1/models', ...form })).statusCode, 201);
  const r = await app.inject({ method: 'POST', url: `/v1/models/${sha256(modelBytes('mlp.onnx'))}/penalty`, payload: { layers: Array.from({ length: 5000 }, (_, i) => i) } });
  t.equal(r.statusCode, 400);
  const { error } = r.json();
  t.equal(error.code, 'invalid_request');
  t.match(error.message, /^request\.layers\.0: /);
  t.ok(error.message.length < 2100, `message of ${error.message.length} characters`);
  t.match(error.message, /more characters\)$/);
  t.same(error.details, { truncated: true });
  t.ok(r.body.length < 2500, `a response of ${r.body.length} bytes`);
  const proto = multipart([{ name: '__proto__', data: 'x' }]);
  const refused = await app.inject({ method: 'POST', url: '/v1/models', ...proto });
  t.equal(refused.statusCode, 400);
  t.equal(refused.json().error.code, 'invalid_request');
  const good = multipart([{ name: 'model', data: modelBytes('mlp.onnx'), filename: 'm.onnx' }]);
  for (const [what, payload, type] of [
    ['no boundary', good.payload, 'multipart/form-data'],
    ['cut short', good.payload.subarray(0, good.payload.length - 100), good.headers['content-type']],
  ] as const) {
    const broken = await app.inject({ method: 'POST', url: '/v1/models', payload, headers: { 'content-type': type } });
    t.equal(broken.statusCode, 400, what);
    t.equal(broken.json().error.code, 'malformed_multipart', what);
  }
  const path = await app.inject({ method: 'GET', url: `/v1/${'x'.repeat(5000)}` });
  t.equal(path.statusCode, 404);
  t.ok(path.json().error.message.length < 400, 'an unknown path is not echoed whole');
});

t.test('onnxruntime messages lose their source paths and C++ signatures, on Linux and Windows builds', async (t) => {
  t.equal(
    withoutSourcePaths(
      "Non-zero status code returned while running Reshape node. Name:'bad' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. Input shape:{2,4}, requested shape:{7}",
    ),
    "Non-zero status code returned while running Reshape node. Name:'bad' Status Message: input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. Input shape:{2,4}, requested shape:{7}",
  );
  t.equal(
    withoutSourcePaths('Status Message: D:\\a\\_work\\1\\s\\onnxruntime\\core\\providers\\cpu\\math\\element_wise_ops.h:560 void onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) axis == 1 was false.'),
    'Status Message: axis == 1 was false.',
  );
  t.equal(withoutSourcePaths('input z: got shape (2, 3), expected (2, 4)'), 'input z: got shape (2, 3), expected (2, 4)', 'a message without paths is unchanged');
});

t.test('reopening: a description without its model (a crash between the renames) and temporary files are removed', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, '.tmp'));
  const id = 'a'.repeat(64);
  const orphan = 'b'.repeat(64);
  writeFileSync(join(dir, `${id}.onnx`), Buffer.alloc(100));
  writeFileSync(join(dir, `${id}.json`), '{"x":1}');
  writeFileSync(join(dir, `${orphan}.json`), '{"orphan":true}');
  writeFileSync(join(dir, '.tmp', 'cut.part'), Buffer.alloc(10));
  const store = await ModelStore.open(dir);
  t.same(readdirSync(dir).filter((n) => n !== '.tmp').sort(), [`${id}.json`, `${id}.onnx`]);
  t.same(readdirSync(join(dir, '.tmp')), []);
  t.equal(store.usedBytes, 100 + 7, 'only the pair is counted');
  t.equal(await store.size(orphan), undefined);
  t.equal(await store.size('not-an-id'), undefined);
  t.equal(await store.delete('not-an-id'), false);
  t.equal(await store.description(orphan), undefined);
});
