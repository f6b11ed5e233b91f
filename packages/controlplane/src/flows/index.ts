// The flow store's public surface (`@palisade/controlplane/flows`): the record and its validation
// (also the node's wire contract), the store, the routes and the counters.
export * from './flow-record.js';
export { FlowStore, DEFAULT_FLOW_RETENTION } from './flow-store.js';
export type {
  FlowQuery,
  FlowRetention,
  FlowStats,
  GraphEdge,
  GraphNode,
  PolicyHits,
} from './flow-store.js';
export { FlowService, parseFlowTime } from './flow-api.js';
export { FlowMetrics } from './flow-metrics.js';
