// Public surface of the control plane.
export * from './store/store.js';
export { MemoryStore } from './store/memory-store.js';
