/**
 * The report's charts as inline SVG strings. Drawn here rather than with a charting library: the
 * report needs three simple chart types, must be one file with no scripts fetched, and a library
 * (Vega, Chart.js) would inline hundreds of kilobytes of JavaScript to draw rectangles.
 */
import { css, textOn, viridis } from './color.js';

export const esc = (text: string): string =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

export const fmt = (x: number | null | undefined): string =>
  x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x === 0 ? '0' : Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3 ? x.toExponential(2) : x.toPrecision(3);

export interface Series {
  label: string;
  color: string;
  values: (number | null)[];
}

/** Horizontal bars, one group per category (layer), one bar per series, values printed. */
export function barChart(categories: string[], series: Series[], title: string, className = 'chart'): string {
  const labelWidth = Math.min(260, 12 + 7 * Math.max(...categories.map((c) => c.length), 4));
  const barHeight = 18;
  const groupHeight = series.length * barHeight + 12;
  const plotWidth = 420;
  const legendHeight = series.length > 1 ? 22 : 0;
  const width = labelWidth + plotWidth + 90;
  const height = legendHeight + categories.length * groupHeight + 8;
  const max = Math.max(0, ...series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v))));
  const parts: string[] = [];
  series.forEach((s, i) => {
    if (series.length < 2) return;
    const x = labelWidth + i * 170;
    parts.push(`<rect x="${x}" y="4" width="12" height="12" fill="${s.color}"/><text x="${x + 16}" y="14">${esc(s.label)}</text>`);
  });
  categories.forEach((category, c) => {
    const y0 = legendHeight + c * groupHeight;
    parts.push(`<text class="label" x="${labelWidth - 8}" y="${y0 + groupHeight / 2 + 2}" text-anchor="end">${esc(category)}</text>`);
    series.forEach((s, i) => {
      const v = s.values[c];
      const y = y0 + 6 + i * barHeight;
      const w = v !== null && Number.isFinite(v) && max > 0 ? Math.max(1, (v / max) * plotWidth) : 0;
      parts.push(
        `<rect class="bar" x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${barHeight - 4}" fill="${s.color}"><title>${esc(`${category} · ${s.label}: ${fmt(v)}`)}</title></rect>`,
        `<text class="value" x="${labelWidth + w + 6}" y="${y + barHeight - 7}">${fmt(v)}</text>`,
      );
    });
  });
  parts.push(`<line x1="${labelWidth}" y1="${legendHeight}" x2="${labelWidth}" y2="${height - 4}" stroke="#888"/>`);
  return svg(width, height, title, className, parts);
}

/**
 * The d×d interaction matrix: colour is mean H_ij² off the diagonal (scaled to the largest
 * off-diagonal entry), the diagonal (each latent's own curvature) is grey; values in tooltips.
 */
export function interactionHeatmap(matrix: number[][], title: string): string {
  const d = matrix.length;
  const cell = Math.max(6, Math.min(30, Math.floor(420 / Math.max(d, 1))));
  const margin = 28;
  const size = d * cell;
  const legend = 72;
  const width = margin + size + legend + 10;
  const height = margin + size + 10;
  let max = 0;
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) if (i !== j && matrix[i][j] > max) max = matrix[i][j];
  const step = cell >= 16 ? 1 : Math.ceil(16 / cell);
  const parts: string[] = [];
  for (let i = 0; i < d; i++) {
    if (i % step === 0) {
      parts.push(
        `<text class="tick" x="${margin + i * cell + cell / 2}" y="${margin - 6}" text-anchor="middle">${i}</text>`,
        `<text class="tick" x="${margin - 5}" y="${margin + i * cell + cell / 2 + 4}" text-anchor="end">${i}</text>`,
      );
    }
    for (let j = 0; j < d; j++) {
      const v = matrix[i][j];
      const diagonal = i === j;
      const color = diagonal ? [200, 200, 200] as [number, number, number] : viridis(max > 0 ? v / max : 0);
      const x = margin + j * cell;
      const y = margin + i * cell;
      parts.push(
        `<rect class="cell${diagonal ? ' diagonal' : ''}" x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${css(color)}"><title>${esc(`z${i} × z${j}: mean H² = ${fmt(v)}${diagonal ? ' (diagonal)' : ''}`)}</title></rect>`,
      );
      if (cell >= 26 && !diagonal && max > 0 && v / max >= 0.5) {
        parts.push(`<text class="cellvalue" x="${x + cell / 2}" y="${y + cell / 2 + 3}" text-anchor="middle" fill="${textOn(color)}">${(v / max).toFixed(1)}</text>`);
      }
    }
  }
  parts.push(colorbar(margin + size + 14, margin, size, max, 'off-diag mean H²'));
  return svg(width, height, title, 'matrix', parts);
}

function colorbar(x: number, y: number, height: number, max: number, label: string): string {
  const steps = 24;
  const parts: string[] = [];
  for (let s = 0; s < steps; s++) {
    const t = 1 - s / (steps - 1);
    parts.push(`<rect x="${x}" y="${(y + (s * height) / steps).toFixed(1)}" width="12" height="${(height / steps + 0.5).toFixed(1)}" fill="${css(viridis(t))}"/>`);
  }
  parts.push(
    `<text class="tick" x="${x + 16}" y="${y + 8}">${fmt(max)}</text>`,
    `<text class="tick" x="${x + 16}" y="${y + height}">0</text>`,
    `<text class="tick" transform="translate(${x + 40},${y + height / 2}) rotate(90)" text-anchor="middle">${esc(label)}</text>`,
  );
  return parts.join('');
}

/** Vertical bars per latent; unused latents get a red bar outline and an "unused" mark. */
export function activenessChart(values: (number | null)[], unused: number[], threshold: number, title: string): string {
  const d = values.length;
  const bar = Math.max(8, Math.min(36, Math.floor(560 / Math.max(d, 1))));
  const left = 60;
  const top = 16;
  const plotHeight = 160;
  const width = left + d * bar + 20;
  const height = top + plotHeight + 44;
  const max = Math.max(0, ...values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const step = bar >= 16 ? 1 : Math.ceil(16 / bar);
  const parts: string[] = [
    `<line x1="${left}" y1="${top + plotHeight}" x2="${left + d * bar}" y2="${top + plotHeight}" stroke="#888"/>`,
    `<text class="tick" x="${left - 6}" y="${top + 8}" text-anchor="end">${fmt(max)}</text>`,
    `<text class="tick" x="${left - 6}" y="${top + plotHeight}" text-anchor="end">0</text>`,
  ];
  values.forEach((v, i) => {
    const isUnused = unused.includes(i);
    const h = v !== null && max > 0 ? (v / max) * plotHeight : 0;
    const x = left + i * bar + 2;
    parts.push(
      `<rect class="bar${isUnused ? ' unused' : ''}" x="${x}" y="${(top + plotHeight - h).toFixed(1)}" width="${bar - 4}" height="${Math.max(h, isUnused ? 2 : 0).toFixed(1)}" fill="${isUnused ? '#d62728' : css(viridis(0.35))}"><title>${esc(`z${i}: activeness ${fmt(v)}${isUnused ? ` (unused: below ${fmt(threshold)})` : ''}`)}</title></rect>`,
    );
    if (i % step === 0 || isUnused) {
      parts.push(`<text class="tick${isUnused ? ' unused-label' : ''}" x="${x + (bar - 4) / 2}" y="${top + plotHeight + 14}" text-anchor="middle">${i}</text>`);
    }
    if (isUnused) {
      parts.push(`<text class="unused-mark" x="${x + (bar - 4) / 2}" y="${top + plotHeight + 28}" text-anchor="middle">✕</text>`);
    }
  });
  parts.push(`<text class="tick" x="${left + (d * bar) / 2}" y="${height - 2}" text-anchor="middle">latent index (✕ unused)</text>`);
  return svg(width, height, title, 'activeness', parts);
}

function svg(width: number, height: number, title: string, className: string, parts: string[]): string {
  return `<svg class="${className}" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title>${parts.join('')}</svg>`;
}
