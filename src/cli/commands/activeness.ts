import type { Command } from 'commander';
import { evaluateActiveness } from '../../engine/audit.js';
import { auditOptions, runAudit } from '../audit-common.js';
import { formatActiveness } from '../audit-format.js';
import type { Io } from '../common.js';

export function registerActiveness(program: Command, io: Io): void {
  const command = program
    .command('activeness')
    .description('how much each latent changes the output (z_i set to -x, 0, +x); lists unused latents');
  auditOptions(command, { activeness: true }).action((path: string, options: Record<string, unknown>) =>
    runAudit(io, path, options, evaluateActiveness, formatActiveness, (activeness) => ({ activeness })),
  );
}
