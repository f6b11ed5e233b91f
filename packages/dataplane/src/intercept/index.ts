// Public surface of transparent interception: the pure renderer and the install/remove API the
// agent and the demo use to redirect a pod's traffic through its sidecar.
export {
  DEFAULT_INTERCEPT_TABLE,
  assignOutboundPorts,
  renderInterception,
  validateInterception,
} from './render.js';
export type { InboundRedirect, InterceptionSpec, OutboundRedirect } from './render.js';
export { Interception, installInterception, removeInterception } from './install.js';
export type { InterceptionTarget } from './install.js';
export { interceptDestinations } from './destinations.js';
export type { InterceptDestination } from './destinations.js';
export { netnsPathProblem, netnsPathRunner } from './netns-runner.js';
