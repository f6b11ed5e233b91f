// Public surface of the L7 sidecar: the inbound mTLS enforcement point, the outbound proxy, the
// per-endpoint policy view and the access log.
export { InboundSidecar } from './inbound.js';
export type { InboundOptions } from './inbound.js';
export { PolicyView, PolicyViewHolder } from './policy-view.js';
export type {
  HolderStatus,
  InboundRequest,
  OutboundRequest,
  SidecarDecision,
  ViewResult,
} from './policy-view.js';
export { AccessLog, newCounters, provenanceSummary } from './access-log.js';
export type { AccessRecord, SidecarCounters } from './access-log.js';
export { OutboundProxy } from './outbound.js';
export { credentialProblem } from './credentials.js';
export type { Credentials } from './credentials.js';
export type { OutboundOptions } from './outbound.js';
export { AdminServer } from './admin.js';
export type { AdminSources } from './admin.js';
export { checkRequestPath } from './request.js';
export { runSidecar } from './run-sidecar.js';
export type { RunningSidecar, SidecarOptions, SidecarStatus } from './run-sidecar.js';
export { AgentLink, AgentRequestError, viewFromSync } from './agent-link.js';
export type { AgentLinkOptions, AgentLinkStatus } from './agent-link.js';
export { SvidRotation } from './svid-rotation.js';
export type { SvidRotationOptions, SvidRotationStatus } from './svid-rotation.js';
export { DataplaneError } from '../errors.js';
