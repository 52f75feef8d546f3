import type { Command } from 'commander';
import { evaluateHessian } from '../../engine/audit.js';
import { auditOptions, runAudit } from '../audit-common.js';
import { formatHessian } from '../audit-format.js';
import type { Io } from '../common.js';

export function registerHessian(program: Command, io: Io): void {
  const command = program
    .command('hessian')
    .description('the full Hessian of every element by mixed differences: exact penalty, latent interaction matrix, diagonal-ness');
  auditOptions(command, { steps: true, basis: true, element: true }).action((path: string, options: Record<string, unknown>) =>
    runAudit(io, path, options, evaluateHessian, formatHessian, (hessian) => ({ hessian, previews: hessian.previews })),
  );
}
