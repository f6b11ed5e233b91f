// Shared by the L7 conformance runners: what the destination's L7 point decides for a check, as
// `PolicyView.decideInbound` reads it (the destination's L7 rules and the Istio layer both allow;
// anything that ended L7 early is a refusal).
import type { CheckResult } from '../packages/core/src/engine/types.js';

export function inboundVerdict(r: CheckResult): 'allow' | 'deny' {
  return r.l7.ingress?.verdict === 'allow' && r.l7.istio?.verdict === 'allow' ? 'allow' : 'deny';
}
