// The inbound L7 enforcement point: one port in front of the local application. TLS clients must
// present an SVID that chains to the trust bundle (OpenSSL in the handshake, then verifySvid),
// from the address of an endpoint running under that identity; plaintext clients get in only
// where PeerAuthentication permits. Every HTTP request is judged on its own by the current policy
// view and either answered 403 or forwarded to the application on loopback.
// Owns: connection admission and per-request enforcement. Must never: forward a request that
// was not judged "allow" by one complete decision, or forward when deciding failed.

import { createServer as createHttpServer, request as httpRequest, Agent } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { checkPeerChain, peerChainFromCertificate, svidServerOptions } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import type { Provenance } from '@palisade/core';
import { credentialProblem } from './credentials.js';
import type { Credentials } from './credentials.js';
import { AccessLog, provenanceForLog, provenanceSummary } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import type { PolicyViewHolder, SidecarDecision } from './policy-view.js';
import {
  checkRequestPath,
  flattenHeaders,
  forwardHeaders,
  plainAddress,
  requestId,
} from './request.js';

export interface InboundOptions {
  /** Address and port to listen on (port 0: any free port). */
  readonly listenHost: string;
  readonly listenPort: number;
  /** The application, on loopback. */
  readonly appPort: number;
  readonly appHost?: string;
  /** The endpoint's port as policies see it (e.g. the pod's named port `http`). */
  readonly podPort: number;
  readonly svid: SvidMaterial;
  readonly trustBundlePem: string;
  readonly policy: PolicyViewHolder;
  readonly log?: AccessLog;
  /** Defaults to the wall clock. */
  readonly now?: () => Date;
  /** Time for the first byte and the TLS handshake (default 10 s). */
  readonly handshakeTimeoutMs?: number;
}

interface Connection {
  readonly sourceIp: string;
  /** Verified SPIFFE ID, or null for plaintext. */
  readonly principal: string | null;
  readonly notAfter: Date | undefined;
  /** Set when the connection was refused before any request: every request gets this 403. */
  readonly refusal: Provenance | undefined;
}

/** Headers a client must not be able to set for the application. */
const INJECTED = ['x-forwarded-client-cert', 'x-palisade-peer-identity'];

function refusal(kind: Provenance['kind'], reason: string): Provenance {
  return { point: 'l7', direction: 'ingress', kind, reason };
}

export class InboundSidecar {
  readonly log: AccessLog;
  readonly #opts: InboundOptions;
  readonly #net: NetServer;
  readonly #tls: TlsServer;
  readonly #http: HttpServer;
  readonly #agent: Agent;
  readonly #conns = new WeakMap<Socket, Connection>();
  readonly #sockets = new Set<Socket>();
  readonly #now: () => Date;
  #bundle: string;

  /** Throws when the SVID is not usable by the endpoint of the policy view (a setup error). */
  constructor(opts: InboundOptions) {
    this.#opts = opts;
    this.log = opts.log ?? new AccessLog(undefined);
    this.#now = opts.now ?? (() => new Date());
    this.#bundle = opts.trustBundlePem;
    const view = opts.policy.current;
    const problem = credentialProblem(opts, view.identity, view.trustDomain, this.#now());
    if (problem) throw new Error(problem);
    const handshakeTimeout = opts.handshakeTimeoutMs ?? 10_000;
    this.#agent = new Agent({ keepAlive: true, maxSockets: 256 });
    this.#http = createHttpServer(
      { requestTimeout: 60_000, headersTimeout: 20_000, keepAliveTimeout: 30_000 },
      (req, res) => this.#onRequest(req, res),
    );
    this.#http.on('clientError', (_e, s) => s.destroy());
    // OpenSSL's verdict is not enforced inside the handshake (Node would drop the socket without
    // saying why); #onSecure requires both it and verifySvid, and answers with the reason.
    this.#tls = createTlsServer({
      ...svidServerOptions(opts.svid, opts.trustBundlePem),
      rejectUnauthorized: false,
      handshakeTimeout,
    });
    this.#tls.on('secureConnection', (s) => this.#onSecure(s));
    this.#tls.on('tlsClientError', (e: Error & { code?: string }, s) => {
      const ip = plainAddress(s.remoteAddress) ?? 'unknown';
      this.#refuseLog(
        ip,
        null,
        refusal('identity-mismatch', `TLS handshake refused: ${e.code ?? ''} ${e.message}`.trim()),
      );
      s.destroy();
    });
    this.#net = createNetServer({ pauseOnConnect: true }, (s) =>
      this.#onConnection(s, handshakeTimeout),
    );
  }

  /** Starts listening; resolves with the bound address. */
  async start(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.#net.once('error', reject);
      this.#net.listen(this.#opts.listenPort, this.#opts.listenHost, () => {
        this.#net.off('error', reject);
        resolve();
      });
    });
    return this.#net.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    this.#agent.destroy();
    await closed;
  }

  /**
   * Stops accepting, lets requests in flight finish (idle keep-alive connections are closed at
   * once), then closes whatever is left after `timeoutMs` (SIGTERM of `palisade sidecar`).
   */
  async drain(timeoutMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    const end = Date.now() + timeoutMs;
    while (this.#sockets.size > 0 && Date.now() < end) {
      this.#http.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const s of this.#sockets) s.destroy();
    this.#agent.destroy();
    await closed;
  }

  /**
   * Installs a renewed SVID and/or trust bundle for new connections (open ones keep theirs);
   * returns why not when they are not usable, keeping the current ones.
   */
  updateCredentials(c: Credentials): string | undefined {
    const view = this.#opts.policy.current;
    const problem = credentialProblem(c, view.identity, view.trustDomain, this.#now());
    if (problem) return problem;
    // Only the key, chain and CAs change; client certificate handling stays as configured.
    this.#tls.setSecureContext(svidServerOptions(c.svid, c.trustBundlePem));
    this.#bundle = c.trustBundlePem;
    return undefined;
  }

  /** Counters for the admin endpoint. */
  counters(): ReturnType<AccessLog['snapshot']> {
    return this.log.snapshot();
  }

  #onConnection(sock: Socket, timeoutMs: number): void {
    this.#sockets.add(sock);
    sock.on('close', () => this.#sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    // Sniff the first byte: 0x16 opens a TLS handshake, anything else is plaintext HTTP.
    const onReadable = (): void => {
      const first = sock.read(1) as Buffer | null;
      if (first === null) return;
      sock.off('readable', onReadable);
      sock.unshift(first);
      // From here the TLS server's handshake timeout and the HTTP server's timeouts apply.
      clearTimeout(timer);
      if (first[0] === 0x16) this.#tls.emit('connection', sock);
      else this.#onPlaintext(sock);
    };
    sock.on('readable', onReadable);
  }

  #onSecure(s: TLSSocket): void {
    s.on('error', () => s.destroy());
    const ip = plainAddress(s.remoteAddress) ?? 'unknown';
    let conn: Connection;
    try {
      const cert = s.getPeerCertificate(true);
      const r = checkPeerChain(cert && cert.raw ? peerChainFromCertificate(cert) : [], {
        trustBundlePem: this.#bundle,
        trustDomain: this.#opts.policy.current.trustDomain,
        expect: { kind: 'any-in-trust-domain' },
        now: this.#now,
      });
      const openssl = s.authorized ? undefined : String(s.authorizationError ?? 'not authorized');
      if (r.ok && openssl === undefined)
        conn = { sourceIp: ip, principal: r.spiffeId, notAfter: r.notAfter, refusal: undefined };
      else {
        const code = r.ok ? `TLS_${openssl ?? ''}` : r.code;
        const why = r.ok ? `OpenSSL: ${openssl ?? ''}` : r.message;
        const p = refusal('identity-mismatch', `peer certificate refused: ${code}: ${why}`);
        this.#refuseLog(ip, null, p);
        // The client learns the code only; the log has the details.
        conn = {
          sourceIp: ip,
          principal: null,
          notAfter: undefined,
          refusal: { ...p, reason: `peer certificate refused: ${code}` },
        };
      }
    } catch (e) {
      const p = refusal(
        'identity-mismatch',
        `peer certificate unreadable: ${(e as Error).message}`,
      );
      this.#refuseLog(ip, null, p);
      conn = { sourceIp: ip, principal: null, notAfter: undefined, refusal: p };
    }
    this.#conns.set(s, conn);
    this.#http.emit('connection', s);
  }

  #onPlaintext(sock: Socket): void {
    const ip = plainAddress(sock.remoteAddress) ?? 'unknown';
    let d: SidecarDecision;
    try {
      d = this.#opts.policy.current.plaintextAllowed(ip, this.#opts.podPort);
    } catch (e) {
      d = {
        verdict: 'deny',
        provenance: refusal(
          'peer-authentication',
          `cannot judge plaintext: ${(e as Error).message}`,
        ),
      };
    }
    if (d.verdict === 'deny') this.#refuseLog(ip, null, d.provenance);
    this.#conns.set(sock, {
      sourceIp: ip,
      principal: null,
      notAfter: undefined,
      refusal: d.verdict === 'deny' ? d.provenance : undefined,
    });
    this.#http.emit('connection', sock);
    sock.resume();
  }

  #refuseLog(ip: string, identity: string | null, p: Provenance): void {
    this.log.record({
      time: this.#now().toISOString(),
      requestId: '-',
      side: 'inbound',
      stage: 'connection',
      source: { ip, identity },
      destination: { endpoint: this.#opts.policy.current.endpoint, port: this.#opts.podPort },
      method: null,
      path: null,
      verdict: 'deny',
      status: null,
      provenance: provenanceForLog(p),
      policyVersion: this.#opts.policy.current.version,
      latencyMs: 0,
    });
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const id = requestId(req.headers);
    res.setHeader('x-request-id', id);
    const conn = this.#conns.get(req.socket);
    const view = this.#opts.policy.current;
    const base = {
      requestId: id,
      side: 'inbound' as const,
      stage: 'request' as const,
      source: { ip: conn?.sourceIp ?? 'unknown', identity: conn?.principal ?? null },
      destination: { endpoint: view.endpoint, port: this.#opts.podPort },
      method: req.method ?? null,
      path: req.url ?? null,
      policyVersion: view.version,
    };
    const finish = (verdict: AccessRecord['verdict'], p: Provenance): void => {
      res.once('close', () =>
        this.log.record({
          ...base,
          time: this.#now().toISOString(),
          verdict,
          status: res.statusCode,
          provenance: provenanceForLog(p),
          latencyMs: Number(process.hrtime.bigint() - started) / 1e6,
        }),
      );
    };
    const refuse = (status: number, p: Provenance, summary: string, close = false): void => {
      if (close) res.setHeader('connection', 'close');
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`RBAC: access denied (${summary}) request-id ${id}\n`);
      req.resume();
    };

    if (!conn) {
      const p = refusal('unmanaged', 'connection state missing');
      finish('error', p);
      refuse(500, p, 'internal error', true);
      return;
    }
    if (conn.refusal) {
      // Already logged at the connection stage.
      refuse(
        403,
        conn.refusal,
        conn.refusal.kind === 'identity-mismatch'
          ? conn.refusal.reason
          : provenanceSummary(conn.refusal),
        true,
      );
      return;
    }
    if (conn.notAfter && this.#now().getTime() > conn.notAfter.getTime()) {
      const p = refusal('identity-mismatch', 'the peer certificate expired during the connection');
      finish('deny', p);
      refuse(403, p, 'PKI_ERR_EXPIRED', true);
      return;
    }
    const target = checkRequestPath(req.url);
    if (!target.ok) {
      const p = refusal('unmanaged', `request refused: ${target.reason}`);
      finish('deny', p);
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(`bad request: ${target.reason} request-id ${id}\n`);
      req.resume();
      return;
    }
    let d: SidecarDecision;
    try {
      d = view.decideInbound({
        sourceIp: conn.sourceIp,
        principal: conn.principal,
        port: this.#opts.podPort,
        method: req.method ?? 'GET',
        path: target.path,
        host: req.headers.host,
        headers: flattenHeaders(req.headers),
      });
    } catch (e) {
      const p = refusal('unmanaged', `decision failed: ${(e as Error).message}`);
      finish('error', p);
      refuse(500, p, 'decision error', true);
      return;
    }
    finish(d.verdict, d.provenance);
    if (d.verdict === 'deny') {
      refuse(403, d.provenance, provenanceSummary(d.provenance));
      return;
    }
    this.#forward(req, res, conn, id, target.path);
  }

  #forward(
    req: IncomingMessage,
    res: ServerResponse,
    conn: Connection,
    id: string,
    path: string,
  ): void {
    const headers = forwardHeaders(req.headers, INJECTED);
    headers['x-request-id'] = id;
    if (conn.principal !== null) {
      headers['x-forwarded-client-cert'] = `URI=${conn.principal}`;
      headers['x-palisade-peer-identity'] = conn.principal;
    }
    const up = httpRequest({
      host: this.#opts.appHost ?? '127.0.0.1',
      port: this.#opts.appPort,
      method: req.method,
      path,
      headers,
      agent: this.#agent,
    });
    up.on('response', (ures) => {
      const h = forwardHeaders(ures.headers);
      h['x-request-id'] = id;
      res.writeHead(ures.statusCode ?? 502, h);
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    up.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`upstream unavailable request-id ${id}\n`);
      } else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }
}
