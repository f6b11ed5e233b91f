// Policy sync (DESIGN §2, §6): the agent feeds each local L7 point only what that endpoint needs
// to decide — its tiers, policies and profiles (both directions), the Istio AuthorizationPolicy
// and PeerAuthentication that select it, and the endpoints that may call it or that it may call
// (labels, addresses, service accounts: the identity ↔ address bindings of secure naming) — as
// versioned whole views, pushed when the view changes. It also forwards the endpoint's CSRs to the
// API server with the node's credential, for the endpoint's own identity only.
// A change recomputes only the subscribers it can affect: a workload's change re-judges that one
// workload as a peer of each subscriber (O(ports) instead of O(endpoints × ports)), an Istio or
// legacy RBAC change re-assembles only the subscribers it selects, and anything that can change
// kernel verdicts in general (policies, tiers, profiles, namespaces, services, sets, host
// endpoints, a reset) recomputes every subscriber from scratch.
// Owns: the per-endpoint view computation, the subscriptions and their versions, the trust
// bundle cache and certificate forwarding. Must never: send an endpoint a view computed from a
// partial snapshot, send a view of another endpoint on its stream, or ask the CA for an identity
// other than the one the endpoint runs under.

import { Engine } from '@palisade/core';
import type { Resource } from '@palisade/core';
import type { Agent, MirrorChange } from './agent.js';
import type { PolicySyncMessage, PolicySyncView, SvidRequest } from '../agent-socket/protocol.js';

/** Annotations the agent writes for its own bookkeeping (node-local facts a peer does not need). */
const PRIVATE_ANNOTATIONS = [
  'palisade.dev/container-id',
  'palisade.dev/ifname',
  'palisade.dev/netns',
  'palisade.dev/network',
  'palisade.dev/source',
  'palisade.dev/registered-at',
];

export interface PolicySyncOptions {
  readonly trustDomain?: string;
  readonly istioRootNamespace?: string;
  /** Between a change and the recomputation of the views (default 20 ms). */
  readonly debounceMs?: number;
  /** How often the trust bundle is fetched again from the API (default 60 s; 0: never). */
  readonly bundleRefreshMs?: number;
  readonly say?: (line: string) => void;
  /** Recompute every subscriber on every change (the former behaviour; for measurements). */
  readonly recomputeAll?: boolean;
}

/** What the HTTP layer answers for an SVID request. */
export interface SvidReply {
  readonly status: number;
  readonly body: unknown;
}

interface Subscription {
  readonly endpoint: string;
  readonly ports: readonly number[];
  readonly send: (m: PolicySyncMessage) => void;
  lastText: string | undefined;
  lastVersion: number | undefined;
  /** The workloads and hosts that may call it or that it may call, as last computed. */
  peers: Set<string> | undefined;
}

/** Kinds whose change reaches the L7 views only (the kernel does not read them). */
const ISTIO_KINDS = new Set(['AuthorizationPolicy', 'PeerAuthentication']);
const RBAC_NAMESPACED = new Set(['ServiceRole', 'ServiceRoleBinding']);
const RBAC_MODE = new Set(['RbacConfig', 'ClusterRbacConfig']);
const WORKLOAD_KINDS = new Set(['Pod', 'WorkloadEndpoint']);

const keyOf = (kind: string, namespace: string | undefined, name: string): string =>
  `${kind}/${namespace ?? ''}/${name}`;

/** The engine's id of a workload resource (as `Engine.workloadEndpoints` names it). */
function workloadId(r: Resource): string | undefined {
  if (r.kind === 'Pod') return `${r.metadata.namespace ?? 'default'}/${r.metadata.name}`;
  if (r.kind === 'WorkloadEndpoint')
    return `${r.metadata.namespace ?? 'default'}/${r.spec.pod ?? r.spec.workload ?? r.metadata.name}`;
  return undefined;
}

/**
 * The resource as it goes on the wire: without the loader's source reference (the sidecar loads
 * it again) and without the agent's private annotations.
 */
function forWire(r: Resource): Resource {
  const copy: Record<string, unknown> = { ...r };
  delete copy['source'];
  const a = r.metadata.annotations;
  if (a && PRIVATE_ANNOTATIONS.some((k) => k in a))
    copy['metadata'] = {
      ...r.metadata,
      annotations: Object.fromEntries(
        Object.entries(a).filter(([k]) => !PRIVATE_ANNOTATIONS.includes(k)),
      ),
    };
  return copy as unknown as Resource;
}

/** Istio's workload selector: every matchLabels pair on the pod (no selector: every pod). */
function istioSelects(r: Resource, labels: Readonly<Record<string, string>>): boolean {
  const spec = (r as { spec?: Record<string, unknown> }).spec ?? {};
  // Target references name Services/Gateways; kept conservatively (the engine decides).
  if (spec['targetRef'] !== undefined || spec['targetRefs'] !== undefined) return true;
  const sel = spec['selector'] as { matchLabels?: Record<string, string> } | undefined;
  const m = sel?.matchLabels;
  if (!m) return true;
  return Object.entries(m).every(([k, v]) => labels[k] === v);
}

/** How many `endpoint@version` pairs a publish line names before "and N more". */
const SENT_LISTED = 50;

export class PolicySync {
  private engine: Engine;
  /** The mirror as this service sees it, by kind/namespace/name (both NetworkPolicy flavours). */
  private readonly byKey = new Map<string, Resource[]>();
  private readonly workloadsById = new Map<string, Resource[]>();
  private revision: string | undefined;
  /** The revision the last publish line named. */
  private published: string | undefined;
  private synced = false;
  private readonly subs = new Set<Subscription>();
  private timer: NodeJS.Timeout | undefined;
  private bundleTimer: NodeJS.Timeout | undefined;
  private bundle: string | undefined;
  private readonly unlisten: () => void;
  private readonly localListeners = new Set<() => void>();
  private localKey = '';
  /** What changed since the last publication (see the header). */
  private dirtyAll = true;
  private readonly dirtyWorkloads = new Set<string>();
  private readonly dirtyIstio: Resource[] = [];
  private dirtyRbacNamespaces = new Set<string>();
  private dirtyRbacMode = false;
  /** Subscribers recomputed (fully, by peer, re-assembled) — for tests and measurements. */
  readonly work = { full: 0, peerChecks: 0, assembled: 0, skipped: 0 };
  readonly trustDomain: string;
  readonly istioRootNamespace: string;

  constructor(
    private readonly agent: Agent,
    private readonly options: PolicySyncOptions = {},
  ) {
    this.trustDomain = options.trustDomain ?? 'cluster.local';
    this.istioRootNamespace = options.istioRootNamespace ?? 'istio-system';
    this.engine = this.newEngine();
    this.unlisten = agent.onMirrorChange((c) => this.onChange(c));
    const every = options.bundleRefreshMs ?? 60_000;
    void this.refreshBundle();
    if (every > 0) {
      this.bundleTimer = setInterval(() => void this.refreshBundle(), every);
      this.bundleTimer.unref();
    }
  }

  private newEngine(): Engine {
    return new Engine({
      trustDomain: this.trustDomain,
      istioRootNamespace: this.istioRootNamespace,
    });
  }

  close(): void {
    this.unlisten();
    if (this.timer) clearTimeout(this.timer);
    if (this.bundleTimer) clearInterval(this.bundleTimer);
    this.subs.clear();
  }

  // ------------------------------------------------------------------ mirror

  private index(r: Resource, removing: boolean): void {
    const k = keyOf(r.kind, r.metadata.namespace, r.metadata.name);
    const same = (x: Resource) => x.apiVersion === r.apiVersion;
    const list = (this.byKey.get(k) ?? []).filter((x) => !same(x));
    if (!removing) list.push(r);
    if (list.length > 0) this.byKey.set(k, list);
    else this.byKey.delete(k);
    const id = workloadId(r);
    if (id !== undefined) {
      const w = (this.workloadsById.get(id) ?? []).filter(
        (x) => !(x.kind === r.kind && x.metadata.name === r.metadata.name),
      );
      if (!removing) w.push(r);
      if (w.length > 0) this.workloadsById.set(id, w);
      else this.workloadsById.delete(id);
    }
  }

  /** Records what `r` (its old and new versions) can affect, before and after the change. */
  private noteChange(r: Resource): void {
    const kind = r.kind;
    if (WORKLOAD_KINDS.has(kind)) {
      const id = workloadId(r);
      if (id !== undefined) this.dirtyWorkloads.add(id);
      // The previous version may have named another pod (a WorkloadEndpoint's spec.pod).
      for (const old of this.byKey.get(keyOf(kind, r.metadata.namespace, r.metadata.name)) ?? []) {
        const oid = workloadId(old);
        if (oid !== undefined) this.dirtyWorkloads.add(oid);
      }
    } else if (ISTIO_KINDS.has(kind)) {
      this.dirtyIstio.push(r);
      for (const old of this.byKey.get(keyOf(kind, r.metadata.namespace, r.metadata.name)) ?? [])
        this.dirtyIstio.push(old);
    } else if (RBAC_NAMESPACED.has(kind)) {
      this.dirtyRbacNamespaces.add(r.metadata.namespace ?? 'default');
    } else if (RBAC_MODE.has(kind)) {
      this.dirtyRbacMode = true;
    } else {
      this.dirtyAll = true;
    }
  }

  private onChange(c: MirrorChange): void {
    if (c.kind === 'reset' || this.options.recomputeAll) this.dirtyAll = true;
    else this.noteChange(c.resource);
    switch (c.kind) {
      case 'reset':
        this.engine = this.newEngine();
        this.byKey.clear();
        this.workloadsById.clear();
        for (const r of c.resources) {
          this.engine.upsert(r);
          this.index(r, false);
        }
        this.synced = true;
        break;
      case 'upsert':
        this.engine.upsert(c.resource);
        this.index(c.resource, false);
        break;
      case 'remove': {
        const r = c.resource;
        this.engine.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
        this.index(r, true);
        break;
      }
    }
    this.revision = c.revision;
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.publish();
    }, this.options.debounceMs ?? 20);
  }

  private publish(): void {
    const locals = this.localEndpoints();
    const key = locals.join('\n');
    if (key !== this.localKey) {
      this.localKey = key;
      for (const f of this.localListeners) f();
    }
    const all = this.dirtyAll;
    const workloads = [...this.dirtyWorkloads];
    const istio = this.dirtyIstio.splice(0);
    const rbacNs = this.dirtyRbacNamespaces;
    const rbacMode = this.dirtyRbacMode;
    this.dirtyAll = false;
    this.dirtyWorkloads.clear();
    this.dirtyRbacNamespaces = new Set();
    this.dirtyRbacMode = false;
    const sent: string[] = [];
    const send = (s: Subscription): void => {
      const v = this.push(s);
      if (v !== undefined) sent.push(`${s.endpoint}@${v}`);
    };
    for (const s of this.subs) {
      if (all || s.peers === undefined || workloads.includes(s.endpoint)) {
        s.peers = undefined;
        send(s);
        continue;
      }
      let affected = rbacMode;
      for (const id of workloads) {
        this.work.peerChecks++;
        const was = s.peers.has(id);
        const now = this.isPeer(s.endpoint, s.ports, id);
        if (now) s.peers.add(id);
        else s.peers.delete(id);
        if (was || now) affected = true;
      }
      if (!affected && (istio.length > 0 || rbacNs.size > 0)) {
        const ep = this.engine.describeEndpoint(s.endpoint);
        if (!ep || ep.namespace === undefined) affected = true;
        else if (rbacNs.has(ep.namespace)) affected = true;
        else
          affected = istio.some(
            (r) =>
              (r.metadata.namespace === ep.namespace ||
                r.metadata.namespace === this.istioRootNamespace) &&
              istioSelects(r, ep.ownLabels),
          );
      }
      if (affected) send(s);
      else this.work.skipped++;
    }
    // One line a revision published: which view version each L7 point was sent, so an operator
    // (or the demo, before it kills the agent) can tell when every point runs the current view.
    if (
      this.synced &&
      this.revision !== undefined &&
      (sent.length > 0 || this.revision !== this.published)
    ) {
      this.published = this.revision;
      const shown = sent.slice(0, SENT_LISTED).join(', ');
      const more = sent.length > SENT_LISTED ? ` and ${sent.length - SENT_LISTED} more` : '';
      this.options.say?.(
        `policy views of revision ${this.revision} sent to ${sent.length} L7 point(s)${shown ? `: ${shown}` : ''}${more}`,
      );
    }
  }

  /** Publishes what is pending now instead of after the debounce (tests and measurements). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.publish();
  }

  // ------------------------------------------------------------------ endpoints

  /** `namespace/name` of every workload endpoint registered on this node, sorted. */
  localEndpoints(): string[] {
    if (!this.synced) return [];
    const out = new Set<string>();
    for (const w of this.agent.workloadEndpoints()) {
      const id = workloadId(w);
      if (id !== undefined) out.add(id);
    }
    return [...out].sort();
  }

  /** Calls `f` whenever the set of local endpoints changes. */
  onLocalEndpointsChanged(f: () => void): () => void {
    this.localListeners.add(f);
    return () => this.localListeners.delete(f);
  }

  /** The SPIFFE ID the endpoint runs under, when it is local and has a service account. */
  identityOf(endpoint: string): string | undefined {
    if (!this.localEndpoints().includes(endpoint)) return undefined;
    const ep = this.engine.describeEndpoint(endpoint);
    if (!ep || ep.kind !== 'workload' || ep.namespace === undefined || !ep.serviceAccount)
      return undefined;
    return `spiffe://${this.trustDomain}/ns/${ep.namespace}/sa/${ep.serviceAccount}`;
  }

  /**
   * The view of one local endpoint at the current revision, or undefined (not synced, not
   * local, no identity). Callers are the endpoints the kernel lets reach it on one of `ports`;
   * callees are the endpoints the kernel lets it reach on one of their declared ports or `ports`.
   */
  viewOf(endpoint: string, ports: readonly number[]): PolicySyncView | undefined {
    return this.assemble(endpoint, ports, this.peersOf(endpoint, ports));
  }

  /** Whether the kernel lets `id` reach `endpoint` on `ports`, or `endpoint` reach `id`. */
  private isPeer(endpoint: string, ports: readonly number[], id: string): boolean {
    if (id === endpoint) return false;
    const e = this.engine.describeEndpoint(id);
    if (!e) return false;
    if (ports.some((p) => this.engine.kernelAllows(id, endpoint, 'TCP', p))) return true;
    const out = [...new Set([...e.namedPorts.map((n) => n.port), ...ports])];
    return out.some((p) => this.engine.kernelAllows(endpoint, id, 'TCP', p));
  }

  /** Every peer of `endpoint` (O(endpoints × ports) kernel verdicts). */
  private peersOf(endpoint: string, ports: readonly number[]): Set<string> {
    const peers = new Set<string>();
    for (const id of [...this.engine.workloadEndpoints(), ...this.engine.hostEndpoints()])
      if (this.isPeer(endpoint, ports, id)) peers.add(id);
    return peers;
  }

  /** The view of `endpoint` with the given peers (the resources they and it need). */
  private assemble(
    endpoint: string,
    ports: readonly number[],
    peers: ReadonlySet<string>,
  ): PolicySyncView | undefined {
    const identity = this.identityOf(endpoint);
    const ep = this.engine.describeEndpoint(endpoint);
    if (!identity || !ep || ep.namespace === undefined) return undefined;
    const picked = new Map<string, Resource>();
    const add = (r: Resource | undefined): void => {
      if (!r) return;
      const k = `${r.apiVersion}/${keyOf(r.kind, r.metadata.namespace, r.metadata.name)}`;
      if (!picked.has(k)) picked.set(k, forWire(r));
    };
    const addKey = (kind: string, ns: string | undefined, name: string): void => {
      for (const r of this.byKey.get(keyOf(kind, ns, name)) ?? []) add(r);
    };
    const namespaces = new Set<string>([ep.namespace]);
    const addWorkload = (id: string): void => {
      const e = this.engine.describeEndpoint(id);
      if (!e) return;
      if (e.kind === 'host') {
        addKey('HostEndpoint', undefined, e.name);
        return;
      }
      for (const r of this.workloadsById.get(id) ?? []) add(r);
      if (e.namespace !== undefined) {
        namespaces.add(e.namespace);
        if (e.serviceAccount) addKey('ServiceAccount', e.namespace, e.serviceAccount);
      }
      for (const p of e.profiles) addKey('Profile', undefined, p);
    };
    addWorkload(endpoint);

    // Tiers and policies selecting the endpoint, both directions, staged ones included.
    const tiers = this.engine.activeTiers(endpoint);
    for (const t of [...(tiers?.ingress ?? []), ...(tiers?.egress ?? [])]) {
      addKey('Tier', undefined, t.name);
      for (const p of [...t.policies, ...t.staged]) {
        const [kind = '', ns = '', ...rest] = p.key.split('/');
        addKey(kind, ns === '' ? undefined : ns, rest.join('/'));
        if (ns !== '') namespaces.add(ns);
      }
    }
    // Istio policies: the endpoint's namespace and the root namespace, selector on its labels.
    for (const kind of ['AuthorizationPolicy', 'PeerAuthentication'])
      for (const [k, list] of this.byKey) {
        if (!k.startsWith(`${kind}/`)) continue;
        for (const r of list) {
          const ns = r.metadata.namespace;
          if (ns !== ep.namespace && ns !== this.istioRootNamespace) continue;
          if (istioSelects(r, ep.ownLabels)) add(r);
        }
      }

    // Legacy Istio RBAC: the roles and bindings of the endpoint's namespace (Istio matches them
    // against the services in front of it, which come with the namespace below) and the mode
    // singletons, whichever namespace they were written in.
    for (const [k, list] of this.byKey) {
      const [kind, ns] = k.split('/');
      if (kind === 'RbacConfig' || kind === 'ClusterRbacConfig') list.forEach(add);
      else if ((kind === 'ServiceRole' || kind === 'ServiceRoleBinding') && ns === ep.namespace)
        list.forEach(add);
    }

    // Peers: whom the kernel lets in (on the fronted ports) and out (on the peer's ports), in
    // the engine's order so the view does not depend on how the set was kept up to date.
    void ports;
    for (const id of [...this.engine.workloadEndpoints(), ...this.engine.hostEndpoints()])
      if (peers.has(id)) addWorkload(id);

    // What the picked resources' labels and rules refer to: namespaces (namespaceSelector and
    // inherited labels), network sets and services of those namespaces, global network sets.
    for (const ns of namespaces) addKey('Namespace', undefined, ns);
    for (const [k, list] of this.byKey) {
      const [kind, ns] = k.split('/');
      if (kind === 'GlobalNetworkSet') list.forEach(add);
      else if ((kind === 'NetworkSet' || kind === 'Service') && ns && namespaces.has(ns))
        list.forEach(add);
    }
    const resources = [...picked.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, r]) => r);
    return {
      endpoint: ep.id,
      identity,
      trustDomain: this.trustDomain,
      istioRootNamespace: this.istioRootNamespace,
      resources,
    };
  }

  // ------------------------------------------------------------------ streams

  /**
   * Registers a stream for `endpoint`; `send` gets the snapshot as soon as one can be computed,
   * then an update on every change of the view, and the trust bundle.
   */
  subscribe(
    endpoint: string,
    ports: readonly number[],
    send: (m: PolicySyncMessage) => void,
  ): { readonly unsubscribe: () => void; readonly version: () => number | undefined } {
    const s: Subscription = {
      endpoint,
      ports,
      send,
      lastText: undefined,
      lastVersion: undefined,
      peers: undefined,
    };
    this.subs.add(s);
    this.push(s);
    return { unsubscribe: () => this.subs.delete(s), version: () => s.lastVersion };
  }

  get subscriptions(): number {
    return this.subs.size;
  }

  /** Sends the subscriber its view if it changed; returns the version sent. */
  private push(s: Subscription): number | undefined {
    if (!this.synced || this.revision === undefined) return undefined;
    const version = Number(this.revision);
    if (!Number.isSafeInteger(version)) return undefined;
    if (s.peers === undefined) {
      s.peers = this.peersOf(s.endpoint, s.ports);
      this.work.full++;
    } else this.work.assembled++;
    const view = this.assemble(s.endpoint, s.ports, s.peers);
    if (!view) return undefined;
    const text = JSON.stringify(view);
    if (text === s.lastText) return undefined;
    const isFirst = s.lastText === undefined;
    // Versions only move forward on a stream, even if a relist went back in revision.
    const v = s.lastVersion !== undefined && version <= s.lastVersion ? s.lastVersion + 1 : version;
    s.lastText = text;
    s.lastVersion = v;
    s.send({ type: isFirst ? 'snapshot' : 'update', version: v, view });
    if (isFirst && this.bundle !== undefined) s.send({ type: 'bundle', bundlePem: this.bundle });
    return v;
  }

  // ------------------------------------------------------------------ trust bundle and SVIDs

  private setBundle(pem: string): void {
    if (!pem.includes('-----BEGIN CERTIFICATE-----') || pem === this.bundle) return;
    this.bundle = pem;
    this.options.say?.('trust bundle changed; sent to the L7 points');
    for (const s of this.subs)
      if (s.lastText !== undefined) s.send({ type: 'bundle', bundlePem: pem });
  }

  /** Fetches the trust bundle from the API (CA rotation reaches the sidecars this way). */
  async refreshBundle(): Promise<void> {
    try {
      const r = await this.agent.api.call('GET', '/api/v1/trust-bundle');
      if (r.status === 200 && typeof r.body === 'string') this.setBundle(r.body);
    } catch {
      // API unreachable: the sidecars keep the bundle they have.
    }
  }

  /**
   * Forwards a CSR for `endpoint` to the API server's certificates endpoint with the node's
   * credential. Refuses before calling the API when the endpoint is not local or the request
   * names another identity.
   */
  async issue(endpoint: string, req: SvidRequest): Promise<SvidReply> {
    const refuse = (status: number, code: string, message: string): SvidReply => ({
      status,
      body: { error: { code, message } },
    });
    if (!this.synced)
      return refuse(
        503,
        'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
        'the agent has no snapshot of the API yet',
      );
    const identity = this.identityOf(endpoint);
    if (!identity)
      return refuse(
        403,
        'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN',
        `${endpoint} is not an endpoint of this node with a service account`,
      );
    if (req.spiffeId !== undefined && req.spiffeId !== identity)
      return refuse(
        403,
        'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN',
        `${endpoint} runs as ${identity}; it may not ask for ${req.spiffeId}`,
      );
    let r;
    try {
      r = await this.agent.api.call('POST', '/api/v1/certificates', {
        csr: req.csr,
        spiffeId: identity,
        ...(req.ttlSeconds !== undefined ? { ttlSeconds: req.ttlSeconds } : {}),
      });
    } catch (e) {
      return refuse(
        503,
        'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
        `the API server is unreachable: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    if (r.status !== 201) {
      const b = (r.body ?? {}) as { code?: unknown; message?: unknown };
      return refuse(
        r.status >= 400 && r.status < 600 ? r.status : 502,
        typeof b.code === 'string' ? b.code : 'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
        `the CA refused: ${typeof b.message === 'string' ? b.message.slice(0, 300) : `HTTP ${r.status}`}`,
      );
    }
    const b = r.body as Record<string, unknown>;
    if (typeof b['bundlePem'] === 'string') this.setBundle(b['bundlePem']);
    return {
      status: 201,
      body: {
        spiffeId: b['spiffeId'],
        certPem: b['certPem'],
        chainPem: b['chainPem'],
        bundlePem: b['bundlePem'],
        notBefore: b['notBefore'],
        notAfter: b['notAfter'],
      },
    };
  }
}
