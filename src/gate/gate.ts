/**
 * The release gate: evaluate a candidate and its baseline with common random numbers (one request,
 * one seed: the same latents, extra inputs and directions for both), compare them layer by layer
 * with a paired bootstrap, and check the rules. The CLI and POST /v1/gate both call runGate.
 */
import type { MetricRequest } from '../contract/request.js';
import type { PenaltyResult, Warning } from '../contract/results.js';
import { evaluatePenalty } from '../metrics/evaluate.js';
import type { LoadedModel } from '../runtime/model.js';
import type { RunContext } from '../run/run.js';
import { AuditError } from '../contract/errors.js';
import type { ModelDescription } from '../onnx/describe.js';
import { compareAll, type CompareInput, type CompareOutput, type Comparison, type LayerPair } from './compare.js';
import { formatPath, type GateSpec } from './config.js';
import { checkCompatible, type LayerMatch, matchLayers } from './match.js';
import { applyRules, layerVerdict, RULES, type RuleDefinition, type RuleOutcome, type Verdict } from './rules.js';

export type Side = 'candidate' | 'baseline';

export interface LayerVerdict extends Comparison {
  rules: RuleOutcome[];
  verdict: Verdict;
}

export interface GateResult {
  /** pass only when every layer and the total pass. */
  verdict: 'pass' | 'fail';
  candidate: { model: string; executionProvider: string };
  baseline: { model: string; executionProvider: string };
  settings: {
    samples: number;
    k: number;
    epsilon: number;
    reduction: string;
    variance: string;
    seed: number;
    wrt: string;
    confidence: number;
    resamples: number;
    statistic: string;
    interval: string;
  };
  layers: LayerVerdict[];
  total: LayerVerdict;
  warnings: (Warning & { model: Side })[];
  timings: { totalMs: number };
}

/** What the gate needs to know of a model before running it: its id and description. */
export interface GateModel {
  id: string;
  description: ModelDescription;
}

/** Runs one model's penalty: in process (the CLI) or in the server's worker pool (POST /v1/gate). */
export type Evaluator<M extends GateModel> = (model: M, request: MetricRequest) => Promise<PenaltyResult>;

/**
 * Audit figures (diagonal-ness, unused latents, …) of one model's layers, computed with the same
 * request; keyed by layer, then by figure name. Rules made with figureRule() read them.
 */
export type FigureProvider<M extends GateModel> = (
  side: Side,
  model: M,
  request: MetricRequest,
) => Promise<Record<string, Record<string, number | null>>>;

/** Most bootstrap index draws (samples × resamples) one gate may ask for: its memory and CPU time grow with it. */
export const DEFAULT_MAX_BOOTSTRAP_DRAWS = 4096 * 4096;

export interface GateContext<M extends GateModel> {
  evaluate: Evaluator<M>;
  figures?: FigureProvider<M>;
  /** The bootstrap; in process by default, in a worker on the server (it is the gate's heavy arithmetic). */
  compare?: (input: CompareInput) => Promise<CompareOutput>;
  /** Cap on samples × resamples, checked before any model runs; DEFAULT_MAX_BOOTSTRAP_DRAWS when absent. */
  maxBootstrapDraws?: number;
  /** The rule registry (tests and future audit rules extend it). */
  rules?: readonly RuleDefinition[];
}

/** The in-process evaluator: evaluatePenalty on loaded model bytes. */
export const inProcess =
  (context: RunContext): Evaluator<LoadedModel> =>
  (model, request) =>
    evaluatePenalty(model, request, context);

export async function runGate<M extends GateModel>(candidate: M, baseline: M, spec: GateSpec, context: GateContext<M>): Promise<GateResult> {
  const started = performance.now();
  checkCompatible(candidate.description, baseline.description);
  const matches = matchLayers(candidate.description, baseline.description, spec.penalty.layers, spec.layerMap);
  checkOverrides(spec, matches);

  const requests: Record<Side, MetricRequest> = {
    baseline: { ...spec.penalty, layers: matches.map((m) => m.baseline) },
    candidate: { ...spec.penalty, layers: matches.map((m) => m.candidate) },
  };
  const latents = spec.penalty.latents;
  const samples = latents === undefined ? 2 : 'samples' in latents ? latents.samples : (latents.shape[0] ?? 0);
  if (samples < 2) {
    throw new AuditError('invalid_argument', `the gate needs at least 2 samples to put an interval on the ratio, got ${samples}`);
  }
  checkBootstrapSize(samples, spec.resamples, context.maxBootstrapDraws ?? DEFAULT_MAX_BOOTSTRAP_DRAWS);
  const base = await evaluate('baseline', baseline, requests.baseline, context);
  const cand = await evaluate('candidate', candidate, requests.candidate, context);

  const pairs: LayerPair[] = matches.map((m, i) => ({
    name: m.candidate,
    baselineName: m.baseline,
    baseline: base.layers[i],
    candidate: cand.layers[i],
  }));
  const input: CompareInput = { pairs, samples: base.samples, resamples: spec.resamples, seed: spec.penalty.seed, confidence: spec.confidence };
  const { layers: comparisons, total } = context.compare ? await context.compare(input) : compareAll(input);
  if (context.figures) await addFigures(comparisons, matches, context.figures, { candidate, baseline }, requests);

  const rules = context.rules ?? RULES;
  const judge = (c: Comparison, thresholds: GateSpec['rules']): LayerVerdict => {
    const outcomes = applyRules(c, thresholds, rules);
    return { ...c, rules: outcomes, verdict: layerVerdict(c, outcomes) };
  };
  const layers = comparisons.map((c) => judge(c, { ...spec.rules, ...spec.layers[c.name] }));
  const totalVerdict = judge(total, spec.total);
  const pass = [...layers, totalVerdict].every((l) => l.verdict === 'pass');
  return {
    verdict: pass ? 'pass' : 'fail',
    candidate: { model: cand.model, executionProvider: cand.executionProvider },
    baseline: { model: base.model, executionProvider: base.executionProvider },
    settings: {
      samples: base.samples,
      k: base.k,
      epsilon: base.epsilon,
      reduction: base.reduction,
      variance: base.variance,
      seed: base.seed,
      wrt: base.wrt,
      confidence: spec.confidence,
      resamples: spec.resamples,
      statistic: 'candidate/baseline ratio of the mean per-sample penalty',
      interval: 'paired studentized bootstrap over samples',
    },
    layers,
    total: totalVerdict,
    warnings: [
      ...base.warnings.map((w) => ({ ...w, model: 'baseline' as const })),
      ...cand.warnings.map((w) => ({ ...w, model: 'candidate' as const })),
    ],
    timings: { totalMs: Math.round((performance.now() - started) * 100) / 100 },
  };
}

/** The bootstrap holds samples × resamples indices and visits each once per layer: refuse a gate past the cap before any work. */
function checkBootstrapSize(samples: number, resamples: number, max: number): void {
  if (samples * resamples <= max) return;
  throw new AuditError(
    'bootstrap_too_large',
    `samples × resamples = ${samples} × ${resamples} = ${samples * resamples} bootstrap draws, over this server's limit of ${max} (--max-bootstrap-draws); ask for fewer resamples or samples`,
    { samples, resamples, limit: max },
  );
}

/** Same request, same seed: the engine draws identical latents and directions for both models. */
async function evaluate<M extends GateModel>(side: Side, model: M, request: MetricRequest, context: GateContext<M>): Promise<PenaltyResult> {
  try {
    return await context.evaluate(model, request);
  } catch (err) {
    if (err instanceof AuditError) throw err.prefixed(`${side} model: `);
    throw err;
  }
}

/** Per-layer overrides must name compared layers, or a typo would silently leave a rule off. */
function checkOverrides(spec: GateSpec, matches: LayerMatch[]): void {
  const names = matches.map((m) => m.candidate);
  for (const name of Object.keys(spec.layers)) {
    if (!names.includes(name)) {
      throw new AuditError(
        'unknown_layer',
        `${formatPath(['layers', name])}: not a compared layer (compared: ${names.map((n) => `'${n}'`).join(', ')})`,
        { layer: name },
      );
    }
  }
}

async function addFigures<M extends GateModel>(
  comparisons: Comparison[],
  matches: LayerMatch[],
  provider: FigureProvider<M>,
  models: Record<Side, M>,
  requests: Record<Side, MetricRequest>,
): Promise<void> {
  const base = await provider('baseline', models.baseline, requests.baseline);
  const cand = await provider('candidate', models.candidate, requests.candidate);
  comparisons.forEach((c, i) => {
    c.baseline.figures = base[matches[i].baseline] ?? {};
    c.candidate.figures = cand[matches[i].candidate] ?? {};
  });
}
