// Public surface of the dataplane: calculation (desired state), rendering (nftables text) and the
// driver (the only code that runs nft).
export { Calculation } from './calc/calculation.js';
export type { CalcNote, CalculationOptions } from './calc/calculation.js';
export type * from './calc/types.js';
export {
  render,
  renderRule,
  DEFAULT_FAILSAFE_INBOUND,
  DEFAULT_FAILSAFE_OUTBOUND,
} from './nft/render.js';
export type { FailsafePort, RenderOptions, Rendered } from './nft/render.js';
export { NftDriver, processRunner, readTable } from './nft/driver.js';
export { openSession } from './nft/session.js';
export type { NftSession, SessionKind, SessionOptions } from './nft/session.js';
export type {
  ApplyKind,
  ApplyReport,
  DriverOptions,
  NftResult,
  NftRunner,
  ResyncReport,
} from './nft/driver.js';
export { DataplaneError } from './errors.js';
export type { DataplaneErrorCode } from './errors.js';
export {
  DEFAULT_INTERCEPT_TABLE,
  Interception,
  assignOutboundPorts,
  installInterception,
  removeInterception,
  renderInterception,
  validateInterception,
} from './intercept/index.js';
export type {
  InboundRedirect,
  InterceptionSpec,
  InterceptionTarget,
  OutboundRedirect,
} from './intercept/index.js';
