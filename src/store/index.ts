export * from './model-store.js';
