// The inbound L4 enforcement point: one port in front of an application that speaks a non-HTTP
// protocol (`palisade sidecar --app-protocol PORT=tcp`). Each connection is admitted exactly as
// an HTTP connection is (mTLS with an SVID that chains to the trust bundle, OpenSSL's verdict and
// verifySvid both required; plaintext only where PeerAuthentication permits it), its source
// address is bound to the presented identity (a stolen certificate is refused), and then ONE
// decision is made for the whole connection with the policy view and no HTTP attributes: allowed
// connections are relayed byte for byte to the application on loopback, refused ones closed.
// Every decision writes one access record (stage `connection`) that becomes a flow record.
// Owns: admission and the per-connection decision of L4 ports. Must never: relay a byte to the
// application before one complete decision allowed the connection, or relay when deciding failed.

import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { checkPeerChain, peerChainFromCertificate, svidServerOptions } from '@palisade/pki';
import type { Provenance } from '@palisade/core';
import { credentialProblem, renewServerCredentials } from './credentials.js';
import type { Credentials } from './credentials.js';
import { AccessLog } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import type { SidecarDecision } from './policy-view.js';
import { judgeDecision, l7Provenance, recordAccess } from './judge.js';
import type { RecordBase } from './judge.js';
import { plainAddress } from './request.js';
import type { InboundListenerOptions } from './inbound.js';
import { listenTcp } from '../listen-tcp.js';

export interface TcpInboundOptions extends InboundListenerOptions {
  /**
   * Where PeerAuthentication permits plaintext: a client that sends nothing for this long is
   * taken as a plaintext client of a server-first protocol (default 1000 ms). Where it does not,
   * a silent client is closed at the handshake timeout.
   */
  readonly plaintextDetectMs?: number;
  /** A relayed connection with no traffic either way for this long is closed (default 1 h). */
  readonly idleTimeoutMs?: number;
}

/** The verified peer of one connection, or why it was refused. */
type Peer =
  | { readonly ok: true; readonly principal: string | null; readonly notAfter: Date | undefined }
  | { readonly ok: false; readonly provenance: Provenance };

function refusal(kind: Provenance['kind'], reason: string): Provenance {
  return l7Provenance('ingress', kind, reason);
}

/** The identity a TLS connection's peer proved, judged as the HTTP listener judges it. */
export function verifiedPeer(
  s: TLSSocket,
  trustBundlePem: string,
  trustDomain: string,
  now: () => Date,
): Peer {
  try {
    const cert = s.getPeerCertificate(true);
    const r = checkPeerChain(cert && cert.raw ? peerChainFromCertificate(cert) : [], {
      trustBundlePem,
      trustDomain,
      expect: { kind: 'any-in-trust-domain' },
      now,
    });
    const openssl = s.authorized ? undefined : String(s.authorizationError ?? 'not authorized');
    if (r.ok && openssl === undefined)
      return { ok: true, principal: r.spiffeId, notAfter: r.notAfter };
    const code = r.ok ? `TLS_${openssl ?? ''}` : r.code;
    const why = r.ok ? `OpenSSL: ${openssl ?? ''}` : r.message;
    return {
      ok: false,
      provenance: refusal('identity-mismatch', `peer certificate refused: ${code}: ${why}`),
    };
  } catch (e) {
    return {
      ok: false,
      provenance: refusal(
        'identity-mismatch',
        `peer certificate unreadable: ${(e as Error).message}`,
      ),
    };
  }
}

/**
 * Relays bytes both ways with half-close (one side's end is passed on, the other direction keeps
 * going); either side failing or closing closes both. `onIdle` after `idleMs` without traffic.
 */
export function relay(a: Socket, b: Socket, idleMs: number): void {
  const done = (): void => {
    a.destroy();
    b.destroy();
  };
  for (const x of [a, b]) {
    x.on('error', done);
    x.on('close', done);
    x.setTimeout(idleMs, done);
  }
  a.pipe(b);
  b.pipe(a);
  a.resume();
  b.resume();
}

export class TcpInboundSidecar {
  readonly log: AccessLog;
  readonly #opts: TcpInboundOptions;
  readonly #net: NetServer;
  readonly #tls: TlsServer;
  readonly #sockets = new Set<Socket>();
  readonly #now: () => Date;
  #bundle: string;

  /** Throws when the SVID is not usable by the endpoint of the policy view (a setup error). */
  constructor(opts: TcpInboundOptions) {
    this.#opts = opts;
    this.log = opts.log ?? new AccessLog(undefined);
    this.#now = opts.now ?? (() => new Date());
    this.#bundle = opts.trustBundlePem;
    const view = opts.policy.current;
    const problem = credentialProblem(opts, view.identity, view.trustDomain, this.#now());
    if (problem) throw new Error(problem);
    // As on HTTP ports, OpenSSL's verdict is required after the handshake, with the reason logged.
    this.#tls = createTlsServer({
      ...svidServerOptions(opts.svid, opts.trustBundlePem),
      rejectUnauthorized: false,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
    });
    this.#tls.on('secureConnection', (s: TLSSocket) => this.#onSecure(s));
    this.#tls.on('tlsClientError', (e: Error & { code?: string }, s) => {
      const ip = plainAddress(s.remoteAddress) ?? 'unknown';
      const p = refusal(
        'identity-mismatch',
        `TLS handshake refused: ${e.code ?? ''} ${e.message}`.trim(),
      );
      this.#record(this.#base(ip, null), process.hrtime.bigint(), 'deny', p);
      s.destroy();
    });
    // Half-open connections are part of many L4 protocols (a client that shuts its side down
    // and waits for the answer); the TLS socket takes this setting from the raw one.
    this.#net = createNetServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) =>
      this.#onConnection(s),
    );
  }

  async start(): Promise<AddressInfo> {
    return listenTcp(this.#net, this.#opts.listenPort, this.#opts.listenHost);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  /** Stops accepting; relayed connections may finish for up to `timeoutMs`, then are closed. */
  async drain(timeoutMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    const end = Date.now() + timeoutMs;
    while (this.#sockets.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  /** New connections get renewed credentials; open ones keep theirs. */
  updateCredentials(c: Credentials): string | undefined {
    const problem = renewServerCredentials(this.#tls, c, this.#opts.policy.current, this.#now());
    if (problem === undefined) this.#bundle = c.trustBundlePem;
    return problem;
  }

  counters(): ReturnType<AccessLog['snapshot']> {
    return this.log.snapshot();
  }

  #track(s: Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
  }

  #onConnection(sock: Socket): void {
    this.#track(sock);
    sock.on('error', () => sock.destroy());
    const started = process.hrtime.bigint();
    const ip = plainAddress(sock.remoteAddress) ?? 'unknown';
    // Whether plaintext may reach the decision at all decides how long a silent client is
    // waited for: a server-first protocol's client sends nothing until the server spoke.
    let plain: SidecarDecision;
    try {
      plain = this.#opts.policy.current.plaintextAllowed(ip, this.#opts.podPort);
    } catch (e) {
      plain = {
        verdict: 'deny',
        provenance: refusal(
          'peer-authentication',
          `cannot judge plaintext: ${(e as Error).message}`,
        ),
      };
    }
    const waitMs =
      plain.verdict === 'allow'
        ? (this.#opts.plaintextDetectMs ?? 1000)
        : (this.#opts.handshakeTimeoutMs ?? 10_000);
    const onData = (chunk: Buffer): void => {
      clearTimeout(timer);
      sock.pause();
      sock.unshift(chunk);
      if (chunk[0] === 0x16) this.#tls.emit('connection', sock);
      else this.#plaintext(sock, ip, plain, started);
    };
    const timer = setTimeout(() => {
      sock.off('data', onData);
      sock.pause();
      if (plain.verdict === 'allow') this.#plaintext(sock, ip, plain, started);
      else {
        this.#record(this.#base(ip, null), started, 'deny', {
          ...plain.provenance,
          reason: `no TLS handshake within ${waitMs} ms; ${plain.provenance.reason}`,
        });
        sock.destroy();
      }
    }, waitMs);
    sock.once('close', () => clearTimeout(timer));
    sock.once('data', onData);
    sock.resume();
  }

  #plaintext(sock: Socket, ip: string, plain: SidecarDecision, started: bigint): void {
    if (plain.verdict === 'deny') {
      this.#record(this.#base(ip, null), started, 'deny', plain.provenance);
      sock.destroy();
      return;
    }
    this.#decide(sock, ip, null, undefined, started);
  }

  #onSecure(s: TLSSocket): void {
    const started = process.hrtime.bigint();
    s.on('error', () => s.destroy());
    this.#track(s);
    const ip = plainAddress(s.remoteAddress) ?? 'unknown';
    const peer = verifiedPeer(s, this.#bundle, this.#opts.policy.current.trustDomain, this.#now);
    if (!peer.ok) {
      this.#record(this.#base(ip, null), started, 'deny', peer.provenance);
      s.destroy();
      return;
    }
    this.#decide(s, ip, peer.principal, peer.notAfter, started);
  }

  /** The one decision of a connection, then the relay or the close. */
  #decide(
    down: Socket,
    ip: string,
    principal: string | null,
    notAfter: Date | undefined,
    started: bigint,
  ): void {
    const view = this.#opts.policy.current;
    const base = { ...this.#base(ip, principal), policyVersion: view.version };
    const j = judgeDecision('-', 'ingress', () =>
      view.decideInboundConnection({ sourceIp: ip, principal, port: this.#opts.podPort }),
    );
    if (!j.ok) {
      this.#record(base, started, j.verdict, j.provenance, j.staged);
      down.destroy();
      return;
    }
    const up = netConnect({
      host: this.#opts.appHost ?? '127.0.0.1',
      port: this.#opts.appPort,
      allowHalfOpen: true,
    });
    this.#track(up);
    up.pause();
    let connected = false;
    up.once('connect', () => {
      connected = true;
      this.#record(base, started, 'allow', j.provenance, j.staged);
      relay(down, up, this.#opts.idleTimeoutMs ?? 3_600_000);
      // The certificate admitted the connection only while it is valid.
      if (notAfter) {
        const ms = notAfter.getTime() - this.#now().getTime();
        if (ms <= 0) down.destroy();
        else if (ms < 2 ** 31 - 1) {
          const t = setTimeout(() => down.destroy(), ms).unref();
          down.once('close', () => clearTimeout(t));
        }
      }
    });
    up.once('error', (e: Error & { code?: string }) => {
      if (connected) return;
      this.#record(
        base,
        started,
        'error',
        refusal(
          'unmanaged',
          `application ${this.#opts.appPort} unavailable: ${e.code ?? e.message}`,
        ),
      );
      down.destroy();
      up.destroy();
    });
  }

  #base(ip: string, identity: string | null): RecordBase {
    const view = this.#opts.policy.current;
    return {
      requestId: randomUUID(),
      side: 'inbound',
      stage: 'connection',
      source: { ip, identity },
      destination: { endpoint: view.endpoint, port: this.#opts.podPort },
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
    staged?: Parameters<typeof recordAccess>[7],
  ): void {
    recordAccess(this.log, base, started, this.#now(), verdict, p, null, staged);
  }
}
