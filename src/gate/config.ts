/**
 * The gate's settings: the zod schema of the JSON config file a repository checks in (and of the
 * gate part of POST /v1/gate), its defaults, and errors that name the bad key path.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import type { AttachedArrays, MetricRequest } from '../contract/request.js';
import { PenaltyRequestSchema } from '../contract/request.js';
import { AuditError } from '../contract/errors.js';
import { MEASURED_NOISE_MARGIN } from '../math/noise-floor.js';
import { RULES, type Scope, type Thresholds } from './rules.js';

/** A rule's threshold; null switches the rule off (for one layer, or a default). */
const threshold = z.number().min(0).nullable().optional();

/** Thresholds object with one optional key per rule allowed in this scope; other keys are errors. */
const thresholds = (scope: Scope) =>
  z.strictObject(Object.fromEntries(RULES.filter((r) => r.scopes.includes(scope)).map((r) => [r.key, threshold])));

/**
 * Penalty settings shared by both models (the same latents and directions come from `seed`): the
 * API's own penalty request fields, plus how many latents to draw. Arrays (latents, extra inputs)
 * come from files on the command line or from the POST /v1/gate body, not from a config file.
 */
export const gatePenaltySchema = PenaltyRequestSchema.pick({
  wrt: true,
  groups: true,
  k: true,
  epsilon: true,
  reduction: true,
  variance: true,
  layers: true,
  seed: true,
}).extend({
  samples: z.int('must be a whole number').min(2, 'must be at least 2 (the interval needs two samples)').optional(),
});

export const gateConfigSchema = z.strictObject({
  /** Lets editors attach a JSON schema; ignored. */
  $schema: z.string().optional(),
  /** Two-sided confidence level of the ratio's interval. */
  confidence: z.number().gt(0).lt(1).optional(),
  /** Bootstrap resamples. */
  resamples: z.int().min(100).max(100_000).optional(),
  /** Thresholds for every layer. */
  rules: thresholds('layer').optional(),
  /** Per-layer overrides, by candidate layer name. */
  layers: z.record(z.string(), thresholds('layer')).optional(),
  /** Thresholds on the total over layers. */
  total: thresholds('total').optional(),
  /** Candidate layer name → baseline layer name, for layers renamed between the two models. */
  layerMap: z.record(z.string(), z.string().min(1)).optional(),
  penalty: gatePenaltySchema.optional(),
});

export type GateConfig = z.infer<typeof gateConfigSchema>;

export const GATE_DEFAULTS = {
  confidence: 0.95,
  resamples: 2000,
  maxIncrease: 0.1,
  /** Both penalties at least this many times their measured noise floor (MEASURED_NOISE_MARGIN). */
  minNoiseMargin: MEASURED_NOISE_MARGIN,
  /** Fixed, so that a rerun gives the same verdict; change it to draw other latents and directions. */
  seed: 0,
  samples: 64,
  k: 4,
};

/** Everything one gate run needs, defaults filled in. */
export interface GateSpec {
  /** The request both models get; `layers` holds candidate layer names when given. */
  penalty: MetricRequest & { seed: number };
  layerMap: Record<string, string>;
  confidence: number;
  resamples: number;
  rules: Thresholds;
  layers: Record<string, Thresholds>;
  total: Thresholds;
}

/**
 * Validate a parsed JSON value as a gate config; `source` names it in errors (a file, `body`) and
 * `rename` may turn a key path into the name the user typed (a command-line flag).
 */
export function parseGateConfig(value: unknown, source: string, rename: (path: string) => string = (p) => p): GateConfig {
  const parsed = gateConfigSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => describeIssue(issue, rename));
  throw new AuditError('invalid_config', `${source}: ${problems.join('; ')}`, { issues: problems });
}

export async function readGateConfig(path: string): Promise<GateConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new AuditError('file_not_found', `cannot read config ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AuditError('invalid_config', `${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseGateConfig(value, path);
}

/** Merge configs key by key, later ones winning (a config file, then command-line flags). */
export function mergeConfigs(configs: readonly GateConfig[]): GateConfig {
  const merged: GateConfig = {};
  for (const c of configs) {
    for (const key of ['penalty', 'rules', 'total', 'layerMap'] as const) {
      if (c[key] !== undefined) merged[key] = { ...merged[key], ...c[key] } as never;
    }
    for (const [name, t] of Object.entries(c.layers ?? {})) merged.layers = { ...merged.layers, [name]: { ...merged.layers?.[name], ...t } };
    if (c.confidence !== undefined) merged.confidence = c.confidence;
    if (c.resamples !== undefined) merged.resamples = c.resamples;
  }
  return merged;
}

/**
 * Merged configs with the defaults filled in. Extra inputs and explicit latents come from outside
 * the config (files, arrays in a request body).
 */
export function gateSpec(configs: readonly GateConfig[], extra: AttachedArrays = {}): GateSpec {
  const config = mergeConfigs(configs);
  const rules: Thresholds = { ...config.rules };
  if (!('maxIncrease' in rules)) rules.maxIncrease = GATE_DEFAULTS.maxIncrease;
  if (!('minNoiseMargin' in rules)) rules.minNoiseMargin = GATE_DEFAULTS.minNoiseMargin;
  const { samples, ...settings } = config.penalty ?? {};
  const penalty: GateSpec['penalty'] = {
    k: GATE_DEFAULTS.k,
    ...settings,
    ...extra,
    seed: settings.seed ?? GATE_DEFAULTS.seed,
  };
  if (extra.latents === undefined) penalty.latents = { samples: samples ?? GATE_DEFAULTS.samples };
  else if (samples !== undefined) throw new AuditError('invalid_argument', 'give either latents or samples, not both');
  return {
    penalty,
    rules,
    layers: config.layers ?? {},
    total: config.total ?? {},
    layerMap: config.layerMap ?? {},
    confidence: config.confidence ?? GATE_DEFAULTS.confidence,
    resamples: config.resamples ?? GATE_DEFAULTS.resamples,
  };
}

/** `rules.maxIncrese: unknown key (known: …)` — the path in the notation a user would type. */
function describeIssue(issue: z.core.$ZodIssue, rename: (path: string) => string): string {
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(issue.path);
    return issue.keys
      .map((key) => `${rename(formatPath([...issue.path, key]))}: unknown key${known ? ` (known: ${known.join(', ')})` : ''}`)
      .join('; ');
  }
  return `${rename(formatPath(issue.path)) || '(top level)'}: ${issue.message}`;
}

function knownKeys(path: readonly PropertyKey[]): string[] | null {
  let schema: z.ZodType | undefined = gateConfigSchema;
  for (const key of [...path, null]) {
    while (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable) schema = schema.unwrap() as z.ZodType;
    if (key === null) break;
    if (schema instanceof z.ZodObject) schema = schema.shape[String(key)] as z.ZodType | undefined;
    else if (schema instanceof z.ZodRecord) schema = schema.valueType as z.ZodType;
    else return null;
  }
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : null;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(String(key))) out += out ? `.${String(key)}` : String(key);
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}
