// Public surface of the node agent: the API mirror and apply loop, its client, and the CNI ports
// backed by the API.
export { Agent, countRules } from './agent.js';
export type { AgentOptions, AgentStatus } from './agent.js';
export { ApiClient, ApiRequestError } from './api-client.js';
export type { ApiClientOptions, ApiObject, ApiReply, ObjectEventType } from './api-client.js';
export { AgentPodSource, ApiEndpointRegistry } from './api-registry.js';
export type { ApiEndpointRegistryOptions } from './api-registry.js';
export { CniEndpointService, startAgentSocket } from '../agent-socket/server.js';
export { DEFAULT_AGENT_SOCKET_PATH } from '../agent-socket/server.js';
export type { AgentSocket } from '../agent-socket/server.js';
export { HOST_VETH_PREFIX } from '../cni/netlink.js';
export { DEFAULT_ADMIN_SOCKET_PATH, handleAdminRequest, startAdminSocket } from './admin-socket.js';
export type { AdminSocket } from './admin-socket.js';
export { endpointReport, kernelRules, statusReport } from './introspect.js';
export type { AgentView, EndpointReport, StatusReport } from './introspect.js';
export { DEFAULT_RECORD_PATH, LocalEndpointRecord } from './local-record.js';
export type { RecordedEndpoint, Tombstone } from './local-record.js';
export type { MirrorChange } from './agent.js';
export { PolicySync } from './policysync.js';
export type { PolicySyncOptions, SvidReply } from './policysync.js';
export { EndpointSockets } from '../agent-socket/endpoint-sockets.js';
export type { EndpointSocketsOptions, PolicySyncSource } from '../agent-socket/endpoint-sockets.js';
export { DEFAULT_ENDPOINT_SOCKET_DIR, endpointSocketPath } from '../agent-socket/protocol.js';
export { DEFAULT_SIDECAR_UID, InterceptionManager } from './interception.js';
export type { InterceptedEndpoint, InterceptionManagerOptions } from './interception.js';
