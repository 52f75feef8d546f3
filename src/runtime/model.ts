import { createHash } from 'node:crypto';
import { describeModel, type ModelDescription } from '../onnx/describe.js';
import type { SafetySettings } from '../onnx/safety.js';

/** Model bytes with their content address and description. */
export interface LoadedModel {
  /** SHA-256 of the bytes, hex. */
  id: string;
  bytes: Uint8Array;
  description: ModelDescription;
}

export const modelId = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/**
 * The one way model bytes enter the engine (CLI and server alike): describeModel runs the upload
 * checks of onnx/safety.ts first, so no session is ever created for a model that fails them.
 */
export function loadModel(bytes: Uint8Array, safety: Partial<SafetySettings> = {}): LoadedModel {
  return { id: modelId(bytes), bytes, description: describeModel(bytes, safety) };
}
