// Public surface of the agent's CNI socket.
export * from './protocol.js';
export { InMemoryPodTable, podInfoFromResource } from './pod-source.js';
export type { PodInfo, PodSource } from './pod-source.js';
export { InMemoryEndpointRegistry, RegistryConflictError } from './endpoint-registry.js';
export type { EndpointRegistry } from './endpoint-registry.js';
export {
  CniEndpointService,
  DEFAULT_AGENT_SOCKET_PATH,
  handleAgentRequest,
  startAgentSocket,
  workloadEndpointName,
} from './server.js';
export type {
  AgentSocket,
  AgentSocketOptions,
  CniEndpointServiceOptions,
  Reply,
} from './server.js';
export { EndpointSockets } from './endpoint-sockets.js';
export type {
  EndpointSocketsOptions,
  InterceptSink,
  PolicySyncSource,
} from './endpoint-sockets.js';
