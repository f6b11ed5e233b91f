// Which of this node's HostEndpoints govern which interface, as Calico's Felix resolves them
// (docs.tigera.io, HostEndpoint resource: "interfaceName: * represents all of a host's real or
// virtual interfaces"; "a host endpoint for one specific real interface is configured by
// interfaceName, or by leaving interfaceName empty and including one of the interface's IPs in
// expectedIPs"; "Host endpoints with interfaceName: * do not support untracked policy"):
// - a host endpoint naming an interface claims that interface (present or not: its rules take
//   effect when the interface appears);
// - a host endpoint without `interfaceName` claims every non-workload interface that carries one
//   of its `expectedIPs`;
// - several claiming one interface: the alphabetically first name governs it, the others do not
//   (Felix keeps one active host endpoint per interface);
// - `interfaceName: '*'` (the first such by name) governs every other host interface except
//   loopback; workload interfaces (the workload prefix) are never host endpoints.
// Pure: the interface list is an input (the agent reads it from the kernel).
// Owns: the host endpoint ⇄ interface mapping. Must never: guess an interface for an address
// no interface carries.

function canonicalIp(s: string): string | undefined {
  // Addresses only (`ip -j` reports the prefix length apart); anything else matches nothing.
  const ip = parseIp(s);
  return ip ? formatIp(ip) : undefined;
}

import { formatIp, parseIp } from '@palisade/core';
import type { HostEndpoint } from '@palisade/core';
import type { LocalEndpoint } from './types.js';

/** One interface of the node and the addresses on it. */
export interface HostInterface {
  readonly name: string;
  readonly addresses: readonly string[];
}

export interface HostEndpointResolution {
  /** Interface per governing host endpoint (`*` for the all-interfaces one), sorted by ref. */
  readonly locals: readonly LocalEndpoint[];
  /** Host endpoints of this node that govern no interface, with the reason. */
  readonly inactive: readonly { readonly ref: string; readonly why: string }[];
}

/**
 * Resolves this node's host endpoints to interfaces. `interfaces` undefined means the list is not
 * known (not read yet, or reading failed): host endpoints given only by addresses stay inactive.
 * A host endpoint whose addresses sit on several interfaces governs the first of them by name
 * (one interface per endpoint here; Felix would program it on each).
 */
export function resolveHostEndpoints(
  heps: readonly HostEndpoint[],
  node: string,
  interfaces: readonly HostInterface[] | undefined,
  workloadPrefix?: string,
): HostEndpointResolution {
  const mine = heps
    .filter((h) => h.spec.node === node)
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  const inactive: { ref: string; why: string }[] = [];
  const claims = new Map<string, string[]>();
  const claim = (iface: string, ref: string) => {
    const list = claims.get(iface);
    if (list) list.push(ref);
    else claims.set(iface, [ref]);
  };
  let star: string | undefined;
  const hostIfaces = (interfaces ?? []).filter(
    (i) => i.name !== 'lo' && (workloadPrefix === undefined || !i.name.startsWith(workloadPrefix)),
  );
  const byAddress = new Map<string, string[]>();
  for (const i of [...hostIfaces].sort((a, b) => (a.name < b.name ? -1 : 1)))
    for (const a of i.addresses) {
      const c = canonicalIp(a);
      if (c === undefined) continue;
      const list = byAddress.get(c);
      if (list) list.push(i.name);
      else byAddress.set(c, [i.name]);
    }
  for (const h of mine) {
    const ref = h.metadata.name;
    const name = h.spec.interfaceName;
    if (name === '*') {
      if (star === undefined) star = ref;
      else inactive.push({ ref, why: `all-interfaces host endpoint ${star} governs this node` });
      continue;
    }
    if (name !== undefined && name !== '') {
      if (workloadPrefix !== undefined && name.startsWith(workloadPrefix)) {
        inactive.push({ ref, why: `${name} is a workload interface` });
        continue;
      }
      claim(name, ref);
      continue;
    }
    if (interfaces === undefined) {
      inactive.push({ ref, why: 'the node interfaces are not known yet' });
      continue;
    }
    const found = new Set<string>();
    for (const ip of h.spec.expectedIPs ?? []) {
      const c = canonicalIp(ip);
      for (const i of (c !== undefined ? byAddress.get(c) : undefined) ?? []) found.add(i);
    }
    if (found.size === 0) {
      inactive.push({ ref, why: 'no host interface carries any of its expectedIPs' });
      continue;
    }
    for (const i of found) claim(i, ref);
  }
  const locals: LocalEndpoint[] = [];
  const placed = new Set<string>();
  for (const iface of [...claims.keys()].sort()) {
    const winner = (claims.get(iface) ?? [])
      .filter((r) => !placed.has(r))
      .sort()
      .at(0);
    if (winner === undefined) continue;
    placed.add(winner);
    locals.push({ ref: winner, iface });
  }
  for (const [iface, refs] of claims)
    for (const r of refs)
      if (!placed.has(r))
        inactive.push({
          ref: r,
          why: `interface ${iface} is governed by host endpoint ${locals.find((l) => l.iface === iface)?.ref ?? '?'}`,
        });
  if (star !== undefined) locals.push({ ref: star, iface: '*' });
  locals.sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  const seen = new Set<string>();
  return {
    locals,
    inactive: inactive
      .filter((x) => !placed.has(x.ref) && !seen.has(x.ref) && (seen.add(x.ref), true))
      .sort((a, b) => (a.ref < b.ref ? -1 : 1)),
  };
}
