/** The library: every metric in process, the request parser, sessions and the gate. */
export { AuditError, ERROR_CATALOGUE, type ErrorCode } from './contract/errors.js';
export { AuditRequestSchema, DEFAULT_LIMITS, type Limits, type MetricRequest, parseRequest, PenaltyRequestSchema } from './contract/request.js';
export type * from './contract/results.js';
export {
  evaluateActiveness,
  evaluateAudit,
  evaluateHessian,
  evaluateNoise,
  evaluateMetric,
  evaluateOrthogonality,
  evaluatePenalty,
  type MetricResults,
} from './metrics/evaluate.js';
export { METRIC_NAMES, METRICS, type MetricName } from './metrics/registry.js';
export { loadModel, type LoadedModel } from './runtime/model.js';
export { SessionCache } from './runtime/session.js';
export { runGate } from './gate/gate.js';
