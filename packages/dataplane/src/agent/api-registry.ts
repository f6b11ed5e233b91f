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
import type { LocalEndpointRecord } from './local-record.js';

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

/** The API could not be reached, or answered that it cannot serve now: try again later. */
function unavailable(status: number): boolean {
  return status === 0 || status === 502 || status === 503 || status === 504;
}

export interface ApiEndpointRegistryOptions {
  /**
   * The agent's local record: with it, an attachment made while the API is unreachable succeeds
   * (programmed locally, written to the API when it returns), and endpoints the API lost are
   * re-asserted. Without it, registration needs the API.
   */
  readonly record?: LocalEndpointRecord;
}

export class ApiEndpointRegistry implements EndpointRegistry {
  /** Writes acknowledged by the API and not yet seen on the watch. */
  private readonly recent = new Map<string, RegisteredEndpoint | null>();
  private readonly record: LocalEndpointRecord | undefined;
  private reasserting: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly agent: Agent,
    options: ApiEndpointRegistryOptions = {},
  ) {
    this.record = options.record;
    if (this.record) {
      if (this.record.loadProblem) agent.note(this.record.loadProblem);
      for (const e of this.record.list()) agent.assertLocal(e.workloadEndpoint);
      agent.onSynced(() => void this.reassert());
    }
  }

  /** Puts the record into the API where the API lacks it; replays deletions. Single flight. */
  reassert(): Promise<void> {
    if (!this.record) return Promise.resolve();
    if (this.reasserting) {
      this.again = true;
      return this.reasserting;
    }
    this.reasserting = (async () => {
      do {
        this.again = false;
        await this.reassertOnce().catch((e: unknown) =>
          this.agent.note(`re-asserting endpoints: ${e instanceof Error ? e.message : String(e)}`),
        );
      } while (this.again);
    })().finally(() => (this.reasserting = undefined));
    return this.reasserting;
  }

  private async reassertOnce(): Promise<void> {
    const record = this.record;
    if (!record || !this.agent.status().connected) return;
    const inApi = new Map<string, WorkloadEndpoint>();
    for (const w of this.agent.workloadEndpoints())
      inApi.set(`${w.metadata.namespace ?? 'default'}/${w.metadata.name}`, w);
    for (const e of record.list()) {
      const w = e.workloadEndpoint;
      const ns = w.metadata.namespace ?? 'default';
      const have = inApi.get(`${ns}/${w.metadata.name}`);
      const same =
        have !== undefined &&
        have.spec.interfaceName === w.spec.interfaceName &&
        JSON.stringify(have.spec.ipNetworks ?? []) === JSON.stringify(w.spec.ipNetworks ?? []) &&
        have.metadata.annotations?.[A.container] === e.containerId;
      if (same) {
        if (!e.acknowledged) record.put(e, true);
        continue;
      }
      // A pod the orchestrator no longer has is not brought back; its record waits for CNI DEL.
      if (e.source === 'pod' && this.agent.pod(ns, w.spec.pod ?? '') === undefined) {
        this.agent.note(
          `endpoint ${ns}/${w.metadata.name} is attached but pod ${ns}/${w.spec.pod ?? '?'} is not in the API; not re-asserted`,
        );
        continue;
      }
      const r = await this.write(w);
      if (r.status === 200 || r.status === 201) {
        record.put(e, true);
        this.agent.note(`re-asserted endpoint ${ns}/${w.metadata.name} in the API`, false);
      } else if (!unavailable(r.status))
        this.agent.note(
          `the API refused to re-assert ${ns}/${w.metadata.name}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`,
        );
    }
    for (const t of record.listTombstones()) {
      const have = inApi.get(`${t.namespace}/${t.name}`);
      if (have && have.metadata.annotations?.[A.container] !== t.containerId) {
        record.clearTombstone(t.namespace, t.name); // re-created by a later attachment
        continue;
      }
      if (!have) {
        record.clearTombstone(t.namespace, t.name);
        continue;
      }
      const r = await this.agent.api.call('DELETE', wepPath(t.namespace, t.name));
      if (r.status === 200 || r.status === 404) record.clearTombstone(t.namespace, t.name);
    }
  }

  /** PUT, or POST when it does not exist; a network failure is status 0. */
  private async write(body: WorkloadEndpoint): Promise<{ status: number; body: unknown }> {
    const ns = body.metadata.namespace ?? 'default';
    try {
      let r = await this.agent.api.call('PUT', wepPath(ns, body.metadata.name), body);
      if (r.status === 404)
        r = await this.agent.api.call(
          'POST',
          `/api/v1/projectcalico.org/WorkloadEndpoint/${encodeURIComponent(ns)}`,
          body,
        );
      return r;
    } catch (e) {
      if (!this.record) throw e;
      return { status: 0, body: e instanceof Error ? e.message : String(e) };
    }
  }

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
    // The local record is what this node knows it attached, API or not.
    if (this.record) {
      for (const e of this.record.list()) out.set(this.key(e.containerId, e.ifname), e);
      for (const t of this.record.listTombstones())
        for (const [k, ep] of out)
          if (ep.containerId === t.containerId && ep.workloadEndpoint.metadata.name === t.name)
            out.delete(k);
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
    const recorded: RegisteredEndpoint = { ...ep, workloadEndpoint: body };
    // Recorded (and programmed) before the API is asked: an outage does not stop the pod.
    if (this.record) {
      this.record.put(recorded, false);
      this.agent.assertLocal(body);
    }
    // Replace (a re-ADD of the same attachment), or create when it does not exist yet.
    const r = await this.write(body);
    if (this.record && unavailable(r.status)) {
      this.agent.note(
        `API unavailable: endpoint ${ns}/${w.metadata.name} recorded locally and programmed; it is written to the API when it returns`,
        false,
      );
      return;
    }
    if (r.status !== 200 && r.status !== 201) {
      if (this.record) {
        this.record.delete(ep.containerId, ep.ifname, false);
        this.agent.retractLocal(ns, w.metadata.name);
      }
      throw new Error(
        `the API refused WorkloadEndpoint ${ns}/${w.metadata.name}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`,
      );
    }
    this.record?.put(recorded, true);
    this.recent.set(k, recorded);
  }

  async deregister(containerId: string, ifname: string): Promise<boolean> {
    const k = this.key(containerId, ifname);
    const ep = this.mine().get(k);
    if (!ep) return false;
    const w = ep.workloadEndpoint;
    const ns = w.metadata.namespace ?? 'default';
    if (this.record) {
      this.record.delete(containerId, ifname, true);
      this.agent.retractLocal(ns, w.metadata.name);
    }
    let r: { status: number; body: unknown };
    try {
      r = await this.agent.api.call('DELETE', wepPath(ns, w.metadata.name));
    } catch (e) {
      if (!this.record) throw e;
      r = { status: 0, body: undefined };
    }
    if (this.record) {
      // Unavailable: the tombstone replays the deletion when the API returns.
      if (!unavailable(r.status)) this.record.clearTombstone(ns, w.metadata.name);
      this.recent.set(k, null);
      return true;
    }
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
