/**
 * The folder layout is the architecture (docs/design.md): imports point down only, from the command
 * line to the error catalogue. A module that imports a folder above its own fails here, naming it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import t from 'tap';

const SRC = new URL('../src', import.meta.url).pathname;

/** Lowest first; a module may import its own folder and any folder before it. */
const LAYERS = ['errors', 'io', 'math', 'onnx', 'store', 'contract', 'runtime', 'report', 'run', 'metrics', 'gate', 'pool', 'server', 'cli', 'index'];

/** contract/errors.ts is the floor every folder stands on; the rest of contract/ sits above math and io. */
const layerOf = (path: string): string => (path.startsWith('contract/errors') ? 'errors' : path.split('/')[0].replace(/\.ts$/, ''));

const files = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : [];
  });

t.test('every import points to its own folder or one below it', async (t) => {
  const upward: string[] = [];
  let imports = 0;
  for (const file of files(SRC)) {
    const from = layerOf(relative(SRC, file));
    t.ok(LAYERS.includes(from), `${relative(SRC, file)}: its folder has a place in the layers`);
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/from '(\.[^']+)'/g)) {
      imports++;
      const to = layerOf(relative(SRC, resolve(dirname(file), spec)).replace(/\.js$/, '.ts'));
      if (LAYERS.indexOf(to) > LAYERS.indexOf(from)) upward.push(`${relative(SRC, file)} imports ${spec} (${from} → ${to})`);
    }
  }
  t.ok(imports > 200, `${imports} relative imports read`);
  t.same(upward, [], 'no import points up');
});

t.test('the check sees an upward import', async (t) => {
  // math is below run: a math module importing run/ must be named (the rule cannot pass vacuously).
  t.ok(LAYERS.indexOf(layerOf('run/run.ts')) > LAYERS.indexOf(layerOf('math/rows.ts')));
  t.equal(layerOf('contract/errors.ts'), 'errors');
  t.equal(layerOf('contract/request.ts'), 'contract');
});
