/** Human-readable output of the audit commands: a header and one table per figure. */
import type { ActivenessResult, AuditResult, HessianResult, OrthogonalityResult, RunInfo } from '../engine/audit.js';
import { formatPenalty, number, table } from './format.js';

function header(r: RunInfo, modelName: string, settings: string): string[] {
  return [
    `model      ${modelName} (sha256 ${r.model.slice(0, 12)})`,
    `settings   N=${r.samples} d=${r.latents}${r.basis ? ' (basis rows)' : ''} ${settings} wrt=${r.wrt}`,
    `execution  ${r.rows} rows (${r.rowsPerSample} per sample) in ${r.batches} batch(es), ${r.mode}, ${r.executionProvider}, seed ${r.seed}, ${r.timings.totalMs.toFixed(0)} ms`,
  ];
}

const warnings = (ws: { code: string; message: string }[]): string[] => ws.map((w) => `warning [${w.code}] ${w.message}`);

/** A d×d matrix with latent indices, values to 3 significant digits. */
function matrix(m: number[][]): string {
  const idx = m.map((_, i) => `z${i}`);
  const cell = (v: number): string => (v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential(2) : v.toPrecision(3));
  return table(['', ...idx], m.map((row, i) => [idx[i], ...row.map(cell)]));
}

export function formatHessian(r: HessianResult, modelName: string): string {
  const rows = r.layers.map((l) => [l.name, `[${l.shape.join(', ')}]`, number(l.penalty), `${(100 * l.diagonalFraction).toFixed(1)}%`, number(l.diagonalRatio)]);
  rows.push(['total (sum over layers)', '', number(r.penalty), '', '']);
  const lines = [
    ...header(r, modelName, `epsilon=${r.epsilon} reduction=${r.reduction}`),
    '',
    table(['layer', 'shape', 'exact penalty', 'diagonal fraction', 'diagonal ratio'], rows),
  ];
  for (const l of r.layers) {
    lines.push('', `interaction matrix of ${l.name} (mean H_ij^2 over elements and samples)`, matrix(l.interaction));
    l.elementHessian?.forEach((h, n) => lines.push('', `full Hessian of the chosen element in sample ${n}`, matrix(h)));
  }
  return [...lines, ...warnings(r.warnings)].join('\n');
}

export function formatActiveness(r: ActivenessResult, modelName: string): string {
  const d = r.latents;
  const rows = r.layers.map((l) => [l.name, ...l.activeness.map(number), l.unused.map((i) => `z${i}`).join(' ') || '-']);
  return [
    ...header(r, modelName, `extent=${r.extent} threshold=${r.threshold}`),
    '',
    table(['layer', ...Array.from({ length: d }, (_, i) => `z${i}`), 'unused'], rows),
    '',
    `unused in every layer: ${r.unused.length ? r.unused.map((i) => `z${i}`).join(', ') : 'none'}`,
    ...warnings(r.warnings),
  ].join('\n');
}

export function formatOrthogonality(r: OrthogonalityResult, modelName: string): string {
  const rows = r.layers.map((l) => [l.name, `[${l.shape.join(', ')}]`, number(l.score)]);
  rows.push(['total (sum over layers)', '', number(r.score)]);
  return [
    ...header(r, modelName, `k=${r.k} epsilon=${r.epsilon} reduction=${r.reduction} variance=${r.variance}`),
    '',
    table(['layer', 'shape', 'Var_v ||Jv||^2'], rows),
    ...warnings(r.warnings),
  ].join('\n');
}

export function formatAudit(r: AuditResult, modelName: string): string {
  const sections = [
    'penalty (stochastic)',
    formatPenalty({ ...r.penalty, warnings: [] }, modelName),
    '',
    'full Hessian',
    r.hessian ? formatHessian({ ...r.hessian, warnings: [] }, modelName) : '(skipped: see warnings)',
    '',
    'activeness',
    formatActiveness({ ...r.activeness, warnings: [] }, modelName),
    '',
    'orthogonality',
    formatOrthogonality({ ...r.orthogonality, warnings: [] }, modelName),
  ];
  return [...sections, ...warnings(r.warnings)].join('\n');
}
