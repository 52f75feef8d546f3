/**
 * What the audit commands (hessian, activeness, orthogonality, audit) share: the same flags as
 * `penalty` (turned into a request by its penaltyRequest), the audit's own flags, the report file,
 * and one way to run and print.
 */
import { writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { type Command, Option } from 'commander';
import type { AuditContext, AuditRequest } from '../engine/audit.js';
import { parseDevice } from '../engine/device.js';
import { DEFAULTS } from '../engine/request.js';
import { SessionCache } from '../engine/session.js';
import { AuditError } from '../errors.js';
import type { LoadedModel } from '../engine/model.js';
import { DEFAULT_EXTENT, DEFAULT_THRESHOLD } from '../penalty/index.js';
import { renderReport, type ReportInput } from '../report/index.js';
import { penaltyRequest } from './commands/penalty.js';
import { collect, type Io, localLimits, num, readModelFile } from './common.js';
import { progressReporter } from './progress.js';

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
}

/** The flags of `penalty` that apply to the command, plus the audit's own. */
export function auditOptions(command: Command, flags: FlagSet): Command {
  command
    .argument('<model>', 'ONNX file')
    .option('--latents <file>', 'latents z, N × … (.npy or JSON)')
    .option('--samples <n>', `draw N standard-normal latents (default ${DEFAULTS.samples})`, num('--samples'))
    .option('--seed <s>', 'seed for latents and directions (default: random, reported)', num('--seed'))
    .option('--wrt <name>', 'input the latents are (default: first float input)')
    .option('--input <name=file>', 'extra input held fixed for all passes (repeatable)', collect);
  if (flags.directions) command.option('--k <n>', `directions per sample, at least 2 (default ${DEFAULTS.k})`, num('--k'));
  if (flags.steps) {
    command
      .option('--epsilon <e>', `finite-difference step (default ${DEFAULTS.epsilon})`, num('--epsilon'))
      .addOption(new Option('--reduction <r>', 'over elements and samples (default max)').choices(['max', 'mean']));
  }
  if (flags.directions) {
    command
      .addOption(new Option('--variance <v>', 'over directions (default unbiased)').choices(['unbiased', 'biased']))
      .option('--directions <file>', 'explicit directions, k × N × … (k × N × m along a basis; .npy or JSON)');
  }
  if (flags.basis) command.option('--basis <file>', 'directions in latent space as rows, m × … (.npy or JSON): audit along them');
  if (flags.element) command.option('--element <e>', 'also print the full Hessian of this element (flat index within a sample)', num('--element'));
  if (flags.activeness) {
    command
      .option('--extent <x>', `activeness sets z_i to −x, 0, +x (default ${DEFAULT_EXTENT})`, num('--extent'))
      .option('--threshold <t>', `activeness below t marks a latent unused (default ${DEFAULT_THRESHOLD})`, num('--threshold'));
  }
  return command
    .option('--layers <names>', 'comma-separated outputs or intermediate tensors (default: all outputs)')
    .option('--device <device>', 'auto, cpu, cuda, cuda:N or webgpu', 'cpu')
    .option('--memory-budget <mib>', 'MiB of layer outputs per batch', num('--memory-budget'))
    .option('--report <file>', 'also write a self-contained HTML report')
    .option('--json', 'print one JSON document')
    .option('--quiet', 'no progress on stderr');
}

export async function auditRequest(options: Record<string, unknown>): Promise<AuditRequest> {
  const request: AuditRequest = await penaltyRequest(options);
  for (const key of ['extent', 'threshold', 'element'] as const) {
    if (options[key] !== undefined) request[key] = options[key] as number;
  }
  return request;
}

/** Load, evaluate with a progress bar on a terminal, print text or JSON, write the report. */
export async function runAudit<R extends { warnings: { code: string; message: string }[] }>(
  io: Io,
  path: string,
  options: Record<string, unknown>,
  evaluate: (model: LoadedModel, request: AuditRequest, context: AuditContext) => Promise<R>,
  format: (result: R, modelName: string) => string,
  report: (result: R) => Omit<ReportInput, 'modelName'>,
): Promise<void> {
  const device = parseDevice(options.device as string);
  const request = await auditRequest(options);
  const model = await readModelFile(path);
  const limits = localLimits(options);
  const sessions = new SessionCache(1);
  try {
    const onProgress = progressReporter({ quiet: options.quiet === true });
    const result = await evaluate(model, request, { device, sessions, limits, previews: options.report !== undefined, ...(onProgress ? { onProgress } : {}) });
    if (options.report !== undefined) {
      const file = options.report as string;
      try {
        await writeFile(file, renderReport({ modelName: basename(path), ...report(result) }));
      } catch (err) {
        throw new AuditError('file_not_written', `cannot write the report to ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 400);
      }
    }
    io.stdout(options.json ? toJson(result) : format(result, basename(path)));
  } finally {
    await sessions.clear();
  }
}

/** One JSON document; the report's preview images stay out of it. */
export const toJson = (result: unknown): string => JSON.stringify(result, (key, value) => (key === 'previews' ? undefined : value), 2);
