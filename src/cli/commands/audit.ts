import type { Command } from 'commander';
import { evaluateAudit } from '../../engine/audit.js';
import { auditOptions, runAudit } from '../audit-common.js';
import { formatAudit } from '../audit-format.js';
import type { Io } from '../common.js';

export function registerAudit(program: Command, io: Io): void {
  const command = program
    .command('audit')
    .description('penalty, full Hessian, activeness and orthogonality on one set of latents; --report writes the HTML report');
  auditOptions(command, { steps: true, directions: true, basis: true, element: true, activeness: true }).action(
    (path: string, options: Record<string, unknown>) => runAudit(io, path, options, evaluateAudit, formatAudit, (result) => result),
  );
}
