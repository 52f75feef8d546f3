/**
 * One command per metric of the registry (penalty, hessian, activeness, orthogonality, audit):
 * the flags build the same JSON body the HTTP routes take, the arrays read from files are attached
 * beside it, and both go through the routes' own parser (contract/request.ts), so the CLI and HTTP
 * word every request error the same. Then the same evaluateMetric the server's workers call.
 */
import { writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { AuditError, invalid } from '../contract/errors.js';
import { type AttachedArrays, DEFAULTS, type MetricRequest, parseRequest } from '../contract/request.js';
import { readArrayFile } from '../io/files.js';
import type { NDArray } from '../io/ndarray.js';
import { DEFAULT_EXTENT, DEFAULT_THRESHOLD } from '../math/index.js';
import { evaluateMetric } from '../metrics/evaluate.js';
import { metric as registryMetric, type MetricName } from '../metrics/registry.js';
import type { FlagSet, Metric, MetricResult } from '../metrics/types.js';
import { renderReport } from '../report/index.js';
import { parseDevice } from '../runtime/device.js';
import { SessionCache } from '../runtime/session.js';
import { collect, type Io, localLimits, num, readModelFile } from './common.js';
import { progressReporter } from './progress.js';
import { quietOption, runRemote, serverOptions } from './remote-run.js';

export function registerMetricCommand(program: Command, io: Io, name: MetricName): void {
  const metric = registryMetric(name);
  const command = program.command(name).description(metric.summary);
  quietOption(serverOptions(metricOptions(command, metric.flags), name)).action(async (path: string, options: Record<string, unknown>) => {
    const request = await requestFromFlags(options, metric);
    if (options.server !== undefined) {
      // The same request, checked here first, run as a job on the server (cli/remote-run.ts).
      const { result } = await runRemote(io, path, name, request, options);
      io.stdout(options.json ? toJson(result) : metric.format(result as MetricResult, basename(path)));
      return;
    }
    const model = await readModelFile(path);
    const sessions = new SessionCache(1);
    try {
      const onProgress = progressReporter({ quiet: options.quiet === true });
      // One request per process: a tuned batch size could not pay for its measuring (run/run.ts).
      const context = { device: parseDevice((options.device as string | undefined) ?? 'cpu'), sessions, limits: localLimits(options), previews: options.report !== undefined, tune: false };
      const result = await evaluateMetric(name, model, request, { ...context, ...(onProgress ? { onProgress } : {}) });
      if (options.report !== undefined) await writeReport(options.report as string, renderReport({ modelName: basename(path), ...metric.report(result) }));
      if (options.out !== undefined && metric.media) await writeOut(options.out as string, metric.media.body(result), metric.media.type);
      io.stdout(options.json ? toJson(result) : metric.format(result, basename(path)));
    } finally {
      await sessions.clear();
    }
  });
}

/** The shared flags, and those of the metric's FlagSet. */
function metricOptions(command: Command, flags: FlagSet): Command {
  command
    .argument('<model>', 'ONNX file')
    .option('--latents <file>', 'latents z, N × … (.npy or JSON)')
    .option('--samples <n>', `draw N standard-normal latents (default ${DEFAULTS.samples})`, num('--samples'))
    .option('--seed <s>', 'seed for latents and directions (default: random, reported)', num('--seed'))
    .option('--wrt <name>', "input or intermediate tensor (StyleGAN's w: the graph is cut there) to take the penalty with respect to (default: first float input)")
    .option('--input <name=file>', 'extra input held fixed for all passes (repeatable)', collect);
  if (flags.directions) command.option('--k <n>', `directions per sample, at least 2 (default ${DEFAULTS.k})`, num('--k'));
  if (flags.steps) {
    command
      .option('--epsilon <e>', `finite-difference step (default ${DEFAULTS.epsilon})`, num('--epsilon'))
      .option('--reduction <r>', 'max or mean, over elements and samples (default max)');
  }
  if (flags.directions) {
    command
      .option('--variance <v>', 'unbiased or biased, over directions (default unbiased)')
      .option('--directions <file>', 'explicit directions, k × N × … (k × N × m along a basis; .npy or JSON)');
  }
  if (flags.basis) {
    command
      .option('--basis <file>', 'latent directions as rows, m × … (.npy or JSON): audit along them')
      .option('--groups <spec>', 'coordinates of the wrt tensor sharing one sign: rows (W+ styles), blocks:N, or 0-3,4-7,8+10-11');
  }
  if (flags.sweep) command.option('--epsilons <list>', 'ε sweep on the same latents and directions, e.g. 0.05,0.1,0.2');
  if (flags.out) command.option('--out <file>', 'write the PNG grid to this file');
  command.option('--batch-rows <n>', 'rows per batch, at most (default: the memory budget, or the size tuned on the session for requests of 1,024 rows or more)', num('--batch-rows'));
  if (flags.estimator) command.option('--estimator <where>', "figures reduced in the session ('graph'), in JavaScript ('host'), or 'auto' (default: graph on CUDA/WebGPU, host on the CPU)");
  if (flags.noise) {
    command
      .option('--no-noise', 'skip measuring the rounding noise on the device (the floor falls back to the output type)')
      .option('--no-step-test', 'skip the step-halving test (2ε and ε/2 on ⌊N/8⌋ samples, under 25% more rows): the measured floor alone decides below_noise_floor');
  }
  if (flags.element) command.option('--element <e>', 'also print the full Hessian of this element (flat index within a sample)', num('--element'));
  if (flags.activeness) {
    command
      .option('--extent <x>', `activeness sets z_i to −x, 0, +x (default ${DEFAULT_EXTENT})`, num('--extent'))
      .option('--threshold <t>', `activeness below t marks a latent unused (default ${DEFAULT_THRESHOLD})`, num('--threshold'));
  }
  return command
    .option('--layers <names>', 'comma-separated outputs or intermediate tensors (default: all outputs)')
    .option('--max-samples <n>', 'audit only the first N samples (saves memory)', num('--max-samples'))
    .option('--allow-nondeterministic', 'run a model with random ops anyway (results carry a warning)')
    .option('--device <device>', 'auto, cpu, cuda, cuda:N or webgpu (default cpu)')
    .option('--memory-budget <mib>', 'MiB of layer outputs per batch', num('--memory-budget'))
    .option('--report <file>', 'also write a self-contained HTML report')
    .option('--json', 'print one JSON document');
}

/** Request fields that flags set one to one (flag --max-samples is option maxSamples, field maxSamples). */
const SCALARS = ['seed', 'wrt', 'k', 'epsilon', 'reduction', 'variance', 'maxSamples', 'extent', 'threshold', 'element', 'groups', 'batchRows', 'estimator'] as const;

/** Flags → the JSON body of the metric's route, plus the arrays read from files → the same parser. */
export async function requestFromFlags(options: Record<string, unknown>, metric: Pick<Metric, 'request'>): Promise<MetricRequest> {
  const { body, attached } = await bodyFromFlags(options);
  return parseRequest(body, attached, metric.request as Parameters<typeof parseRequest>[2]);
}

export async function bodyFromFlags(options: Record<string, unknown>): Promise<{ body: Record<string, unknown>; attached: AttachedArrays }> {
  if (options.latents !== undefined && options.samples !== undefined) {
    throw invalid('give either --latents FILE or --samples N, not both');
  }
  const body: Record<string, unknown> = {};
  for (const key of SCALARS) if (options[key] !== undefined) body[key] = options[key];
  if (options.samples !== undefined) body.latents = { samples: options.samples };
  if (options.layers !== undefined) body.layers = (options.layers as string).split(',').filter((s) => s.length > 0);
  if (options.epsilons !== undefined) body.epsilons = (options.epsilons as string).split(',').map((text) => num('--epsilons')(text));
  if (options.allowNondeterministic) body.allowNondeterministic = true;
  if (options.noise === false) body.noise = false;
  if (options.stepTest === false) body.stepTest = false;
  return { body, attached: await arraysFromFlags(options) };
}

/** --latents, --directions, --basis and --input NAME=FILE, read from .npy or JSON files. */
export async function arraysFromFlags(options: Record<string, unknown>): Promise<AttachedArrays> {
  const inputs: Record<string, NDArray> = {};
  for (const spec of (options.input as string[] | undefined) ?? []) {
    const eq = spec.indexOf('=');
    if (eq <= 0) throw invalid(`--input takes NAME=FILE, got '${spec}'`);
    const name = spec.slice(0, eq);
    inputs[name] = await readArrayFile(spec.slice(eq + 1), `input '${name}'`);
  }
  const attached: AttachedArrays = { inputs };
  for (const key of ['latents', 'directions', 'basis'] as const) {
    if (options[key] !== undefined) attached[key] = await readArrayFile(options[key] as string, key);
  }
  return attached;
}

async function writeReport(file: string, html: string): Promise<void> {
  try {
    await writeFile(file, html);
  } catch (err) {
    throw new AuditError('file_not_written', `cannot write the report to ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

async function writeOut(file: string, bytes: Buffer, type: string): Promise<void> {
  try {
    await writeFile(file, bytes);
  } catch (err) {
    throw new AuditError('file_not_written', `cannot write the ${type} to ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** One JSON document; the report's preview images and the traversal's PNG (--out writes it) stay out of it. */
export const toJson = (result: unknown): string =>
  JSON.stringify(result, (key, value) => (key === 'previews' || (key === 'png' && typeof value === 'string') ? undefined : value), 2);
