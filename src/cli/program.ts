/**
 * The `hessian-audit` command: thin layers that turn flags into requests, call the same evaluate
 * functions as the HTTP routes, and print the results: one command per metric of the registry
 * (metric-command.ts), and inspect, serve and gate under commands/.
 * Exit codes: 0 success, 1 gate failed, 2 usage or input error.
 */
import { Command, CommanderError } from 'commander';
import { AuditError } from '../contract/errors.js';
import { EXIT, Exit, type Io } from './common.js';
import { registerGate } from './commands/gate.js';
import { registerInspect } from './commands/inspect.js';
import { METRIC_NAMES } from '../metrics/registry.js';
import { registerMetricCommand } from './metric-command.js';
import { registerServe } from './commands/serve.js';

export { EXIT, type Io } from './common.js';

export function buildProgram(io: Io): Command {
  const program = new Command('hessian-audit')
    .description('Hessian Penalty audits of ONNX generators (GANs, VAEs): how disentangled is each layer?')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(run with --help for usage)');
  registerInspect(program, io);
  for (const name of METRIC_NAMES) registerMetricCommand(program, io, name);
  registerServe(program, io);
  registerGate(program, io);
  return program;
}

/** Run the command line; resolves to the exit code. */
export async function main(argv: string[], io: Io): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof Exit) return err.code;
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (err instanceof AuditError) {
      io.stderr(`error: ${err.message}`);
      return EXIT.usage;
    }
    io.stderr(`internal error: ${(err as Error).stack ?? String(err)}`);
    return 70;
  }
}
