export * from './html.js';
export * from './traversal.js';
