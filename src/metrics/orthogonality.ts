/**
 * Jacobian orthogonality, the OroJaR measure (math/orthogonality.ts): per sample the variance over
 * the k directions of ‖Jv‖², Jv by a forward difference; then a reduction over samples.
 */
import type { AuditError } from '../contract/errors.js';
import { AuditRequestSchema, type MetricRequest } from '../contract/request.js';
import { type OrthogonalityResult, OrthogonalityResultSchema, type Warning } from '../contract/results.js';
import { OrthogonalityAccumulator, orthogonalityRow, orthogonalityUnitSizes, perturbedRows, totalOverLayers } from '../math/index.js';
import { formatOrthogonality } from '../report/text.js';
import type { FillRows } from '../run/feeds.js';
import { orthogonalityGraphRefusal, orthogonalityInGraph } from '../run/graph-orthogonality.js';
import { estimatorFor, onHost } from '../run/graph-suffix.js';
import type { HostState, Run } from '../run/run.js';
import { nonFinite, nullable, opOf, rowLimit, runInfo } from './common.js';
import { defineMetric } from './types.js';

export const orthogonality = defineMetric<OrthogonalityResult>({
  name: 'orthogonality',
  summary: 'Jacobian orthogonality (OroJaR) of each layer',
  request: AuditRequestSchema,
  result: OrthogonalityResultSchema,
  flags: { steps: true, directions: true, basis: true, estimator: true },
  hostState: orthogonalityHostState,
  evaluate: runOrthogonality,
  format: formatOrthogonality,
  report: (orthogonality) => ({ orthogonality }),
});

/** Host bytes per element: a sample in flight keeps its centre and Welford mean and M2 in float64. */
export function orthogonalityHostState(): HostState {
  return { what: "orthogonality's float64 accumulators", fixed: 0, perSample: 24 };
}

export async function runOrthogonality(run: Run, request: MetricRequest): Promise<OrthogonalityResult> {
  const { resolved, shapes } = run;
  const accumulators = Object.fromEntries(
    resolved.layers.map((name) => [name, new OrthogonalityAccumulator(resolved.samples, shapes[name].size, resolved.k, resolved.epsilon, resolved.variance)]),
  );
  const tooMany = (rows: number): AuditError => rowLimit(run, rows, `N·(1+k) = ${resolved.samples}·${resolved.k + 1}`);
  const fill: FillRows = (rows, out) => perturbedRows(rows.map(orthogonalityRow), resolved.latents, resolved.directions, resolved.epsilon, resolved.size, resolved.samples, out);
  const estimatorWarnings: Warning[] = [];
  const estimator = estimatorFor(run, request.estimator, 'the Jacobian norms', estimatorWarnings, orthogonalityGraphRefusal(run));
  const started = performance.now();
  const { done, fetchedBytes } =
    estimator === 'graph'
      ? await orthogonalityInGraph(run, { epsilon: resolved.epsilon, k: resolved.k, fill, stage: 'orthogonality', tooMany, accumulators })
      : await onHost(run, await run.units({ stage: 'orthogonality', unitSizes: orthogonalityUnitSizes(resolved.k), passes: 'each of the 1+k passes', tooMany, fill, consumers: accumulators, host: orthogonalityHostState() }));
  const warnings: Warning[] = [...run.warnings, ...estimatorWarnings, ...done.modeWarnings];
  const layers = resolved.layers.map((name) => {
    const figures = accumulators[name].result(resolved.reduction);
    if (figures.score === null) warnings.push(nonFinite(name, NaN));
    const op = opOf(run, name);
    return { name, shape: [resolved.samples, ...shapes[name].shape], ...(op ? { op } : {}), score: figures.score, perSample: nullable(figures.perSample) };
  });
  return {
    metric: 'orthogonality',
    ...runInfo(run, done, warnings, started),
    estimator,
    fetchedBytes,
    k: resolved.k,
    epsilon: resolved.epsilon,
    reduction: resolved.reduction,
    variance: resolved.variance,
    directions: resolved.explicitDirections ? 'explicit' : 'rademacher',
    score: totalOverLayers(layers.map((l) => l.score)),
    layers,
  };
}
