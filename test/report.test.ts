/**
 * The HTML report in a real browser: Debian's headless Chromium driven by playwright-core.
 * Every section renders, no console errors, no network requests; screenshots go to
 * test/artifacts/ (git-ignored) for a person to look at.
 */
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import t from 'tap';
import { renderReport } from '../dist/report/index.js';
import { launchBrowser } from './helpers/browser.js';
import { cli } from './helpers/cli.js';
import { modelPath } from './helpers/reference.js';

const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'audit-report-'));
mkdirSync(ARTIFACTS, { recursive: true });

const browser: BrowserContext | null = await launchBrowser(t);
if (browser) {
  /** Open a report file; collect console errors, page errors and any request that is not the file itself. */
  async function open(file: string): Promise<{ page: Page; errors: string[]; requests: string[] }> {
    const page = await browser.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => !r.url().startsWith('file:') && !r.url().startsWith('data:') && requests.push(r.url()));
    await page.goto(`file://${file}`);
    await page.waitForLoadState('load');
    return { page, errors, requests };
  }

  const count = (page: Page, selector: string) => page.locator(selector).count();

  t.test('audit of the entangled conv generator: every section, the entangled latent, samples with heatmaps', async (t) => {
    const file = join(dir, 'entangled.html');
    const r = await cli('audit', modelPath('dcgan_entangled.onnx'), '--samples', '6', '--seed', '1', '--k', '8', '--report', file);
    t.equal(r.code, 0, r.stderr);
    const { page, errors, requests } = await open(file);
    for (const id of ['summary', 'parameters', 'penalties', 'interaction', 'activeness', 'orthogonality', 'samples', 'warnings']) {
      t.equal(await count(page, `section#${id}`), 1, `section ${id}`);
    }
    t.equal(await count(page, '#penalties svg rect.bar'), 2, 'stochastic and exact bar for the one layer');
    t.equal(await count(page, '#interaction svg.matrix rect.cell'), 144, '12 × 12 cells');
    t.equal(await count(page, '#interaction svg.matrix rect.cell.diagonal'), 12);
    t.equal(await count(page, '#activeness svg rect.bar'), 12);
    t.equal(await count(page, '#orthogonality svg rect.bar'), 1);
    // dcgan_entangled mixes every latent with z0 (models/export.py): z0 is in the worst pair.
    t.match(await page.locator('#tile-pair b').textContent(), /^z0 × z\d+$/);
    // Four samples, each plain and with the overlay, all decoded at 32 × 32.
    const sizes = await page.locator('#samples img').evaluateAll((imgs) => imgs.map((i) => [(i as HTMLImageElement).naturalWidth, (i as HTMLImageElement).naturalHeight]));
    t.equal(sizes.length, 4 * 3);
    t.ok(sizes.every(([w, h]) => w === 32 && h === 32), 'every image decoded');
    t.equal(await count(page, '#samples img.overlay'), 4);
    t.match(await page.locator('#warnings').textContent(), /piecewise_linear/);
    t.match(await page.locator('#parameters').textContent(), /samples N\s*6/);
    t.same(errors, [], 'no console errors');
    t.same(requests, [], 'no network requests');
    await page.screenshot({ path: join(ARTIFACTS, 'report-dcgan_entangled.png'), fullPage: true });
    await page.close();
  });

  t.test('an unused latent is marked in red; a model without images has no samples section', async (t) => {
    const file = join(dir, 'ignoring.html');
    const r = await cli('audit', modelPath('ignoring.onnx'), '--samples', '4', '--seed', '1', '--report', file);
    t.equal(r.code, 0, r.stderr);
    const { page, errors, requests } = await open(file);
    t.equal(await count(page, '#activeness rect.bar.unused'), 1);
    t.match(await page.locator('#activeness rect.bar.unused title').textContent(), /^z3: activeness 0 \(unused/);
    t.match(await page.locator('#activeness .unusedlist').textContent(), /^z3$/);
    t.match(await page.locator('#tile-unused b').textContent(), /^z3$/);
    t.equal(await count(page, 'section#samples'), 0);
    t.same(errors, []);
    t.same(requests, []);
    await page.screenshot({ path: join(ARTIFACTS, 'report-ignoring.png'), fullPage: true });
    await page.close();
  });

  t.test('names from the model are escaped, and a report of one metric has only its sections', async (t) => {
    const file = join(dir, 'escaped.html');
    const html = renderReport({
      modelName: '<script>alert(1)</script>.onnx',
      orthogonality: {
        model: 'f'.repeat(64), samples: 1, seed: 1, wrt: 'z', k: 2, epsilon: 0.1, score: 0.5,
        layers: [{ name: '<img src=x onerror=alert(2)>', score: 0.5 }],
        warnings: [{ code: 'x', message: '<b>bold</b>' }],
      },
    });
    const { writeFileSync } = await import('node:fs');
    writeFileSync(file, html);
    const { page, errors, requests } = await open(file);
    t.equal(await count(page, 'script'), 0);
    t.equal(await count(page, 'img'), 0);
    t.match(await page.locator('h1').textContent(), /<script>alert\(1\)<\/script>\.onnx/);
    t.equal(await count(page, 'section#orthogonality'), 1);
    t.equal(await count(page, 'section#interaction'), 0);
    t.match(await page.locator('#warnings li').textContent(), /<b>bold<\/b>/);
    t.same(errors, []);
    t.same(requests, []);
    await page.close();
  });
}

t.test('the report file is self-contained', async (t) => {
  const html = renderReport({ modelName: 'm.onnx' });
  t.match(html, /Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'"/);
  t.notMatch(readFileSync(new URL('../dist/report/html.js', import.meta.url), 'utf8'), /https?:\/\/(?!www\.w3\.org)/, 'no URLs but the SVG namespace');
});
