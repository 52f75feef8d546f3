/**
 * What a metric is. One module per metric (penalty.ts, hessian.ts, …) exports one Metric, and the
 * registry (registry.ts) lists them: the worker's task switch, the HTTP routes, the CLI commands,
 * the HTML report and the gate iterate the registry. A metric declares its request schema, how it
 * runs on a Run (its units, how rows are filled, its accumulators: through run.units), its result
 * schema, its text format, its report section and the figures the gate can rule on.
 * docs/metrics.md says how to add one.
 */
import type { z } from 'zod';
import type { MetricRequest } from '../contract/request.js';
import type { ReportInput } from '../report/html.js';
import type { ResolvedRequest } from '../run/resolve.js';
import type { HostState, Run } from '../run/run.js';

/** Which of the shared command-line flags a metric's command takes (cli/metric-command.ts). */
export interface FlagSet {
  /** --epsilon, --reduction */
  steps?: boolean;
  /** --k, --variance, --directions */
  directions?: boolean;
  /** --basis */
  basis?: boolean;
  /** --element */
  element?: boolean;
  /** --extent, --threshold */
  activeness?: boolean;
  /** --epsilons */
  sweep?: boolean;
  /** --out FILE: the metric's media (metric.media) written to a file */
  out?: boolean;
  /** --no-noise */
  noise?: boolean;
  /** --estimator: the metric has an in-graph estimator (run/graph-suffix.ts) */
  estimator?: boolean;
}

/** What every metric's result has: its warnings. */
export interface MetricResult {
  warnings: { code: string; message: string }[];
}

export interface Metric<R extends MetricResult = MetricResult> {
  name: string;
  /** One line: the route's summary and the command's description. */
  summary: string;
  /** The request body the route accepts (the penalty's, or the audit metrics'). */
  request: z.ZodType;
  result: z.ZodType;
  flags: FlagSet;
  /** Checks of the metric's own settings that need no model (before any session opens). */
  check?(request: MetricRequest): void;
  /**
   * What its accumulators keep on the host per output element (float64 state), which the memory
   * budget counts beside each batch; without it, only the outputs it reads.
   */
  hostState?(resolved: ResolvedRequest, request: MetricRequest): HostState;
  evaluate(run: Run, request: MetricRequest): Promise<R>;
  format(result: R, modelName: string): string;
  /** The report's sections for this result. */
  report(result: R): Omit<ReportInput, 'modelName'>;
  /** A second representation of the result (the traversal's PNG): HTTP on Accept, the CLI's --out. */
  media?: { type: string; body(result: R): Buffer };
  /** Per-layer figures the gate's figure rules read, by figure name. */
  figures?: Record<string, GateFigure<R>>;
}

/** One figure a gate rule can read: its value per layer of a result (null: not defined there). */
export interface GateFigure<R> {
  perLayer(result: R): Record<string, number | null>;
}

/** Identity with the type checked: `defineMetric({...})` keeps R inferred. */
export const defineMetric = <R extends MetricResult>(metric: Metric<R>): Metric<R> => metric;
