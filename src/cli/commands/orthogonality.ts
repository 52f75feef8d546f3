import type { Command } from 'commander';
import { evaluateOrthogonality } from '../../engine/audit.js';
import { auditOptions, runAudit } from '../audit-common.js';
import { formatOrthogonality } from '../audit-format.js';
import type { Io } from '../common.js';

export function registerOrthogonality(program: Command, io: Io): void {
  const command = program
    .command('orthogonality')
    .description('Jacobian orthogonality (OroJaR): variance over random directions v of ||Jv||^2, 0 when the columns of J are orthogonal');
  auditOptions(command, { steps: true, directions: true, basis: true }).action((path: string, options: Record<string, unknown>) =>
    runAudit(io, path, options, evaluateOrthogonality, formatOrthogonality, (orthogonality) => ({ orthogonality })),
  );
}
