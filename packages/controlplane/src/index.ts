// Public surface of the control plane.
export * from './store/store.js';
export { MemoryStore } from './store/memory-store.js';
export { SqliteStore, type SqliteStoreOptions } from './store/sqlite-store.js';
export { EtcdStore, type EtcdStoreOptions } from './store/etcd-store.js';
export {
  openStore,
  parseStoreUrl,
  type OpenStoreOptions,
  type StoreUrl,
} from './store/open-store.js';
// Test support: starts a real etcd on loopback ports (for tests of other packages).
export { EtcdCluster } from './store/etcd-harness.js';
