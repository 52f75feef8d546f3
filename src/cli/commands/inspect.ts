import { basename } from 'node:path';
import type { Command } from 'commander';
import { type Io, readModelFile } from '../common.js';
import { formatDescription } from '../../report/text.js';

export function registerInspect(program: Command, io: Io): void {
  program
    .command('inspect')
    .description('describe a model: inputs, outputs and the layers that can be audited')
    .argument('<model>', 'ONNX file')
    .option('--json', 'print one JSON document')
    .action(async (path: string, options: { json?: boolean }) => {
      const model = await readModelFile(path);
      io.stdout(options.json ? JSON.stringify({ id: model.id, ...model.description }, null, 2) : formatDescription(model.description, basename(path)));
    });
}
