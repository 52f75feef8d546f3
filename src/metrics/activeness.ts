/**
 * Activeness of each latent (math/activeness.ts): z_i set to −extent, 0 and +extent, the variance
 * of the three outputs per element, averaged; latents below the threshold in a layer are unused.
 */
import { type AuditError, invalid } from '../contract/errors.js';
import { AuditRequestSchema, type MetricRequest } from '../contract/request.js';
import { type ActivenessResult, ActivenessResultSchema, type Warning } from '../contract/results.js';
import { ActivenessAccumulator, activenessRows, activenessUnitSizes, unusedLatents } from '../math/index.js';
import { formatActiveness } from '../report/text.js';
import type { FillRows } from '../run/feeds.js';
import { activenessGraphRefusal, activenessInGraph } from '../run/graph-activeness.js';
import { estimatorFor, onHost } from '../run/graph-suffix.js';
import { NO_HOST_STATE, type Run } from '../run/run.js';
import { auditSettings, nullable, opOf, rowLimit, runInfo } from './common.js';
import { defineMetric } from './types.js';

export const activeness = defineMetric<ActivenessResult>({
  name: 'activeness',
  summary: 'Activeness of each latent per layer, and the unused latents',
  request: AuditRequestSchema,
  result: ActivenessResultSchema,
  flags: { activeness: true, estimator: true },
  check: (request) => {
    if (request.basis !== undefined || request.groups !== undefined) {
      throw invalid(`activeness sets latent components to fixed values, so it is not defined along a basis or groups; leave out ${request.groups !== undefined ? 'groups' : 'basis'} (audit computes activeness on the latents themselves)`);
    }
  },
  evaluate: runActiveness,
  format: formatActiveness,
  report: (activeness) => ({ activeness }),
  figures: {
    unusedLatents: {
      perLayer: (result) => Object.fromEntries(result.layers.map((l) => [l.name, l.activeness.some((a) => a === null) ? null : l.unused.length])),
    },
  },
});

export async function runActiveness(run: Run, request: MetricRequest): Promise<ActivenessResult> {
  const { extent, threshold } = auditSettings(request);
  const { resolved, shapes } = run;
  const d = resolved.size;
  const accumulators = Object.fromEntries(resolved.layers.map((name) => [name, new ActivenessAccumulator(shapes[name].size, d)]));
  const tooMany = (rows: number): AuditError => rowLimit(run, rows, `N·3d = ${resolved.samples}·${3 * d}`);
  const fill: FillRows = (rows, out) => activenessRows(rows, resolved.latents, extent, resolved.size, out);
  const estimatorWarnings: Warning[] = [];
  const estimator = estimatorFor(run, request.estimator, 'the activeness variances', estimatorWarnings, activenessGraphRefusal(run));
  const started = performance.now();
  const { done, fetchedBytes } =
    estimator === 'graph'
      ? await activenessInGraph(run, { fill, stage: 'activeness', tooMany, accumulators })
      : await onHost(run, await run.units({ stage: 'activeness', unitSizes: activenessUnitSizes(d), passes: 'each activeness pass', tooMany, fill, consumers: accumulators, host: NO_HOST_STATE }));
  const layers = resolved.layers.map((name) => {
    const values = accumulators[name].result();
    const op = opOf(run, name);
    return {
      name,
      shape: [resolved.samples, ...shapes[name].shape],
      ...(op ? { op } : {}),
      activeness: nullable(values),
      unused: unusedLatents(values, threshold),
    };
  });
  const unused = Array.from({ length: d }, (_, i) => i).filter((i) => layers.every((l) => l.unused.includes(i)));
  return {
    metric: 'activeness',
    ...runInfo(run, done, [...run.warnings, ...estimatorWarnings, ...done.modeWarnings], started),
    estimator,
    fetchedBytes,
    latents: d,
    basis: null,
    extent,
    threshold,
    layers,
    unused,
  };
}
