/**
 * CUDA execution provider settings: the three knobs that matter for finite differences, with
 * defaults chosen so that second differences are computed in full float32.
 *
 * What onnxruntime-node 1.30 really does with them (read from js/node/src/session_options_helper.cc
 * and checked against the installed binding by test/cuda-settings.test.ts): its CUDA provider
 * object forwards `deviceId` only; every other key is ignored without an error. So
 *  - TF32 is switched off through NVIDIA's library-wide override NVIDIA_TF32_OVERRIDE=0, which
 *    cuBLAS and cuDNN read when they initialise; openSession puts it in the process environment
 *    before the first CUDA session (`applyCudaEnvironment`).
 *  - the memory limit and the cuDNN algorithm search are passed under onnxruntime's option names
 *    for a binding that forwards them, and `describeCudaSettings` says plainly when they are not.
 */
import { invalid } from '../contract/errors.js';

export type ConvAlgoSearch = 'exhaustive' | 'heuristic' | 'default';

export interface CudaSettings {
  /** Cap on the CUDA arena in MiB; 0 means no cap (onnxruntime's default). */
  memoryLimitMiB: number;
  /** cuDNN convolution algorithm choice; onnxruntime's default is an exhaustive benchmark. */
  convAlgoSearch: ConvAlgoSearch;
  /**
   * TensorFloat-32 in matrix products and convolutions. Off: TF32 keeps 10 mantissa bits, so the
   * rounding noise of G(z+εv) − 2G(z) + G(z−εv) grows about 2^13-fold and swamps small penalties.
   */
  tf32: boolean;
}

export const DEFAULT_CUDA_SETTINGS: Readonly<CudaSettings> = Object.freeze({
  memoryLimitMiB: 0,
  convAlgoSearch: 'exhaustive',
  tf32: false,
});

/** CUDA provider keys that onnxruntime-node 1.30's binding reads; the rest it ignores. */
export const FORWARDED_CUDA_OPTIONS: readonly string[] = Object.freeze(['deviceId']);

/** The provider object for one GPU, under onnxruntime's option names (camelCase in the JS API). */
export interface CudaProviderConfig {
  readonly name: 'cuda';
  deviceId: number;
  /** Bytes; omitted when there is no cap. */
  gpuMemLimit?: number;
  cudnnConvAlgoSearch: 'EXHAUSTIVE' | 'HEURISTIC' | 'DEFAULT';
  /** 0 or 1, as onnxruntime's use_tf32. */
  useTf32: 0 | 1;
}

export function cudaProviderConfig(deviceId: number, settings: CudaSettings = DEFAULT_CUDA_SETTINGS): CudaProviderConfig {
  const config: CudaProviderConfig = {
    name: 'cuda',
    deviceId,
    cudnnConvAlgoSearch: settings.convAlgoSearch.toUpperCase() as CudaProviderConfig['cudnnConvAlgoSearch'],
    useTf32: settings.tf32 ? 1 : 0,
  };
  if (settings.memoryLimitMiB > 0) config.gpuMemLimit = settings.memoryLimitMiB * 1024 * 1024;
  return config;
}

/** Merge partial settings (flags, environment) over the defaults, rejecting values out of range. */
export function resolveCudaSettings(partial: Partial<CudaSettings> = {}): CudaSettings {
  const settings = { ...DEFAULT_CUDA_SETTINGS, ...definedOnly(partial) };
  const { memoryLimitMiB, convAlgoSearch, tf32 } = settings;
  if (!Number.isInteger(memoryLimitMiB) || memoryLimitMiB < 0) {
    throw invalid(`the CUDA memory limit must be a whole number of MiB ≥ 0 (0 = no limit), got ${memoryLimitMiB}`);
  }
  if (!['exhaustive', 'heuristic', 'default'].includes(convAlgoSearch)) {
    throw invalid(`the cuDNN algorithm search must be exhaustive, heuristic or default, got '${convAlgoSearch}'`);
  }
  if (typeof tf32 !== 'boolean') throw invalid(`tf32 must be true or false, got '${String(tf32)}'`);
  return settings;
}

/**
 * Settings from the environment, so the same image is tuned by `docker run -e` or a manifest:
 * HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB, HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH, HESSIAN_AUDIT_CUDA_TF32.
 */
export function cudaSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): CudaSettings {
  const partial: Partial<CudaSettings> = {};
  const limit = env.HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB;
  if (limit !== undefined && limit !== '') {
    const value = Number(limit);
    if (Number.isNaN(value)) throw invalid(`HESSIAN_AUDIT_CUDA_MEMORY_LIMIT_MIB must be a number, got '${limit}'`);
    partial.memoryLimitMiB = value;
  }
  const search = env.HESSIAN_AUDIT_CUDA_CONV_ALGO_SEARCH;
  if (search !== undefined && search !== '') partial.convAlgoSearch = search.toLowerCase() as ConvAlgoSearch;
  const tf32 = env.HESSIAN_AUDIT_CUDA_TF32;
  if (tf32 !== undefined && tf32 !== '') partial.tf32 = parseSwitch(tf32, 'HESSIAN_AUDIT_CUDA_TF32');
  return resolveCudaSettings(partial);
}

function parseSwitch(text: string, name: string): boolean {
  const value = text.toLowerCase();
  if (['1', 'true', 'on', 'yes'].includes(value)) return true;
  if (['0', 'false', 'off', 'no'].includes(value)) return false;
  throw invalid(`${name} must be on or off (1/0, true/false), got '${text}'`);
}

function definedOnly<T extends object>(partial: Partial<T>): Partial<T> {
  return Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Environment variables the CUDA libraries must see before they load. */
export function cudaEnvironment(settings: CudaSettings): Record<string, string> {
  // Only an explicit "off" is forced; with tf32 on, onnxruntime's own default (use_tf32=1) applies.
  return settings.tf32 ? {} : { NVIDIA_TF32_OVERRIDE: '0' };
}

/**
 * Put `cudaEnvironment` into the process environment; openSession calls it before a CUDA session
 * opens. It works from a process's main thread only: worker threads get a copy of process.env, so
 * a change made there never reaches the native libraries. Returns what it set.
 */
export function applyCudaEnvironment(settings: CudaSettings, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const wanted = cudaEnvironment(settings);
  for (const [key, value] of Object.entries(wanted)) env[key] = value;
  return wanted;
}

/** One line per setting for the startup log and /readyz: what is in effect, and how. */
export function describeCudaSettings(
  settings: CudaSettings,
  env: NodeJS.ProcessEnv = process.env,
  forwarded: readonly string[] = FORWARDED_CUDA_OPTIONS,
): { tf32: string; memoryLimit: string; convAlgoSearch: string } {
  const ignored = (option: string) => !forwarded.includes(option);
  const tf32Off = env.NVIDIA_TF32_OVERRIDE === '0';
  return {
    tf32: tf32Off
      ? 'off (NVIDIA_TF32_OVERRIDE=0)'
      : settings.tf32
        ? 'on (onnxruntime default use_tf32=1)'
        : 'NOT off: NVIDIA_TF32_OVERRIDE=0 is missing from the process environment',
    memoryLimit:
      settings.memoryLimitMiB === 0
        ? 'none'
        : ignored('gpuMemLimit')
          ? `${settings.memoryLimitMiB} MiB requested but not forwarded by this onnxruntime-node; no cap in effect`
          : `${settings.memoryLimitMiB} MiB`,
    convAlgoSearch:
      settings.convAlgoSearch === 'exhaustive' || !ignored('cudnnConvAlgoSearch')
        ? settings.convAlgoSearch
        : `${settings.convAlgoSearch} requested but not forwarded by this onnxruntime-node; exhaustive in effect`,
  };
}

/**
 * Whether TF32 is in effect for a session on this provider: null where it does not apply (the CPU,
 * WebGPU); on CUDA, on unless NVIDIA_TF32_OVERRIDE=0 reached the libraries (openSession sets it
 * before the first CUDA session unless TF32 was asked for).
 */
export function tf32InEffect(executionProvider: string, env: NodeJS.ProcessEnv = process.env): boolean | null {
  if (!executionProvider.startsWith('cuda')) return null;
  return env.NVIDIA_TF32_OVERRIDE !== '0';
}
