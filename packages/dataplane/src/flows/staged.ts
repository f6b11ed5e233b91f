// The would-be verdicts of staged policies for kernel flow records (DESIGN §4.8). Staged policies
// are never rendered into the kernel, so the trace cannot name them: the node's own engine judges
// the record's 5-tuple (source, destination, protocol, destination port) at the record's side
// (egress at the source, ingress at the destination) and reports what each staged policy there
// would have done. The aggregator asks once per distinct tuple per interval, within a budget.
// Owns: that question. Must never: change a verdict, throw into the flow pipeline, or run a full
// evaluation for an endpoint that no staged policy selects (the common case costs one lookup).

import type { Engine } from '@palisade/core';
import type { FlowObservation, StagedObservation } from './observation.js';

/** The flow store's bounds (controlplane flow-record.ts FLOW_LIMITS: staged, name). */
const MAX_STAGED = 32;
const MAX_NAME = 253;

/** What the lookup needs of the engine (the agent's calculation engine). */
export type StagedEngine = Pick<Engine, 'activeTiers' | 'check'>;

/**
 * Staged verdicts for one observation's tuple: undefined when no staged policy covers its side,
 * else one entry per staged policy selecting that endpoint for that direction, in order.
 */
export type StagedLookup = (ob: FlowObservation) => readonly StagedObservation[] | undefined;

/** The key the lookup's answer depends on (everything else of a record is beside the point). */
export function stagedKey(ob: FlowObservation): string {
  return `${ob.direction ?? ''}\u0000${ob.srcIp}\u0000${ob.dstIp}\u0000${ob.protocol}\u0000${ob.dstPort ?? ''}`;
}

/** A lookup against the engine `engine()` returns at the time of the question. */
export function engineStagedLookup(engine: () => StagedEngine): StagedLookup {
  return (ob) => {
    if (ob.direction === undefined) return undefined;
    const e = engine();
    // The side the record was judged at: only its staged policies matter.
    const side = ob.direction === 'egress' ? ob.srcIp : ob.dstIp;
    const active = e.activeTiers(side);
    if (!active) return undefined;
    const tiers = ob.direction === 'egress' ? active.egress : active.ingress;
    if (!tiers.some((t) => t.staged.length > 0)) return undefined;
    const out = e.check(
      {
        from: ob.srcIp,
        to: ob.dstIp,
        protocol: /^\d{1,3}$/.test(ob.protocol) ? Number(ob.protocol) : ob.protocol,
        ...(ob.dstPort !== undefined ? { port: ob.dstPort } : {}),
      },
      false,
      true,
    );
    if (!out.ok) return undefined;
    const v = ob.direction === 'egress' ? out.result.kernel.egress : out.result.kernel.ingress;
    if (!v.staged || v.staged.length === 0) return undefined;
    // Within what the server stores (a record with more would be refused with its whole batch).
    return v.staged.slice(0, MAX_STAGED).map((s) => ({
      policy: s.policy.slice(0, MAX_NAME),
      tier: s.tier.slice(0, MAX_NAME),
      verdict: s.verdict,
      ...(s.rule !== undefined ? { rule: s.rule } : {}),
    }));
  };
}
