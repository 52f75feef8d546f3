/**
 * The work of a heavy route as data (`JobSpec`): what was asked, enough for any server sharing the
 * model folder to run it. A synchronous call runs it at once; `Prefer: respond-async` hands it to
 * the job queue (in this process, or on Redis for any replica to take). One path either way, so a
 * job's numbers are the synchronous route's.
 */
import type { MetricRequest } from '../contract/request.js';
import { gateSpec } from '../gate/config.js';
import { auditFigures, neededFigures } from '../gate/figures.js';
import { type GateModel, runGate } from '../gate/gate.js';
import { type GateRequestBody, gateArrays, jsonSafe } from '../gate/schema.js';
import type { MetricName } from '../metrics/registry.js';
import type { ModelDescription } from '../onnx/describe.js';
import type { OnTaskProgress } from '../pool/pool.js';
import type { ServerContext } from './context.js';
import { unknownModel } from './errors.js';

/** A metric on a stored model, or on a one-shot upload the job owns (`ownFile`, in store/.jobs). */
export interface MetricJob {
  route: MetricName;
  modelId: string;
  request: MetricRequest;
  format: 'json' | 'html';
  modelName?: string;
  ownFile?: string;
  /** The client's address: the pool's fair share counts its tasks. */
  client: string;
}

export interface GateJob {
  route: 'gate';
  body: GateRequestBody;
  client: string;
}

export type JobSpec = MetricJob | GateJob;

/** A finished route's answer: its body, serialized, and its content type. */
export interface JobResult {
  body: string;
  contentType: string;
}

export type WorkContext = Pick<ServerContext, 'store' | 'pool' | 'config'>;

/** A route's JSON value as a job result. */
export const jsonResult = (value: unknown): JobResult => ({ body: JSON.stringify(value), contentType: 'application/json; charset=utf-8' });

/** Run `spec` in the worker pool under `signal`; the route's value (as the synchronous route returns it). */
export async function execute(spec: JobSpec, context: WorkContext, signal: AbortSignal, onProgress?: OnTaskProgress): Promise<unknown> {
  return spec.route === 'gate' ? executeGate(spec, context, signal, onProgress) : executeMetric(spec, context, signal, onProgress);
}

/** The value of `execute` as a job keeps it: the HTML report as HTML, anything else as JSON. */
export function asResult(spec: JobSpec, value: unknown): JobResult {
  return spec.route !== 'gate' && spec.format === 'html' ? { body: (value as { html: string }).html, contentType: 'text/html; charset=utf-8' } : jsonResult(value);
}

/** A job's whole work: execute, then keep the answer. */
export const runJob = async (spec: JobSpec, context: WorkContext, signal: AbortSignal, onProgress?: OnTaskProgress): Promise<JobResult> =>
  asResult(spec, await execute(spec, context, signal, onProgress));

async function executeMetric(spec: MetricJob, { store, pool, config }: WorkContext, signal: AbortSignal, onProgress?: OnTaskProgress): Promise<unknown> {
  // A job may run long after it was accepted, on another server: the model may be gone by then.
  if (spec.ownFile === undefined && !(await store.has(spec.modelId))) throw unknownModel(spec.modelId);
  const task = {
    kind: spec.route,
    modelId: spec.modelId,
    modelPath: spec.ownFile === undefined ? store.modelPath(spec.modelId) : store.jobFilePath(spec.ownFile),
    request: spec.request,
    limits: config.limits,
    format: spec.format,
    ...(spec.modelName ? { modelName: spec.modelName } : {}),
  };
  return pool.evaluate(task, signal, spec.client, onProgress);
}

/** The stored models a gate compares; unknown_model for either one missing. */
async function gateModels(store: WorkContext['store'], body: Pick<GateRequestBody, 'candidate' | 'baseline'>): Promise<{ candidate: GateModel; baseline: GateModel }> {
  const model = async (id: string): Promise<GateModel> => {
    const description = await store.description<ModelDescription>(id);
    if (!description) throw unknownModel(id);
    return { id, description };
  };
  return { candidate: await model(body.candidate), baseline: await model(body.baseline) };
}

/**
 * A gate request checked against the store and its rules: unknown_model for either model missing,
 * 400/422 for rules that cannot hold. The route calls it before answering (a job is accepted only
 * if it can run); the job calls it again where it runs.
 */
export async function prepareGate(store: WorkContext['store'], body: GateRequestBody) {
  const { candidate, baseline, latents, inputs, ...gate } = body;
  const models = await gateModels(store, { candidate, baseline });
  const rules = gateSpec([gate], gateArrays({ latents, inputs }));
  return { models, rules, needed: neededFigures(rules.rules, ...Object.values(rules.layers)) };
}

/** The penalties, the audit figures and the bootstrap all run in the pool, each task under `signal`. */
async function executeGate(spec: GateJob, context: WorkContext, signal: AbortSignal, onProgress?: OnTaskProgress): Promise<unknown> {
  const { store, pool, config } = context;
  const { models, rules, needed } = await prepareGate(store, spec.body);
  /** Each pool task reports its chunks under a stage naming the model and the figure. */
  const side = (m: GateModel): string => (m === models.candidate ? 'candidate' : 'baseline');
  const report = (m: GateModel, what: string): OnTaskProgress | undefined => onProgress && ((p) => onProgress({ ...p, stage: `${side(m)} ${p.stage ?? what}` }));
  const evaluate = (kind: MetricName, m: GateModel, request: MetricRequest) =>
    pool.evaluate({ kind, modelId: m.id, modelPath: store.modelPath(m.id), request, limits: config.limits }, signal, spec.client, report(m, kind));
  return jsonSafe(
    await runGate(models.candidate, models.baseline, rules, {
      evaluate: (m, request) =>
        pool.evaluate({ kind: 'penalty', modelId: m.id, modelPath: store.modelPath(m.id), request, limits: config.limits }, signal, spec.client, report(m, 'penalty')),
      compare: (input) => pool.compare(models.candidate.id, input, signal, spec.client),
      ...(config.limits.maxBootstrapDraws !== undefined ? { maxBootstrapDraws: config.limits.maxBootstrapDraws } : {}),
      ...(needed.size > 0 ? { figures: auditFigures(evaluate, needed) } : {}),
    }),
  );
}
