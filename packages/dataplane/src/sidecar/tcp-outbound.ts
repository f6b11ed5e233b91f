// The outbound L4 side of the sidecar: the application's connections to a destination that
// speaks a non-HTTP protocol (its named port is `tcp`, `tcp-*`, ... — `PolicyView.speaksL4`)
// arrive, redirected by the pod's interception rules, on that destination's own loopback
// listener. Each is judged ONCE against this endpoint's egress rules at L7 with no HTTP
// attributes, then relayed over mTLS with the local SVID to the destination's sidecar, which must
// present an identity the destination is known to run (secure naming); refused connections are
// closed. One access record (stage `connection`) per decision.
// Owns: L4 origination and its server identity check. Must never: relay a byte to a server whose
// identity was not checked against the expectation for that destination, or relay before one
// complete decision allowed the connection.

import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { svidClientOptions } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import type { Provenance } from '@palisade/core';
import { credentialProblem } from './credentials.js';
import type { Credentials } from './credentials.js';
import { AccessLog } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import { fixedDestinationHost } from './outbound.js';
import type { OutboundProxy, FixedDestination } from './outbound.js';
import type { PolicyView, PolicyViewHolder } from './policy-view.js';
import { judgeDecision, l7Provenance, recordAccess } from './judge.js';
import type { RecordBase } from './judge.js';
import { relay } from './tcp-inbound.js';
import { listenTcp } from '../listen-tcp.js';

export interface TcpOutboundOptions {
  readonly svid: SvidMaterial;
  readonly trustBundlePem: string;
  readonly policy: PolicyViewHolder;
  /** The endpoint's own address to originate from (so the peer sees the pod's IP). */
  readonly sourceAddress?: string;
  /** Where the destination's inbound sidecar listens (default: the destination itself). */
  readonly upstream?: (
    ip: string,
    port: number,
  ) => { readonly host: string; readonly port: number };
  readonly log?: AccessLog;
  readonly now?: () => Date;
  /** Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Default 1 h. */
  readonly idleTimeoutMs?: number;
}

function outbound(kind: Provenance['kind'], reason: string): Provenance {
  return l7Provenance('egress', kind, reason);
}

export class TcpOutbound {
  readonly log: AccessLog;
  readonly #opts: TcpOutboundOptions;
  readonly #listeners = new Map<number, NetServer>();
  readonly #sockets = new Set<Socket>();
  readonly #now: () => Date;
  #creds: Credentials;

  /** Throws when the SVID is not usable by the endpoint of the policy view (a setup error). */
  constructor(opts: TcpOutboundOptions) {
    this.#opts = opts;
    this.log = opts.log ?? new AccessLog(undefined);
    this.#now = opts.now ?? (() => new Date());
    this.#creds = { svid: opts.svid, trustBundlePem: opts.trustBundlePem };
    const view = opts.policy.current;
    const problem = credentialProblem(this.#creds, view.identity, view.trustDomain, this.#now());
    if (problem) throw new Error(problem);
  }

  /** Opens the loopback listener of one L4 destination (as `OutboundProxy.addDestination`). */
  async addDestination(d: FixedDestination): Promise<AddressInfo> {
    const host = fixedDestinationHost(d, this.#listeners);
    const dest = { ip: d.ip, port: d.port };
    const server = createNetServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) =>
      this.#onConnection(s, dest.ip, dest.port),
    );
    const a = await listenTcp(server, d.listenPort, host);
    this.#listeners.set(a.port, server);
    return a;
  }

  async removeDestination(listenPort: number): Promise<void> {
    const s = this.#listeners.get(listenPort);
    if (!s) return;
    this.#listeners.delete(listenPort);
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** Whether `listenPort` is one of this side's listeners. */
  serves(listenPort: number): boolean {
    return this.#listeners.has(listenPort);
  }

  async close(): Promise<void> {
    const listeners = [...this.#listeners.keys()].map((p) => this.removeDestination(p));
    for (const s of this.#sockets) s.destroy();
    await Promise.all(listeners);
  }

  async drain(timeoutMs: number): Promise<void> {
    const listeners = [...this.#listeners.keys()].map((p) => this.removeDestination(p));
    const end = Date.now() + timeoutMs;
    while (this.#sockets.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    for (const s of this.#sockets) s.destroy();
    await Promise.all(listeners);
  }

  /** New connections use renewed credentials; open ones keep theirs. */
  updateCredentials(c: Credentials): string | undefined {
    const view = this.#opts.policy.current;
    const problem = credentialProblem(c, view.identity, view.trustDomain, this.#now());
    if (problem) return problem;
    this.#creds = c;
    return undefined;
  }

  counters(): ReturnType<AccessLog['snapshot']> {
    return this.log.snapshot();
  }

  #track(s: Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
  }

  #base(view: PolicyView, ip: string, port: number): RecordBase {
    return {
      requestId: randomUUID(),
      side: 'outbound',
      stage: 'connection',
      source: { ip: this.#opts.sourceAddress ?? 'local', identity: view.identity },
      destination: { endpoint: view.endpointAt(ip) ?? ip, port },
      method: null,
      path: null,
      policyVersion: view.version,
    };
  }

  #record(
    base: RecordBase,
    started: bigint,
    verdict: AccessRecord['verdict'],
    p: Provenance,
  ): void {
    recordAccess(this.log, base, started, this.#now(), verdict, p, null);
  }

  /** One application connection to `ip:port`: judged once, then relayed over mTLS or closed. */
  #onConnection(app: Socket, ip: string, port: number): void {
    const started = process.hrtime.bigint();
    this.#track(app);
    app.on('error', () => app.destroy());
    const view = this.#opts.policy.current;
    const base = this.#base(view, ip, port);
    const expected = view.identityAt(ip);
    if (expected === undefined) {
      this.#record(
        base,
        started,
        'deny',
        outbound('unmanaged', `${ip} is not an endpoint with a known identity`),
      );
      app.destroy();
      return;
    }
    const j = judgeDecision('-', 'egress', () =>
      view.decideOutboundConnection({ destinationIp: ip, port }),
    );
    if (!j.ok) {
      this.#record(base, started, j.verdict, j.provenance);
      app.destroy();
      return;
    }
    const up = (this.#opts.upstream ?? ((h, p) => ({ host: h, port: p })))(ip, port);
    const tls = svidClientOptions(this.#creds.svid, {
      trustBundlePem: this.#creds.trustBundlePem,
      trustDomain: view.trustDomain,
      expect: { kind: 'exact', ids: [expected] },
      ...(this.#opts.now ? { now: this.#opts.now } : {}),
    });
    // The raw socket carries half-close; the TLS socket takes the setting from it.
    const raw = netConnect({
      host: up.host,
      port: up.port,
      ...(this.#opts.sourceAddress ? { localAddress: this.#opts.sourceAddress } : {}),
      allowHalfOpen: true,
    });
    this.#track(raw);
    const server = tlsConnect({ ...tls, socket: raw });
    // A refused or reset connection fails the TLS socket with the cause (recorded below).
    raw.on('error', (e) => server.destroy(e));
    this.#track(server);
    let settled = false;
    const timer = setTimeout(
      () => server.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })),
      this.#opts.connectTimeoutMs ?? 10_000,
    );
    server.once('secureConnect', () => {
      clearTimeout(timer);
      settled = true;
      this.#record(base, started, 'allow', j.provenance);
      relay(app, server, this.#opts.idleTimeoutMs ?? 3_600_000);
    });
    server.once('error', (e: Error & { code?: string }) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      const code = e.code ?? 'UPSTREAM_ERROR';
      const identity = code.startsWith('PKI_ERR_');
      this.#record(
        base,
        started,
        identity ? 'deny' : 'error',
        outbound(
          identity ? 'identity-mismatch' : 'unmanaged',
          `upstream ${up.host}:${up.port}: ${code}: ${e.message}`,
        ),
      );
      app.destroy();
      server.destroy();
    });
  }
}

/**
 * The interception link's view of the outbound side: each destination's listener is opened by
 * the L4 relay when the view says the destination speaks a non-HTTP protocol, by the HTTP proxy
 * otherwise. A listener stays with the side that opened it until it is removed.
 */
export function splitOutbound(
  http: Pick<OutboundProxy, 'addDestination' | 'removeDestination'>,
  tcp: TcpOutbound,
  holder: PolicyViewHolder,
): Pick<OutboundProxy, 'addDestination' | 'removeDestination'> {
  return {
    addDestination: (d) =>
      holder.current.speaksL4(d.ip, d.port) ? tcp.addDestination(d) : http.addDestination(d),
    removeDestination: (p) =>
      tcp.serves(p) ? tcp.removeDestination(p) : http.removeDestination(p),
  };
}
