import { createHash } from 'node:crypto';
import { describeParsed, type ModelDescription } from '../onnx/describe.js';
import { checkModel, type SafetySettings } from '../onnx/safety.js';

/** Model bytes with their content address and description. */
export interface LoadedModel {
  /** SHA-256 of the bytes, hex. */
  id: string;
  bytes: Uint8Array;
  description: ModelDescription;
}

export const modelId = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/**
 * The one way model bytes enter the engine (CLI and server alike): the upload checks of
 * onnx/safety.ts run first, so no session is ever created for a model that fails them.
 */
export function loadModel(bytes: Uint8Array, safety: Partial<SafetySettings> = {}): LoadedModel {
  const { model } = checkModel(bytes, safety);
  return { id: modelId(bytes), bytes, description: describeParsed(model) };
}
