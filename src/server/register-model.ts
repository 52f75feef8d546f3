/** Registering a model: describe the staged bytes in a worker (proving they are ONNX), then commit. */
import { readFile } from 'node:fs/promises';
import { AuditError } from '../contract/errors.js';
import type { ModelDescription } from '../onnx/describe.js';
import type { StagedModel } from '../store/index.js';
import type { ServerContext } from './context.js';

export async function registerModel(
  { store, pool }: Pick<ServerContext, 'store' | 'pool'>,
  staged: StagedModel,
): Promise<{ created: boolean; description: ModelDescription }> {
  try {
    const description = await pool.describe(staged.path);
    const { created } = await store.commit(staged, description);
    return { created, description };
  } catch (err) {
    await store.discard(staged);
    throw err;
  }
}

/** Register a model file from disk (the serve command's --preload). */
export async function registerModelFile(context: Pick<ServerContext, 'store' | 'pool'>, path: string): Promise<{ id: string; description: ModelDescription }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new AuditError('file_not_found', `cannot read model ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const staged = await context.store.stage(bytes);
  const { description } = await registerModel(context, staged);
  return { id: staged.id, description };
}
