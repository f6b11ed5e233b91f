// The agent's CNI ports backed by the API server: the `EndpointRegistry` writes the
// WorkloadEndpoint the CNI plugin asked for with the node's token (the node role may write only
// its own node's endpoints), the `PodSource` reads the Pods the agent already mirrors. The
// attachment facts the WorkloadEndpoint has no field for (container id, interface, netns) travel
// as `palisade.dev/*` annotations, so a restarted agent finds its attachments again.
// Owns: the mapping RegisteredEndpoint <-> WorkloadEndpoint. Must never: let two attachments hold
// one address, or write an endpoint of another node.

import type { WorkloadEndpoint } from '@palisade/core';
import { RegistryConflictError } from '../agent-socket/endpoint-registry.js';
import type { EndpointRegistry } from '../agent-socket/endpoint-registry.js';
import { podInfoFromResource } from '../agent-socket/pod-source.js';
import type { PodInfo, PodSource } from '../agent-socket/pod-source.js';
import type { RegisteredEndpoint } from '../agent-socket/protocol.js';
import type { Agent } from './agent.js';

const A = {
  container: 'palisade.dev/container-id',
  ifname: 'palisade.dev/ifname',
  netns: 'palisade.dev/netns',
  network: 'palisade.dev/network',
  source: 'palisade.dev/source',
  at: 'palisade.dev/registered-at',
} as const;

function addressesOf(w: WorkloadEndpoint): string[] {
  return (w.spec.ipNetworks ?? []).map((n) => n.split('/')[0] ?? n);
}

function fromWep(w: WorkloadEndpoint): RegisteredEndpoint | undefined {
  const a = w.metadata.annotations ?? {};
  const containerId = a[A.container];
  const ifname = a[A.ifname];
  if (containerId === undefined || ifname === undefined || !w.spec.interfaceName) return undefined;
  return {
    network: a[A.network] ?? '',
    containerId,
    ifname,
    hostIfname: w.spec.interfaceName,
    netns: a[A.netns] ?? '',
    source: a[A.source] === 'cni-args' ? 'cni-args' : 'pod',
    workloadEndpoint: w,
    registeredAt: a[A.at] ?? '',
  };
}

const wepPath = (ns: string, name: string): string =>
  `/api/v1/projectcalico.org/WorkloadEndpoint/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;

export class ApiEndpointRegistry implements EndpointRegistry {
  /** Writes acknowledged by the API and not yet seen on the watch. */
  private readonly recent = new Map<string, RegisteredEndpoint | null>();

  constructor(private readonly agent: Agent) {}

  private key(containerId: string, ifname: string): string {
    return `${containerId}\0${ifname}`;
  }

  private mine(): Map<string, RegisteredEndpoint> {
    const out = new Map<string, RegisteredEndpoint>();
    for (const w of this.agent.workloadEndpoints()) {
      const ep = fromWep(w);
      if (ep) out.set(this.key(ep.containerId, ep.ifname), ep);
    }
    for (const [k, ep] of this.recent) {
      if (ep) out.set(k, ep);
      else out.delete(k);
    }
    return out;
  }

  async register(ep: RegisteredEndpoint): Promise<void> {
    const k = this.key(ep.containerId, ep.ifname);
    const w = ep.workloadEndpoint;
    if (w.spec.node !== this.agent.node)
      throw new RegistryConflictError(
        `endpoint of node ${w.spec.node ?? '?'} on node ${this.agent.node}`,
      );
    const wanted = new Set(addressesOf(w));
    for (const [other, o] of this.mine())
      if (other !== k)
        for (const a of addressesOf(o.workloadEndpoint))
          if (wanted.has(a))
            throw new RegistryConflictError(
              `address ${a} is registered to container ${o.containerId} (${o.ifname})`,
            );
    const body: WorkloadEndpoint = {
      ...w,
      metadata: {
        ...w.metadata,
        annotations: {
          ...(w.metadata.annotations ?? {}),
          [A.container]: ep.containerId,
          [A.ifname]: ep.ifname,
          [A.netns]: ep.netns,
          [A.network]: ep.network,
          [A.source]: ep.source,
          [A.at]: ep.registeredAt,
        },
      },
    };
    const ns = w.metadata.namespace ?? 'default';
    // Replace (a re-ADD of the same attachment), or create when it does not exist yet.
    let r = await this.agent.api.call('PUT', wepPath(ns, w.metadata.name), body);
    if (r.status === 404)
      r = await this.agent.api.call(
        'POST',
        `/api/v1/projectcalico.org/WorkloadEndpoint/${encodeURIComponent(ns)}`,
        body,
      );
    if (r.status !== 200 && r.status !== 201)
      throw new Error(
        `the API refused WorkloadEndpoint ${ns}/${w.metadata.name}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`,
      );
    this.recent.set(k, { ...ep, workloadEndpoint: body });
  }

  async deregister(containerId: string, ifname: string): Promise<boolean> {
    const k = this.key(containerId, ifname);
    const ep = this.mine().get(k);
    if (!ep) return false;
    const w = ep.workloadEndpoint;
    const r = await this.agent.api.call(
      'DELETE',
      wepPath(w.metadata.namespace ?? 'default', w.metadata.name),
    );
    if (r.status !== 200 && r.status !== 404)
      throw new Error(
        `the API refused to delete WorkloadEndpoint ${w.metadata.name}: HTTP ${r.status}`,
      );
    this.recent.set(k, null);
    return r.status === 200;
  }

  get(containerId: string, ifname: string): Promise<RegisteredEndpoint | undefined> {
    return Promise.resolve(this.mine().get(this.key(containerId, ifname)));
  }

  list(): Promise<readonly RegisteredEndpoint[]> {
    return Promise.resolve([...this.mine().values()]);
  }
}

/** Pods as the agent mirrors them from the API. */
export class AgentPodSource implements PodSource {
  constructor(private readonly agent: Agent) {}

  getPod(namespace: string, name: string): Promise<PodInfo | undefined> {
    const p = this.agent.pod(namespace, name);
    return Promise.resolve(p ? podInfoFromResource(p) : undefined);
  }
}
