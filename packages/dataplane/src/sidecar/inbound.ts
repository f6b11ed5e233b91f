// The inbound L7 enforcement point: one port in front of the local application. TLS clients must
// present an SVID that chains to the trust bundle (OpenSSL in the handshake, then verifySvid),
// from the address of an endpoint running under that identity; plaintext clients get in only
// where PeerAuthentication permits. TLS negotiates HTTP/2 or HTTP/1.1 (ALPN). Every HTTP/1.1
// request and every HTTP/2 stream is judged on its own, by the same steps, with the current
// policy view and either answered 403 (gRPC calls: grpc-status 7) or forwarded to the
// application on loopback, over HTTP/1.1 or h2c as the application speaks.
// Owns: connection admission and per-request enforcement. Must never: forward a request that
// was not judged "allow" by one complete decision, or forward when deciding failed.

import { createServer as createHttpServer, request as httpRequest, Agent } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import type {
  Http2Server,
  IncomingHttpHeaders as H2Headers,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { OutgoingHttpHeaders } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { checkPeerChain, peerChainFromCertificate, svidServerOptions } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import type { Provenance, StagedVerdict } from '@palisade/core';
import { credentialProblem, renewServerCredentials } from './credentials.js';
import type { Credentials } from './credentials.js';
import { AccessLog, provenanceForLog, provenanceSummary } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import type { PolicyView, PolicyViewHolder, SidecarDecision } from './policy-view.js';
import { judgeDecision, l7Provenance, recordAccess, refused } from './judge.js';
import type { Judged, RecordBase } from './judge.js';
import {
  checkRequestPath,
  flattenHeaders,
  forwardHeaders,
  plainAddress,
  requestId,
} from './request.js';
import {
  H2_CANCEL,
  H2Upstream,
  grpcRefusalHeaders,
  isGrpc,
  keepsTrailersTe,
  regularHeaders,
  relayStream,
  sniffProtocol,
} from './h2.js';
import type { AppProtocol } from './h2.js';
import { listenTcp } from '../listen-tcp.js';

/** What every inbound listener of the sidecar is given (HTTP here, raw TCP in tcp-inbound.ts). */
export interface InboundListenerOptions {
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

export interface InboundOptions extends InboundListenerOptions {
  /**
   * What the application speaks on `appPort` (default HTTP/1.1; `appProtocolFor` derives it
   * from the port's name or appProtocol as Istio does). Requests of either client protocol are
   * forwarded in this one.
   */
  readonly appProtocol?: AppProtocol;
  /** Offer HTTP/2 in the TLS handshake (ALPN `h2`, default true); HTTP/1.1 is always offered. */
  readonly http2?: boolean;
  /** Concurrent streams per HTTP/2 connection (default 128). */
  readonly maxConcurrentStreams?: number;
}

interface RequestFacts {
  readonly method: string | undefined;
  readonly target: string | undefined;
  readonly host: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
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
  return l7Provenance('ingress', kind, reason);
}

const no = refused;

export class InboundSidecar {
  readonly log: AccessLog;
  readonly #opts: InboundOptions;
  readonly #net: NetServer;
  readonly #tls: TlsServer;
  readonly #http: HttpServer;
  readonly #h2: Http2Server;
  readonly #h2Conns = new WeakMap<ServerHttp2Session, Connection>();
  readonly #h2Sessions = new Set<ServerHttp2Session>();
  #nextH2: Connection | undefined;
  readonly #h2Up: H2Upstream;
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
    this.#h2Up = new H2Upstream(opts.appHost ?? '127.0.0.1', opts.appPort);
    this.#h2 = createHttp2Server({
      settings: { maxConcurrentStreams: opts.maxConcurrentStreams ?? 128, enablePush: false },
      maxSessionMemory: 32,
    });
    // Sessions are handed over one at a time, synchronously, with the connection they belong to.
    this.#h2.on('session', (session: ServerHttp2Session) => {
      const conn = this.#nextH2;
      this.#nextH2 = undefined;
      if (!conn) {
        session.destroy();
        return;
      }
      this.#h2Conns.set(session, conn);
      this.#h2Sessions.add(session);
      session.once('close', () => this.#h2Sessions.delete(session));
      session.setTimeout(60_000, () => session.close());
      session.on('error', () => session.destroy());
    });
    this.#h2.on('stream', (stream: ServerHttp2Stream, headers: H2Headers) =>
      this.#onStream(stream, headers),
    );
    // OpenSSL's verdict is not enforced inside the handshake (Node would drop the socket without
    // saying why); #onSecure requires both it and verifySvid, and answers with the reason.
    this.#tls = createTlsServer({
      ...svidServerOptions(opts.svid, opts.trustBundlePem),
      rejectUnauthorized: false,
      handshakeTimeout,
      ALPNProtocols: opts.http2 === false ? ['http/1.1'] : ['h2', 'http/1.1'],
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
    // Nagle off from the accept on (TCP_NODELAY stays with the socket under TLS and HTTP): a
    // response written in two segments would otherwise wait for the peer's delayed ACK.
    this.#net = createNetServer({ pauseOnConnect: true, noDelay: true }, (s) =>
      this.#onConnection(s, handshakeTimeout),
    );
  }

  /** Starts listening; resolves with the bound address. */
  async start(): Promise<AddressInfo> {
    return listenTcp(this.#net, this.#opts.listenPort, this.#opts.listenHost);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    this.#agent.destroy();
    this.#h2Up.close();
    await closed;
  }

  /**
   * Stops accepting, lets requests in flight finish (idle keep-alive connections are closed at
   * once), then closes whatever is left after `timeoutMs` (SIGTERM of `palisade sidecar`).
   */
  async drain(timeoutMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    const end = Date.now() + timeoutMs;
    // HTTP/2 sessions: GOAWAY, streams in flight finish, then the session closes.
    for (const s of this.#h2Sessions) s.close();
    while (this.#sockets.size > 0 && Date.now() < end) {
      this.#http.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const s of this.#sockets) s.destroy();
    this.#agent.destroy();
    this.#h2Up.close();
    await closed;
  }

  /**
   * Installs a renewed SVID and/or trust bundle for new connections (open ones keep theirs);
   * returns why not when they are not usable, keeping the current ones.
   */
  updateCredentials(c: Credentials): string | undefined {
    const problem = renewServerCredentials(this.#tls, c, this.#opts.policy.current, this.#now());
    if (problem === undefined) this.#bundle = c.trustBundlePem;
    return problem;
  }

  /** Counters for the admin endpoint. */
  counters(): ReturnType<AccessLog['snapshot']> {
    return this.log.snapshot();
  }

  #onConnection(sock: Socket, timeoutMs: number): void {
    this.#sockets.add(sock);
    sock.on('close', () => this.#sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    // From the decision on, the TLS server's handshake timeout and the HTTP servers' apply.
    sniffProtocol(sock, timeoutMs, (kind) => {
      if (kind === 'tls') this.#tls.emit('connection', sock);
      else this.#onPlaintext(sock, kind === 'h2c');
    });
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
    if (s.alpnProtocol === 'h2') {
      this.#nextH2 = conn;
      this.#h2.emit('connection', s);
      this.#nextH2 = undefined;
    } else this.#http.emit('connection', s);
  }

  #onPlaintext(sock: Socket, h2c: boolean): void {
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
    const conn: Connection = {
      sourceIp: ip,
      principal: null,
      notAfter: undefined,
      refusal: d.verdict === 'deny' ? d.provenance : undefined,
    };
    if (h2c) {
      this.#nextH2 = conn;
      this.#h2.emit('connection', sock);
      this.#nextH2 = undefined;
      return;
    }
    this.#conns.set(sock, conn);
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

  /**
   * Judges one request of a connection with one view: the connection's own refusal, the
   * certificate's expiry, the request target, then the policy. Never throws.
   */
  #judge(conn: Connection | undefined, view: PolicyView, r: RequestFacts): Judged {
    if (!conn) {
      const p = refusal('unmanaged', 'connection state missing');
      return {
        ...no(500, 'RBAC: access denied (internal error)', 'error', p, true),
        connectionLevel: true,
      };
    }
    if (conn.refusal) {
      const why =
        conn.refusal.kind === 'identity-mismatch'
          ? conn.refusal.reason
          : provenanceSummary(conn.refusal);
      return {
        ...no(403, `RBAC: access denied (${why})`, 'deny', conn.refusal, true),
        log: false,
        connectionLevel: true,
      };
    }
    if (conn.notAfter && this.#now().getTime() > conn.notAfter.getTime()) {
      const p = refusal('identity-mismatch', 'the peer certificate expired during the connection');
      return {
        ...no(403, 'RBAC: access denied (PKI_ERR_EXPIRED)', 'deny', p, true),
        connectionLevel: true,
      };
    }
    const target = checkRequestPath(r.target);
    if (!target.ok) {
      const p = refusal('unmanaged', `request refused: ${target.reason}`);
      return no(400, `bad request: ${target.reason}`, 'deny', p, true);
    }
    return judgeDecision(target.path, 'ingress', () =>
      view.decideInbound({
        sourceIp: conn.sourceIp,
        principal: conn.principal,
        port: this.#opts.podPort,
        method: r.method ?? 'GET',
        path: target.path,
        host: r.host,
        headers: r.headers,
      }),
    );
  }

  #record(
    base: RecordBase,
    started: bigint,
    verdict: AccessRecord['verdict'],
    p: Provenance,
    status: number | null,
    staged?: readonly StagedVerdict[],
  ): void {
    recordAccess(this.log, base, started, this.#now(), verdict, p, status, staged);
  }

  #base(
    conn: Connection | undefined,
    view: PolicyView,
    id: string,
    method: string | undefined,
    path: string | undefined,
  ): RecordBase {
    return {
      requestId: id,
      side: 'inbound',
      stage: 'request',
      source: { ip: conn?.sourceIp ?? 'unknown', identity: conn?.principal ?? null },
      destination: { endpoint: view.endpoint, port: this.#opts.podPort },
      method: method ?? null,
      path: path ?? null,
      policyVersion: view.version,
    };
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const id = requestId(req.headers);
    res.setHeader('x-request-id', id);
    const conn = this.#conns.get(req.socket);
    const view = this.#opts.policy.current;
    const base = this.#base(conn, view, id, req.method, req.url);
    const j = this.#judge(conn, view, {
      method: req.method,
      target: req.url,
      host: req.headers.host,
      headers: flattenHeaders(req.headers),
    });
    if (!j.ok) {
      if (j.log)
        res.once('close', () =>
          this.#record(base, started, j.verdict, j.provenance, res.statusCode, j.staged),
        );
      if (j.close) res.setHeader('connection', 'close');
      const text = `${j.message} request-id ${id}`;
      if (isGrpc(req.headers['content-type'])) {
        res.writeHead(200, grpcRefusalHeaders(j.status, text));
        res.end();
      } else {
        res.writeHead(j.status, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`${text}\n`);
      }
      req.resume();
      return;
    }
    res.once('close', () =>
      this.#record(base, started, 'allow', j.provenance, res.statusCode, j.staged),
    );
    const headers = this.#upstreamHeaders(forwardHeaders(req.headers, INJECTED), conn, id);
    if (this.#opts.appProtocol === 'h2c') {
      if (keepsTrailersTe(req.headers)) headers['te'] = 'trailers';
      delete headers['host'];
      this.#forwardH1ToH2(req, res, id, {
        ':method': req.method ?? 'GET',
        ':path': j.path,
        ':authority': req.headers.host ?? `127.0.0.1:${this.#opts.appPort}`,
        ':scheme': 'http',
        ...headers,
      });
    } else this.#forward(req, res, id, j.path, headers);
  }

  /** Identity headers set from the verified certificate (client-supplied ones were removed). */
  #upstreamHeaders(
    headers: OutgoingHttpHeaders,
    conn: Connection | undefined,
    id: string,
  ): OutgoingHttpHeaders {
    headers['x-request-id'] = id;
    if (conn && conn.principal !== null) {
      headers['x-forwarded-client-cert'] = `URI=${conn.principal}`;
      headers['x-palisade-peer-identity'] = conn.principal;
    }
    return headers;
  }

  #forward(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    path: string,
    headers: OutgoingHttpHeaders,
    retry = false,
  ): void {
    const up = httpRequest({
      host: this.#opts.appHost ?? '127.0.0.1',
      port: this.#opts.appPort,
      method: req.method,
      path,
      headers,
      // The retry takes a new connection: another idle one may be just as stale.
      agent: retry ? false : this.#agent,
    });
    up.on('response', (ures) => {
      const h = forwardHeaders(ures.headers);
      h['x-request-id'] = id;
      res.writeHead(ures.statusCode ?? 502, h);
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    const bodiless = !hasBody(req);
    up.on('error', (e: NodeJS.ErrnoException) => {
      // A kept-alive connection the application closed just as it was reused: the request did
      // not reach it. Retried once on a new connection where a client may retry on its own
      // (RFC 9110 §9.2.2: an idempotent method, and no body to replay).
      if (
        !retry &&
        up.reusedSocket &&
        e.code === 'ECONNRESET' &&
        bodiless &&
        IDEMPOTENT.has(req.method ?? '') &&
        !res.headersSent
      ) {
        this.#forward(req, res, id, path, headers, true);
        return;
      }
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`upstream unavailable request-id ${id}\n`);
      } else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    if (bodiless) {
      // Nothing to stream (and an ended request could not be piped again for a retry).
      req.resume();
      up.end();
    } else req.pipe(up);
  }

  /** An HTTP/1.1 request to an h2c application; response trailers become HTTP/1.1 trailers. */
  #forwardH1ToH2(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    headers: OutgoingHttpHeaders,
  ): void {
    let up: ReturnType<ReturnType<H2Upstream['session']>['request']>;
    try {
      up = this.#h2Up.session().request(headers);
    } catch {
      res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`upstream unavailable request-id ${id}\n`);
      req.resume();
      return;
    }
    up.on('response', (uh) => {
      const h = regularHeaders(uh);
      h['x-request-id'] = id;
      res.writeHead(Number(uh[':status'] ?? 502), h);
      up.on('trailers', (t: H2Headers) => res.addTrailers(flattenHeaders(regularHeadersIn(t))));
      up.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`upstream unavailable request-id ${id}\n`);
      } else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished && !up.destroyed) up.close(H2_CANCEL);
    });
    req.pipe(up);
  }

  /** One HTTP/2 stream: judged exactly as an HTTP/1.1 request, then answered or forwarded. */
  #onStream(stream: ServerHttp2Stream, h: H2Headers): void {
    const started = process.hrtime.bigint();
    stream.on('error', () => stream.destroy());
    const id = requestId(h);
    const conn = this.#h2Conns.get(stream.session as ServerHttp2Session);
    const view = this.#opts.policy.current;
    const method = h[':method'];
    const target = h[':path'];
    const authority = h[':authority'] ?? h['host'];
    const base = this.#base(conn, view, id, method, target);
    const grpc = isGrpc(h['content-type']);
    const status = (): number | null => {
      const s = stream.sentHeaders[':status'];
      return s === undefined ? null : Number(s);
    };
    const flat = flattenHeaders(regularHeadersIn(h));
    if (authority !== undefined) flat['host'] = authority;
    // RFC 9113 §8.3.1: a Host that differs from :authority makes the request malformed (the
    // policy would judge one name and the application might read the other).
    const hostConflict =
      h[':authority'] !== undefined &&
      h['host'] !== undefined &&
      String(h['host']).toLowerCase() !== String(h[':authority']).toLowerCase();
    const j: Judged = hostConflict
      ? no(
          400,
          'bad request: host and :authority differ',
          'deny',
          refusal('unmanaged', 'request refused: host and :authority differ'),
          false,
        )
      : method === 'CONNECT'
        ? no(
            400,
            'bad request: CONNECT is not forwarded',
            'deny',
            refusal('unmanaged', 'request refused: CONNECT is not forwarded'),
            false,
          )
        : this.#judge(conn, view, { method, target, host: authority, headers: flat });
    if (!j.ok) {
      if (j.log)
        stream.once('close', () =>
          this.#record(base, started, j.verdict, j.provenance, status(), j.staged),
        );
      const text = `${j.message} request-id ${id}`;
      if (!stream.destroyed) {
        if (grpc)
          stream.respond(
            { ':status': 200, 'x-request-id': id, ...grpcRefusalHeaders(j.status, text) },
            { endStream: true },
          );
        else {
          stream.respond({
            ':status': j.status,
            'content-type': 'text/plain; charset=utf-8',
            'x-request-id': id,
          });
          stream.end(`${text}\n`);
        }
      }
      stream.resume();
      if (j.connectionLevel) stream.session?.close();
      return;
    }
    stream.once('close', () =>
      this.#record(base, started, 'allow', j.provenance, status(), j.staged),
    );
    const headers = this.#upstreamHeaders(forwardHeaders(regularHeadersIn(h), INJECTED), conn, id);
    if (this.#opts.appProtocol === 'h2c') {
      if (keepsTrailersTe(h)) headers['te'] = 'trailers';
      delete headers['host'];
      this.#forwardH2ToH2(stream, id, {
        ':method': method ?? 'GET',
        ':path': j.path,
        ':authority': authority ?? `127.0.0.1:${this.#opts.appPort}`,
        ':scheme': 'http',
        ...headers,
      });
    } else {
      if (authority !== undefined) headers['host'] = authority;
      this.#forwardH2ToH1(stream, id, method ?? 'GET', j.path, headers, grpc);
    }
  }

  #upstreamFailed(stream: ServerHttp2Stream, id: string, grpc: boolean): void {
    if (stream.destroyed) return;
    if (stream.headersSent) {
      stream.close(H2_CANCEL);
      return;
    }
    const text = `upstream unavailable request-id ${id}`;
    if (grpc)
      stream.respond(
        { ':status': 200, 'x-request-id': id, ...grpcRefusalHeaders(502, text) },
        { endStream: true },
      );
    else {
      stream.respond({ ':status': 502, 'content-type': 'text/plain; charset=utf-8' });
      stream.end(`${text}\n`);
    }
  }

  #forwardH2ToH1(
    stream: ServerHttp2Stream,
    id: string,
    method: string,
    path: string,
    headers: OutgoingHttpHeaders,
    grpc: boolean,
  ): void {
    const up = httpRequest({
      host: this.#opts.appHost ?? '127.0.0.1',
      port: this.#opts.appPort,
      method,
      path,
      headers,
      agent: this.#agent,
    });
    up.on('response', (ures) => {
      if (stream.destroyed) {
        ures.resume();
        return;
      }
      const h = regularHeaders(ures.headers);
      h['x-request-id'] = id;
      stream.respond({ ...h, ':status': ures.statusCode ?? 502 });
      ures.pipe(stream);
      ures.on('error', () => stream.close(H2_CANCEL));
    });
    up.on('error', () => this.#upstreamFailed(stream, id, grpc));
    stream.on('close', () => {
      if (!up.writableFinished || !stream.writableFinished) up.destroy();
    });
    stream.pipe(up);
  }

  /** HTTP/2 to an h2c application: streams, response trailers (gRPC status) included. */
  #forwardH2ToH2(stream: ServerHttp2Stream, id: string, headers: OutgoingHttpHeaders): void {
    const grpc = isGrpc(headers['content-type'] as string | undefined);
    let up: ReturnType<ReturnType<H2Upstream['session']>['request']>;
    try {
      up = this.#h2Up.session().request(headers);
    } catch {
      this.#upstreamFailed(stream, id, grpc);
      stream.resume();
      return;
    }
    relayStream(stream, up, id, () => this.#upstreamFailed(stream, id, grpc));
  }
}

/** The regular headers of an HTTP/2 request (pseudo-headers removed), HTTP/1.1-shaped. */
function regularHeadersIn(h: H2Headers): IncomingMessage['headers'] {
  const out: IncomingMessage['headers'] = {};
  for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && v !== undefined) out[k] = v;
  return out;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Whether the request carries a body (RFC 9112 §6.3: Transfer-Encoding or Content-Length). */
function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const n = req.headers['content-length'];
  return n !== undefined && n !== '0';
}
