// Public surface of the CNI plugin and of the agent's CNI socket.
export { CniError, cniErrorResult, CNI_NUMERIC_CODES } from './cni-error.js';
export type { CniErrorCode, CniErrorResult } from './cni-error.js';
export {
  parseCniRequest,
  SUPPORTED_VERSIONS,
  DEFAULT_DATA_DIR,
  DEFAULT_AGENT_SOCKET,
} from './config.js';
export type { Attachment, CniArgs, CniRequest, CniResult, Env, NetConf } from './config.js';
export { SqliteIpam, IPAM_DB_FILE } from './ipam.js';
export type { Allocation, AllocateResult, Ipam, IpamPool } from './ipam.js';
export { IpNetlink, hostVethName, podMacFor, POD_GATEWAY, NODE_VETH_MAC } from './netlink.js';
export type { Netlink, PodLink, PodLinkRef } from './netlink.js';
export { AgentCallError, UnixSocketAgentClient } from './agent-client.js';
export type { AgentClient } from './agent-client.js';
export { runCniPlugin } from './plugin.js';
export type { PluginDeps, PluginOutput } from './plugin.js';
export { cniCommand, defaultPluginDeps } from './command.js';
export type { CniIo } from './command.js';
export * from '../agent-socket/index.js';
