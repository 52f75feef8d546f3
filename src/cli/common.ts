/** What every command shares: output streams, exit codes, model and array loading. */
import { readFile } from 'node:fs/promises';
import { AuditError, invalid } from '../contract/errors.js';
import { loadModel, type LoadedModel } from '../runtime/model.js';
import { DEFAULT_LIMITS, type Limits } from '../contract/request.js';

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export const EXIT = { ok: 0, gateFailed: 1, usage: 2 } as const;

/** Thrown by a command that finished its work but must end with another code (a failed gate). */
export class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

export async function readModelFile(path: string): Promise<LoadedModel> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new AuditError('file_not_found', `cannot read model ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return loadModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/** Commander option parsers: repeatable values, and numbers with a clear error. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];
export const num = (flag: string) => (value: string): number => {
  const x = Number(value);
  if (value.trim() === '' || Number.isNaN(x)) throw invalid(`${flag} must be a number, got '${value}'`);
  return x;
};

/** The limits of a local run: the defaults, with --memory-budget (MiB) when given. */
export function localLimits(options: Record<string, unknown>): Limits {
  const limits = { ...DEFAULT_LIMITS };
  if (options.memoryBudget !== undefined) limits.memoryBudget = (options.memoryBudget as number) * 1024 * 1024;
  return limits;
}
