import { writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { type Command, Option } from 'commander';
import { parseDevice } from '../../runtime/device.js';
import type { LoadedModel } from '../../runtime/model.js';
import type { AttachedArrays } from '../../contract/request.js';
import { SessionCache } from '../../runtime/session.js';
import { AuditError, invalid } from '../../contract/errors.js';
import { type GateConfig, type GateSpec, gateSpec, mergeConfigs, parseGateConfig, readGateConfig } from '../../gate/config.js';
import { formatGate, formatGateMarkdown } from '../../gate/format.js';
import { type GateResult, inProcess, runGate } from '../../gate/gate.js';
import { checkCompatible, matchLayers } from '../../gate/match.js';
import { auditFigures, inProcessMetrics, neededFigures } from '../../gate/figures.js';
import { RULES } from '../../gate/rules.js';
import { GateResultSchema } from '../../gate/schema.js';
import { collect, EXIT, Exit, type Io, localLimits, num, readModelFile } from '../common.js';
import { toInputArray, toNested } from '../remote.js';
import { progressReporter } from '../progress.js';
import { remoteClient } from '../remote-run.js';
import { arraysFromFlags } from '../metric-command.js';

/** Command-line flag for each config path, so that a bad flag value is reported as the flag. */
const FLAGS: Record<string, string> = {
  ...Object.fromEntries(RULES.map((r) => [`rules.${r.key}`, r.flag])),
  'total.maxPenalty': '--max-total-penalty',
  'total.maxIncrease': '--max-total-increase',
  confidence: '--confidence',
  resamples: '--resamples',
  'penalty.samples': '--samples',
  'penalty.seed': '--seed',
  'penalty.k': '--k',
  'penalty.epsilon': '--epsilon',
  'penalty.layers': '--layers',
};

/** Flags → a gate config (validated by the same schema as a config file), layered over the file. */
function flagConfig(options: Record<string, unknown>): GateConfig {
  const config: Record<string, Record<string, unknown> | unknown> = {};
  const rules: Record<string, unknown> = {};
  for (const rule of RULES) {
    const value = options[camel(rule.flag)];
    if (value !== undefined) rules[rule.key] = value;
  }
  const total: Record<string, unknown> = {};
  if (options.maxTotalPenalty !== undefined) total.maxPenalty = options.maxTotalPenalty;
  if (options.maxTotalIncrease !== undefined) total.maxIncrease = options.maxTotalIncrease;
  const penalty: Record<string, unknown> = {};
  for (const key of ['samples', 'seed', 'k', 'epsilon', 'reduction', 'variance', 'wrt', 'groups'] as const) {
    if (options[key] !== undefined) penalty[key] = options[key];
  }
  if (options.layers !== undefined) penalty.layers = (options.layers as string).split(',').filter((s) => s.length > 0);
  const layerMap: Record<string, string> = {};
  for (const spec of (options.map as string[] | undefined) ?? []) {
    const eq = spec.indexOf('=');
    if (eq <= 0 || eq === spec.length - 1) throw invalid(`--map takes CANDIDATE_LAYER=BASELINE_LAYER, got '${spec}'`);
    layerMap[spec.slice(0, eq)] = spec.slice(eq + 1);
  }
  if (Object.keys(rules).length > 0) config.rules = rules;
  if (Object.keys(total).length > 0) config.total = total;
  if (Object.keys(penalty).length > 0) config.penalty = penalty;
  if (Object.keys(layerMap).length > 0) config.layerMap = layerMap;
  if (options.confidence !== undefined) config.confidence = options.confidence;
  if (options.resamples !== undefined) config.resamples = options.resamples;
  return parseGateConfig(config, 'command line', (path) => FLAGS[path] ?? path);
}

const camel = (flag: string): string => flag.replace(/^--/, '').replace(/-(\w)/g, (_, c: string) => c.toUpperCase());

export function registerGate(program: Command, io: Io): void {
  const command = program
    .command('gate')
    .description('compare a candidate generator with its baseline on the same latents and directions; exit 1 when a rule fails')
    .requiredOption('--candidate <file>', 'the new model (ONNX)')
    .requiredOption('--baseline <file>', 'the released model to compare against (ONNX)');
  for (const rule of RULES) command.option(`${rule.flag} <x>`, rule.help, num(rule.flag));
  command
    .option('--max-total-penalty <x>', "fail when the candidate's total penalty (sum over layers) exceeds X", num('--max-total-penalty'))
    .option('--max-total-increase <x>', 'fail when the upper bound of the total ratio exceeds 1 + X', num('--max-total-increase'))
    .option('--config <file>', 'JSON gate config (rules, per-layer overrides, penalty settings); flags win over it')
    .option('--confidence <c>', 'two-sided confidence level of the ratio interval (default 0.95)', num('--confidence'))
    .option('--resamples <n>', 'bootstrap resamples (default 2000)', num('--resamples'))
    .option('--samples <n>', 'latents drawn for both models (default 64)', num('--samples'))
    .option('--latents <file>', 'explicit latents for both models, N × … (.npy or JSON)')
    .option('--seed <s>', 'seed for latents, directions and resampling (default 0: reruns agree)', num('--seed'))
    .option('--k <n>', 'directions per sample (default 4)', num('--k'))
    .option('--epsilon <e>', 'finite-difference step (default 0.1)', num('--epsilon'))
    .addOption(new Option('--reduction <r>', 'over elements (and samples, for the penalty columns)').choices(['max', 'mean']))
    .addOption(new Option('--variance <v>', 'over directions (default unbiased)').choices(['unbiased', 'biased']))
    .option('--layers <names>', 'comma-separated candidate layers (default: every output of either model)')
    .option('--map <cand=base>', 'compare candidate layer CAND with baseline layer BASE (repeatable)', collect)
    .option('--wrt <name>', "input or intermediate tensor (StyleGAN's w: the graph is cut there) to take the penalty with respect to")
    .option('--groups <spec>', 'coordinates of the wrt tensor sharing one sign: rows, blocks:N, or 0-3,4-7')
    .option('--input <name=file>', 'extra input held fixed for all passes of both models (repeatable)', collect)
    .option('--server <url>', 'run the gate on a hessian-audit server (uploads only the models it does not have)')
    .addOption(new Option('--token <token>', 'bearer token for --server').env('HESSIAN_AUDIT_TOKEN'))
    .option('--wait <duration>', 'with --server: how long, in all, to wait for a busy server (503 + Retry-After), e.g. 90s, 10m', '10m')
    .option('--quiet', 'no progress on stderr')
    .option('--device <device>', 'auto, cpu, cuda, cuda:N or webgpu', 'cpu')
    .option('--memory-budget <mib>', 'MiB of layer outputs per batch', num('--memory-budget'))
    .option('--json', 'print one JSON document')
    .option('--summary <file>', 'also write a Markdown summary (e.g. to $GITHUB_STEP_SUMMARY)')
    .action(async (options: Record<string, unknown>) => {
      const configs = options.config ? [await readGateConfig(options.config as string)] : [];
      configs.push(flagConfig(options));
      const arrays = await arraysFromFlags({ input: options.input, latents: options.latents });
      const spec = gateSpec(configs, arrays);
      const [candidate, baseline] = [await readModelFile(options.candidate as string), await readModelFile(options.baseline as string)];
      const result =
        options.server !== undefined
          ? await remoteGate({ candidate, baseline }, mergeConfigs(configs), arrays, options, io)
          : await localGate(candidate, baseline, spec, options);
      const names = { candidate: basename(options.candidate as string), baseline: basename(options.baseline as string) };
      await report(result, names, options, io);
      if (result.verdict !== 'pass') throw new Exit(EXIT.gateFailed);
    });
}

async function localGate(candidate: LoadedModel, baseline: LoadedModel, spec: GateSpec, options: Record<string, unknown>): Promise<GateResult> {
  const device = parseDevice(options.device as string);
  const limits = localLimits(options);
  const sessions = new SessionCache(2);
  try {
    const context = { device, sessions, limits };
    const needed = neededFigures(spec.rules, ...Object.values(spec.layers));
    const progress = progressReporter({ quiet: options.quiet === true });
    return await runGate(candidate, baseline, spec, {
      // Each model's penalty reports its chunks, named by its side.
      evaluate: (model, request) =>
        inProcess({ ...context, ...(progress ? { onProgress: (done: number, total: number) => progress(done, total, model === candidate ? 'candidate' : 'baseline') } : {}) })(model, request),
      ...(needed.size > 0 ? { figures: auditFigures(inProcessMetrics(context), needed) } : {}),
    });
  } finally {
    await sessions.clear();
  }
}

/** The same gate on a server: upload what it lacks, send the merged config and the arrays. */
async function remoteGate(
  models: { candidate: LoadedModel; baseline: LoadedModel },
  config: GateConfig,
  arrays: AttachedArrays,
  options: Record<string, unknown>,
  io: Io,
): Promise<GateResult> {
  if (options.memoryBudget !== undefined) throw invalid("--memory-budget applies to local runs; with --server the server's limits apply");
  const client = remoteClient(options);
  // What can be checked here is checked before anything is uploaded.
  checkCompatible(models.candidate.description, models.baseline.description);
  matchLayers(models.candidate.description, models.baseline.description, config.penalty?.layers, config.layerMap);
  for (const side of ['candidate', 'baseline'] as const) {
    const model = models[side];
    const path = options[side] as string;
    if ((await client.ensureModel(model.id, model.bytes, basename(path))) === 'uploaded') {
      io.stderr(`uploaded ${side} ${path} (sha256 ${model.id.slice(0, 12)}) to ${options.server as string}`);
    }
  }
  const body = {
    candidate: models.candidate.id,
    baseline: models.baseline.id,
    ...config,
    ...(arrays.latents ? { latents: toNested(arrays.latents) } : {}),
    ...(arrays.inputs && Object.keys(arrays.inputs).length > 0
      ? { inputs: Object.fromEntries(Object.entries(arrays.inputs).map(([name, a]) => [name, toInputArray(a)])) }
      : {}),
  };
  const parsed = GateResultSchema.safeParse(await client.job('/v1/gate', body));
  if (!parsed.success) {
    throw new AuditError('bad_response', `the server at ${options.server as string} answered POST /v1/gate with something that is not a gate result; is it a hessian-audit server of this version?`);
  }
  return parsed.data as GateResult;
}

async function report(result: GateResult, names: { candidate: string; baseline: string }, options: Record<string, unknown>, io: Io): Promise<void> {
  io.stdout(options.json ? JSON.stringify(result, null, 2) : formatGate(result, names));
  if (options.summary !== undefined) {
    try {
      await writeFile(options.summary as string, formatGateMarkdown(result, names), { flag: 'a' });
    } catch (err) {
      throw new AuditError('write_failed', `cannot write the summary to ${options.summary as string}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}
