import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import t from 'tap';
import {
  applyCudaEnvironment,
  cudaEnvironment,
  cudaProviderConfig,
  cudaSettingsFromEnv,
  DEFAULT_CUDA_SETTINGS,
  describeCudaSettings,
  FORWARDED_CUDA_OPTIONS,
  resolveCudaSettings,
} from '../dist/runtime/cuda.js';
import { parseDeviceList, providerChoices } from '../dist/runtime/device.js';
import { openSession } from '../dist/runtime/session.js';

const MiB = 1024 * 1024;

t.test('defaults: no memory cap, onnxruntime’s exhaustive search, TF32 off', async (t) => {
  t.same(DEFAULT_CUDA_SETTINGS, { memoryLimitMiB: 0, convAlgoSearch: 'exhaustive', tf32: false });
  t.throws(() => ((DEFAULT_CUDA_SETTINGS as { tf32: boolean }).tf32 = true), 'the defaults cannot be changed by accident');
});

t.test('the provider config of one GPU, with the default settings', async (t) => {
  t.strictSame(providerChoices({ kind: 'cuda', id: 1 }), [
    { name: 'cuda:1', providers: [{ name: 'cuda', deviceId: 1, cudnnConvAlgoSearch: 'EXHAUSTIVE', useTf32: 0 }] },
  ]);
});

t.test('auto tries CUDA 0 with the same settings, then the CPU', async (t) => {
  const cuda = resolveCudaSettings({ memoryLimitMiB: 2048, convAlgoSearch: 'heuristic' });
  t.strictSame(providerChoices({ kind: 'auto' }, cuda), [
    {
      name: 'cuda:0',
      providers: [{ name: 'cuda', deviceId: 0, cudnnConvAlgoSearch: 'HEURISTIC', useTf32: 0, gpuMemLimit: 2048 * MiB }],
    },
    { name: 'cpu', providers: ['cpu'] },
  ]);
});

t.test('settings map to onnxruntime’s option values', async (t) => {
  t.equal(cudaProviderConfig(0, resolveCudaSettings({ memoryLimitMiB: 1 })).gpuMemLimit, MiB);
  t.notOk('gpuMemLimit' in cudaProviderConfig(0, resolveCudaSettings({ memoryLimitMiB: 0 })), '0 means no cap: no key');
  t.equal(cudaProviderConfig(3, resolveCudaSettings({ tf32: true })).useTf32, 1);
  t.equal(cudaProviderConfig(3, resolveCudaSettings({ convAlgoSearch: 'default' })).cudnnConvAlgoSearch, 'DEFAULT');
  t.equal(cudaProviderConfig(3).deviceId, 3);
});

t.test('CPU and WebGPU choices carry no CUDA options', async (t) => {
  t.strictSame(providerChoices({ kind: 'cpu' }, resolveCudaSettings({ memoryLimitMiB: 5 })), [{ name: 'cpu', providers: ['cpu'] }]);
  t.strictSame(providerChoices({ kind: 'webgpu' }), [{ name: 'webgpu', providers: ['webgpu'] }]);
});

t.test('settings out of range are refused with the allowed values', async (t) => {
  t.throws(() => resolveCudaSettings({ memoryLimitMiB: -1 }), { code: 'invalid_argument', status: 400, message: /whole number of MiB ≥ 0/ });
  t.throws(() => resolveCudaSettings({ memoryLimitMiB: 1.5 }), { message: /whole number of MiB/ });
  t.throws(() => resolveCudaSettings({ convAlgoSearch: 'fast' as never }), { message: /exhaustive, heuristic or default, got 'fast'/ });
  t.throws(() => resolveCudaSettings({ tf32: 'yes' as never }), { message: /tf32 must be true or false/ });
  t.same(resolveCudaSettings({ tf32: undefined }), DEFAULT_CUDA_SETTINGS, 'undefined keeps the default');
});

t.test('settings from the environment', async (t) => {
  t.same(
    cudaSettingsFromEnv({
      HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB: '4096',
      HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH: 'HEURISTIC',
      HESSIAN_AUDIT_CUDA_TF32: 'on',
    }),
    { memoryLimitMiB: 4096, convAlgoSearch: 'heuristic', tf32: true },
  );
  t.same(cudaSettingsFromEnv({}), DEFAULT_CUDA_SETTINGS);
  t.same(cudaSettingsFromEnv({ HESSIAN_AUDIT_CUDA_TF32: '0', HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB: '' }), DEFAULT_CUDA_SETTINGS);
  t.throws(() => cudaSettingsFromEnv({ HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB: 'lots' }), {
    message: "HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB must be a number, got 'lots'",
  });
  t.throws(() => cudaSettingsFromEnv({ HESSIAN_AUDIT_CUDA_TF32: 'maybe' }), {
    message: "HESSIAN_AUDIT_CUDA_TF32 must be on or off (1/0, true/false), got 'maybe'",
  });
});

t.test('TF32 off is enforced through NVIDIA_TF32_OVERRIDE=0', async (t) => {
  t.same(cudaEnvironment(DEFAULT_CUDA_SETTINGS), { NVIDIA_TF32_OVERRIDE: '0' });
  t.same(cudaEnvironment(resolveCudaSettings({ tf32: true })), {});
  const env: NodeJS.ProcessEnv = { NVIDIA_TF32_OVERRIDE: '1' };
  t.same(applyCudaEnvironment(DEFAULT_CUDA_SETTINGS, env), { NVIDIA_TF32_OVERRIDE: '0' });
  t.equal(env.NVIDIA_TF32_OVERRIDE, '0', 'an inherited "1" is overridden when the setting says off');
  const untouched: NodeJS.ProcessEnv = {};
  applyCudaEnvironment(resolveCudaSettings({ tf32: true }), untouched);
  t.same(untouched, {});
});

t.test('the startup description says what is really in effect', async (t) => {
  const off = describeCudaSettings(DEFAULT_CUDA_SETTINGS, { NVIDIA_TF32_OVERRIDE: '0' });
  t.same(off, { tf32: 'off (NVIDIA_TF32_OVERRIDE=0)', memoryLimit: 'none', convAlgoSearch: 'exhaustive' });
  t.match(describeCudaSettings(DEFAULT_CUDA_SETTINGS, {}).tf32, /^NOT off: NVIDIA_TF32_OVERRIDE=0 is missing/);
  t.match(describeCudaSettings(resolveCudaSettings({ tf32: true }), {}).tf32, /^on /);
  const asked = resolveCudaSettings({ memoryLimitMiB: 512, convAlgoSearch: 'heuristic' });
  const ignored = describeCudaSettings(asked, {});
  t.equal(ignored.memoryLimit, '512 MiB requested but not forwarded by this onnxruntime-node; no cap in effect');
  t.equal(ignored.convAlgoSearch, 'heuristic requested but not forwarded by this onnxruntime-node; exhaustive in effect');
  const forwarded = describeCudaSettings(asked, {}, ['deviceId', 'gpuMemLimit', 'cudnnConvAlgoSearch']);
  t.same([forwarded.memoryLimit, forwarded.convAlgoSearch], ['512 MiB', 'heuristic']);
});

const linuxX64 = process.platform === 'linux' && process.arch === 'x64';

t.test('the forwarded-options table matches the installed onnxruntime-node binding', { skip: !linuxX64 && 'reads the linux/x64 binding' }, async (t) => {
  // The binding reads option names as string literals: a name it forwards appears in the binary.
  // When an upgrade starts forwarding gpuMemLimit & co., this fails and FORWARDED_CUDA_OPTIONS must follow.
  const require = createRequire(import.meta.url);
  const root = dirname(dirname(require.resolve('onnxruntime-node')));
  const binary = readFileSync(join(root, 'bin', 'napi-v6', 'linux', 'x64', 'onnxruntime_binding.node')).toString('latin1');
  for (const option of ['deviceId', 'gpuMemLimit', 'cudnnConvAlgoSearch', 'useTf32', 'arenaExtendStrategy']) {
    t.equal(binary.includes(option), FORWARDED_CUDA_OPTIONS.includes(option), `${option}`);
  }
});

t.test('--devices: GPU ordinals, one worker each', async (t) => {
  t.same(parseDeviceList('0,1'), [{ kind: 'cuda', id: 0 }, { kind: 'cuda', id: 1 }]);
  t.same(parseDeviceList(' 3 , cuda:5'), [{ kind: 'cuda', id: 3 }, { kind: 'cuda', id: 5 }]);
  for (const bad of ['', 'a', '0,,1', '-1', 'cpu', '1.5']) {
    t.throws(() => parseDeviceList(bad), { code: 'invalid_argument', status: 400, message: `--devices takes GPU ordinals separated by commas (e.g. 0,1), got '${bad}'` });
  }
  t.throws(() => parseDeviceList('0,1,0'), { message: '--devices lists GPU 0 twice' });
});

const cudaInstalled = existsSync(
  join(dirname(dirname(createRequire(import.meta.url).resolve('onnxruntime-node'))), 'bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so'),
);

t.test('a request for CUDA never runs on the CPU, settings or not', { skip: cudaInstalled && 'the CUDA provider is installed here' }, async (t) => {
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  const cuda = resolveCudaSettings({ memoryLimitMiB: 256, convAlgoSearch: 'heuristic' });
  await t.rejects(openSession(bytes, [], { kind: 'cuda', id: 0 }, { cuda }), {
    code: 'device_unavailable',
    status: 422,
    message: /the CUDA execution provider cannot load: .*libonnxruntime_providers_cuda\.so.*--device cpu/,
  });
  const auto = await openSession(bytes, [], { kind: 'auto' }, { cuda });
  t.equal(auto.executionProvider, 'cpu', 'auto falls back, and says so');
  t.match(auto.fallback, /CUDA execution provider cannot load.*ran on cpu instead/);
  await auto.session.release();
});

t.test('a CUDA session is opened with TF32 off in the process environment, unless asked for', async (t) => {
  const bytes = new Uint8Array(readFileSync(new URL('../models/mlp.onnx', import.meta.url)));
  const saved = { ...process.env };
  t.teardown(() => {
    for (const key of ['NVIDIA_TF32_OVERRIDE', 'HESSIAN_AUDIT_CUDA_TF32', 'HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH']) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });
  const open = async (device: Parameters<typeof openSession>[2], settings = {}) => (await openSession(bytes, [], device, settings)).session.release();

  delete process.env.NVIDIA_TF32_OVERRIDE;
  await open({ kind: 'cpu' });
  t.equal(process.env.NVIDIA_TF32_OVERRIDE, undefined, 'a CPU session leaves the environment alone');
  await open({ kind: 'auto' });
  t.equal(process.env.NVIDIA_TF32_OVERRIDE, '0', 'auto tries CUDA first: TF32 off before the libraries load');

  delete process.env.NVIDIA_TF32_OVERRIDE;
  await open({ kind: 'auto' }, { cuda: resolveCudaSettings({ tf32: true }) });
  t.equal(process.env.NVIDIA_TF32_OVERRIDE, undefined, 'TF32 on: no override');

  process.env.HESSIAN_AUDIT_CUDA_TF32 = 'on';
  await open({ kind: 'auto' });
  t.equal(process.env.NVIDIA_TF32_OVERRIDE, undefined, 'without explicit settings, HESSIAN_AUDIT_CUDA_* decide');
  process.env.HESSIAN_AUDIT_CUDA_TF32 = 'off';
  await open({ kind: 'auto' });
  t.equal(process.env.NVIDIA_TF32_OVERRIDE, '0');

  process.env.HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH = 'fastest';
  await t.rejects(openSession(bytes, [], { kind: 'auto' }), {
    code: 'invalid_argument',
    message: "the cuDNN algorithm search must be exhaustive, heuristic or default, got 'fastest'",
  });
});
