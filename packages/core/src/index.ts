// Public surface of the policy core.
export * from './model/resources.js';
export * from './diagnostics/diagnostic.js';
export * from './diagnostics/suggest.js';
export * from './engine/types.js';
export * from './engine/engine.js';
export * from './selector/selector.js';
export * from './errors.js';
export * from './load/load.js';
export { LOAD_ERRORS } from './load/codes.js';
export type {
  KernelProgram,
  KernelSegment,
  KernelStep,
  PeerPredicate,
} from './engine/kernel-program.js';
export { formatIp } from './net/ip.js';
export { FAILSAFE_INBOUND, FAILSAFE_OUTBOUND } from './engine/evaluate.js';
export { cidrContains, cidrWithin, parseCidr, parseIp } from './net/ip.js';
export type { Cidr, IpAddr } from './net/ip.js';
