import type { NDArray } from '../io/ndarray.js';
import type { ExecutionMode, Reduction, VarianceKind } from '../penalty/index.js';

/** Latents as an array (N × …) or drawn from a standard normal with a seed. */
export type LatentsSpec = NDArray | { samples: number; seed?: number };

/** A penalty request, as the CLI and the HTTP routes both build it. */
export interface PenaltyRequest {
  latents?: LatentsSpec;
  wrt?: string;
  inputs?: Record<string, NDArray>;
  k?: number;
  epsilon?: number;
  reduction?: Reduction;
  variance?: VarianceKind;
  layers?: string[];
  seed?: number;
  directions?: NDArray;
  /** Directions in latent space as rows (m × …): the penalty is taken w.r.t. coefficients along them. */
  basis?: NDArray;
  /** Force an execution mode; by default stacked unless the model requires per-pass. */
  mode?: ExecutionMode;
  /** Also report the penalty at each of these ε, on the same latents and directions. */
  epsilons?: number[];
  /** Audit only the first maxSamples samples (the tips' advice for memory). */
  maxSamples?: number;
  /** Run a model with random ops anyway (its numbers then carry a warning). */
  allowNondeterministic?: boolean;
}

export const DEFAULTS = {
  k: 2,
  epsilon: 0.1,
  reduction: 'max' as Reduction,
  variance: 'unbiased' as VarianceKind,
  samples: 8,
};

/** Limits a deployment sets; each one is a documented setting. */
export interface Limits {
  maxSamples: number;
  maxK: number;
  maxRows: number;
  /** Bytes of layer outputs one batch may hold. */
  memoryBudget: number;
  /** Release gate: most samples × resamples bootstrap draws (gate.ts DEFAULT_MAX_BOOTSTRAP_DRAWS when absent). */
  maxBootstrapDraws?: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxSamples: 4096,
  maxK: 4096,
  maxRows: 1_000_000,
  memoryBudget: 512 * 1024 * 1024,
};
