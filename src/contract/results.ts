/**
 * The results, one zod schema per metric: the handlers' types (z.infer), the response
 * serializers and the OpenAPI document. The penalty's result objects are loose, so a field the
 * engine adds reaches clients instead of being stripped by the serializer.
 */
import { z } from 'zod';

export const ExecutionModeSchema = z.enum(['stacked', 'per-pass']);
export type ExecutionMode = z.infer<typeof ExecutionModeSchema>;

export const WarningSchema = z.object({
  code: z.string(),
  message: z.string(),
  layer: z.string().optional(),
});

// Results are loose objects: a field the engine adds later reaches clients instead of being
// stripped by the response serializer.
/** A robust summary of the measured σ over a layer's elements (null: no element resolved). */
export const NoiseSigmaSchema = z
  .object({
    elements: z.number(),
    resolved: z.number(),
    median: z.number().nullable(),
    p90: z.number().nullable(),
    rms: z.number().nullable(),
    max: z.number().nullable(),
  })
  .meta({ description: 'ECnoise σ per output element: how many resolved, median, 90th percentile, rms, max' });

const NoiseTrySchema = z.object({ h: z.number(), ok: z.number(), hTooSmall: z.number(), hTooLarge: z.number(), kinks: z.number().meta({ description: 'Lines that crossed a kink of a piecewise-linear layer: discarded, not noise' }) });

/** The device's arithmetic: TF32 in effect (null where it does not apply: the CPU, WebGPU). */
export const PrecisionSchema = z
  .object({ tf32: z.boolean().nullable() })
  .meta({ description: 'Math mode of the provider: TF32 on or off on CUDA, null elsewhere' });

export const LayerNoiseSchema = z
  .object({
    sigma: NoiseSigmaSchema,
    samples: z.number().meta({ description: 'Samples measured (1; N when rows interact)' }),
    floor: z.number().nullable().meta({ description: 'Penalty floor from σ at this ε: 2·p90(σ)²/ε⁴·c_k(N·E) (max) or 2·rms(σ)²/ε⁴ (mean)' }),
    margin: z.number().meta({ description: 'below_noise_floor when penalty < margin × floor' }),
    belowFloor: z.boolean().nullable(),
    reason: z
      .enum(['clear', 'floor', 'halving', 'negligible', 'rounding'])
      .optional()
      .meta({
        description:
          "What decided belowFloor (docs/noise.md, The verdict): 'clear' above margin × floor; 'floor' below it; 'halving' below it but the figure grows like kinks or not at all under step-halving; 'negligible' below it but the halving samples' figure is a negligible share; 'rounding' above it but growing like rounding on both sides",
      }),
    halving: z
      .object({
        double: z.number().nullable().meta({ description: "The halving samples' figure at 2ε" }),
        at: z.number().nullable().meta({ description: "The halving samples' figure at ε (the penalty's own rows)" }),
        half: z.number().nullable().meta({ description: "The halving samples' figure at ε/2" }),
        growth: z.object({
          up: z.number().nullable().meta({ description: 'P(ε)/P(2ε): rounding ×16, kinks ×2 (mean) to ×4 (max), smooth ×1' }),
          down: z.number().nullable().meta({ description: 'P(ε/2)/P(ε)' }),
        }),
        share: z.number().nullable().meta({ description: "The halving samples' figure over the layer's (a max scaled to the layer's element count)" }),
      })
      .nullable()
      .optional()
      .meta({ description: 'The step-halving evidence (null when halving: false or it did not run)' }),
    regime: z
      .enum(['smooth', 'kinks', 'rounding', 'mixed'])
      .nullable()
      .optional()
      .meta({
        description:
          "What sets the figure, from the step test and ECnoise (docs/noise.md): 'rounding' it grows ×8 or more on both sides of ε (toward ε⁻⁴); 'kinks' the layer's lines cross piecewise-linear kinks, so the figure grows as ε⁻¹ to ε⁻² and depends on ε everywhere (compare at equal ε); 'smooth' no kinks and no rounding growth (the O(ε²) truncation fades); 'mixed' one side grows like rounding, the other not; null when the step test did not run",
      }),
    exponent: z.number().nullable().optional().meta({ description: 'a in P ∝ ε^−a, measured: log₂ of the growth per halving, the mean of 2ε→ε and ε→ε/2' }),
    roundingShare: z
      .number()
      .nullable()
      .optional()
      .meta({ description: 'Estimated share of the step test samples figure at ε that is rounding: (down − g)/(16 − g), g = up within [¼, 4] (docs/noise.md, The regime); null without both sides' }),
    kinkLines: z.number().optional().meta({ description: "ECnoise lines of the layer that crossed a kink (piecewise-linear layer when > 0)" }),
    kinks: z.boolean().optional().meta({ description: 'Not below the floor, the layer has kink lines, and the figure moves by more than 10% under halving: it is set by piecewise-linear kinks and depends on ε (compare at one ε; information, no warning)' }),
    stableEpsilon: z
      .object({ min: z.number(), max: z.number() })
      .nullable()
      .optional()
      .meta({ description: 'Where the figure stays within 10% of its value at ε among ε/2, ε and 2ε (the step test): the range it can be quoted for; null where it moves on both sides or the test did not run' }),
    recommendedEpsilon: z
      .object({
        min: z.number().nullable().meta({ description: 'Smallest ε whose penalty clears margin × floor' }),
        max: z.number().nullable().meta({ description: 'Largest ε with truncation under 2% (needs a second ε above the floor: epsilons)' }),
        usable: z.boolean(),
        lowerBound: z.boolean().meta({ description: 'min comes from a point below its floor (mostly noise): the true minimum may be larger' }),
      })
      .nullable(),
  })
  .meta({ description: 'Measured rounding noise of the layer (null when noise: false)' });

export const LayerResultSchema = z.looseObject({
  name: z.string(),
  penalty: z.number().nullable(),
  shape: z.array(z.number()),
  op: z.string().optional(),
  perSample: z.array(z.number().nullable()),
  noiseFloor: z.number().meta({ description: 'Rounding noise floor of the penalty at this ε' }),
  determinism: z
    .object({ maxDifference: z.number(), secondDifferenceError: z.number() })
    .meta({ description: 'Two runs of the same G(z): largest difference, and 4δ/ε²' }),
  noise: LayerNoiseSchema.nullable().optional(),
});

/** When wrt named an intermediate tensor: the graph was cut there (issue 15). */
export const CutSchema = z
  .object({
    tensor: z.string(),
    shape: z.array(z.number()).meta({ description: 'N × per-sample shape of the tensor audited' }),
    source: z.enum(['latents', 'inputs', 'drawn']).meta({ description: 'latents: its values were given; inputs / drawn: the prefix ran once on the model inputs given / drawn' }),
    inputs: z.array(z.string()).meta({ description: 'Model inputs the prefix read' }),
    drawn: z.array(z.string()).meta({ description: 'Those drawn standard normal with the seed' }),
  })
  .meta({ id: 'Cut' });

/** Grouped directions: coordinates of the wrt tensor sharing one sign (a group basis). */
export const GroupsInfoSchema = z.object({ count: z.number(), description: z.string() }).meta({ id: 'Groups' });

export const SweepPointSchema = z.object({
  epsilon: z.number(),
  penalty: z.number().nullable(),
  layers: z.array(
    z.object({
      name: z.string(),
      penalty: z.number().nullable(),
      noiseFloor: z.number(),
      floor: z.number().nullable().optional().meta({ description: 'Measured floor at this ε (absent when noise: false)' }),
      belowFloor: z.boolean().nullable().optional(),
    }),
  ),
  noiseDominated: z.boolean().optional().meta({ description: 'Some layer is below its measured floor at this ε' }),
});

export const NoiseMeasurementSchema = z
  .object({
    points: z.number(),
    tries: z.array(NoiseTrySchema),
    cached: z.boolean().meta({ description: 'Taken from the session cache (no rows spent)' }),
    rows: z.number().meta({ description: 'Extra forward rows this request spent measuring (0 on a cache hit)' }),
    stepRows: z.number().optional().meta({ description: 'Extra forward rows this request spent on the step-halving test (0 on a cache hit or when it did not run)' }),
  })
  .meta({ description: 'How the rounding noise was measured (ECnoise along direction 0 of sample 0)' });

/** Where a metric with an in-graph estimator (run/graph-suffix.ts) reduced, and what it copied out. */
const Estimator = (what: string, bytes: string) => ({
  estimator: z.enum(['graph', 'host']).meta({ description: `Where ${what} were reduced: in the session (graph) or in JavaScript (host)` }),
  fetchedBytes: z.number().meta({ description: `Bytes the estimate copied out of onnxruntime (${bytes})` }),
});

const BatchRows = {
  batchRows: z.number().meta({ description: 'Rows of the largest batch run' }),
  batchRowsFrom: z.enum(['budget', 'tuned', 'request']).meta({ description: "Where the batch size came from: the memory budget, the session's tuning, or the request's batchRows" }),
};

export const PenaltyResultSchema = z
  .looseObject({
    model: z.string().meta({ description: 'SHA-256 of the model bytes' }),
    penalty: z.number().nullable().meta({ description: 'Sum over layers' }),
    layers: z.array(LayerResultSchema),
    k: z.number(),
    epsilon: z.number(),
    reduction: z.enum(['max', 'mean']),
    variance: z.enum(['unbiased', 'biased']),
    samples: z.number(),
    forwardPasses: z.number().meta({ description: '2k+1' }),
    rows: z.number(),
    batches: z.number(),
    ...BatchRows,
    ...Estimator('the moments', 'independent of k with the graph estimator'),
    mode: ExecutionModeSchema,
    seed: z.number(),
    directions: z.enum(['rademacher', 'explicit']),
    wrt: z.string(),
    executionProvider: z.string(),
    sweep: z.array(SweepPointSchema).optional().meta({ description: 'Penalties for each ε of epsilons' }),
    cut: CutSchema.optional(),
    groups: GroupsInfoSchema.optional(),
    noise: NoiseMeasurementSchema.nullable().optional(),
    halving: z
      .object({
        samples: z.number().meta({ description: 'Samples run again (the first ⌊N/8⌋; 1 below N = 8)' }),
        factors: z.array(z.number()).meta({ description: 'Spacings run besides ε, as factors of ε' }),
        rows: z.number().meta({ description: 'Forward rows it cost this request (0 on a cache hit)' }),
        cached: z.boolean(),
      })
      .nullable()
      .optional()
      .meta({ description: 'The step-halving test (null when halving: false, noise: false, or it did not run)' }),
    precision: PrecisionSchema.optional(),
    warnings: z.array(WarningSchema),
    timings: z.object({ totalMs: z.number(), forwardMs: z.number(), reduceMs: z.number() }),
  })
  .meta({ id: 'PenaltyResult' });


const nullable = z.number().nullable();
const Timings = z.object({ totalMs: z.number(), forwardMs: z.number(), reduceMs: z.number() });

const RunInfo = {
  model: z.string().meta({ description: 'SHA-256 of the model bytes' }),
  samples: z.number(),
  seed: z.number(),
  wrt: z.string(),
  latents: z.number().meta({ description: 'd: latent components, or basis rows along a basis' }),
  basis: z.number().nullable().meta({ description: 'Rows of the basis; null without one' }),
  rowsPerSample: z.number(),
  rows: z.number(),
  batches: z.number(),
  ...BatchRows,
  mode: ExecutionModeSchema,
  executionProvider: z.string(),
  cut: CutSchema.optional(),
  groups: GroupsInfoSchema.optional(),
  warnings: z.array(WarningSchema),
  timings: Timings,
  lanes: z.number().optional().meta({ description: 'Lanes (devices) the request was split over by samples, when more than one (--devices)' }),
};

const LayerBase = { name: z.string(), shape: z.array(z.number()), op: z.string().optional() };

export const HessianResultSchema = z
  .object({
    metric: z.literal('hessian'),
    ...RunInfo,
    ...Estimator("the Hessian's figures", 'per sample, 5 figures per element with the graph estimator instead of d² + d + 1 rows'),
    epsilon: z.number(),
    reduction: z.enum(['max', 'mean']),
    penalty: nullable.meta({ description: 'Exact penalty, sum over layers' }),
    layers: z.array(
      z.object({
        ...LayerBase,
        penalty: nullable.meta({ description: '2·Σ_{i≠j} H_ij² per element, reduced like the estimator' }),
        perSample: z.array(nullable),
        interaction: z.array(z.array(z.number())).meta({ description: 'd×d mean over elements and samples of H_ij²' }),
        diagonalFraction: z.number().meta({ description: 'Share of elements whose largest |H_ij| is diagonal' }),
        diagonalRatio: z.number().meta({ description: 'Mean of mean|H_ii| / (mean_{i≠j}|H_ij| + 1e-8)' }),
        noiseFloor: z.number(),
        heatmap: z
          .object({ height: z.number(), width: z.number(), values: z.array(z.array(z.number())) })
          .optional()
          .meta({ description: 'Image-shaped layers: per-element penalty, mean over samples and channels' }),
        elementHessian: z.array(z.array(z.array(z.number()))).optional().meta({ description: 'N × d × d, when element is given' }),
      }),
    ),
  })
  .meta({ id: 'HessianResult' });

export const ActivenessResultSchema = z
  .object({
    metric: z.literal('activeness'),
    ...RunInfo,
    ...Estimator('the variances', 'one value per latent, sample and layer with the graph estimator instead of 3 rows'),
    extent: z.number(),
    threshold: z.number(),
    layers: z.array(z.object({ ...LayerBase, activeness: z.array(nullable), unused: z.array(z.number()) })),
    unused: z.array(z.number()).meta({ description: 'Latents below the threshold in every layer' }),
  })
  .meta({ id: 'ActivenessResult' });

export const OrthogonalityResultSchema = z
  .object({
    metric: z.literal('orthogonality'),
    ...RunInfo,
    ...Estimator('the Jacobian norms', 'k values per sample and layer with the graph estimator instead of 1 + k rows'),
    k: z.number(),
    epsilon: z.number(),
    reduction: z.enum(['max', 'mean']),
    variance: z.enum(['unbiased', 'biased']),
    directions: z.enum(['rademacher', 'explicit']),
    score: nullable.meta({ description: 'Sum over layers of Var_v ‖Jv‖², reduced over samples' }),
    layers: z.array(z.object({ ...LayerBase, score: nullable, perSample: z.array(nullable) })),
  })
  .meta({ id: 'OrthogonalityResult' });

export const TraversalResultSchema = z
  .object({
    metric: z.literal('traversal'),
    ...RunInfo,
    layer: z.string().meta({ description: 'The image-shaped layer shown' }),
    imageShape: z.array(z.number()).meta({ description: 'C × H × W of one image' }),
    directions: z.enum(['latents', 'groups', 'basis']).meta({ description: 'What each row moves: one latent, one group, one basis direction' }),
    labels: z.array(z.string()).meta({ description: 'One label per direction, by direction index' }),
    values: z.array(z.number()).meta({ description: 'The values a row moves its direction to (latents: z_i set to them; groups and basis: z plus them along the direction)' }),
    extent: z.number(),
    samplesShown: z.number(),
    order: z.array(z.number()).meta({ description: 'Directions from the top row down' }),
    orderedBy: z.enum(['activeness']).nullable().meta({ description: 'activeness (highest first) for latents; null: direction order' }),
    scores: z.array(nullable).nullable().meta({ description: "The image layer's activeness per direction, when ordered by it" }),
    grid: z.object({ width: z.number(), height: z.number(), cellWidth: z.number(), cellHeight: z.number(), range: z.array(z.number()) }),
    png: z.string().meta({ description: 'The PNG grid, base64 (Accept: image/png returns it as the body)' }),
  })
  .meta({ id: 'TraversalResult' });
export const NoiseResultSchema = z
  .object({
    metric: z.literal('noise'),
    model: z.string().meta({ description: 'SHA-256 of the model bytes' }),
    samples: z.number(),
    seed: z.number(),
    wrt: z.string(),
    epsilon: z.number(),
    k: z.number(),
    reduction: z.enum(['max', 'mean']),
    variance: z.enum(['unbiased', 'biased']),
    points: z.number(),
    margin: z.number(),
    tries: z.array(NoiseTrySchema),
    cached: z.boolean(),
    rows: z.number(),
    batches: z.number(),
    batchRows: z.number().meta({ description: 'Rows of the largest batch run (0 when taken from the cache)' }),
    mode: ExecutionModeSchema,
    executionProvider: z.string(),
    precision: PrecisionSchema,
    layers: z.array(
      z.object({
        ...LayerBase,
        type: z.string(),
        sigma: NoiseSigmaSchema,
        samples: z.number(),
        floor: nullable.meta({ description: 'The penalty floor at this ε, k, reduction and N' }),
        secondDifferenceNoise: nullable.meta({ description: '√6·p90(σ)/ε²: the noise of one second difference' }),
      }),
    ),
    warnings: z.array(WarningSchema),
    timings: Timings,
  })
  .meta({ id: 'NoiseResult' });

export const AuditResultSchema = z
  .object({
    metric: z.literal('audit'),
    model: z.string(),
    samples: z.number(),
    seed: z.number(),
    wrt: z.string(),
    latents: z.number(),
    basis: z.number().nullable(),
    cut: CutSchema.optional(),
    groups: GroupsInfoSchema.optional(),
    penalty: PenaltyResultSchema,
    hessian: HessianResultSchema.nullable().meta({ description: 'null when d is too large for the row limit (see warnings)' }),
    activeness: ActivenessResultSchema,
    orthogonality: OrthogonalityResultSchema,
    warnings: z.array(WarningSchema),
    timings: z.object({ totalMs: z.number() }),
  })
  .meta({ id: 'AuditResult' });

export type Warning = z.infer<typeof WarningSchema>;
export type LayerResult = z.infer<typeof LayerResultSchema>;
export type SweepPoint = z.infer<typeof SweepPointSchema>;
export type PenaltyResult = z.infer<typeof PenaltyResultSchema>;
export type NoiseResult = z.infer<typeof NoiseResultSchema>;
export type NoiseSigma = z.infer<typeof NoiseSigmaSchema>;
export type LayerNoiseResult = z.infer<typeof LayerNoiseSchema>;
export type HessianResult = z.infer<typeof HessianResultSchema> & { previews?: Preview[] };
export type HessianLayer = HessianResult['layers'][number];
export type Heatmap = NonNullable<HessianLayer['heatmap']>;
export type ActivenessResult = z.infer<typeof ActivenessResultSchema>;
export type ActivenessLayer = ActivenessResult['layers'][number];
export type OrthogonalityResult = z.infer<typeof OrthogonalityResultSchema>;
export type OrthogonalityLayer = OrthogonalityResult['layers'][number];
export type TraversalResult = z.infer<typeof TraversalResultSchema>;
export type AuditResult = Omit<z.infer<typeof AuditResultSchema>, 'hessian'> & { hessian: HessianResult | null; previews?: Preview[]; traversal?: TraversalResult };
/** What every audit metric's result says about how it ran. */
export type RunInfo = z.infer<z.ZodObject<typeof RunInfo>>;

/** Generated images of an image-shaped layer ([1 or 3, H, W] per sample), for the report; never in JSON. */
export interface Preview {
  layer: string;
  shape: number[];
  images: Float32Array[];
}
