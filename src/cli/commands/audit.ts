import { basename } from 'node:path';
import type { Command } from 'commander';
import { evaluateAudit } from '../../engine/audit.js';
import { auditOptions, auditRequest, runAudit, toJson } from '../audit-common.js';
import { formatAudit } from '../audit-format.js';
import type { Io } from '../common.js';
import { runRemote, serverOptions } from '../remote-run.js';

export function registerAudit(program: Command, io: Io): void {
  const command = program
    .command('audit')
    .description('penalty, full Hessian, activeness and orthogonality on one set of latents; --report writes the HTML report');
  serverOptions(auditOptions(command, { steps: true, directions: true, basis: true, element: true, activeness: true }), 'audit').action(
    async (path: string, options: Record<string, unknown>) => {
      if (options.server === undefined) return runAudit(io, path, options, evaluateAudit, formatAudit, (result) => result);
      const { result } = await runRemote(io, path, 'audit', await auditRequest(options), options);
      io.stdout(options.json ? toJson(result) : formatAudit(result as Parameters<typeof formatAudit>[0], basename(path)));
    },
  );
}
