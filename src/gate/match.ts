/**
 * Before anything runs: can the two models be fed the same inputs, and which layer of the baseline
 * does each candidate layer face? Pure functions on model descriptions.
 */
import { AuditError } from '../contract/errors.js';
import { formatShape } from '../io/ndarray.js';
import type { Dim, ModelDescription } from '../onnx/describe.js';

/**
 * Same input names and element types, and equal fixed dimensions, so that one set of latents,
 * extra inputs and directions fits both. Symbolic dimensions (`batch`) match anything.
 */
export function checkCompatible(candidate: ModelDescription, baseline: ModelDescription): void {
  const problems: string[] = [];
  const base = new Map(baseline.inputs.map((i) => [i.name, i]));
  const cand = new Map(candidate.inputs.map((i) => [i.name, i]));
  for (const input of candidate.inputs) {
    const other = base.get(input.name);
    if (!other) {
      problems.push(`input '${input.name}' exists only in the candidate`);
      continue;
    }
    if (input.type !== other.type) problems.push(`input '${input.name}' is ${input.type} in the candidate but ${other.type} in the baseline`);
    else if (!shapesAgree(input.shape, other.shape)) {
      problems.push(
        `input '${input.name}' has shape ${show(input.shape)} in the candidate but ${show(other.shape)} in the baseline`,
      );
    }
  }
  for (const input of baseline.inputs) {
    if (!cand.has(input.name)) problems.push(`input '${input.name}' exists only in the baseline`);
  }
  if (problems.length > 0) {
    throw new AuditError(
      'incompatible_models',
      `the candidate and the baseline cannot be given the same inputs: ${problems.join('; ')}`,
      { problems },
    );
  }
}

const show = (shape: Dim[] | null): string => (shape ? formatShape(shape) : 'unknown');

function shapesAgree(a: Dim[] | null, b: Dim[] | null): boolean {
  if (a === null || b === null) return true;
  return a.length === b.length && a.every((d, i) => typeof d !== 'number' || typeof b[i] !== 'number' || d === b[i]);
}

export interface LayerMatch {
  /** Candidate layer name. */
  candidate: string;
  /** Baseline layer name. */
  baseline: string;
}

/**
 * The layers to compare. Asked-for layers are candidate names; by default every graph output of
 * either model. Each candidate layer faces the baseline layer of the same name unless `layerMap`
 * names another; a layer missing on either side is an error that names it.
 */
export function matchLayers(
  candidate: ModelDescription,
  baseline: ModelDescription,
  asked: readonly string[] | undefined,
  layerMap: Record<string, string> = {},
): LayerMatch[] {
  const inverse = new Map(Object.entries(layerMap).map(([c, b]) => [b, c]));
  const names =
    asked && asked.length > 0
      ? [...asked]
      : unique([...candidate.outputs.map((o) => o.name), ...baseline.outputs.map((o) => inverse.get(o.name) ?? o.name)]);
  for (const key of Object.keys(layerMap)) {
    if (!names.includes(key)) {
      throw new AuditError(
        'unknown_layer',
        `layerMap maps '${key}', which is not among the compared layers (${names.map((n) => `'${n}'`).join(', ')})`,
        { layer: key },
      );
    }
  }
  const missing: string[] = [];
  const matches = names.map((name) => {
    const other = layerMap[name] ?? name;
    if (!hasTensor(candidate, name)) missing.push(`layer '${name}' is not in the candidate`);
    if (!hasTensor(baseline, other)) {
      missing.push(
        other === name
          ? `layer '${name}' is not in the baseline (map it to a baseline layer with --map ${name}=BASELINE_LAYER)`
          : `layer '${other}' (mapped from '${name}') is not in the baseline`,
      );
    }
    return { candidate: name, baseline: other };
  });
  if (missing.length > 0) {
    throw new AuditError('missing_layer', `${missing.join('; ')}; see 'hessian-audit inspect' for each model's layers`, { missing });
  }
  return matches;
}

const hasTensor = (model: ModelDescription, name: string): boolean =>
  model.outputs.some((o) => o.name === name) || model.layers.some((l) => l.name === name);

const unique = (xs: string[]): string[] => [...new Set(xs)];
