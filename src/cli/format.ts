/** Human-readable output: small aligned tables. */
import { formatShape } from '../io/ndarray.js';
import type { PenaltyResult } from '../engine/evaluate.js';
import type { ModelDescription } from '../onnx/describe.js';

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export const number = (x: number | null): string => (x === null ? 'n/a' : Number.isInteger(x) ? String(x) : x.toPrecision(6));

export function formatPenalty(result: PenaltyResult, modelName: string): string {
  const rows = result.layers.map((l) => [l.name, formatShape(l.shape), l.op ?? 'output', number(l.penalty)]);
  rows.push(['total (sum over layers)', '', '', number(result.penalty)]);
  const lines = [
    `model      ${modelName} (sha256 ${result.model.slice(0, 12)})`,
    `settings   N=${result.samples} k=${result.k} epsilon=${result.epsilon} reduction=${result.reduction} variance=${result.variance} wrt=${result.wrt}`,
    `execution  ${result.rows} rows in ${result.batches} batch(es), ${result.mode}, ${result.executionProvider}, seed ${result.seed}, ${result.timings.totalMs.toFixed(0)} ms`,
    '',
    table(['layer', 'shape', 'op', 'penalty'], rows),
  ];
  if (result.sweep) {
    const names = result.layers.map((l) => l.name);
    lines.push('', 'epsilon sweep (same latents and directions)');
    lines.push(
      table(
        ['epsilon', ...names, 'total'],
        result.sweep.map((p) => [String(p.epsilon), ...p.layers.map((l) => number(l.penalty)), number(p.penalty)]),
      ),
    );
  }
  for (const w of result.warnings) lines.push(`warning [${w.code}] ${w.message}`);
  return lines.join('\n');
}

export function formatDescription(d: ModelDescription, modelName: string): string {
  const tensors = (list: ModelDescription['inputs']): string[][] =>
    list.map((t) => [t.name, t.type, t.shape ? formatShape(t.shape) : 'unknown']);
  const layers = d.layers.map((l) => [
    l.name,
    l.op,
    l.isOutput ? 'output' : '',
    l.afterLinear ? `straight out of a linear op: prefer ${l.suggestion ?? 'a normalization or activation output'}` : '',
  ]);
  return [
    `model    ${modelName}`,
    `ir       ${d.irVersion}   opsets ${d.opsets.map((o) => `${o.domain || 'ai.onnx'}:${o.version}`).join(', ')}   nodes ${d.nodes}   producer ${d.producer || 'unknown'}`,
    '',
    'inputs',
    table(['name', 'type', 'shape'], tensors(d.inputs)),
    '',
    'outputs',
    table(['name', 'type', 'shape'], tensors(d.outputs)),
    '',
    'auditable layers (pass names to --layers)',
    table(['tensor', 'op', '', 'advice'], layers),
  ].join('\n');
}
