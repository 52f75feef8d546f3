/** What the audit metrics share: the run facts every result carries, settings checks, small helpers. */
import { AuditError } from '../contract/errors.js';
import type { MetricRequest } from '../contract/request.js';
import type { RunInfo, Warning } from '../contract/results.js';
import { DEFAULT_EXTENT, DEFAULT_THRESHOLD } from '../math/index.js';
import { type Run, timings, type UnitsDone } from '../run/run.js';

/** d: latent components, or basis rows when a basis is given. */
export const latentCount = (run: Run): number => run.resolved.basis?.rows ?? run.resolved.size;

/** The activeness settings with their defaults (their ranges are the schema's). */
export function auditSettings(request: MetricRequest): { extent: number; threshold: number } {
  const extent = request.extent ?? DEFAULT_EXTENT;
  const threshold = request.threshold ?? DEFAULT_THRESHOLD;
  return { extent, threshold };
}

/** What every result says about the request it ran: the model, the samples, the seed, what wrt is. */
export function runFacts(run: Run) {
  const { resolved } = run;
  return {
    model: run.model.id,
    samples: resolved.samples,
    seed: resolved.seed,
    wrt: resolved.wrt.name,
    latents: latentCount(run),
    basis: resolved.basis?.rows ?? null,
    ...cutAndGroups(run),
  };
}

/** How a metric ran: the run's facts and this metric's plan, warnings and timings. */
export function runInfo(run: Run, done: UnitsDone, warnings: Warning[], started: number): RunInfo {
  return {
    ...runFacts(run),
    rowsPerSample: done.plan.rowsPerSample,
    rows: done.plan.rows,
    batches: done.batches,
    batchRows: done.batchRows,
    batchRowsFrom: done.batchRowsFrom,
    mode: done.plan.mode,
    executionProvider: run.executionProvider,
    warnings,
    timings: timings(started, done.forwardMs),
  };
}

export function rowLimit(run: Run, rows: number, formula: string): AuditError {
  return new AuditError(
    'limit_exceeded',
    `the request needs ${rows} forward rows (${formula}), above the limit of ${run.limits.maxRows}; use fewer samples or a smaller k`,
    { rows, limit: run.limits.maxRows },
  );
}

export const nullable = (xs: ArrayLike<number>): (number | null)[] => Array.from(xs, (x) => (Number.isFinite(x) ? x : null));

export const opOf = (run: Run, name: string): string | undefined => run.model.description.layers.find((l) => l.name === name)?.op;

export const nonFinite = (name: string, count: number): Warning => ({
  code: 'non_finite_output',
  layer: name,
  message: `layer '${name}' produced NaN or infinite values${Number.isNaN(count) ? '' : ` in ${count} elements`}; its figures are not defined`,
});

/** The cut (wrt an intermediate tensor) and the groups, when there are any: results say so. */
export const cutAndGroups = (run: Run): { cut?: NonNullable<Run['cut']>; groups?: { count: number; description: string } } => ({
  ...(run.cut ? { cut: run.cut } : {}),
  ...(run.resolved.groups ? { groups: run.resolved.groups } : {}),
});
