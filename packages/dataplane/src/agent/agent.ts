// The node agent (DESIGN §5, issue 5): mirrors the API server's resources into the calculation,
// takes this node's workload endpoints as the local endpoints, renders and applies one atomic
// nftables transaction per change (debounced), and repairs drift by periodic resync.
// Fail static: while the API is unreachable nothing is applied, the kernel keeps the last rules,
// and the watch is retried with capped exponential backoff, resuming from the last revision seen
// (a 410 relists and replaces the mirror whole). Fail closed: a calculation or render error
// applies nothing (the last applied ruleset stays) and is reported in the status.
// Owns: the mirror, the local-endpoint choice, the apply schedule and the status. Must never:
// remove or flush its table on stop (rules outlive the agent), touch another table, or apply a
// ruleset derived from a partial snapshot.

import { hasErrors, loadText } from '@palisade/core';
import type { HostEndpoint, Pod, Resource, WorkloadEndpoint } from '@palisade/core';
import { Calculation } from '../calc/calculation.js';
import { HostModes, withHostModes } from '../calc/host-modes.js';
import { resolveHostEndpoints } from '../calc/host-endpoints.js';
import type { HostInterface } from '../calc/host-endpoints.js';
import { ipHostInterfaces } from './host-interfaces.js';
import type { HostInterfaceReader } from './host-interfaces.js';
import type { LocalEndpoint } from '../calc/types.js';
import { NftDriver } from '../nft/driver.js';
import type { NftRunner } from '../nft/driver.js';
import { render } from '../nft/render.js';
import type { Rendered } from '../nft/render.js';
import { ApiClient, ApiRequestError } from './api-client.js';
import type { AgentView } from './introspect.js';
import type { ApiClientOptions, ApiObject, ObjectEventType } from './api-client.js';

/** The kinds the calculation consumes; everything else on the watch (access kinds, L7) is skipped. */
const KERNEL_KINDS = new Set<string>([
  'Namespace',
  'Pod',
  'ServiceAccount',
  'Service',
  'EndpointSlice',
  'Endpoints',
  'WorkloadEndpoint',
  'HostEndpoint',
  'Tier',
  'NetworkPolicy',
  'GlobalNetworkPolicy',
  'StagedNetworkPolicy',
  'StagedGlobalNetworkPolicy',
  'StagedKubernetesNetworkPolicy',
  'NetworkSet',
  'GlobalNetworkSet',
  'Profile',
]);

/** Kinds mirrored for the L7 points only (policy sync), never fed to the kernel calculation. */
const L7_KINDS = new Set<string>([
  'AuthorizationPolicy',
  'PeerAuthentication',
  'ServiceRole',
  'ServiceRoleBinding',
  'RbacConfig',
  'ClusterRbacConfig',
]);

const isMirrored = (kind: string): boolean => KERNEL_KINDS.has(kind) || L7_KINDS.has(kind);

/** A change of the agent's mirror, for its other consumers (policy sync). */
export type MirrorChange =
  | { readonly kind: 'reset'; readonly resources: readonly Resource[]; readonly revision: string }
  | { readonly kind: 'upsert'; readonly resource: Resource; readonly revision: string }
  | { readonly kind: 'remove'; readonly resource: Resource; readonly revision: string };

export interface AgentOptions extends ApiClientOptions {
  /** This node's name: WorkloadEndpoints with `spec.node` equal to it are programmed. */
  readonly node: string;
  /** The owned nftables table (family inet, default `palisade`). */
  readonly table?: string;
  /** Apply inside this network namespace. */
  readonly netns?: string;
  /** Interfaces with this prefix are workload interfaces (unprogrammed ones are dropped). */
  readonly workloadInterfacePrefix?: string;
  /**
   * Debounce between a change and the apply (default 2 ms: events of one watch chunk or one
   * multi-document apply land together; changes arriving during an apply are folded into the
   * next one, which is queued at most once).
   */
  readonly debounceMs?: number;
  /** Drift check interval (default 30 s; 0 disables). */
  readonly resyncMs?: number;
  /** Backoff bounds of the watch retry (default 200 ms .. 10 s). */
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
  /** Delay before a failed apply is tried again (default 1 s). */
  readonly retryMs?: number;
  /** Tests: replaces the nft process runner. */
  readonly runner?: NftRunner;
  /** Reads the node's interfaces and addresses (default: `ip -j address show` in `netns`). */
  readonly hostInterfaces?: HostInterfaceReader;
  /**
   * How often the interfaces are read again while a host endpoint of this node is given only
   * by `expectedIPs` (default 10 s; 0 disables).
   */
  readonly interfacePollMs?: number;
  /** Progress lines for people (default: nothing). */
  readonly say?: (line: string) => void;
  /** Called after every successful apply with where its time went (benchmarks, metrics). */
  readonly trace?: (t: ApplyTrace) => void;
}

/**
 * Where one apply's time went, wall and CPU (`process.cpuUsage`, the whole process: in the agent
 * only the stage itself runs meanwhile, except during the kernel step, which waits on a libuv
 * thread). Times are `performance.now()` values of this process.
 */
export interface ApplyTrace {
  readonly revision: string | undefined;
  readonly kind: string;
  /** The first and last watch event folded into this apply (undefined: none, e.g. a retry). */
  readonly firstEventAt: number | undefined;
  readonly lastEventAt: number | undefined;
  readonly events: number;
  /** Handling the events: validation by the core loader, the calculations' upsert/remove. */
  readonly feedMs: number;
  readonly feedCpuMs: number;
  readonly startedAt: number;
  readonly calcMs: number;
  readonly calcCpuMs: number;
  readonly renderMs: number;
  readonly renderCpuMs: number;
  readonly kernelMs: number;
  readonly kernelCpuMs: number;
  /** nft's own CPU time, where the session reports it (the worker). */
  readonly nftCpuMs: number | undefined;
  readonly doneAt: number;
}

export interface AgentStatus {
  /** The watch is connected and its snapshot was received. */
  readonly connected: boolean;
  /** The last revision of the API the mirror reflects. */
  readonly revision: string | undefined;
  /** The revision whose ruleset is in the kernel. */
  readonly appliedRevision: string | undefined;
  readonly lastSync: Date | undefined;
  readonly lastApply: Date | undefined;
  readonly applies: number;
  /** Rule lines of the ruleset in the kernel. */
  readonly ruleCount: number;
  readonly localEndpoints: number;
  /** Most recent problems (newest last, at most 20). */
  readonly errors: readonly { readonly at: Date; readonly message: string }[];
}

function objectKey(o: { apiVersion: string; kind: string; metadata: ApiObject['metadata'] }) {
  const group = o.apiVersion.includes('/') ? o.apiVersion.slice(0, o.apiVersion.indexOf('/')) : '';
  return `${group}/${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

/** Rule lines of a rendered table (everything inside chains but their headers). */
export function countRules(r: Rendered): number {
  if (r.ruleCount !== undefined) return r.ruleCount;
  let n = 0;
  let inChain = false;
  for (const raw of r.skeleton.split('\n')) {
    const l = raw.trim();
    if (l.startsWith('chain ')) inChain = true;
    else if (l === '}') inChain = false;
    else if (inChain && l !== '' && !l.startsWith('type ') && !l.startsWith('policy ')) n++;
  }
  return n;
}

export class Agent {
  private readonly client: ApiClient;
  private readonly driver: NftDriver;
  private calc = new Calculation();
  /** Host endpoint policy of the forward, pre-DNAT and untracked stages. */
  private hostModes = new HostModes();
  /** Mirror of the kernel-relevant objects, by group/kind/namespace/name. */
  private readonly mirror = new Map<string, Resource>();
  private revision: string | undefined;
  private synced = false;
  private connected = false;
  private appliedRevision: string | undefined;
  private lastSync: Date | undefined;
  private lastApply: Date | undefined;
  private applies = 0;
  private ruleCount = 0;
  private localCount = 0;
  /** The rendering in the kernel and the local endpoints it programs (for introspection). */
  private appliedRendered: Rendered | undefined;
  private appliedLocals: readonly LocalEndpoint[] = [];
  private readonly errors: { at: Date; message: string }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private applying: Promise<void> = Promise.resolve();
  /** An apply is queued behind the running one and has not started yet. */
  private queued = false;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly syncListeners = new Set<() => void>();
  /**
   * WorkloadEndpoints this node attached that the API does not have (yet): from the local
   * record, programmed as if mirrored until the API's own version arrives.
   */
  private readonly overlay = new Map<string, WorkloadEndpoint>();
  /** Mirrored WorkloadEndpoints this node detached (CNI DEL) whose deletion the API has not echoed. */
  private readonly withdrawn = new Set<string>();
  private readonly mirrorListeners = new Set<(c: MirrorChange) => void>();
  private readonly say: (line: string) => void;
  /** The node's interfaces as last read (undefined: not read, or the last read failed). */
  private ifaces: readonly HostInterface[] | undefined;
  private ifaceKey = '';
  private ifaceTimer: NodeJS.Timeout | undefined;
  private readonly readInterfaces: HostInterfaceReader;
  private inactiveKey = '';
  /** Events folded into the next apply, for its trace. */
  private pending = { first: undefined as number | undefined, last: 0, n: 0, ms: 0, cpu: 0 };

  constructor(private readonly options: AgentOptions) {
    this.client = new ApiClient(options);
    this.driver = new NftDriver({
      ...(options.table !== undefined ? { table: options.table } : {}),
      ...(options.netns !== undefined ? { netns: options.netns } : {}),
      ...(options.runner !== undefined ? { runner: options.runner } : {}),
      log: (line) => this.say(line),
    });
    this.say = options.say ?? (() => undefined);
    this.readInterfaces = options.hostInterfaces ?? ipHostInterfaces(options.netns);
  }

  get table(): string {
    return this.driver.table;
  }

  /** The API client (the endpoint registry writes through it with the node's token). */
  get api(): ApiClient {
    return this.client;
  }

  status(): AgentStatus {
    return {
      connected: this.connected,
      revision: this.revision,
      appliedRevision: this.appliedRevision,
      lastSync: this.lastSync,
      lastApply: this.lastApply,
      applies: this.applies,
      ruleCount: this.ruleCount,
      localEndpoints: this.localCount,
      errors: [...this.errors],
    };
  }

  get node(): string {
    return this.options.node;
  }

  /** This node's WorkloadEndpoints as mirrored (the endpoint registry reads them). */
  workloadEndpoints(): WorkloadEndpoint[] {
    const out: WorkloadEndpoint[] = [];
    for (const r of this.mirror.values())
      if (r.kind === 'WorkloadEndpoint' && r.spec.node === this.options.node) out.push(r);
    return out;
  }

  /** The Pods the agent mirrors (its PodSource reads them). */
  pod(namespace: string, name: string): Pod | undefined {
    const r = this.mirror.get(`/Pod/${namespace}/${name}`);
    return r?.kind === 'Pod' ? r : undefined;
  }

  /** A read-only view for introspection (`palisade agent status`, `describe endpoint`). */
  view(): AgentView {
    return {
      node: this.options.node,
      table: this.driver.table,
      status: () => this.status(),
      engine: this.calc.engine,
      locals: () =>
        this.appliedLocals.map((l) => ({
          ref: l.ref,
          iface: l.iface,
          kind: this.calc.engine.describeEndpoint(l.ref)?.kind ?? 'workload',
        })),
      applied: () => this.appliedRendered,
      podsWithoutEndpoint: () => this.podsWithoutEndpoint(),
      readBack: () => this.driver.readBack(),
    };
  }

  /**
   * Pods scheduled to this node with no WorkloadEndpoint (mirrored or in the local record): their
   * interface is unknown, so nothing is programmed for them, and an unprogrammed workload
   * interface drops all traffic (fail closed) until the CNI plugin registers the attachment.
   */
  podsWithoutEndpoint(): string[] {
    const attached = new Set<string>();
    for (const w of [...this.workloadEndpoints(), ...this.overlay.values()])
      attached.add(`${w.metadata.namespace ?? 'default'}/${w.spec.pod ?? w.metadata.name}`);
    const out: string[] = [];
    for (const r of this.mirror.values()) {
      if (r.kind !== 'Pod' || r.spec?.nodeName !== this.options.node) continue;
      const ref = `${r.metadata.namespace ?? 'default'}/${r.metadata.name}`;
      if (!attached.has(ref)) out.push(ref);
    }
    return out.sort();
  }

  /** Calls `f` when the watch delivered a full snapshot or resumed after an outage. */
  onSynced(f: () => void): () => void {
    this.syncListeners.add(f);
    return () => this.syncListeners.delete(f);
  }

  /** Records a problem (or, with `error` false, a progress line) in the status and the log. */
  note(message: string, error = true): void {
    if (error) this.report(message);
    else this.say(message);
  }

  /** Programs a WorkloadEndpoint of this node the API may not have (the local record). */
  assertLocal(w: WorkloadEndpoint): void {
    if (w.spec.node !== this.options.node) return;
    const key = objectKey(w as unknown as ApiObject);
    this.overlay.set(key, w);
    if (this.withdrawn.delete(key)) this.schedule();
    if (!this.mirror.has(key)) {
      const r = this.toResource(w as unknown as ApiObject);
      if (r) this.feed(r);
      this.schedule();
    }
  }

  /** Withdraws a local-record endpoint (CNI DEL, or the API refused it). */
  retractLocal(namespace: string, name: string): void {
    const key = objectKey({
      apiVersion: 'projectcalico.org/v3',
      kind: 'WorkloadEndpoint',
      metadata: { name, namespace },
    });
    if (this.mirror.has(key)) {
      // Detached here: not programmed any more, whatever the API still says.
      this.overlay.delete(key);
      this.withdrawn.add(key);
      this.schedule();
      return;
    }
    if (!this.overlay.delete(key)) return;
    {
      this.calc.remove('WorkloadEndpoint', namespace, name, 'projectcalico.org/v3');
      this.hostModes.remove('WorkloadEndpoint', namespace, name, 'projectcalico.org/v3');
      // The pod goes back to what the API says of it (no address: nothing to program).
      for (const r of this.mirror.values())
        if (r.kind === 'Pod' && (r.metadata.namespace ?? 'default') === namespace) {
          const x = this.withAttachmentIps(r);
          this.calc.upsert(x);
          this.hostModes.upsert(x);
        }
      this.schedule();
    }
  }

  private synced_(): void {
    for (const f of this.syncListeners) f();
  }

  /** Calls `f` after every apply attempt (tests, status output). */
  onApplied(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  /**
   * Calls `f` with every change of the mirror (validated resources, L7 kinds included), and at
   * once with the current mirror as a reset when one is synced.
   */
  onMirrorChange(f: (c: MirrorChange) => void): () => void {
    this.mirrorListeners.add(f);
    if (this.synced && this.revision !== undefined)
      f({ kind: 'reset', resources: [...this.mirror.values()], revision: this.revision });
    return () => this.mirrorListeners.delete(f);
  }

  /** True once a complete snapshot of the API is mirrored. */
  get isSynced(): boolean {
    return this.synced;
  }

  private emit(c: MirrorChange): void {
    for (const f of this.mirrorListeners) {
      try {
        f(c);
      } catch (e) {
        this.report(`mirror listener: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  private report(message: string): void {
    this.errors.push({ at: new Date(), message });
    if (this.errors.length > 20) this.errors.shift();
    this.say(`error: ${message}`);
  }

  start(): void {
    if (this.loop) return;
    this.loop = this.run();
    this.pollInterfaces();
    const every = this.options.resyncMs ?? 30_000;
    if (every > 0)
      this.driver.startResync(every, (e) =>
        this.report(`resync: ${e instanceof Error ? e.message : String(e)}`),
      );
  }

  /** Stops watching and applying. The table and its rules stay in the kernel. */
  async stop(): Promise<void> {
    this.stopper.abort();
    this.driver.stopResync();
    if (this.timer) clearTimeout(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.ifaceTimer) clearTimeout(this.ifaceTimer);
    this.ifaceTimer = undefined;
    this.timer = undefined;
    this.retryTimer = undefined;
    await this.loop;
    await this.applying;
    await this.driver.settled();
    this.driver.close();
  }

  private async run(): Promise<void> {
    const min = this.options.backoffMinMs ?? 200;
    const max = this.options.backoffMaxMs ?? 10_000;
    let delay = min;
    const signal = this.stopper.signal;
    while (!signal.aborted) {
      try {
        // One abort controller per attempt, so no listener piles up on the agent's signal.
        const attempt = new AbortController();
        const onStop = () => attempt.abort();
        signal.addEventListener('abort', onStop, { once: true });
        await this.client
          .watchOnce(
            this.synced ? this.revision : undefined,
            {
              onReset: (objects, rv) => {
                this.reset(objects, rv);
                delay = min;
              },
              onEvent: (type, o, rv) => this.event(type, o, rv),
              onRevision: (rv) => {
                this.revision = rv;
                const resumed = !this.connected;
                if (resumed) this.say(`watch resumed at revision ${rv}`);
                this.connected = true;
                if (resumed) this.synced_();
                this.lastSync = new Date();
                delay = min;
              },
            },
            attempt.signal,
          )
          .finally(() => signal.removeEventListener('abort', onStop));
        if (signal.aborted) break;
        this.connected = false;
        this.say(`watch ended at revision ${this.revision ?? '-'}; resuming`);
      } catch (e) {
        this.connected = false;
        if (signal.aborted) break;
        if (e instanceof ApiRequestError && e.status === 410) {
          this.say(`revision ${this.revision ?? '-'} is gone; listing again`);
          this.synced = false;
          continue;
        }
        this.report(
          `API unreachable (rules in the kernel kept): ${e instanceof Error ? e.message : String(e)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, delay);
        signal.addEventListener('abort', done, { once: true });
      });
      delay = Math.min(max, delay * 2);
    }
  }

  /** Validates one object from the API as the core loader does; undefined (reported) if bad. */
  private toResource(o: ApiObject): Resource | undefined {
    if (!isMirrored(o.kind)) return undefined;
    const r = loadText(JSON.stringify(o), `api:${objectKey(o)}`);
    if (hasErrors(r.diagnostics) || r.resources.length !== 1) {
      this.report(
        `skipped ${objectKey(o)}: it does not load (${r.diagnostics[0]?.message ?? '?'})`,
      );
      return undefined;
    }
    return r.resources[0];
  }

  private reset(objects: readonly ApiObject[], rv: string): void {
    // A fresh calculation fed the whole snapshot: nothing from before the gap can linger.
    this.mirror.clear();
    this.calc = new Calculation();
    this.hostModes = new HostModes();
    for (const o of objects) {
      const r = this.toResource(o);
      if (!r) continue;
      this.mirror.set(objectKey(o), r);
      if (KERNEL_KINDS.has(r.kind)) this.feed(r);
    }
    // Local-record endpoints the snapshot lacks stay programmed (and get re-asserted).
    for (const [k, w] of this.overlay) {
      if (this.mirror.has(k)) continue;
      const r = this.toResource(w as unknown as ApiObject);
      if (r) this.feed(r);
    }
    this.revision = rv;
    this.synced = true;
    this.emit({ kind: 'reset', resources: [...this.mirror.values()], revision: rv });
    this.connected = true;
    this.lastSync = new Date();
    this.say(`synced ${this.mirror.size} objects at revision ${rv}`);
    this.schedule();
    this.synced_();
  }

  private event(type: ObjectEventType, o: ApiObject, rv: string): void {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    this.eventNow(type, o, rv);
    const p = this.pending;
    p.first ??= t0;
    p.last = t0;
    p.n++;
    p.ms += performance.now() - t0;
    const c = process.cpuUsage(c0);
    p.cpu += (c.user + c.system) / 1000;
  }

  private eventNow(type: ObjectEventType, o: ApiObject, rv: string): void {
    this.revision = rv;
    this.lastSync = new Date();
    if (!isMirrored(o.kind)) return;
    const key = objectKey(o);
    switch (type) {
      case 'ADDED':
      case 'MODIFIED': {
        const r = this.toResource(o);
        if (!r) return;
        this.mirror.set(key, r);
        if (KERNEL_KINDS.has(r.kind)) this.feed(r);
        this.emit({ kind: 'upsert', resource: r, revision: rv });
        break;
      }
      case 'DELETED': {
        this.withdrawn.delete(key);
        const old = this.mirror.get(key);
        this.mirror.delete(key);
        if (old) {
          if (KERNEL_KINDS.has(old.kind)) {
            this.calc.remove(old.kind, old.metadata.namespace, old.metadata.name, old.apiVersion);
            this.hostModes.remove(
              old.kind,
              old.metadata.namespace,
              old.metadata.name,
              old.apiVersion,
            );
          }
          this.emit({ kind: 'remove', resource: old, revision: rv });
          // Lost from the API while still attached here: keep it programmed, re-assert it.
          const mine = this.overlay.get(key);
          if (mine) {
            const r = this.toResource(mine as unknown as ApiObject);
            if (r) this.feed(r);
            this.synced_();
          }
        }
        break;
      }
    }
    // Every mirrored change, L7-only ones too: the apply after it finds the kernel unchanged
    // and says the ruleset reflects this revision, so whoever waits for "applied revision N"
    // (the demo, `agent status`) is not left waiting when the last change was an L7 one.
    this.schedule();
  }

  /** Into the calculations: pre-DNAT and untracked policies are not normal policy. */
  private feed(r: Resource): void {
    const x = r.kind === 'Pod' ? this.withAttachmentIps(r) : r;
    if (HostModes.acceptsNormal(x)) this.calc.upsert(x);
    else this.calc.remove(x.kind, x.metadata.namespace, x.metadata.name, x.apiVersion);
    this.hostModes.upsert(x);
    if (r.kind === 'WorkloadEndpoint') this.refeedPod(r.metadata.namespace, r.spec.pod);
  }

  /**
   * A Pod without an address yet (its status is written after the attachment, and not at all
   * while the API is unreachable) takes the addresses of this node's attachment of it: the
   * engine judges a pod by its Pod resource, and the attachment is the truth about its address.
   */
  private withAttachmentIps(p: Pod): Pod {
    if (p.spec?.nodeName !== this.options.node) return p;
    if (p.status?.podIP !== undefined || (p.status?.podIPs?.length ?? 0) > 0) return p;
    const ns = p.metadata.namespace ?? 'default';
    const weps = [...this.workloadEndpoints(), ...this.overlay.values()];
    const w = weps.find(
      (x) => (x.metadata.namespace ?? 'default') === ns && x.spec.pod === p.metadata.name,
    );
    const ips = (w?.spec.ipNetworks ?? []).map((n) => ({ ip: n.split('/')[0] ?? n }));
    if (ips.length === 0) return p;
    return { ...p, status: { ...(p.status ?? {}), podIP: ips[0]?.ip, podIPs: ips } } as Pod;
  }

  private refeedPod(namespace: string | undefined, name: string | undefined): void {
    if (name === undefined) return;
    const pod = this.pod(namespace ?? 'default', name);
    if (pod) {
      const x = this.withAttachmentIps(pod);
      if (x !== pod) {
        this.calc.upsert(x);
        this.hostModes.upsert(x);
      }
    }
  }

  private hostEndpointsHere(): HostEndpoint[] {
    const out: HostEndpoint[] = [];
    for (const r of this.mirror.values())
      if (r.kind === 'HostEndpoint' && r.spec.node === this.options.node) out.push(r);
    return out;
  }

  /** Whether a host endpoint of this node is given by its addresses only. */
  private needsInterfaces(): boolean {
    return this.hostEndpointsHere().some((h) => !h.spec.interfaceName);
  }

  /**
   * This node's host endpoints and the interface each governs (`*`: every host interface), as
   * Felix resolves them (`calc/host-endpoints.ts`); those governing none are reported once.
   */
  private localHostEndpoints(): LocalEndpoint[] {
    const r = resolveHostEndpoints(
      this.hostEndpointsHere(),
      this.options.node,
      this.ifaces,
      this.options.workloadInterfacePrefix,
    );
    const key = JSON.stringify(r.inactive);
    if (key !== this.inactiveKey) {
      this.inactiveKey = key;
      for (const x of r.inactive) this.say(`host endpoint ${x.ref} is not programmed: ${x.why}`);
    }
    return [...r.locals];
  }

  /** Reads the interfaces; true when what they say changed. A failed read keeps the last list. */
  private async refreshInterfaces(): Promise<boolean> {
    try {
      const list = await this.readInterfaces();
      const key = JSON.stringify(
        [...list]
          .map((i) => [i.name, [...i.addresses].sort()] as const)
          .sort((a, b) => (a[0] < b[0] ? -1 : 1)),
      );
      const changed = key !== this.ifaceKey;
      this.ifaces = list;
      this.ifaceKey = key;
      return changed;
    } catch (e) {
      this.report(`reading the node's interfaces: ${e instanceof Error ? e.message : String(e)}`);
      return false;
    }
  }

  private pollInterfaces(): void {
    const every = this.options.interfacePollMs ?? 10_000;
    if (every <= 0 || this.stopper.signal.aborted) return;
    this.ifaceTimer = setTimeout(() => {
      this.ifaceTimer = undefined;
      const work =
        this.synced && this.needsInterfaces()
          ? this.refreshInterfaces().then((changed) => {
              if (changed) this.schedule();
            })
          : Promise.resolve();
      void work.finally(() => this.pollInterfaces());
    }, every);
  }

  private localEndpoints(): LocalEndpoint[] {
    const out = new Map<string, LocalEndpoint>();
    const weps: WorkloadEndpoint[] = [];
    for (const [k, r] of this.mirror)
      if (r.kind === 'WorkloadEndpoint' && !this.withdrawn.has(k)) weps.push(r);
    for (const [k, w] of this.overlay) if (!this.mirror.has(k)) weps.push(w);
    for (const w of weps) {
      if (w.spec.node !== this.options.node || !w.spec.interfaceName) continue;
      const ref = `${w.metadata.namespace ?? 'default'}/${w.spec.pod ?? w.spec.workload ?? w.metadata.name}`;
      out.set(ref, { ref, iface: w.spec.interfaceName });
    }
    return [...out.values(), ...this.localHostEndpoints()];
  }

  private schedule(): void {
    if (this.timer || this.stopper.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // An apply already queued (not started) will see this change too.
      if (this.queued) return;
      this.queued = true;
      this.applying = this.applying.then(() => {
        this.queued = false;
        return this.applyNow();
      });
    }, this.options.debounceMs ?? 2);
  }

  private async applyNow(): Promise<void> {
    if (!this.synced) return;
    const rv = this.revision;
    const events = this.pending;
    this.pending = { first: undefined, last: 0, n: 0, ms: 0, cpu: 0 };
    let rendered: Rendered;
    if (this.ifaces === undefined && this.needsInterfaces()) await this.refreshInterfaces();
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    let tCalc = t0;
    let cCalc = c0;
    try {
      const locals = this.localEndpoints();
      this.calc.setLocalEndpoints(locals);
      this.hostModes.setLocalHostEndpoints(this.localHostEndpoints());
      const desired = withHostModes(this.calc.desired(), this.hostModes.desired());
      tCalc = performance.now();
      cCalc = process.cpuUsage();
      rendered = render(desired, {
        table: this.driver.table,
        ...(this.options.workloadInterfacePrefix !== undefined
          ? { workloadInterfacePrefix: this.options.workloadInterfacePrefix }
          : {}),
      });
      this.localCount = locals.length;
    } catch (e) {
      this.report(
        `calculation failed at revision ${rv ?? '-'} (last ruleset kept): ${e instanceof Error ? e.message : String(e)}`,
      );
      this.notify();
      return;
    }
    const tRender = performance.now();
    const cRender = process.cpuUsage();
    try {
      const r = await this.driver.apply(rendered);
      const tKernel = performance.now();
      const cKernel = process.cpuUsage();
      this.applies++;
      this.appliedRevision = rv;
      this.lastApply = new Date();
      this.ruleCount = countRules(rendered);
      this.appliedRendered = rendered;
      this.appliedLocals = this.calc.localEndpoints();
      this.say(
        `applied revision ${rv ?? '-'} (${r.kind}, ${this.ruleCount} rules, ${this.localCount} local endpoints; calc ${Math.round(tCalc - t0)} ms, render ${Math.round(tRender - tCalc)} ms, kernel ${Math.round(r.ms)} ms via ${this.driver.sessionKind()})`,
      );
      const cpuMs = (a: NodeJS.CpuUsage, b: NodeJS.CpuUsage) =>
        (b.user - a.user + b.system - a.system) / 1000;
      this.options.trace?.({
        revision: rv,
        kind: r.kind,
        firstEventAt: events.first,
        lastEventAt: events.first === undefined ? undefined : events.last,
        events: events.n,
        feedMs: events.ms,
        feedCpuMs: events.cpu,
        startedAt: t0,
        calcMs: tCalc - t0,
        calcCpuMs: cpuMs(c0, cCalc),
        renderMs: tRender - tCalc,
        renderCpuMs: cpuMs(cCalc, cRender),
        kernelMs: tKernel - tRender,
        kernelCpuMs: cpuMs(cRender, cKernel),
        nftCpuMs: r.nftCpuMs,
        doneAt: tKernel,
      });
    } catch (e) {
      this.report(
        `apply failed at revision ${rv ?? '-'} (kernel unchanged; retrying): ${e instanceof Error ? e.message : String(e)}`,
      );
      // Retried without waiting for another change: the kernel must catch up with the API.
      if (!this.retryTimer && !this.stopper.signal.aborted)
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.schedule();
        }, this.options.retryMs ?? 1_000);
    }
    this.notify();
  }

  private notify(): void {
    for (const f of this.listeners) f();
  }
}
