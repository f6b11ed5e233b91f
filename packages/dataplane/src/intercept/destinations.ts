// The outbound destinations interception redirects for one endpoint: every address and declared
// TCP port of a workload endpoint that runs under an identity and has an L7 point (a sidecar to
// originate mTLS to), that the kernel policy lets the endpoint reach. The sidecar takes the
// candidates from its policy view (every such peer it knows, without the kernel check: a view
// holds the endpoint's own policies, not its peers'), opens a listener for each and announces
// them; the agent redirects only those its full calculation lets the endpoint reach.
// Owns: that one rule. Must never: name a destination without an identity (the outbound proxy
// could not check whom it talks to) or one the kernel would not let the endpoint reach.

import { formatIp } from '@palisade/core';
import type { Engine } from '@palisade/core';

export interface InterceptDestination {
  readonly ip: string;
  readonly port: number;
  /** `namespace/name` of the endpoint at that address. */
  readonly endpoint: string;
}

const TCP = 6;

/** Sorted by address, then port; at most `limit` entries (the rest are left to the kernel). */
export function interceptDestinations(
  engine: Engine,
  endpoint: string,
  options: { readonly kernel: boolean; readonly limit?: number },
): InterceptDestination[] {
  const limit = options.limit ?? 1000;
  const out: InterceptDestination[] = [];
  for (const id of engine.workloadEndpoints()) {
    if (id === endpoint) continue;
    const e = engine.describeEndpoint(id);
    if (!e || e.kind !== 'workload' || !e.l7 || !e.serviceAccount || e.ips.length === 0) continue;
    const ports = [...new Set(e.namedPorts.filter((p) => p.protocol === TCP).map((p) => p.port))];
    for (const port of ports.sort((a, b) => a - b)) {
      if (options.kernel && !engine.kernelAllows(endpoint, id, 'TCP', port)) continue;
      for (const ip of e.ips) out.push({ ip: formatIp(ip), port, endpoint: id });
    }
  }
  out.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port));
  return out.slice(0, limit);
}
