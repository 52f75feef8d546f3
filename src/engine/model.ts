import { createHash } from 'node:crypto';
import { describeModel, type ModelDescription } from '../onnx/describe.js';

/** Model bytes with their content address and description. */
export interface LoadedModel {
  /** SHA-256 of the bytes, hex. */
  id: string;
  bytes: Uint8Array;
  description: ModelDescription;
}

export const modelId = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export function loadModel(bytes: Uint8Array): LoadedModel {
  return { id: modelId(bytes), bytes, description: describeModel(bytes) };
}
