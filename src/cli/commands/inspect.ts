import { basename } from 'node:path';
import type { Command } from 'commander';
import { type Io, readModelFile } from '../common.js';
import { formatDescription, formatWrtTensors } from '../../report/text.js';
import { wrtTensors } from '../../run/cut.js';

export function registerInspect(program: Command, io: Io): void {
  program
    .command('inspect')
    .description('describe a model: inputs, outputs, the layers that can be audited and the tensors wrt can name')
    .argument('<model>', 'ONNX file')
    .option('--json', 'print one JSON document')
    .action(async (path: string, options: { json?: boolean }) => {
      const model = await readModelFile(path);
      // Intermediate tensors wrt can name (the graph is cut there); torch exports declare no shapes, so one run on zeros fills them.
      const wrt = await wrtTensors(model);
      io.stdout(
        options.json
          ? JSON.stringify({ id: model.id, ...model.description, wrt }, null, 2)
          : `${formatDescription(model.description, basename(path))}\n\n${formatWrtTensors(wrt)}`,
      );
    });
}
