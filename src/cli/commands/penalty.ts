import { basename } from 'node:path';
import { type Command, Option } from 'commander';
import { parseDevice } from '../../engine/device.js';
import { evaluatePenalty } from '../../engine/evaluate.js';
import { DEFAULTS, type PenaltyRequest } from '../../engine/request.js';
import { SessionCache } from '../../engine/session.js';
import { invalid } from '../../errors.js';
import { readArrayFile } from '../../io/files.js';
import type { NDArray } from '../../io/ndarray.js';
import { collect, type Io, localLimits, num, readModelFile } from '../common.js';
import { formatPenalty } from '../format.js';
import { progressReporter } from '../progress.js';
import { quietOption, runRemote, serverOptions } from '../remote-run.js';
import type { PenaltyResult } from '../../engine/evaluate.js';

/** Flags → the same PenaltyRequest the HTTP routes build from JSON. */
export async function penaltyRequest(options: Record<string, unknown>): Promise<PenaltyRequest> {
  if (options.latents !== undefined && options.samples !== undefined) {
    throw invalid('give either --latents FILE or --samples N, not both');
  }
  const inputs: Record<string, NDArray> = {};
  for (const spec of (options.input as string[] | undefined) ?? []) {
    const eq = spec.indexOf('=');
    if (eq <= 0) throw invalid(`--input takes NAME=FILE, got '${spec}'`);
    const name = spec.slice(0, eq);
    inputs[name] = await readArrayFile(spec.slice(eq + 1), `input '${name}'`);
  }
  const request: PenaltyRequest = { inputs };
  if (options.latents !== undefined) request.latents = await readArrayFile(options.latents as string, 'latents');
  else if (options.samples !== undefined) request.latents = { samples: options.samples as number };
  if (options.directions !== undefined) request.directions = await readArrayFile(options.directions as string, 'directions');
  if (options.basis !== undefined) request.basis = await readArrayFile(options.basis as string, 'basis');
  for (const key of ['wrt', 'k', 'epsilon', 'reduction', 'variance', 'seed'] as const) {
    if (options[key] !== undefined) (request as Record<string, unknown>)[key] = options[key];
  }
  if (options.layers !== undefined) request.layers = (options.layers as string).split(',').filter((s) => s.length > 0);
  if (options.epsilons !== undefined) {
    request.epsilons = (options.epsilons as string).split(',').map((text) => num('--epsilons')(text));
  }
  if (options.maxSamples !== undefined) request.maxSamples = options.maxSamples as number;
  if (options.allowNondeterministic) request.allowNondeterministic = true;
  return request;
}


export function registerPenalty(program: Command, io: Io): void {
  const command = program
    .command('penalty')
    .description('estimate the Hessian Penalty of each layer by finite differences')
    .argument('<model>', 'ONNX file')
    .option('--latents <file>', 'latents z, N × … (.npy or JSON)')
    .option('--samples <n>', `draw N standard-normal latents (default ${DEFAULTS.samples})`, num('--samples'))
    .option('--seed <s>', 'seed for latents and directions (default: random, reported)', num('--seed'))
    .option('--wrt <name>', 'input to take the penalty with respect to (default: first float input)')
    .option('--input <name=file>', 'extra input held fixed for all passes (repeatable)', collect)
    .option('--k <n>', `directions per sample, at least 2 (default ${DEFAULTS.k})`, num('--k'))
    .option('--epsilon <e>', `finite-difference step (default ${DEFAULTS.epsilon})`, num('--epsilon'))
    .addOption(new Option('--reduction <r>', 'over elements and samples (default max)').choices(['max', 'mean']))
    .addOption(new Option('--variance <v>', 'over directions (default unbiased)').choices(['unbiased', 'biased']))
    .option('--layers <names>', 'comma-separated outputs or intermediate tensors (default: all outputs)')
    .option('--directions <file>', 'explicit directions, k × N × … (.npy or JSON)')
    .option('--basis <file>', 'latent directions as rows, m × … (.npy or JSON): the penalty w.r.t. coefficients along them')
    .option('--epsilons <list>', 'ε sweep on the same latents and directions, e.g. 0.05,0.1,0.2')
    .option('--max-samples <n>', 'audit only the first N samples (saves memory)', num('--max-samples'))
    .option('--allow-nondeterministic', 'run a model with random ops anyway (results carry a warning)')
    .option('--device <device>', 'auto, cpu, cuda, cuda:N or webgpu', 'cpu')
    .option('--memory-budget <mib>', 'MiB of layer outputs per batch', num('--memory-budget'))
    .option('--json', 'print one JSON document');
  quietOption(serverOptions(command, 'penalty'))
    .action(async (path: string, options: Record<string, unknown>) => {
      const device = parseDevice(options.device as string);
      const request = await penaltyRequest(options);
      if (options.server !== undefined) {
        const { result } = await runRemote(io, path, 'penalty', request, options);
        io.stdout(options.json ? JSON.stringify(result, null, 2) : formatPenalty(result as PenaltyResult, basename(path)));
        return;
      }
      const model = await readModelFile(path);
      const limits = localLimits(options);
      const sessions = new SessionCache(1);
      const progress = progressReporter({ quiet: options.quiet === true });
      try {
        const onProgress = progress && ((done: number, total: number) => progress(done, total, 'penalty'));
        const result = await evaluatePenalty(model, request, { device, sessions, limits, ...(onProgress ? { onProgress } : {}) });
        io.stdout(options.json ? JSON.stringify(result, null, 2) : formatPenalty(result, basename(path)));
      } finally {
        await sessions.clear();
      }
    });

}
