/**
 * The combined audit: the stochastic penalty, the full Hessian, activeness and orthogonality on
 * one Run (one seed: the same latents, inputs and directions; one session, one preflight). A Hessian
 * too large for the row limit is skipped with a warning instead of failing the audit.
 */
import { AuditError } from '../contract/errors.js';
import { AuditRequestSchema, type MetricRequest } from '../contract/request.js';
import { type ActivenessResult, type AuditResult, AuditResultSchema, type HessianResult, type TraversalResult, type Warning } from '../contract/results.js';
import { formatAudit } from '../report/text.js';
import type { ResolvedRequest } from '../run/resolve.js';
import { type HostState, type Run, timings } from '../run/run.js';
import { runActiveness } from './activeness.js';
import { runFacts } from './common.js';
import { previews, runHessian } from './hessian.js';
import { orthogonalityHostState, runOrthogonality } from './orthogonality.js';
import { penalty, penaltyHostState } from './penalty.js';
import { runTraversal } from './traversal.js';
import { defineMetric } from './types.js';

export const audit = defineMetric<AuditResult>({
  name: 'audit',
  summary: 'Penalty, full Hessian, activeness and orthogonality on one set of latents',
  request: AuditRequestSchema,
  result: AuditResultSchema,
  flags: { steps: true, directions: true, basis: true, element: true, activeness: true, noise: true },
  hostState: auditHostState,
  evaluate: evaluateAudit,
  format: formatAudit,
  report: (result) => result,
});

/**
 * The audit's metrics run one after another on one Run, each counting its own state in its batches;
 * before any row runs, the most that the penalty and orthogonality keep (the full Hessian and the
 * report's traversal are skipped, with a warning, when theirs does not fit).
 */
function auditHostState(resolved: ResolvedRequest, request: MetricRequest): HostState {
  const states = [penaltyHostState(resolved, request), orthogonalityHostState()];
  const fixed = states.reduce((a, b) => (b.fixed > a.fixed ? b : a));
  const perSample = states.reduce((a, b) => (b.perSample > a.perSample ? b : a));
  return { what: "the audit's accumulators", fixed: fixed.fixed, perSample: perSample.perSample };
}

async function evaluateAudit(run: Run, request: MetricRequest): Promise<AuditResult> {
  const started = performance.now();
  const penaltyResult = await penalty.evaluate(run, request);
  const warnings: Warning[] = [...run.warnings];
  let hessian: HessianResult | null = null;
  try {
    hessian = await runHessian(run, request);
  } catch (err) {
    if (!(err instanceof AuditError) || !['hessian_too_large', 'memory_budget_exceeded'].includes(err.code)) throw err;
    warnings.push({ code: 'hessian_skipped', message: err.message });
  }
  const activeness = await runActiveness(run, request);
  if (request.basis !== undefined || request.groups !== undefined) {
    warnings.push({
      code: 'activeness_without_basis',
      message: `activeness is measured on the latent components themselves; the ${request.groups !== undefined ? 'groups apply' : 'basis applies'} to the penalty, the Hessian and orthogonality`,
    });
  }
  const orthogonality = await runOrthogonality(run, request);
  const traversal = run.context.previews ? await reportTraversal(run, request, activeness, warnings) : undefined;
  for (const w of [...penaltyResult.warnings, ...(hessian?.warnings ?? []), ...activeness.warnings, ...orthogonality.warnings]) {
    if (!warnings.some((x) => x.code === w.code && x.message === w.message)) warnings.push(w);
  }
  return {
    metric: 'audit',
    ...runFacts(run),
    penalty: penaltyResult,
    hessian,
    activeness,
    orthogonality,
    warnings,
    timings: { totalMs: timings(started, 0).totalMs },
    ...(run.context.previews ? { previews: await previews(run) } : {}),
    ...(traversal ? { traversal } : {}),
  };
}

/** The report's traversal (sorted by the audit's activeness); skipped with a warning when there is no image layer or it is too large. */
async function reportTraversal(run: Run, request: MetricRequest, activeness: ActivenessResult, warnings: Warning[]): Promise<TraversalResult | undefined> {
  try {
    return await runTraversal(run, request, activeness);
  } catch (err) {
    if (!(err instanceof AuditError) || !['no_image_layer', 'limit_exceeded', 'memory_budget_exceeded'].includes(err.code)) throw err;
    if (err.code !== 'no_image_layer') warnings.push({ code: 'traversal_skipped', message: err.message });
    return undefined;
  }
}
