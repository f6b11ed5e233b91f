// The outbound side of the sidecar: the local application sends plain HTTP here (proxy form
// `GET http://10.0.0.5:9080/path` or a Host header naming the destination address); each request
// is judged against this endpoint's egress rules at L7, then sent over mTLS with the local SVID
// to the destination's sidecar, which must present an identity the destination is known to run
// (secure naming, from the policy view).
// Owns: origination and server identity checks. Must never: send a request to a server whose
// identity was not checked against the expectation for that destination, or reuse a pooled
// connection that was checked against another expectation.

import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as http2Connect, createServer as createHttp2Server } from 'node:http2';
import type {
  ClientHttp2Session,
  Http2Server,
  IncomingHttpHeaders as H2Headers,
  ServerHttp2Session,
  ServerHttp2Stream,
} from 'node:http2';
import type { OutgoingHttpHeaders } from 'node:http';
import { connect as netConnect, createServer as createNetServer, isIP } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { ConnectionOptions } from 'node:tls';
import { svidClientOptions } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import type { Provenance } from '@palisade/core';
import { credentialProblem } from './credentials.js';
import type { Credentials } from './credentials.js';
import { AccessLog } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import type { PolicyView, PolicyViewHolder } from './policy-view.js';
import { judgeDecision, l7Provenance, recordAccess, refused } from './judge.js';
import type { RecordBase, Refused } from './judge.js';
import { checkRequestPath, flattenHeaders, forwardHeaders, requestId } from './request.js';
import {
  H2_CANCEL,
  grpcRefusalHeaders,
  isGrpc,
  keepsTrailersTe,
  regularHeaders,
  relayStream,
  sniffProtocol,
} from './h2.js';
import { listenTcp } from '../listen-tcp.js';

export interface OutboundOptions {
  /** Where the application reaches the proxy (default 127.0.0.1). */
  readonly listenHost?: string;
  readonly listenPort: number;
  readonly svid: SvidMaterial;
  readonly trustBundlePem: string;
  readonly policy: PolicyViewHolder;
  /** The endpoint's own address to originate from (so the peer sees the pod's IP). */
  readonly sourceAddress?: string;
  /**
   * Where the destination's inbound sidecar listens for a destination address and port; by
   * default the same (until transparent interception redirects the pod port).
   */
  readonly upstream?: (
    ip: string,
    port: number,
  ) => { readonly host: string; readonly port: number };
  /**
   * Listeners for transparent interception: connections redirected by the pod's nftables rules
   * for one destination arrive on that destination's own loopback port (the kernel keeps the
   * original destination in conntrack, which Node cannot read), so every request on such a
   * connection goes to exactly that destination, whatever its Host header says.
   */
  readonly destinations?: readonly FixedDestination[];
  readonly log?: AccessLog;
  readonly now?: () => Date;
}

/** A destination reached through its own loopback listener (see `OutboundOptions.destinations`). */
export interface FixedDestination {
  readonly ip: string;
  readonly port: number;
  /** The loopback port the interception rules redirect this destination to. */
  readonly listenPort: number;
  /** Default 127.0.0.1 for IPv4 destinations and ::1 for IPv6 ones (never a routable address). */
  readonly listenHost?: string;
}

interface Target {
  readonly ip: string;
  readonly port: number;
  readonly path: string;
}

function parseTarget(req: IncomingMessage, fixed: FixedDestination | undefined): Target | string {
  return targetOf(req.url ?? '', req.headers.host, fixed);
}

function targetOf(
  url: string,
  host: string | undefined,
  fixed: FixedDestination | undefined,
): Target | string {
  if (fixed) {
    // Redirected connection: the destination is the listener's; only origin-form targets.
    const p = checkRequestPath(url);
    return p.ok ? { ip: fixed.ip, port: fixed.port, path: p.path } : p.reason;
  }
  let authority: string | undefined;
  let rest: string;
  if (url.startsWith('http://')) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return 'the request target is not a valid URL';
    }
    if (u.username || u.password) return 'credentials in the request target are not accepted';
    authority = u.host;
    rest = url.slice(`http://${u.host}`.length) || '/';
  } else {
    authority = host;
    rest = url;
  }
  if (!authority) return 'no destination: use a proxy-form target or a Host header';
  const m = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+)(?::(\d{1,5}))?$/.exec(authority);
  if (!m || !m[1]) return `the destination ${JSON.stringify(authority)} must be an IP address`;
  const ip = m[1].replace(/^\[|\]$/g, '');
  if (isIP(ip) === 0) return `the destination ${JSON.stringify(authority)} is not an IP address`;
  const port = Number(m[2] ?? '80');
  if (port < 1 || port > 65535) return 'destination port out of range';
  const p = checkRequestPath(rest);
  if (!p.ok) return p.reason;
  return { ip, port, path: p.path };
}

function outbound(kind: Provenance['kind'], reason: string): Provenance {
  return l7Provenance('egress', kind, reason);
}

/** One outgoing request judged, with the destination it names (for its record). */
type OutboundJudged = { readonly dest: string; readonly port: number } & (
  | {
      readonly ok: true;
      readonly target: Target;
      /** The identity the destination must present. */
      readonly expected: string;
      readonly provenance: Provenance;
    }
  | { readonly ok: false; readonly refusal: Refused }
);

/**
 * Checks one redirected destination (an IP address, ports in range, a loopback listen address,
 * a listen port not already serving one) and returns the host its listener binds; throws why not.
 */
export function fixedDestinationHost(
  d: FixedDestination,
  listening: ReadonlyMap<number, unknown>,
): string {
  const fam = isIP(d.ip);
  if (fam === 0) throw new Error(`destination ${JSON.stringify(d.ip)} is not an IP address`);
  if (!Number.isInteger(d.port) || d.port < 1 || d.port > 65535)
    throw new Error(`destination port ${d.port} out of range`);
  if (!Number.isInteger(d.listenPort) || d.listenPort < 0 || d.listenPort > 65535)
    throw new Error(`listen port ${d.listenPort} out of range`);
  const host = d.listenHost ?? (fam === 6 ? '::1' : '127.0.0.1');
  if (!(host === '::1' || /^127\./.test(host)))
    throw new Error(`a redirected destination listens on loopback only, not ${host}`);
  if (listening.has(d.listenPort))
    throw new Error(`port ${d.listenPort} already serves a destination`);
  return host;
}

export class OutboundProxy {
  readonly log: AccessLog;
  readonly #opts: OutboundOptions;
  readonly #http: HttpServer;
  readonly #agents = new Map<string, HttpsAgent>();
  readonly #sockets = new Set<Socket>();
  readonly #fixed = new WeakMap<Socket, FixedDestination>();
  readonly #listeners = new Map<number, NetServer>();
  readonly #h2: Http2Server;
  readonly #h2Fixed = new WeakMap<ServerHttp2Session, FixedDestination>();
  #nextFixed: FixedDestination | undefined;
  readonly #h2Inbound = new Set<ServerHttp2Session>();
  readonly #h2Sessions = new Map<string, ClientHttp2Session>();
  readonly #now: () => Date;
  #creds: Credentials;
  /**
   * The TLS options per (trust domain, expected identity), built once per credentials: one
   * OpenSSL context (key, chain and bundle parsed once, not per request or per connection) and
   * the secure-naming check of that expectation.
   */
  readonly #tlsOptions = new Map<string, ConnectionOptions>();

  /** Throws when the SVID is not usable by the endpoint of the policy view (a setup error). */
  constructor(opts: OutboundOptions) {
    this.#opts = opts;
    this.log = opts.log ?? new AccessLog(undefined);
    this.#now = opts.now ?? (() => new Date());
    this.#creds = { svid: opts.svid, trustBundlePem: opts.trustBundlePem };
    const view = opts.policy.current;
    const problem = credentialProblem(this.#creds, view.identity, view.trustDomain, this.#now());
    if (problem) throw new Error(problem);
    this.#http = createHttpServer({ requestTimeout: 60_000, headersTimeout: 20_000 }, (req, res) =>
      this.#onRequest(req, res),
    );
    this.#http.on('clientError', (_e, s) => s.destroy());
    this.#http.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    // Cleartext HTTP/2 from the application (gRPC clients) on redirected listeners.
    this.#h2 = createHttp2Server({
      settings: { maxConcurrentStreams: 128, enablePush: false },
      maxSessionMemory: 32,
    });
    this.#h2.on('session', (session: ServerHttp2Session) => {
      const fixed = this.#nextFixed;
      this.#nextFixed = undefined;
      if (!fixed) {
        session.destroy();
        return;
      }
      this.#h2Fixed.set(session, fixed);
      this.#h2Inbound.add(session);
      session.once('close', () => this.#h2Inbound.delete(session));
      session.setTimeout(60_000, () => session.close());
      session.on('error', () => session.destroy());
    });
    this.#h2.on('stream', (stream: ServerHttp2Stream, h: H2Headers) => this.#onStream(stream, h));
  }

  async start(): Promise<AddressInfo> {
    const a = await listenTcp(
      this.#http,
      this.#opts.listenPort,
      this.#opts.listenHost ?? '127.0.0.1',
    );
    for (const d of this.#opts.destinations ?? []) await this.addDestination(d);
    return a;
  }

  /**
   * Starts the loopback listener of one redirected destination (the agent adds one for every
   * destination it adds to the pod's interception map, before the rule, so no connection is
   * redirected to a closed port). Refuses a non-loopback listen address.
   */
  async addDestination(d: FixedDestination): Promise<AddressInfo> {
    const host = fixedDestinationHost(d, this.#listeners);
    const dest: FixedDestination = { ip: d.ip, port: d.port, listenPort: d.listenPort };
    const server = createNetServer({ pauseOnConnect: true, noDelay: true }, (s) => {
      s.on('error', () => s.destroy());
      sniffProtocol(s, 20_000, (kind) => {
        if (kind === 'h2c') {
          this.#sockets.add(s);
          s.on('close', () => this.#sockets.delete(s));
          this.#nextFixed = dest;
          this.#h2.emit('connection', s);
          this.#nextFixed = undefined;
          return;
        }
        if (kind === 'tls') {
          this.#passThrough(s, dest);
          return;
        }
        this.#fixed.set(s, dest);
        this.#http.emit('connection', s);
        s.resume();
      });
    });
    const a = await listenTcp(server, d.listenPort, host);
    this.#listeners.set(a.port, server);
    return a;
  }

  /**
   * TLS the application made itself (its own certificate, or one it stole) on a redirected
   * connection: the proxy cannot read it, so it is passed through at L4 to the destination,
   * whose L7 point terminates it and judges the certificate it presents against the caller's
   * address. Recorded as a connection-stage line; the source's egress `http` rules cannot apply.
   */
  #passThrough(s: Socket, d: FixedDestination): void {
    const view = this.#opts.policy.current;
    const up = this.#upstream({ ip: d.ip, port: d.port, path: '/' });
    const base = this.#base(view, '-', null, null, view.endpointAt(d.ip) ?? d.ip, d.port);
    const p = outbound(
      'unmanaged',
      `TLS from the application, passed through at L4 to ${up.host}:${up.port} (the destination's L7 point judges it)`,
    );
    recordAccess(
      this.log,
      { ...base, stage: 'connection' },
      process.hrtime.bigint(),
      this.#now(),
      'allow',
      p,
      null,
    );
    const u = netConnect({
      host: up.host,
      port: up.port,
      ...(this.#opts.sourceAddress ? { localAddress: this.#opts.sourceAddress } : {}),
    });
    this.#sockets.add(s);
    this.#sockets.add(u);
    const done = (): void => {
      s.destroy();
      u.destroy();
    };
    for (const x of [s, u]) {
      x.on('error', done);
      x.on('close', () => {
        this.#sockets.delete(x);
        done();
      });
    }
    s.pipe(u);
    u.pipe(s);
    s.resume();
  }

  /** Stops one destination's listener (open connections finish). */
  async removeDestination(listenPort: number): Promise<void> {
    const s = this.#listeners.get(listenPort);
    if (!s) return;
    this.#listeners.delete(listenPort);
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  async close(): Promise<void> {
    const listeners = [...this.#listeners.keys()].map((p) => this.removeDestination(p));
    const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
    for (const x of this.#h2Sessions.values()) x.destroy();
    this.#h2Sessions.clear();
    await Promise.all([closed, ...listeners]);
  }

  /** As `InboundSidecar.drain`: stop accepting, let requests in flight finish, then close. */
  async drain(timeoutMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()));
    const listeners = [...this.#listeners.keys()].map((p) => this.removeDestination(p));
    const end = Date.now() + timeoutMs;
    for (const s of this.#h2Inbound) s.close();
    while (this.#sockets.size > 0 && Date.now() < end) {
      this.#http.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const s of this.#sockets) s.destroy();
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
    for (const x of this.#h2Sessions.values()) x.destroy();
    this.#h2Sessions.clear();
    await Promise.all([closed, ...listeners]);
  }

  /**
   * Installs a renewed SVID and/or trust bundle; idle pooled connections made with the old ones
   * are closed at once and none is reused. Returns why not when they are not usable.
   */
  updateCredentials(c: Credentials): string | undefined {
    const view = this.#opts.policy.current;
    const problem = credentialProblem(c, view.identity, view.trustDomain, this.#now());
    if (problem) return problem;
    this.#creds = c;
    this.#tlsOptions.clear();
    // HTTP/2 sessions made with the old credentials take no new streams; open ones finish.
    for (const x of this.#h2Sessions.values()) x.close();
    this.#h2Sessions.clear();
    const old = [...this.#agents.values()];
    this.#agents.clear();
    for (const a of old) {
      for (const list of Object.values(a.freeSockets))
        for (const sock of list ?? []) sock.destroy();
      // Requests in flight on the old pools finish (bounded by the request timeout).
      setTimeout(() => a.destroy(), 60_000).unref();
    }
    return undefined;
  }

  counters(): ReturnType<AccessLog['snapshot']> {
    return this.log.snapshot();
  }

  /**
   * The client TLS options for a destination that must present `expected`: the SVID's options
   * with the key, chain and bundle in one secure context made once per credentials (Node would
   * otherwise parse them again for every connection), and the secure-naming check.
   */
  #tls(trustDomain: string, expected: string): ConnectionOptions {
    const key = `${trustDomain}\u0000${expected}`;
    let o = this.#tlsOptions.get(key);
    if (!o) {
      const {
        key: k,
        cert,
        ca,
        minVersion,
        ...rest
      } = svidClientOptions(this.#creds.svid, {
        trustBundlePem: this.#creds.trustBundlePem,
        trustDomain,
        expect: { kind: 'exact', ids: [expected] },
        ...(this.#opts.now ? { now: this.#opts.now } : {}),
      });
      o = {
        ...rest,
        minVersion,
        secureContext: createSecureContext({ key: k, cert, ca, minVersion }),
      };
      this.#tlsOptions.set(key, o);
    }
    return o;
  }

  /** One pool per (expected identity, upstream): a socket is only reused for what it was checked against. */
  #agent(expected: string, host: string, port: number): HttpsAgent {
    const key = `${expected}\u0000${host}\u0000${port}`;
    let a = this.#agents.get(key);
    if (!a) {
      // Idle pooled connections are closed after 15 s, before the peer's inbound listener drops
      // them (its keep-alive timeout is 30 s): reusing a socket the server is closing at that
      // moment fails the request with ECONNRESET (seen as a 502 in the live demo).
      a = new HttpsAgent({ keepAlive: true, maxSockets: 64, timeout: 15_000 });
      this.#agents.set(key, a);
    }
    return a;
  }

  /** The record of one outgoing request before its outcome is known. */
  #base(
    view: PolicyView,
    id: string,
    method: string | null,
    path: string | null,
    dest: string,
    port: number,
  ): RecordBase {
    return {
      requestId: id,
      side: 'outbound',
      stage: 'request',
      source: { ip: this.#opts.sourceAddress ?? 'local', identity: view.identity },
      destination: { endpoint: dest, port },
      method,
      path,
      policyVersion: view.version,
    };
  }

  /**
   * Judges one outgoing request with one view, for both protocols: the target, the identity the
   * destination must present (secure naming), then this endpoint's egress rules at L7.
   */
  #judge(
    view: PolicyView,
    target: Target | string,
    method: string,
    host: string | undefined,
    headers: Readonly<Record<string, string>>,
  ): OutboundJudged {
    if (typeof target === 'string') {
      const p = outbound('unmanaged', target);
      return {
        ok: false,
        refusal: refused(400, `bad request: ${target}`, 'deny', p, true),
        dest: '-',
        port: 0,
      };
    }
    const expected = view.identityAt(target.ip);
    const dest = view.endpointAt(target.ip) ?? target.ip;
    const at = { dest, port: target.port };
    if (expected === undefined) {
      const p = outbound('unmanaged', `${target.ip} is not an endpoint with a known identity`);
      const message = `RBAC: access denied (no identity known for ${target.ip})`;
      return { ok: false, refusal: refused(502, message, 'deny', p, true), ...at };
    }
    const j = judgeDecision(target.path, 'egress', () =>
      view.decideOutbound({
        destinationIp: target.ip,
        port: target.port,
        method,
        path: target.path,
        host,
        headers,
      }),
    );
    return j.ok
      ? { ok: true, target, expected, provenance: j.provenance, ...at }
      : { ok: false, refusal: j, ...at };
  }

  #upstream(target: Target): { readonly host: string; readonly port: number } {
    return (this.#opts.upstream ?? ((ip, port) => ({ host: ip, port })))(target.ip, target.port);
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const id = requestId(req.headers);
    res.setHeader('x-request-id', id);
    const view = this.#opts.policy.current;
    const target = parseTarget(req, this.#fixed.get(req.socket));
    const o = this.#judge(
      view,
      target,
      req.method ?? 'GET',
      req.headers.host,
      flattenHeaders(req.headers),
    );
    const base = this.#base(
      view,
      id,
      req.method ?? null,
      typeof target === 'string' ? (req.url ?? null) : target.path,
      o.dest,
      o.port,
    );
    const record = (verdict: AccessRecord['verdict'], p: Provenance): void => {
      res.once('close', () =>
        recordAccess(this.log, base, started, this.#now(), verdict, p, res.statusCode),
      );
    };
    const answer = (status: number, text: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(`${text} request-id ${id}\n`);
      req.resume();
    };
    if (!o.ok) {
      record(o.refusal.verdict, o.refusal.provenance);
      answer(o.refusal.status, o.refusal.message);
      return;
    }
    const { expected, provenance: allowed, target: to } = o;
    const up = this.#upstream(to);
    const headers = forwardHeaders(req.headers, [
      'x-forwarded-client-cert',
      'x-palisade-peer-identity',
    ]);
    headers['x-request-id'] = id;
    const tls = this.#tls(view.trustDomain, expected);
    const ureq = httpsRequest({
      ...tls,
      host: up.host,
      port: up.port,
      ...(this.#opts.sourceAddress ? { localAddress: this.#opts.sourceAddress } : {}),
      method: req.method,
      path: to.path,
      headers,
      agent: this.#agent(expected, up.host, up.port),
    });
    // Nagle off on the mTLS connection: a response written in two segments (headers, then the
    // last chunk) would otherwise wait for the peer's delayed ACK (≈ 40 ms on Linux).
    ureq.once('socket', (sock: Socket) => sock.setNoDelay(true));
    let settled = false;
    ureq.on('response', (ures) => {
      settled = true;
      record('allow', allowed);
      res.writeHead(ures.statusCode ?? 502, forwardHeaders(ures.headers));
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    ureq.on('error', (e: Error & { code?: string }) => {
      if (settled) {
        res.destroy();
        return;
      }
      settled = true;
      const code = e.code ?? 'UPSTREAM_ERROR';
      const identity = code.startsWith('PKI_ERR_');
      const p = outbound(
        identity ? 'identity-mismatch' : 'unmanaged',
        `upstream ${up.host}:${up.port}: ${code}: ${e.message}`,
      );
      record(identity ? 'deny' : 'error', p);
      if (!res.headersSent)
        answer(
          502,
          identity ? `upstream identity refused (${code})` : `upstream unavailable (${code})`,
        );
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) ureq.destroy();
    });
    req.pipe(ureq);
  }

  /** One HTTP/2 session over mTLS per (expected identity, upstream), as for HTTP/1.1 pools. */
  #h2Session(expected: string, host: string, port: number): ClientHttp2Session {
    const key = `${expected}\u0000${host}\u0000${port}`;
    const have = this.#h2Sessions.get(key);
    if (have && !have.closed && !have.destroyed) return have;
    const tls = this.#tls(this.#opts.policy.current.trustDomain, expected);
    const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
    const session = http2Connect(url, {
      ...tls,
      ...({
        ...(this.#opts.sourceAddress ? { localAddress: this.#opts.sourceAddress } : {}),
      } as object),
      settings: { enablePush: false },
    });
    const drop = (): void => {
      if (this.#h2Sessions.get(key) === session) this.#h2Sessions.delete(key);
    };
    session.on('error', (e: Error & { code?: string }) => {
      sessionErrors.set(session, e);
      drop();
    });
    session.on('close', drop);
    session.on('goaway', drop);
    session.unref();
    this.#h2Sessions.set(key, session);
    return session;
  }

  /** One HTTP/2 stream from the application on a redirected listener. */
  #onStream(stream: ServerHttp2Stream, h: H2Headers): void {
    const started = process.hrtime.bigint();
    stream.on('error', () => stream.destroy());
    const id = requestId(h);
    const view = this.#opts.policy.current;
    const fixed = this.#h2Fixed.get(stream.session as ServerHttp2Session);
    const method = h[':method'] ?? 'GET';
    const grpc = isGrpc(h['content-type']);
    const target =
      method === 'CONNECT'
        ? 'CONNECT is not forwarded'
        : targetOf(h[':path'] ?? '', h[':authority'], fixed);
    const status = (): number | null => {
      const x = stream.sentHeaders[':status'];
      return x === undefined ? null : Number(x);
    };
    const regular: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(h))
      if (!k.startsWith(':') && v !== undefined) regular[k] = v;
    const o = this.#judge(view, target, method, h[':authority'], flattenHeaders(regular));
    const base = this.#base(
      view,
      id,
      method,
      typeof target === 'string' ? (h[':path'] ?? null) : target.path,
      o.dest,
      o.port,
    );
    const record = (verdict: AccessRecord['verdict'], p: Provenance): void => {
      stream.once('close', () =>
        recordAccess(this.log, base, started, this.#now(), verdict, p, status()),
      );
    };
    const answer = (code: number, text: string): void => {
      if (stream.destroyed || stream.headersSent) return;
      const msg = `${text} request-id ${id}`;
      if (grpc)
        stream.respond(
          { ':status': 200, 'x-request-id': id, ...grpcRefusalHeaders(code, msg) },
          { endStream: true },
        );
      else {
        stream.respond({
          ':status': code,
          'content-type': 'text/plain; charset=utf-8',
          'x-request-id': id,
        });
        stream.end(`${msg}\n`);
      }
      stream.resume();
    };
    if (!o.ok) {
      record(o.refusal.verdict, o.refusal.provenance);
      answer(o.refusal.status, o.refusal.message);
      return;
    }
    const { expected, provenance: allowed, target: to } = o;
    const up = this.#upstream(to);
    const headers: OutgoingHttpHeaders = {
      ...regularHeaders(h),
      ':method': method,
      ':path': to.path,
      ':authority': h[':authority'] ?? `${to.ip}:${to.port}`,
      ':scheme': 'https',
    };
    for (const k of ['x-forwarded-client-cert', 'x-palisade-peer-identity']) delete headers[k];
    if (keepsTrailersTe(h)) headers['te'] = 'trailers';
    headers['x-request-id'] = id;
    let session: ClientHttp2Session;
    let ureq: ReturnType<ClientHttp2Session['request']>;
    try {
      session = this.#h2Session(expected, up.host, up.port);
      ureq = session.request(headers);
    } catch (e) {
      record('error', outbound('unmanaged', `upstream: ${(e as Error).message}`));
      answer(502, 'upstream unavailable');
      return;
    }
    let settled = false;
    relayStream(
      stream,
      ureq,
      id,
      (e) => {
        if (settled) {
          // The upstream failed in the middle of the response: cancel the stream.
          if (!stream.destroyed) stream.close(H2_CANCEL);
          return;
        }
        settled = true;
        // A handshake failure surfaces on the session, after its streams were cancelled: look
        // at the session's error once the current callbacks have run.
        setImmediate(() => {
          const cause = sessionErrors.get(session) ?? e;
          const code = cause.code ?? 'UPSTREAM_ERROR';
          const identity = code.startsWith('PKI_ERR_');
          record(
            identity ? 'deny' : 'error',
            outbound(
              identity ? 'identity-mismatch' : 'unmanaged',
              `upstream ${up.host}:${up.port}: ${code}: ${cause.message}`,
            ),
          );
          if (stream.headersSent) stream.close(H2_CANCEL);
          else
            answer(
              502,
              identity ? `upstream identity refused (${code})` : `upstream unavailable (${code})`,
            );
        });
      },
      () => {
        if (settled) return;
        settled = true;
        record('allow', allowed);
      },
    );
  }
}

/** The error a client session failed with (its streams only see a cancellation). */
const sessionErrors = new WeakMap<ClientHttp2Session, Error & { code?: string }>();
