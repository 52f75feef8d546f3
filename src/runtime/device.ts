/**
 * Device selection, in the manner of transformers.js's onnxruntime backend: a device name maps to
 * an ordered list of execution providers; `auto` tries CUDA first and falls back to the CPU, and
 * the result always says which provider really ran.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';
import { AuditError, invalid } from '../contract/errors.js';
import { type CudaSettings, cudaProviderConfig, DEFAULT_CUDA_SETTINGS } from './cuda.js';

export type Device =
  | { kind: 'cpu' }
  | { kind: 'cuda'; id: number }
  | { kind: 'webgpu' }
  | { kind: 'auto' };

export const DEVICE_SYNTAX = 'auto, cpu, cuda, cuda:N or webgpu';

export function parseDevice(text: string): Device {
  const match = /^cuda(?::(\d+))?$/.exec(text);
  if (match) return { kind: 'cuda', id: Number(match[1] ?? 0) };
  if (text === 'cpu' || text === 'auto' || text === 'webgpu') return { kind: text };
  throw invalid(`unknown device '${text}': use ${DEVICE_SYNTAX}`);
}

export const deviceName = (d: Device): string => (d.kind === 'cuda' ? `cuda:${d.id}` : d.kind);

/**
 * `--devices 0,1,…`: one worker per listed GPU (the tips' DataParallel advice, done with one
 * onnxruntime session per device). Ids are CUDA ordinals as the container sees them.
 */
export function parseDeviceList(text: string): Device[] {
  const parts = text.split(',').map((s) => s.trim());
  const ids = parts.map((part) => {
    const match = /^(?:cuda:)?(\d+)$/.exec(part);
    if (!match) throw invalid(`--devices takes GPU ordinals separated by commas (e.g. 0,1), got '${text}'`);
    return Number(match[1]);
  });
  const repeated = ids.find((id, i) => ids.indexOf(id) !== i);
  if (repeated !== undefined) throw invalid(`--devices lists GPU ${repeated} twice`);
  return ids.map((id) => ({ kind: 'cuda', id }));
}

/** One concrete choice: the provider list handed to onnxruntime, and its name in results. */
export interface ProviderChoice {
  name: string;
  providers: InferenceSession.ExecutionProviderConfig[];
}

export function providerChoices(device: Device, cuda: CudaSettings = DEFAULT_CUDA_SETTINGS): ProviderChoice[] {
  const cpu: ProviderChoice = { name: 'cpu', providers: ['cpu'] };
  switch (device.kind) {
    case 'cpu':
      return [cpu];
    case 'cuda':
      return [cudaChoice(device.id, cuda)];
    case 'webgpu':
      return [{ name: 'webgpu', providers: ['webgpu'] }];
    case 'auto':
      return [cudaChoice(0, cuda), cpu];
  }
}

function cudaChoice(id: number, cuda: CudaSettings): ProviderChoice {
  return { name: `cuda:${id}`, providers: [cudaProviderConfig(id, cuda)] };
}

/** Where onnxruntime-node keeps its native libraries, for error messages that name the missing one. */
function nativeDir(): string {
  const require = createRequire(import.meta.url);
  const root = dirname(dirname(require.resolve('onnxruntime-node')));
  return join(root, 'bin', 'napi-v6', process.platform, process.arch);
}

/** Explain a provider that failed to start, naming the library that is missing when it is one. */
export function providerError(choice: ProviderChoice, cause: Error): AuditError {
  if (choice.name.startsWith('cuda')) {
    const dir = nativeDir();
    const missing = ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'].filter(
      (lib) => !existsSync(join(dir, lib)),
    );
    const why = missing.length
      ? `${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed in ${dir}`
      : cause.message.split('\n')[0];
    return new AuditError(
      'device_unavailable',
      `the CUDA execution provider cannot load: ${why}; reinstall with ONNXRUNTIME_NODE_INSTALL=cuda12 ` +
        `(CUDA 12 and cuDNN 9 on the library path), or use --device cpu`,
    );
  }
  return new AuditError('device_unavailable', `the ${choice.name} execution provider cannot start: ${cause.message.split('\n')[0]}`);
}
