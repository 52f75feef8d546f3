/**
 * request → validate → plan → execute → reduce → result, for any metric: the CLI calls it in
 * process, the server's workers call it for their tasks, the gate for both of its models.
 */
import type { z } from 'zod';
import { type MetricRequest, requestError } from '../contract/request.js';
import type { ActivenessResult, AuditResult, HessianResult, NoiseResult, OrthogonalityResult, PenaltyResult, TraversalResult } from '../contract/results.js';
import type { LoadedModel } from '../runtime/model.js';
import { Run, type RunContext } from '../run/run.js';
import { type MetricName, METRICS } from './registry.js';
import type { Metric } from './types.js';

/** Each metric's result type, read off the registry (a new metric needs no line here). */
export type MetricResults = { [N in MetricName]: (typeof METRICS)[N] extends Metric<infer R> ? R : never };

export async function evaluateMetric<N extends MetricName>(name: N, model: LoadedModel, request: MetricRequest, context: RunContext): Promise<MetricResults[N]> {
  const metric = METRICS[name];
  checkSettings(request, metric.request);
  metric.check?.(request);
  const run = await Run.open(model, request, context, metric.hostState && ((resolved) => metric.hostState!(resolved, request)));
  return (await metric.evaluate(run, request)) as MetricResults[N];
}

/**
 * The request's settings against the metric's schema, as the routes check them: a program that
 * builds a MetricRequest itself gets the same refusals, word for word. Arrays are typed already
 * (parseRequest made them, or the caller did), so only the drawn-latents spec goes with them.
 */
function checkSettings(request: MetricRequest, schema: z.ZodType): void {
  const { latents, directions: _d, basis: _b, inputs: _i, mode: _m, ...settings } = request;
  const parsed = schema.safeParse({ ...settings, ...(latents !== undefined && 'samples' in latents ? { latents } : {}) });
  if (!parsed.success) throw requestError(parsed.error);
}

/** Each metric by name, for programs that use the library (docs/audit.md). */
export const evaluatePenalty = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<PenaltyResult> =>
  evaluateMetric('penalty', model, request, context);
export const evaluateHessian = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<HessianResult> =>
  evaluateMetric('hessian', model, request, context);
export const evaluateActiveness = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<ActivenessResult> =>
  evaluateMetric('activeness', model, request, context);
export const evaluateOrthogonality = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<OrthogonalityResult> =>
  evaluateMetric('orthogonality', model, request, context);
export const evaluateAudit = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<AuditResult> =>
  evaluateMetric('audit', model, request, context);

export const evaluateTraversal = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<TraversalResult> =>
  evaluateMetric('traversal', model, request, context);
export const evaluateNoise = (model: LoadedModel, request: MetricRequest, context: RunContext): Promise<NoiseResult> =>
  evaluateMetric('noise', model, request, context);

export { SessionCache } from '../runtime/session.js';
export type { ActivenessResult, AuditResult, HessianResult, NoiseResult, OrthogonalityResult, PenaltyResult, TraversalResult } from '../contract/results.js';
