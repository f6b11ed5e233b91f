// Transparent interception, the agent's part (docs/design/intercept.md): for every local
// endpoint whose sidecar announced its listeners on the endpoint's socket, the agent keeps the
// interception table inside that endpoint's network namespace — inbound application ports to
// the announced sidecar ports, outbound destinations to the announced loopback ports, but only
// destinations its own calculation lets the endpoint reach (the intersection) — recomputed after
// every apply of the agent (policy and endpoint changes), repaired by a periodic resync, and
// removed when the endpoint stops being local (CNI DEL).
// Fail closed: a sidecar that dies or stops leaves the rules in place, so redirected connections
// meet a closed port and are refused; nothing is ever removed because a sidecar went away.
// Owns: the per-endpoint interception state and its schedule. Must never: install rules in a
// namespace other than the endpoint's own (the agent's namespace is refused), exempt a uid other
// than the configured sidecar uid, or redirect to a destination its policy does not allow.

import type { WorkloadEndpoint } from '@palisade/core';
import type { InterceptAnnouncement, InterceptReply } from '../agent-socket/protocol.js';
import type { InterceptSink } from '../agent-socket/endpoint-sockets.js';
import { DataplaneError } from '../errors.js';
import { interceptDestinations } from '../intercept/destinations.js';
import { Interception } from '../intercept/install.js';
import type { InterceptionTarget } from '../intercept/install.js';
import { DEFAULT_INTERCEPT_TABLE } from '../intercept/render.js';
import type { InterceptionSpec } from '../intercept/render.js';
import type { NftRunner } from '../nft/driver.js';
import type { Agent } from './agent.js';

export const DEFAULT_SIDECAR_UID = 1337;
const NETNS_ANNOTATION = 'palisade.dev/netns';

export interface InterceptionManagerOptions {
  /** The uid every sidecar runs under: its sockets are exempt from redirection (default 1337). */
  readonly sidecarUid?: number;
  /** The table inside each pod (default `palisade_intercept`). */
  readonly table?: string;
  /** Outbound TCP to destinations not redirected: `pass` to the kernel policy (default) or `reject`. */
  readonly otherOutbound?: 'pass' | 'reject';
  readonly passOutboundPorts?: readonly number[];
  /** Tamper repair interval (default 30 s; 0 disables). */
  readonly resyncMs?: number;
  /** Tests: the nft runner for a namespace path. */
  readonly runnerFor?: (netnsPath: string) => NftRunner;
  readonly say?: (line: string) => void;
}

export interface InterceptedEndpoint {
  readonly endpoint: string;
  readonly netns: string;
  readonly inbound: number;
  readonly outbound: number;
  readonly skipped: number;
  readonly installed: boolean;
  readonly lastError: string | undefined;
}

interface Entry {
  readonly endpoint: string;
  netns: string;
  announced: InterceptAnnouncement;
  ic: Interception | undefined;
  reply: InterceptReply | undefined;
  lastError: string | undefined;
}

const reply = (status: number, code: string, message: string) => ({
  status,
  body: { error: { code, message } },
});

const endpointIdOf = (w: WorkloadEndpoint): string =>
  `${w.metadata.namespace ?? 'default'}/${w.spec.pod ?? w.spec.workload ?? w.metadata.name}`;

export class InterceptionManager implements InterceptSink {
  readonly sidecarUid: number;
  readonly table: string;
  private readonly entries = new Map<string, Entry>();
  /** Reconciliations, one after the other. */
  private chain: Promise<void> = Promise.resolve();
  /** Per endpoint: its announcements and its part of a reconciliation, one after the other. */
  private readonly perEndpoint = new Map<string, Promise<void>>();
  private readonly unlisten: () => void;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private pending = false;

  constructor(
    private readonly agent: Agent,
    private readonly options: InterceptionManagerOptions = {},
  ) {
    this.sidecarUid = options.sidecarUid ?? DEFAULT_SIDECAR_UID;
    if (!Number.isInteger(this.sidecarUid) || this.sidecarUid < 1)
      throw new DataplaneError(
        'DATAPLANE_ERR_INTERCEPT_SPEC',
        `the sidecar uid must be a non-root uid, not ${this.sidecarUid}`,
      );
    this.table = options.table ?? DEFAULT_INTERCEPT_TABLE;
    // After every apply: policy or endpoints changed, so may the allowed destinations.
    this.unlisten = agent.onApplied(() => this.schedule());
    const every = options.resyncMs ?? 30_000;
    if (every > 0) {
      this.timer = setInterval(() => void this.resync(), every);
      this.timer.unref();
    }
  }

  private say(line: string): void {
    this.options.say?.(line);
  }

  /** The intercepted endpoints (status, tests). */
  status(): InterceptedEndpoint[] {
    return [...this.entries.values()].map((e) => ({
      endpoint: e.endpoint,
      netns: e.netns,
      inbound: e.reply?.inbound ?? 0,
      outbound: e.reply?.outbound ?? 0,
      skipped: e.reply?.skipped.length ?? 0,
      installed: e.ic !== undefined,
      lastError: e.lastError,
    }));
  }

  /** Stops following changes; the rules stay in the pods (as the agent's own table does). */
  async close(): Promise<void> {
    this.closed = true;
    this.unlisten();
    if (this.timer) clearInterval(this.timer);
    await this.chain;
    await Promise.all(this.perEndpoint.values());
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const p = this.chain.then(f, f);
    this.chain = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** Runs `f` after everything queued for `endpoint` (different endpoints run side by side). */
  private onEndpoint<T>(endpoint: string, f: () => Promise<T>): Promise<T> {
    const prev = this.perEndpoint.get(endpoint) ?? Promise.resolve();
    const p = prev.then(f, f);
    const tail = p.then(
      () => undefined,
      () => undefined,
    );
    this.perEndpoint.set(endpoint, tail);
    void tail.then(() => {
      if (this.perEndpoint.get(endpoint) === tail) this.perEndpoint.delete(endpoint);
    });
    return p;
  }

  /** `f` for every entry, at most 8 pods' nft at a time. */
  private async eachEntry(f: (e: Entry) => Promise<void>): Promise<void> {
    const queue = [...this.entries.values()];
    await Promise.all(
      Array.from({ length: Math.min(8, queue.length) }, async () => {
        for (let e = queue.shift(); e; e = queue.shift()) {
          const entry = e;
          await this.onEndpoint(entry.endpoint, async () => {
            // Replaced or removed meanwhile (a new announcement, the endpoint left).
            if (this.entries.get(entry.endpoint) === entry) await f(entry);
          });
        }
      }),
    );
  }

  private localWep(endpoint: string): WorkloadEndpoint | undefined {
    return this.agent.workloadEndpoints().find((w) => endpointIdOf(w) === endpoint);
  }

  /** A sidecar's announcement: installs (or updates) the endpoint's interception. */
  announce(endpoint: string, a: InterceptAnnouncement): Promise<{ status: number; body: unknown }> {
    return this.onEndpoint(endpoint, async () => {
      if (this.closed)
        return reply(503, 'DATAPLANE_ERR_INTERCEPT_UNAVAILABLE', 'the agent is stopping');
      if (a.uid !== this.sidecarUid)
        return reply(
          403,
          'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN',
          `the sidecar runs as uid ${a.uid}; this agent exempts only uid ${this.sidecarUid} from redirection (a sidecar under another uid would loop or exempt the application)`,
        );
      if (!this.agent.isSynced)
        return reply(
          503,
          'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
          'the agent has no snapshot of the API yet',
        );
      const wep = this.localWep(endpoint);
      if (!wep)
        return reply(
          403,
          'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN',
          `${endpoint} is not an endpoint of this node`,
        );
      const netns = wep.metadata.annotations?.[NETNS_ANNOTATION];
      if (!netns)
        return reply(
          503,
          'DATAPLANE_ERR_INTERCEPT_UNAVAILABLE',
          `no network namespace is recorded for ${endpoint} (it was not attached by the CNI plugin)`,
        );
      let e = this.entries.get(endpoint);
      if (e && e.netns !== netns) {
        // A new attachment of the same pod: the old namespace is gone or no longer its own.
        await e.ic?.remove().catch(() => undefined);
        e = undefined;
      }
      if (!e) {
        e = {
          endpoint,
          netns,
          announced: a,
          ic: undefined,
          reply: undefined,
          lastError: undefined,
        };
        this.entries.set(endpoint, e);
      }
      e.announced = a;
      try {
        await this.apply(e);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        e.lastError = message;
        const code =
          err instanceof DataplaneError ? err.code : 'DATAPLANE_ERR_INTERCEPT_UNAVAILABLE';
        return reply(code === 'DATAPLANE_ERR_INTERCEPT_SPEC' ? 400 : 503, code, message);
      }
      return { status: 200, body: e.reply };
    });
  }

  /** The specification for an entry now: announced inbound, announced ∩ allowed outbound. */
  private specFor(e: Entry): { spec: InterceptionSpec; reply: InterceptReply } {
    const allowed = new Set(
      interceptDestinations(this.agent.view().engine, e.endpoint, { kernel: true }).map(
        (d) => `${d.ip} ${d.port}`,
      ),
    );
    const canon = (ip: string): string =>
      ip.includes(':') ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
    const outbound = [];
    const skipped: string[] = [];
    for (const d of e.announced.outbound) {
      if (allowed.has(`${canon(d.ip)} ${d.port}`)) outbound.push(d);
      else skipped.push(`${d.ip}:${d.port}`);
    }
    const spec: InterceptionSpec = {
      table: this.table,
      inbound: e.announced.inbound,
      outbound,
      sidecarUid: this.sidecarUid,
      otherOutbound: this.options.otherOutbound ?? 'pass',
      ...(this.options.passOutboundPorts
        ? { passOutboundPorts: this.options.passOutboundPorts }
        : {}),
    };
    return {
      spec,
      reply: {
        table: this.table,
        inbound: spec.inbound.length,
        outbound: outbound.length,
        skipped,
      },
    };
  }

  private target(e: Entry): InterceptionTarget {
    return this.options.runnerFor
      ? { netnsPath: e.netns, runner: this.options.runnerFor(e.netns) }
      : { netnsPath: e.netns };
  }

  private async apply(e: Entry): Promise<void> {
    const { spec, reply: r } = this.specFor(e);
    if (e.ic) await e.ic.update(spec);
    else e.ic = await Interception.install(this.target(e), spec);
    const changed = JSON.stringify(r) !== JSON.stringify(e.reply);
    e.reply = r;
    e.lastError = undefined;
    if (changed)
      this.say(
        `interception of ${e.endpoint} in ${e.netns}: ${r.inbound} inbound, ${r.outbound} outbound redirects${r.skipped.length > 0 ? ` (${r.skipped.length} announced destinations not allowed)` : ''}`,
      );
  }

  private schedule(): void {
    if (this.pending || this.closed) return;
    this.pending = true;
    void this.serial(async () => {
      this.pending = false;
      await this.reconcileNow();
    });
  }

  /** Recomputes every endpoint's rules now; removes those of endpoints no longer local. */
  reconcile(): Promise<void> {
    return this.serial(() => this.reconcileNow());
  }

  private async reconcileNow(): Promise<void> {
    if (this.closed || !this.agent.isSynced) return;
    const rv = this.agent.status().appliedRevision;
    await this.eachEntry(async (e) => {
      const wep = this.localWep(e.endpoint);
      const netns = wep?.metadata.annotations?.[NETNS_ANNOTATION];
      if (!wep || netns !== e.netns) {
        this.entries.delete(e.endpoint);
        try {
          if (e.ic) await e.ic.remove();
          this.say(`interception of ${e.endpoint} removed (the endpoint left this node)`);
        } catch (err) {
          // The namespace is gone with the pod: nothing left to remove.
          this.say(
            `interception of ${e.endpoint}: not removed (${err instanceof Error ? err.message.slice(0, 200) : String(err)}); its namespace is gone`,
          );
        }
        return;
      }
      try {
        await this.apply(e);
      } catch (err) {
        e.lastError = err instanceof Error ? err.message : String(err);
        this.agent.note(`interception of ${e.endpoint}: ${e.lastError}`);
      }
    });
    // Watchers (the live demo) wait for this line: the pods' redirects follow revision rv.
    this.say(`interception reconciled (revision ${rv ?? '-'}, ${this.entries.size} endpoints)`);
  }

  /** Reads every table back and repairs the ones changed or deleted by hand. */
  resync(): Promise<void> {
    return this.serial(() =>
      this.eachEntry(async (e) => {
        if (!e.ic) return;
        try {
          const r = await e.ic.resync();
          if (r.repaired)
            this.agent.note(`interception of ${e.endpoint} was changed in the pod; repaired`);
        } catch (err) {
          e.lastError = err instanceof Error ? err.message : String(err);
        }
      }),
    );
  }
}
