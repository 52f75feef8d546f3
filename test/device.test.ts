/** Device selection: CUDA is not installed on CI machines, which is exactly what these tests need. */
import t from 'tap';
import { parseDevice, providerChoices } from '../dist/runtime/device.js';
import { cli } from './helpers/cli.js';
import { modelPath } from './helpers/reference.js';

t.test('device names parse, and unknown ones are refused', async (t) => {
  t.same(parseDevice('cpu'), { kind: 'cpu' });
  t.same(parseDevice('cuda'), { kind: 'cuda', id: 0 });
  t.same(parseDevice('cuda:3'), { kind: 'cuda', id: 3 });
  t.same(parseDevice('auto'), { kind: 'auto' });
  t.same(parseDevice('webgpu'), { kind: 'webgpu' });
  t.throws(() => parseDevice('cuda:x'), { code: 'invalid_argument', message: /unknown device 'cuda:x'/ });
  t.same(providerChoices({ kind: 'auto' }).map((c) => c.name), ['cuda:0', 'cpu']);
});

t.test('--device cuda without the CUDA provider names the missing library', async (t) => {
  const r = await cli('penalty', modelPath('mlp.onnx'), '--samples', '2', '--device', 'cuda:0');
  t.equal(r.code, 2);
  t.match(r.stderr, /the CUDA execution provider cannot load: libonnxruntime_providers_shared.so and libonnxruntime_providers_cuda.so are not installed in .*onnxruntime-node\/bin.*ONNXRUNTIME_NODE_INSTALL=cuda12.*--device cpu/);
});

t.test('--device auto falls back to the CPU and says so', async (t) => {
  const r = await cli('penalty', modelPath('mlp.onnx'), '--samples', '2', '--seed', '1', '--device', 'auto', '--json');
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  t.equal(result.executionProvider, 'cpu');
  t.match(result.warnings.find((w: { code: string }) => w.code === 'device_fallback')?.message, /CUDA execution provider cannot load.*ran on cpu instead/);
  const onCpu = JSON.parse((await cli('penalty', modelPath('mlp.onnx'), '--samples', '2', '--seed', '1', '--json')).stdout);
  t.equal(result.penalty, onCpu.penalty, 'the same numbers as the CPU device');
});
