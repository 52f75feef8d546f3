/**
 * The metric registry: every figure the service computes. The worker's task switch, the HTTP
 * routes, the CLI commands, the report and the gate iterate it. A new metric is one module
 * exporting a Metric and one line here (docs/metrics.md).
 */
import { activeness } from './activeness.js';
import { audit } from './audit.js';
import { hessian } from './hessian.js';
import { noise } from './noise.js';
import { orthogonality } from './orthogonality.js';
import { penalty } from './penalty.js';
import { traversal } from './traversal.js';
import type { Metric } from './types.js';

export const METRICS = {
  penalty,
  hessian,
  activeness,
  orthogonality,
  audit,
  traversal,
  noise,
} as const;

export type MetricName = keyof typeof METRICS;

export const METRIC_NAMES = Object.keys(METRICS) as MetricName[];

export const isMetric = (name: string): name is MetricName => Object.hasOwn(METRICS, name);

/** The metric of this name, typed loosely for callers that treat every metric alike. */
export const metric = (name: MetricName): Metric => METRICS[name];
