/** Results as text for a terminal: a header and small aligned tables, one per figure. */
import { formatShape } from '../io/ndarray.js';
import type { ActivenessResult, AuditResult, HessianResult, NoiseResult, OrthogonalityResult, PenaltyResult, RunInfo, TraversalResult } from '../contract/results.js';
import type { ModelDescription } from '../onnx/describe.js';

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export const number = (x: number | null): string => (x === null ? 'n/a' : Number.isInteger(x) ? String(x) : x.toPrecision(6));

/** A few significant digits, or n/a. */
const short = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : Number(x.toPrecision(3)).toString());

/** How the device computes: TF32 on CUDA, nothing to say elsewhere. */
export const precisionText = (tf32: boolean | null | undefined): string => (tf32 === true ? ', TF32 on' : tf32 === false ? ', TF32 off' : '');

const BATCH_ROWS_FROM = { budget: 'memory budget', tuned: "the session's tuned size", request: 'batchRows asked' } as const;

/** Bytes as B, KB or MB (decimal: what a network or a copy is counted in). */
function formatBytes(bytes: number): string {
  if (bytes < 1e3) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} KB`;
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** How a layer's figure scales with ε, as the step test read it: "kinks (eps^-1.4)". */
export function regimeText(regime: string | null | undefined, exponent: number | null | undefined): string {
  if (!regime) return 'n/a';
  return exponent === null || exponent === undefined ? regime : `${regime} (eps^${(-exponent).toFixed(1)})`;
}

export function formatPenalty(result: PenaltyResult, modelName: string): string {
  const measured = result.layers.some((l) => l.noise);
  const rows = result.layers.map((l) => {
    const cells = [l.name, formatShape(l.shape), l.op ?? 'output', number(l.penalty)];
    if (!measured) return cells;
    const n = l.noise;
    const range = n?.recommendedEpsilon ? `[${short(n.recommendedEpsilon.min)}, ${n.recommendedEpsilon.max === null ? '?' : short(n.recommendedEpsilon.max)}]` : 'n/a';
    return [...cells, short(n?.sigma.p90), short(n?.floor), n?.belowFloor ? `${range} BELOW FLOOR` : range, regimeText(n?.regime, n?.exponent)];
  });
  rows.push(['total (sum over layers)', '', '', number(result.penalty), ...(measured ? ['', '', '', ''] : [])]);
  const noise = result.noise;
  const lines = [
    `model      ${modelName} (sha256 ${result.model.slice(0, 12)})`,
    `settings   N=${result.samples} k=${result.k} epsilon=${result.epsilon} reduction=${result.reduction} variance=${result.variance} wrt=${result.wrt}`,
    `execution  ${result.rows} rows in ${result.batches} batch(es) of up to ${result.batchRows} rows (${BATCH_ROWS_FROM[result.batchRowsFrom]}), ${result.mode}, ${result.executionProvider}${precisionText(result.precision?.tf32)}, seed ${result.seed}, ${result.timings.totalMs.toFixed(0)} ms`,
    `estimator  moments reduced ${result.estimator === 'graph' ? 'in the graph' : 'on the host'}, ${formatBytes(result.fetchedBytes)} copied out of onnxruntime`,
    ...(noise ? [`noise      ECnoise, ${noise.points} points, ${noise.cached ? 'cached (0 rows)' : `${noise.rows} extra rows`}, h ${noise.tries.map((t) => t.h).join(', ')}; step test ${noise.stepRows ? `${noise.stepRows} extra rows` : 'cached or off (0 rows)'}`] : []),
    '',
    table(['layer', 'shape', 'op', 'penalty', ...(measured ? ['sigma p90', 'floor', 'recommended epsilon', 'scales as'] : [])], rows),
  ];
  if (result.sweep) {
    const names = result.layers.map((l) => l.name);
    lines.push('', 'epsilon sweep (same latents and directions; * below the measured noise floor)');
    lines.push(
      table(
        ['epsilon', ...names, 'total'],
        result.sweep.map((p) => [String(p.epsilon), ...p.layers.map((l) => `${number(l.penalty)}${l.belowFloor ? ' *' : ''}`), number(p.penalty)]),
      ),
    );
  }
  for (const w of result.warnings) lines.push(`warning [${w.code}] ${w.message}`);
  return lines.join('\n');
}

export function formatNoise(r: NoiseResult, modelName: string): string {
  const rows = r.layers.map((l) => [l.name, formatShape(l.shape), l.type, `${l.sigma.resolved}/${l.sigma.elements}`, short(l.sigma.median), short(l.sigma.p90), short(l.floor)]);
  return [
    `model      ${modelName} (sha256 ${r.model.slice(0, 12)})`,
    `settings   N=${r.samples} k=${r.k} epsilon=${r.epsilon} reduction=${r.reduction} variance=${r.variance} wrt=${r.wrt}`,
    `execution  ${r.cached ? 'cached on the session (0 rows)' : `${r.rows} rows in ${r.batches} batch(es)`}, ${r.mode}, ${r.executionProvider}${precisionText(r.precision.tf32)}, seed ${r.seed}, ${r.timings.totalMs.toFixed(0)} ms`,
    `method     ECnoise (Moré & Wild) along direction 0, ${r.points} points, spacing h ${r.tries.map((t) => t.h).join(', ')}`,
    '',
    table(['layer', 'shape', 'type', 'resolved', 'sigma median', 'sigma p90', `floor at epsilon ${r.epsilon}`], rows),
    '',
    `a penalty below ${r.margin} x floor is mostly rounding noise (the floor grows as 1/epsilon^4)`,
    ...warnings(r.warnings),
  ].join('\n');
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

/** inspect's list of the intermediate tensors `wrt` can name. */
export function formatWrtTensors(tensors: readonly { name: string; type: string; shape: (number | string | null)[] | null; op: string }[]): string {
  if (tensors.length === 0) return 'tensors wrt can name: none besides the inputs';
  return [
    'tensors wrt can name (the graph is cut there: --wrt NAME; shapes from one run on zeros where the model declares none)',
    table(['tensor', 'type', 'shape', 'op'], tensors.map((t) => [t.name, t.type, t.shape ? formatShape(t.shape) : 'unknown', t.op])),
  ].join('\n');
}

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

export function formatTraversal(r: TraversalResult, modelName: string): string {
  const rows = r.order.map((d) => [r.labels[d], r.scores ? number(r.scores[d]) : '']);
  return [
    ...header(r, modelName, `extent=${r.extent}`),
    '',
    `layer ${r.layer} [${r.imageShape.join(', ')}]: ${r.order.length} ${r.directions} × ${r.samplesShown} samples × values ${r.values.join(', ')}`,
    `grid ${r.grid.width}×${r.grid.height} px (write it with --out FILE.png), rows top to bottom${r.orderedBy ? ` by ${r.orderedBy}, highest first` : ''}:`,
    table(['row', r.orderedBy ?? ''], rows),
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
