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
export { ApiServer } from './server/api.js';
export type { ApiServerOptions } from './server/api.js';
export { runServer, ServerStartError, parseListen } from './server/run-server.js';
export type { RunServerOptions, RunningServer } from './server/run-server.js';
export { verifyAudit, queryAudit } from './audit/audit-log.js';
export { resolveKindName, SERVER_KINDS } from './resources/kinds.js';
export type { ServerKind } from './resources/kinds.js';
export { nodeMayRequestIdentity } from './auth/node-identity.js';
