/**
 * Latent traversals (issue 15): for each latent (or group, or basis direction) a strip of images
 * of the first image-shaped layer at a few values along it, for the first few samples, as one PNG
 * grid (report/traversal.ts), encoded once here and bounded there. Latents are sorted by the
 * image layer's activeness, highest first, so the latents that matter come first.
 *
 * Values: z_i ∈ {−1, −½, 0, ½, 1}·extent with the activeness extent (default 2): z_i ∈ {−2 … 2},
 * the range of a standard-normal latent, and the same ±extent activeness measures (one flag,
 * one meaning). Groups and basis directions move z by those amounts along the direction.
 */
import { AuditError } from '../contract/errors.js';
import { AuditRequestSchema, type MetricRequest } from '../contract/request.js';
import { type ActivenessResult, type TraversalResult, TraversalResultSchema } from '../contract/results.js';
import { resolveGroups } from '../math/groups.js';
import { imageShapeOf, orderByScore, pointRow, type TraversalDirections, traversalGrid, traversalPoints } from '../report/traversal.js';
import { formatTraversal } from '../report/text.js';
import type { ResolvedRequest } from '../run/resolve.js';
import type { HostState, Run } from '../run/run.js';
import { runActiveness } from './activeness.js';
import { auditSettings, rowLimit, runInfo } from './common.js';
import { defineMetric } from './types.js';

/** Fractions of the extent each row visits. */
export const TRAVERSAL_FRACTIONS = [-1, -0.5, 0, 0.5, 1];
/** Samples shown side by side (the first of the request's). */
export const TRAVERSAL_SAMPLES = 3;

export const traversal = defineMetric<TraversalResult>({
  name: 'traversal',
  summary: 'Latent traversals of the first image-shaped layer as one PNG grid, latents sorted by activeness',
  request: AuditRequestSchema,
  result: TraversalResultSchema,
  flags: { activeness: true, basis: true, out: true },
  hostState: traversalHostState,
  evaluate: (run, request) => runTraversal(run, request),
  format: formatTraversal,
  report: (traversal) => ({ traversal }),
  media: { type: 'image/png', body: (result) => Buffer.from(result.png, 'base64') },
});

/** `activeness`: a result on the same Run to sort by (the audit has one); else measured here for latents. */
/** Host bytes per element: the grid's float32 images, one per direction, sample shown and step. */
export function traversalHostState(resolved: ResolvedRequest): HostState {
  const directions = resolved.basis?.rows ?? resolved.size;
  const samples = resolved.fixedBatch ?? Math.min(TRAVERSAL_SAMPLES, resolved.samples);
  return { what: "the traversal's float32 images", fixed: 4 * directions * samples * TRAVERSAL_FRACTIONS.length, perSample: 0 };
}

export async function runTraversal(run: Run, request: MetricRequest, activeness?: ActivenessResult): Promise<TraversalResult> {
  const { resolved, shapes } = run;
  const started = performance.now();
  const layer = resolved.layers.find((name) => imageShapeOf(shapes[name].shape) !== null);
  if (layer === undefined) {
    throw new AuditError(
      'no_image_layer',
      `no layer asked is image-shaped (C × H × W with C 1 or 3, H × W, or a flat square): ${resolved.layers.map((n) => `'${n}' [${shapes[n].shape.join(', ')}]`).join(', ')}; name an image layer with layers`,
    );
  }
  const imageShape = imageShapeOf(shapes[layer].shape)!;
  const { extent } = auditSettings(request);
  const kind: TraversalResult['directions'] = request.groups !== undefined ? 'groups' : resolved.basis ? 'basis' : 'latents';
  const directions: TraversalDirections =
    request.groups !== undefined
      ? { kind: 'groups', groups: resolveGroups(request.groups, resolved.latentShape) }
      : resolved.basis
        ? { kind: 'basis', rows: resolved.basis.rows, data: resolved.basis.data }
        : { kind: 'axes' };
  // A fixed batch runs every sample in each batch; otherwise the first few are enough.
  const samples = resolved.fixedBatch ?? Math.min(TRAVERSAL_SAMPLES, resolved.samples);
  const plan = traversalPoints(resolved.latents.subarray(0, samples * resolved.size), resolved.size, { directions, samples, steps: TRAVERSAL_FRACTIONS, extent });
  let scores: (number | null)[] | null = null;
  if (kind === 'latents') {
    const measured = activeness ?? (await runActiveness(run, request));
    scores = measured.layers.find((l) => l.name === layer)?.activeness ?? null;
  }
  const order = scores ? orderByScore(scores) : Array.from({ length: plan.directions }, (_, d) => d);
  const size = shapes[layer].size;
  const steps = plan.steps.length;
  const images = new Float32Array(plan.directions * samples * steps * size);
  const done = await run.units({
    stage: 'traversal',
    host: traversalHostState(resolved),
    samples,
    unitSizes: Array.from({ length: plan.directions }, () => steps),
    passes: 'each traversal image',
    tooMany: (rows) => rowLimit(run, rows, `directions·samples·steps = ${plan.directions}·${samples}·${steps}`),
    fill: (rows, out) =>
      rows.forEach(({ sample, index }, r) => {
        const from = pointRow(plan, Math.floor(index / steps), sample, index % steps) * resolved.size;
        out.set(plan.points.subarray(from, from + resolved.size), r * resolved.size);
      }),
    consumers: Object.fromEntries(
      resolved.layers.map((name) => [
        name,
        {
          unit: (sample: number, unit: number, values: ArrayLike<number>[], offsets: number[]) => {
            if (name !== layer) return;
            values.forEach((v, t) => {
              const at = pointRow(plan, unit, sample, t) * size;
              for (let e = 0; e < size; e++) images[at + e] = v[offsets[t] + e];
            });
          },
        },
      ]),
    ),
  });
  const grid = traversalGrid(images, plan, imageShape, order);
  return {
    metric: 'traversal',
    ...runInfo(run, done, [...run.warnings, ...done.modeWarnings], started),
    layer,
    imageShape: [...imageShape],
    directions: kind,
    // In a cut tensor the coordinates are w's, not z's: label them so (w[3]).
    labels: run.cut ? plan.labels.map((l) => (/^z\d+$/.test(l) ? `${run.cut!.tensor}[${l.slice(1)}]` : l)) : plan.labels,
    values: plan.steps.map((s) => s * extent),
    extent,
    samplesShown: samples,
    order: grid.order,
    orderedBy: scores ? 'activeness' : null,
    scores,
    grid: { width: grid.width, height: grid.height, cellWidth: grid.cellWidth, cellHeight: grid.cellHeight, range: [...grid.range] },
    png: grid.png.toString('base64'),
  };
}
