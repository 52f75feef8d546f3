/**
 * A gate result for people: the terminal table and the Markdown summary for a CI job page. Both
 * read only a GateResult, so a result from a remote server prints the same as a local one.
 */
import type { GateResult, LayerVerdict } from './gate.js';

export interface ModelNames {
  candidate: string;
  baseline: string;
}

const HEADER = ['layer', 'baseline', 'candidate', 'ratio', 'rule', 'verdict'];

/** The numbers may have come through JSON, where an unbounded ratio is null. */
const fig = (x: number | null | undefined): string =>
  x === null || x === undefined ? 'n/a' : Number.isFinite(x) ? String(Number(x.toPrecision(4))) : '∞';

/** Ratios keep their trailing zeros (1.000, not 1): they read as measurements, not counts. */
const ratioFig = (x: number | null | undefined): string =>
  x === null || x === undefined || x === Infinity ? '∞' : x.toPrecision(4);

function ratioCell(l: LayerVerdict): string {
  if (!l.ratio) return 'n/a';
  return `${ratioFig(l.ratio.estimate)} [${ratioFig(l.ratio.lower)}, ${ratioFig(l.ratio.upper)}]`;
}

function ruleCell(l: LayerVerdict): string {
  if (l.rules.length === 0) return l.problem ? '' : 'none';
  return l.rules.map((r) => r.message).join('; ');
}

const VERDICT = { pass: 'pass', fail: 'FAIL', error: 'ERROR' } as const;

/** The total gets a row when it differs from the only layer or has rules of its own. */
function rows(result: GateResult): { layer: LayerVerdict; label: string }[] {
  const layers = result.layers.map((l) => ({ layer: l, label: l.baselineName === l.name ? l.name : `${l.name} (baseline ${l.baselineName})` }));
  const showTotal = result.layers.length > 1 || result.total.rules.length > 0 || result.total.verdict !== 'pass';
  return showTotal ? [...layers, { layer: result.total, label: 'total (sum over layers)' }] : layers;
}

function cells(l: LayerVerdict, label: string): string[] {
  return [label, fig(l.baseline.penalty), fig(l.candidate.penalty), ratioCell(l), ruleCell(l), VERDICT[l.verdict]];
}

function settingsLine(result: GateResult): string {
  const s = result.settings;
  return `N=${s.samples} k=${s.k} epsilon=${s.epsilon} reduction=${s.reduction} variance=${s.variance} wrt=${s.wrt} seed=${s.seed}`;
}

function methodLine(result: GateResult): string {
  const s = result.settings;
  const pct = `${Number((s.confidence * 100).toPrecision(6))}%`;
  return `ratio of mean per-sample penalties (candidate/baseline) on the same latents and directions; ${pct} interval by paired studentized bootstrap (${s.resamples} resamples)`;
}

/** Problems worth a line under the table: failed rules and layers that could not be evaluated. */
function problems(result: GateResult): string[] {
  const out: string[] = [];
  for (const { layer, label } of rows(result)) {
    if (layer.problem) out.push(`${label}: ${layer.problem}`);
    for (const r of layer.rules) if (r.verdict !== 'pass' && !(layer.problem && r.verdict === 'error')) out.push(`${label}: ${r.message}`);
  }
  return out;
}

export function formatGate(result: GateResult, names: ModelNames): string {
  const body = rows(result).map(({ layer, label }) => cells(layer, label));
  const widths = HEADER.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (c: string[]): string => c.map((x, i) => x.padEnd(widths[i])).join('  ').trimEnd();
  const lines = [
    `candidate  ${names.candidate} (sha256 ${result.candidate.model.slice(0, 12)})`,
    `baseline   ${names.baseline} (sha256 ${result.baseline.model.slice(0, 12)})`,
    `settings   ${settingsLine(result)}, ${result.candidate.executionProvider}`,
    `method     ${methodLine(result)}`,
    '',
    line(HEADER),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
  ];
  for (const p of problems(result)) lines.push(`  - ${p}`);
  for (const w of result.warnings) lines.push(`warning [${w.model}] [${w.code}] ${w.message}`);
  lines.push(result.verdict === 'pass' ? 'gate: PASS' : 'gate: FAIL');
  return lines.join('\n');
}

const md = (text: string): string => text.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (text: string): string => `\`${text.replace(/`/g, "'")}\``;

/** Markdown for a CI job summary page (e.g. GitHub's $GITHUB_STEP_SUMMARY). */
export function formatGateMarkdown(result: GateResult, names: ModelNames): string {
  const pass = result.verdict === 'pass';
  const out = [
    `## ${pass ? '✅' : '❌'} Hessian Penalty gate: ${pass ? 'pass' : 'fail'}`,
    '',
    `Candidate ${code(names.candidate)} (sha256 ${code(result.candidate.model.slice(0, 12))}) against baseline ${code(names.baseline)} (sha256 ${code(result.baseline.model.slice(0, 12))}).`,
    '',
    `| ${HEADER.join(' | ')} |`,
    `| ${HEADER.map((_, i) => (i >= 1 && i <= 3 ? '---:' : '---')).join(' | ')} |`,
    ...rows(result).map(({ layer, label }) => {
      const c = cells(layer, label).map(md);
      c[0] = code(label);
      c[5] = layer.verdict === 'pass' ? '✅ pass' : layer.verdict === 'fail' ? '❌ **fail**' : '⚠️ **error**';
      return `| ${c.join(' | ')} |`;
    }),
    '',
  ];
  const list = problems(result);
  if (list.length > 0) out.push('**Why it failed**', '', ...list.map((p) => `- ${md(p)}`), '');
  if (result.warnings.length > 0) out.push('**Warnings**', '', ...result.warnings.map((w) => `- ${w.model}: ${md(w.message)}`), '');
  out.push(`<sub>${md(settingsLine(result))}; ${md(methodLine(result))}</sub>`, '');
  return out.join('\n');
}
