// Public surface of the Envoy integration: the ext_authz v3 server, its policy sources, and the
// Envoy RBAC filter export.
export { AuthzServer, METADATA_KEY, PEER_IDENTITY_HEADER } from './server.js';
export type { AuthzServerOptions, AuthzStats } from './server.js';
export { listenerCredentials, uriSans } from './listener-tls.js';
export type { ListenerResult, ListenerSecurity } from './listener-tls.js';
export { AuthzViews } from './views.js';
export type { Selected, ViewsOptions, ViewsStatus } from './views.js';
export { FileSource, PushSource, filesSignature, readResourceFiles } from './source.js';
export type {
  PolicySnapshot,
  PolicySource,
  PolicySourceHandlers,
  ResourceSnapshot,
  ViewSnapshot,
} from './source.js';
export { checkAttributes } from './attributes.js';
export type { AttributesResult, CheckAttributes } from './attributes.js';
export {
  authorizationClient,
  authorizationService,
  CHECK_METHOD,
  PROTO_DIR,
  RPC_CODE,
} from './proto.js';
export type { CheckRequestMsg, CheckResponseMsg } from './proto.js';
export { AccessLog } from '../sidecar/access-log.js';
export type { AccessRecord, SidecarCounters } from '../sidecar/access-log.js';
export { exportEnvoyRbac } from './envoy-rbac.js';
export type {
  CidrRange,
  HeaderMatcher,
  Permission,
  Principal,
  RbacExportOptions,
  RbacExportResult,
  RbacExportSummary,
  RbacHttpFilter,
  RbacPolicy,
  RbacRules,
  StringMatcher,
} from './envoy-rbac.js';
export { AgentSource } from './agent-source.js';
export type { AgentSourceOptions } from './agent-source.js';
