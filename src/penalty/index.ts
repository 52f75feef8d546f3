export * from './estimate.js';
export * from './perturb.js';
export * from './plan.js';
export * from './prng.js';
export * from './reduction.js';
export * from './sampling.js';
export * from './second-difference.js';
export * from './variance.js';
