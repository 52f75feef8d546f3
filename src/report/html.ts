/**
 * The audit report: one self-contained HTML file (inline CSS, SVG and PNG data URLs; no scripts,
 * no fetches). Sections appear for the results given: parameters, per-layer penalties, the
 * interaction matrix of each layer, activeness, orthogonality, samples with the penalty heatmap
 * overlaid, warnings. The input types list only the fields the report reads, so any engine
 * result with those fields can be passed.
 */
import { imagePng, overlayPng } from './png.js';
import { regimeText } from './text.js';
import { traversalSection } from './traversal.js';
import { activenessChart, barChart, esc, fmt, interactionHeatmap } from './svg.js';

export interface ReportWarning {
  code: string;
  message: string;
  layer?: string;
}

interface Run {
  model: string;
  samples: number;
  seed: number;
  wrt: string;
  latents?: number;
  basis?: number | null;
  rows?: number;
  executionProvider?: string;
  warnings: ReportWarning[];
  timings?: { totalMs: number };
}

/** The measured noise of a layer, as the penalty reports it (metrics/noise.ts). */
interface LayerNoiseInput {
  sigma: { elements: number; resolved: number; median: number | null; p90: number | null };
  floor: number | null;
  margin: number;
  belowFloor: boolean | null;
  regime?: string | null;
  exponent?: number | null;
  recommendedEpsilon: { min: number | null; max: number | null; usable: boolean } | null;
}

/** The device's arithmetic: TF32 on CUDA (null where it does not apply). */
interface PrecisionInput {
  tf32: boolean | null;
}

export interface ReportInput {
  /** How the user named the model (a file name). */
  modelName?: string;
  penalty?: Run & {
    k: number;
    epsilon: number;
    reduction: string;
    variance: string;
    penalty: number | null;
    layers: { name: string; penalty: number | null; shape: number[]; noise?: LayerNoiseInput | null }[];
    noise?: { points: number; cached: boolean; rows: number; tries: { h: number }[] } | null;
    precision?: PrecisionInput;
  };
  /** The noise metric alone (hessian-audit noise). */
  noise?: Run & {
    epsilon: number;
    points: number;
    margin: number;
    cached: boolean;
    tries: { h: number }[];
    precision: PrecisionInput;
    layers: { name: string; shape: number[]; type: string; sigma: LayerNoiseInput['sigma']; floor: number | null }[];
  };
  hessian?: (Run & {
    epsilon: number;
    reduction: string;
    penalty: number | null;
    layers: {
      name: string;
      shape: number[];
      penalty: number | null;
      interaction: number[][];
      diagonalFraction: number;
      diagonalRatio: number;
      heatmap?: { height: number; width: number; values: number[][] };
    }[];
  }) | null;
  activeness?: Run & { extent: number; threshold: number; unused: number[]; layers: { name: string; activeness: (number | null)[]; unused: number[] }[] };
  orthogonality?: Run & { k: number; epsilon: number; score: number | null; layers: { name: string; score: number | null }[] };
  previews?: { layer: string; shape: number[]; images: ArrayLike<number>[] }[];
  /** A latent traversal grid (metrics/traversal.ts): shown next to activeness, rows sorted by it. */
  traversal?: Run & {
    layer: string;
    labels: string[];
    values: number[];
    extent: number;
    samplesShown: number;
    order: number[];
    orderedBy: string | null;
    scores: (number | null)[] | null;
    grid: { width: number; height: number; cellHeight: number };
    png: string;
  };
  /** Warnings not already inside one of the results (e.g. the audit's own). */
  warnings?: ReportWarning[];
  timings?: { totalMs: number };
}

export const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:0;background:#f6f6f4}
main{max-width:1100px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px}
section{background:#fff;border:1px solid #e2e2de;border-radius:6px;padding:14px 18px;margin:14px 0}
.summary{display:flex;flex-wrap:wrap;gap:10px}.summary div{background:#f0f3f7;border-radius:5px;padding:8px 12px;min-width:150px}
.summary b{display:block;font-size:18px}.summary span{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}th{color:#555;font-weight:600}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f2f2f2;padding:1px 3px;border-radius:3px}
svg text{font:12px system-ui,sans-serif;fill:#222}svg .tick{font-size:11px;fill:#444}svg .value{font-size:11px;fill:#333}
svg .unused-mark,svg .unused-label{fill:#d62728;font-weight:700}svg .cellvalue{font-size:10px}
.grid{display:flex;flex-wrap:wrap;gap:18px}.layer{min-width:260px}
.note{color:#555;font-size:12px;margin:4px 0}
.samples{display:flex;flex-wrap:wrap;gap:14px}.sample{text-align:center;font-size:12px;color:#444}
.pair{display:flex;gap:6px}.frame{position:relative;width:128px;height:128px;border:1px solid #ccc}
.frame img{position:absolute;left:0;top:0;width:128px;height:128px;image-rendering:pixelated}
.warnings li{margin:4px 0}.warnings code{background:#fff3cd}.ok{color:#2a7d2a}
.unusedlist{color:#d62728;font-weight:600}
`;

export function renderReport(input: ReportInput): string {
  const runs = [input.penalty, input.hessian, input.activeness, input.orthogonality, input.traversal, input.noise].filter((r): r is NonNullable<typeof r> => !!r);
  const first = runs[0];
  const title = `Disentanglement audit — ${input.modelName ?? first?.model.slice(0, 12) ?? 'model'}`;
  const sections = [
    summarySection(input),
    parametersSection(input),
    penaltySection(input),
    noiseSection(input),
    interactionSection(input),
    activenessSection(input),
    traversalReport(input),
    orthogonalitySection(input),
    samplesSection(input),
    warningsSection(input),
  ].filter((s) => s !== '');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>${esc(title)}</title><style>${STYLE}</style></head>
<body><main>
<h1>${esc(title)}</h1>
<p class="note">hessian-audit report · model sha256 <code>${esc(first?.model ?? '')}</code></p>
${sections.join('\n')}
</main></body></html>
`;
}

function summarySection({ penalty, hessian, activeness, orthogonality }: ReportInput): string {
  const tiles: string[] = [];
  const tile = (value: string, label: string, id: string): string => `<div id="${id}"><b>${value}</b><span>${esc(label)}</span></div>`;
  if (penalty) tiles.push(tile(fmt(penalty.penalty), `Hessian Penalty, stochastic (k=${penalty.k}, ${penalty.reduction}, sum over layers)`, 'tile-penalty'));
  if (hessian) {
    tiles.push(tile(fmt(hessian.penalty), `exact penalty from the full Hessian (${hessian.reduction})`, 'tile-exact'));
    const pair = mostEntangled(hessian.layers);
    if (pair) tiles.push(tile(`z${pair.i} × z${pair.j}`, `most entangled pair (layer ${pair.layer})`, 'tile-pair'));
    const fraction = Math.min(...hessian.layers.map((l) => l.diagonalFraction));
    tiles.push(tile(`${(100 * fraction).toFixed(1)}%`, 'elements whose largest |H| entry is diagonal (lowest layer)', 'tile-diagonal'));
  }
  if (activeness) {
    tiles.push(tile(activeness.unused.length ? activeness.unused.map((i) => `z${i}`).join(', ') : 'none', `unused latents (activeness < ${fmt(activeness.threshold)})`, 'tile-unused'));
  }
  if (orthogonality) tiles.push(tile(fmt(orthogonality.score), `Jacobian orthogonality (k=${orthogonality.k}; 0 = orthogonal)`, 'tile-orthogonality'));
  return `<section id="summary"><h2>At a glance</h2><div class="summary">${tiles.join('')}</div>
<p class="note">Lower penalties mean a more disentangled generator: 0 when every output element depends on each latent separately.</p></section>`;
}

function mostEntangled(layers: NonNullable<ReportInput['hessian']>['layers']): { i: number; j: number; layer: string } | null {
  let best: { i: number; j: number; layer: string; v: number } | null = null;
  for (const l of layers) {
    l.interaction.forEach((row, i) =>
      row.forEach((v, j) => {
        if (j > i && Number.isFinite(v) && v > 0 && (best === null || v > best.v)) best = { i, j, layer: l.name, v };
      }),
    );
  }
  return best;
}

function parametersSection(input: ReportInput): string {
  const first = [input.penalty, input.hessian, input.activeness, input.orthogonality, input.traversal, input.noise].find((r) => !!r);
  if (!first) return '';
  const rows: [string, string][] = [
    ['model', `${input.modelName ? `${input.modelName} · ` : ''}sha256 ${first.model}`],
    ['samples N', String(first.samples)],
    ['seed', String(first.seed)],
    ['input (wrt)', first.wrt],
  ];
  if (first.latents !== undefined) rows.push(['latents d', String(first.latents) + (first.basis ? ` (along a basis of ${first.basis} directions)` : '')]);
  if (input.penalty) rows.push(['penalty', `k=${input.penalty.k}, ε=${input.penalty.epsilon}, reduction ${input.penalty.reduction}, variance ${input.penalty.variance}`]);
  if (input.hessian) rows.push(['full Hessian', `ε=${input.hessian.epsilon}, mixed central differences, ${input.hessian.rows ?? '?'} rows`]);
  if (input.activeness) rows.push(['activeness', `z_i ∈ {−${input.activeness.extent}, 0, +${input.activeness.extent}}, unused below ${input.activeness.threshold}`]);
  if (input.orthogonality) rows.push(['orthogonality', `k=${input.orthogonality.k}, ε=${input.orthogonality.epsilon}, forward differences`]);
  if (first.executionProvider) rows.push(['execution provider', first.executionProvider]);
  const precision = input.penalty?.precision ?? input.noise?.precision;
  if (precision) rows.push(['math mode', mathMode(precision)]);
  const total = input.timings?.totalMs ?? first.timings?.totalMs;
  if (total !== undefined) rows.push(['time', `${(total / 1000).toFixed(2)} s`]);
  return `<section id="parameters"><h2>Model and parameters</h2><table>${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table></section>`;
}

function penaltySection({ penalty, hessian }: ReportInput): string {
  if (!penalty && !hessian) return '';
  const names = (penalty ?? hessian)!.layers.map((l) => l.name);
  const series = [];
  if (penalty) series.push({ label: `stochastic (k=${penalty.k})`, color: '#3b6ea8', values: penalty.layers.map((l) => l.penalty) });
  if (hessian) series.push({ label: 'exact (full Hessian)', color: '#e07b39', values: names.map((n) => hessian.layers.find((l) => l.name === n)?.penalty ?? null) });
  return `<section id="penalties"><h2>Per-layer Hessian Penalty</h2>${barChart(names, series, 'Per-layer Hessian Penalty')}
<p class="note">Reduction: ${esc((penalty ?? hessian)!.reduction)} over elements and samples. The exact value is 2·Σ<sub>i≠j</sub> H<sub>ij</sub>² from the full Hessian. Per element it is the stochastic estimate's expectation for a smooth generator; under max, the estimate's noise pushes the stochastic figure up, and a piecewise-linear generator (ReLU) makes the two differ (see warnings).</p></section>`;
}

const mathMode = ({ tf32 }: PrecisionInput): string =>
  tf32 === null ? 'full precision of the layer types (TF32 does not apply to this provider)' : tf32 ? 'TF32 ON in matrix products and convolutions (10 mantissa bits: a higher noise floor)' : 'TF32 off (full float32 matrix products and convolutions)';

/** Per layer: the measured σ, the floor it sets at this ε, and the recommended ε range. */
function noiseSection({ penalty, noise }: ReportInput): string {
  if (penalty?.noise) {
    const rows = penalty.layers.map((l) => {
      const n = l.noise;
      if (!n) return `<tr><td>${esc(l.name)}</td><td colspan="6">not measured (no element resolved)</td></tr>`;
      const range = n.recommendedEpsilon;
      const eps = range ? `${fmt(range.min)} … ${range.max === null ? '? (add --epsilons for the upper end)' : fmt(range.max)}${range.usable ? '' : ' (empty)'}` : 'n/a';
      const verdict = n.belowFloor ? '<b class="unusedlist">below the floor</b>' : '<span class="ok">above</span>';
      return `<tr><td>${esc(l.name)}</td><td>${fmt(n.sigma.median)} / ${fmt(n.sigma.p90)}</td><td>${n.sigma.resolved}/${n.sigma.elements}</td><td>${fmt(n.floor)}</td><td>${verdict}</td><td>${eps}</td><td>${esc(regimeText(n.regime, n.exponent))}</td></tr>`;
    });
    const how = penalty.noise;
    return `<section id="noise"><h2>Rounding noise and the recommended ε</h2>
<table><tr><th>layer</th><th>σ median / p90</th><th>resolved</th><th>floor at ε=${fmt(penalty.epsilon)}</th><th>penalty vs ${penalty.layers[0]?.noise?.margin ?? 5}× floor</th><th>recommended ε</th><th>scales with ε as</th></tr>${rows.join('')}</table>
<p class="note">σ measured on ${esc(penalty.executionProvider ?? 'the device')} (${esc(mathMode(penalty.precision ?? { tf32: null }))}) by ECnoise, ${how.points} points along one direction, spacing ${how.tries.map((t) => fmt(t.h)).join(', ')}; ${how.cached ? 'taken from the session cache' : `${how.rows} extra rows`}. The floor grows as 1/ε⁴: below it the penalty is mostly rounding. How each figure scales, from the step test at 2ε and ε/2: smooth (flat), kinks (ε⁻¹ to ε⁻², piecewise-linear layers: compare such figures at one ε), rounding (toward ε⁻⁴), mixed.</p></section>`;
  }
  if (!noise) return '';
  const rows = noise.layers.map((l) => `<tr><td>${esc(l.name)}</td><td>${esc(l.type)}</td><td>${fmt(l.sigma.median)} / ${fmt(l.sigma.p90)}</td><td>${l.sigma.resolved}/${l.sigma.elements}</td><td>${fmt(l.floor)}</td></tr>`);
  return `<section id="noise"><h2>Rounding noise</h2>
<table><tr><th>layer</th><th>type</th><th>σ median / p90</th><th>resolved</th><th>floor at ε=${fmt(noise.epsilon)}</th></tr>${rows.join('')}</table>
<p class="note">σ measured on ${esc(noise.executionProvider ?? 'the device')} (${esc(mathMode(noise.precision))}) by ECnoise, ${noise.points} points, spacing ${noise.tries.map((t) => fmt(t.h)).join(', ')}. A penalty below ${noise.margin}× the floor is mostly rounding noise.</p></section>`;
}

function interactionSection({ hessian }: ReportInput): string {
  if (!hessian) return '';
  const layers = hessian.layers.map(
    (l) => `<div class="layer"><h3>${esc(l.name)}</h3>${interactionHeatmap(l.interaction, `Interaction matrix of ${l.name}`)}
<p class="note">diagonal fraction ${(100 * l.diagonalFraction).toFixed(1)}% · diagonal ratio ${fmt(l.diagonalRatio)}</p></div>`,
  );
  return `<section id="interaction"><h2>Latent interactions (mean H<sub>ij</sub>² per pair)</h2>
<p class="note">Bright off-diagonal cells are entangled latent pairs; the grey diagonal is each latent's own curvature. Hover a cell for its value.</p>
<div class="grid">${layers.join('')}</div></section>`;
}

function activenessSection({ activeness }: ReportInput): string {
  if (!activeness) return '';
  const layers = activeness.layers.map(
    (l) => `<div class="layer"><h3>${esc(l.name)}</h3>${activenessChart(l.activeness, l.unused, activeness.threshold, `Activeness per latent in ${l.name}`)}</div>`,
  );
  const unused = activeness.unused.length
    ? `<p>Unused in every layer: <span class="unusedlist">${activeness.unused.map((i) => `z${i}`).join(', ')}</span></p>`
    : '<p class="ok">Every latent changes the output.</p>';
  return `<section id="activeness"><h2>Activeness</h2>${unused}
<p class="note">Variance of the output over z<sub>i</sub> ∈ {−${activeness.extent}, 0, +${activeness.extent}}, averaged over elements and samples. Red bars (✕) fall below ${fmt(activeness.threshold)}.</p>
<div class="grid">${layers.join('')}</div></section>`;
}

function traversalReport({ traversal: t }: ReportInput): string {
  if (!t) return '';
  return traversalSection({
    layer: t.layer,
    grid: { png: Buffer.from(t.png, 'base64'), width: t.grid.width, height: t.grid.height, order: t.order, cellHeight: t.grid.cellHeight },
    labels: t.labels,
    ...(t.scores ? { scores: t.scores, scoreName: t.orderedBy ?? 'score' } : {}),
    // The section writes step·extent: the values themselves, with an extent of 1.
    steps: t.values,
    extent: 1,
    samples: t.samplesShown,
  });
}

function orthogonalitySection({ orthogonality }: ReportInput): string {
  if (!orthogonality) return '';
  const names = orthogonality.layers.map((l) => l.name);
  return `<section id="orthogonality"><h2>Jacobian orthogonality (OroJaR)</h2>
${barChart(names, [{ label: 'Var over v of ‖Jv‖²', color: '#5a9e6f', values: orthogonality.layers.map((l) => l.score) }], 'Jacobian orthogonality per layer')}
<p class="note">0 when the columns of the Jacobian are orthogonal (each latent moves the output in its own direction).</p></section>`;
}

function samplesSection({ previews, hessian }: ReportInput): string {
  if (!previews || previews.length === 0) return '';
  const blocks = previews.map((p) => {
    const heatmap = hessian?.layers.find((l) => l.name === p.layer)?.heatmap;
    const max = heatmap ? Math.max(0, ...heatmap.values.flat().filter(Number.isFinite)) : 0;
    const overlay = heatmap ? overlayPng(heatmap.values, max) : null;
    const samples = p.images.map((image, n) => {
      const src = imagePng(image, p.shape);
      const withOverlay = overlay
        ? `<div class="frame"><img src="${src}" alt="sample ${n}"><img class="overlay" src="${overlay}" alt="penalty heatmap"></div>`
        : '';
      return `<div class="sample"><div class="pair"><div class="frame"><img src="${src}" alt="sample ${n}"></div>${withOverlay}</div>sample ${n}</div>`;
    });
    const note = heatmap
      ? `Right: the layer's per-element exact penalty (mean over samples and channels, max ${fmt(max)}) in inferno, transparent where it is 0.`
      : 'No heatmap: the full Hessian was not computed for this layer.';
    return `<h3>${esc(p.layer)}</h3><div class="samples">${samples.join('')}</div><p class="note">${note}</p>`;
  });
  return `<section id="samples"><h2>Generated samples and where the penalty lies</h2>${blocks.join('')}</section>`;
}

function warningsSection(input: ReportInput): string {
  const all: ReportWarning[] = [];
  for (const w of [...(input.warnings ?? []), ...[input.penalty, input.hessian, input.activeness, input.orthogonality, input.traversal, input.noise].flatMap((r) => r?.warnings ?? [])]) {
    if (!all.some((x) => x.code === w.code && x.message === w.message)) all.push(w);
  }
  const body = all.length
    ? `<ul class="warnings">${all.map((w) => `<li><code>${esc(w.code)}</code> ${esc(w.message)}</li>`).join('')}</ul>`
    : '<p class="ok">No warnings.</p>';
  return `<section id="warnings"><h2>Warnings</h2>${body}</section>`;
}
