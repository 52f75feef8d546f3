/** Read an array from a .npy or .json file given on the command line. */
import { readFile } from 'node:fs/promises';
import { AuditError } from '../contract/errors.js';
import type { NDArray } from './ndarray.js';
import { fromNested } from './nested.js';
import { isNpy, readNpy } from './npy.js';

export async function readArrayFile(path: string, what: string): Promise<NDArray> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new AuditError('file_not_found', `cannot read ${what} from ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (isNpy(bytes)) return readNpy(bytes, `${what} (${path})`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new AuditError(
      'invalid_array',
      `${what} (${path}) is neither a .npy file nor JSON (${(err as Error).message}); save it with np.save or as a nested JSON array`,
    );
  }
  return fromNested(parsed, what);
}
