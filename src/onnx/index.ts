export * from './describe.js';
export * from './expose.js';
export * from './types.js';
export * from './safety.js';
export * from './risks.js';
export * from './cut.js';
export * from './suffix.js';
