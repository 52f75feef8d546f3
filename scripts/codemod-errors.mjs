// One-off codemod (issue 12): `new AuditError(code, message, status, details?)` → `new AuditError(code, message, details?)`,
// the status now coming from the error catalogue (src/contract/errors.ts). Prints each code with the statuses
// its call sites used, so the catalogue can be checked. Usage: node scripts/codemod-errors.mjs [--write] FILES…
import { readFileSync, writeFileSync } from 'node:fs';
import ts from 'typescript';

const write = process.argv.includes('--write');
const files = process.argv.slice(2).filter((a) => a !== '--write');
const seen = new Map();
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const edits = [];
  const visit = (node) => {
    if (ts.isNewExpression(node) && node.expression.getText(source) === 'AuditError' && node.arguments && node.arguments.length >= 3) {
      const [code, , status] = node.arguments;
      const name = ts.isStringLiteral(code) ? code.text : code.getText(source);
      // Only an old-style status: a number literal, or a cast to a status type (never a details value).
      const text = status.getText(source);
      if (ts.isNumericLiteral(status) || /as (AuditError\['status'\]|ErrorStatus)$/.test(text) || /^(err|e|error)\.status$/.test(text)) {
        const list = seen.get(name) ?? new Set();
        list.add(status.getText(source));
        seen.set(name, list);
        // Remove ", status" (from the end of the message argument to the end of the status argument).
        edits.push([node.arguments[1].end, status.end]);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  if (write && edits.length) {
    let out = text;
    for (const [from, to] of edits.sort((a, b) => b[0] - a[0])) out = out.slice(0, from) + out.slice(to);
    writeFileSync(file, out);
  }
}
for (const [code, statuses] of [...seen].sort()) console.log(code.padEnd(28), [...statuses].join(' '));
