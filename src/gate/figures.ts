/**
 * The audit figures that figure rules read, computed on the gate's own request (same latents, same
 * seed). Each figure comes from the metric of the registry that declares it (the diagonal-ness
 * fraction from the full Hessian, the count of unused latents from activeness); only the figures
 * some rule asks for are computed, each metric once. The metrics run in process (the CLI) or in
 * the server's worker pool (POST /v1/gate).
 */
import type { MetricRequest } from '../contract/request.js';
import { evaluateMetric } from '../metrics/evaluate.js';
import { metric, METRIC_NAMES, type MetricName } from '../metrics/registry.js';
import type { MetricResult } from '../metrics/types.js';
import type { LoadedModel } from '../runtime/model.js';
import type { RunContext } from '../run/run.js';
import type { FigureProvider, GateModel } from './gate.js';
import { FIGURE_RULES, type Thresholds } from './rules.js';

/** Runs one metric on one model and returns its JSON result. */
export type MetricEvaluator<M extends GateModel> = (name: MetricName, model: M, request: MetricRequest) => Promise<MetricResult>;

export const inProcessMetrics = (context: RunContext): MetricEvaluator<LoadedModel> => (name, model, request) => evaluateMetric(name, model, request, context);

/** Figures needed by the thresholds in force, over the defaults and every per-layer override. */
export function neededFigures(...thresholds: Thresholds[]): Set<string> {
  const needed = new Set<string>();
  for (const t of thresholds) {
    for (const [key, figure] of Object.entries(FIGURE_RULES)) if (t[key] !== undefined && t[key] !== null) needed.add(figure);
  }
  return needed;
}

/** The metric of the registry that declares a figure (the audit's combination is left out: it repeats them). */
export function figureSource(figure: string): MetricName {
  const name = METRIC_NAMES.find((n) => n !== 'audit' && metric(n).figures?.[figure] !== undefined);
  if (name === undefined) throw new Error(`no metric declares the gate figure '${figure}'`);
  return name;
}

export function auditFigures<M extends GateModel>(evaluate: MetricEvaluator<M>, needed: Set<string>): FigureProvider<M> {
  return async (_side, model, request) => {
    const figures: Record<string, Record<string, number | null>> = {};
    const bySource = new Map<MetricName, string[]>();
    for (const figure of needed) bySource.set(figureSource(figure), [...(bySource.get(figureSource(figure)) ?? []), figure]);
    for (const [name, wanted] of bySource) {
      const result = await evaluate(name, model, request);
      for (const figure of wanted) {
        for (const [layer, value] of Object.entries(metric(name).figures![figure].perLayer(result))) (figures[layer] ??= {})[figure] = value;
      }
    }
    return figures;
  };
}
