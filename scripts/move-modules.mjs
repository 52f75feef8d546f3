// One-off refactoring aid (issue 12): rewrite relative imports after modules move. Takes pairs
// OLD=NEW of paths under src/ (without .ts), and fixes every import in src/, test/ and bench/
// (tests and benches import the compiled dist/ twins). Files must already be at their new places.
import { readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const moves = new Map(process.argv.slice(2).map((pair) => pair.split('=')));
const walk = (dir) => readdirSync(dir).flatMap((name) => {
  const path = join(dir, name);
  return statSync(path).isDirectory() ? (name === 'node_modules' || name === 'fixtures' ? [] : walk(path)) : [path];
});
// Where a file is now → where it was, so that its own relative imports are resolved from the old place.
const before = new Map([...moves].map(([from, to]) => [join(root, 'src', to + '.ts'), join(root, 'src', from + '.ts')]));
const files = ['src', 'test', 'bench'].flatMap((d) => walk(join(root, d))).filter((f) => /\.(ts|mts|mjs|js)$/.test(f));
let changed = 0;
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const oldFile = before.get(file) ?? file;
  const out = text.replace(/(from\s+|import\(\s*|import\s+)(['"])(\.{1,2}\/[^'"]+)\2/g, (all, lead, quote, spec) => {
    const target = resolve(dirname(oldFile), spec);
    const inDist = target.startsWith(join(root, 'dist') + '/');
    const base = inDist ? join(root, 'dist') : join(root, 'src');
    if (!target.startsWith(base + '/')) return all;
    const module = relative(base, target).replace(/\.(js|ts)$/, '');
    const ext = target.match(/\.(js|ts)$/)?.[0] ?? '';
    const moved = moves.get(module) ?? module;
    let next = relative(dirname(file), join(base, moved) + ext);
    if (!next.startsWith('.')) next = './' + next;
    return next === spec ? all : `${lead}${quote}${next}${quote}`;
  });
  if (out !== text) {
    writeFileSync(file, out);
    changed++;
  }
}
console.log(`rewrote imports in ${changed} files`);
