// The endpoints of a Kubernetes Service, as Calico's service rules see them (`source.services`,
// `destination.services`; the rule field's reference: "only traffic that originates from or
// terminates at endpoints within the selected service(s) will be matched, and only to/from each
// endpoint's port"). Felix takes them from the Service's EndpointSlices (label
// `kubernetes.io/service-name`): every address of every endpoint, ready or not; with ports, each
// address with each slice port that has a number (protocol TCP unless given; a port without a
// number contributes nothing). Where the input has no EndpointSlice for a Service, the legacy
// `v1` Endpoints object of that name stands in (Kubernetes mirrors one into the other), and with
// neither the endpoints are derived as the EndpointSlice controller would derive them: the pods of
// the Service's namespace its selector picks, with the target ports resolved on each pod (named
// target ports by the pod's container ports). A Service without selector, slices or Endpoints
// has no endpoints: its rules match nothing (fail closed).
// Pure. Owns: a service's endpoint addresses and ports. Must never: look at cluster IPs (Calico
// matches after DNAT, on the endpoints).

import type { EndpointSlice, Endpoints, EndpointSlicePort, Service } from '../model/resources.js';
import { formatIp, parseIp } from '../net/ip.js';
import type { IpAddr } from '../net/ip.js';
import { protocolNumber } from './matchers.js';
import type { Endpoint } from './model.js';

export interface ServiceMembers {
  /** Canonical address text of every endpoint. */
  readonly addresses: ReadonlySet<string>;
  /** `address|protocol|port` of every endpoint port. */
  readonly ports: ReadonlySet<string>;
  /** Where they came from, for explanations. */
  readonly from: 'EndpointSlice' | 'Endpoints' | 'selector' | 'none';
}

export function memberKey(ip: IpAddr, protocol: number, port: number): string {
  return `${formatIp(ip)}|${protocol}|${port}`;
}

function portsOf(list: readonly EndpointSlicePort[] | undefined): [number, number][] {
  const out: [number, number][] = [];
  for (const p of list ?? [])
    if (typeof p.port === 'number') out.push([protocolNumber(p.protocol ?? 'TCP') ?? 6, p.port]);
  return out;
}

function add(
  addresses: Set<string>,
  ports: Set<string>,
  text: string,
  list: readonly [number, number][],
): void {
  const ip = parseIp(text);
  if (!ip) return;
  addresses.add(formatIp(ip));
  for (const [proto, port] of list) ports.add(memberKey(ip, proto, port));
}

/**
 * A service's endpoints from what the input holds: its EndpointSlices, else its Endpoints, else
 * its selector over `workloads` (the workload endpoints of the service's namespace).
 */
export function serviceMembers(
  service: Service | undefined,
  slices: readonly EndpointSlice[],
  endpoints: Endpoints | undefined,
  workloads: () => readonly Endpoint[],
): ServiceMembers {
  const addresses = new Set<string>();
  const ports = new Set<string>();
  if (slices.length > 0) {
    for (const s of slices) {
      if (s.addressType === 'FQDN') continue;
      const list = portsOf(s.ports);
      for (const e of s.endpoints ?? [])
        for (const a of e.addresses) add(addresses, ports, a, list);
    }
    return { addresses, ports, from: 'EndpointSlice' };
  }
  if (endpoints) {
    for (const sub of endpoints.subsets ?? []) {
      const list = portsOf(sub.ports);
      for (const a of [...(sub.addresses ?? []), ...(sub.notReadyAddresses ?? [])])
        add(addresses, ports, a.ip, list);
    }
    return { addresses, ports, from: 'Endpoints' };
  }
  const selector = service?.spec.selector;
  if (!service || !selector || Object.keys(selector).length === 0)
    return { addresses, ports, from: 'none' };
  const ns = service.metadata.namespace ?? 'default';
  for (const ep of workloads()) {
    if (ep.kind !== 'workload' || ep.namespace !== ns) continue;
    let picked = true;
    for (const [k, v] of Object.entries(selector))
      if (ep.ownLabels[k] !== v) {
        picked = false;
        break;
      }
    if (!picked) continue;
    for (const ip of ep.ips) {
      addresses.add(formatIp(ip));
      for (const sp of service.spec.ports ?? []) {
        const proto = protocolNumber(sp.protocol ?? 'TCP') ?? 6;
        const target = sp.targetPort ?? sp.port;
        if (typeof target === 'number') ports.add(memberKey(ip, proto, target));
        else
          for (const np of ep.namedPorts)
            if (np.name === target && np.protocol === proto)
              ports.add(memberKey(ip, proto, np.port));
      }
    }
  }
  return { addresses, ports, from: 'selector' };
}
