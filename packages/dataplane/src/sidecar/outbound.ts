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
import { isIP } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { svidClientOptions } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import type { Provenance } from '@palisade/core';
import { credentialProblem } from './credentials.js';
import type { Credentials } from './credentials.js';
import { AccessLog, provenanceForLog, provenanceSummary } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import type { PolicyViewHolder, SidecarDecision } from './policy-view.js';
import { checkRequestPath, flattenHeaders, forwardHeaders, requestId } from './request.js';

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
  readonly log?: AccessLog;
  readonly now?: () => Date;
}

interface Target {
  readonly ip: string;
  readonly port: number;
  readonly path: string;
}

function parseTarget(req: IncomingMessage): Target | string {
  const url = req.url ?? '';
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
    authority = req.headers.host;
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
  return { point: 'l7', direction: 'egress', kind, reason };
}

export class OutboundProxy {
  readonly log: AccessLog;
  readonly #opts: OutboundOptions;
  readonly #http: HttpServer;
  readonly #agents = new Map<string, HttpsAgent>();
  readonly #sockets = new Set<Socket>();
  readonly #now: () => Date;
  #creds: Credentials;

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
  }

  async start(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.#http.once('error', reject);
      this.#http.listen(this.#opts.listenPort, this.#opts.listenHost ?? '127.0.0.1', () => {
        this.#http.off('error', reject);
        resolve();
      });
    });
    return this.#http.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
    await closed;
  }

  /** As `InboundSidecar.drain`: stop accepting, let requests in flight finish, then close. */
  async drain(timeoutMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()));
    const end = Date.now() + timeoutMs;
    while (this.#sockets.size > 0 && Date.now() < end) {
      this.#http.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const s of this.#sockets) s.destroy();
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
    await closed;
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

  /** One pool per (expected identity, upstream): a socket is only reused for what it was checked against. */
  #agent(expected: string, host: string, port: number): HttpsAgent {
    const key = `${expected}\u0000${host}\u0000${port}`;
    let a = this.#agents.get(key);
    if (!a) {
      a = new HttpsAgent({ keepAlive: true, maxSockets: 64 });
      this.#agents.set(key, a);
    }
    return a;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const id = requestId(req.headers);
    res.setHeader('x-request-id', id);
    const view = this.#opts.policy.current;
    const target = parseTarget(req);
    const record = (
      verdict: AccessRecord['verdict'],
      p: Provenance,
      dest: string,
      port: number,
    ): void => {
      res.once('close', () =>
        this.log.record({
          time: this.#now().toISOString(),
          requestId: id,
          side: 'outbound',
          stage: 'request',
          source: { ip: this.#opts.sourceAddress ?? 'local', identity: view.identity },
          destination: { endpoint: dest, port },
          method: req.method ?? null,
          path: typeof target === 'string' ? (req.url ?? null) : target.path,
          verdict,
          status: res.statusCode,
          provenance: provenanceForLog(p),
          policyVersion: view.version,
          latencyMs: Number(process.hrtime.bigint() - started) / 1e6,
        }),
      );
    };
    const answer = (status: number, text: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(`${text} request-id ${id}\n`);
      req.resume();
    };
    if (typeof target === 'string') {
      record('deny', outbound('unmanaged', target), '-', 0);
      answer(400, `bad request: ${target}`);
      return;
    }
    const expected = view.identityAt(target.ip);
    const dest = view.endpointAt(target.ip) ?? target.ip;
    if (expected === undefined) {
      const p = outbound('unmanaged', `${target.ip} is not an endpoint with a known identity`);
      record('deny', p, dest, target.port);
      answer(502, `RBAC: access denied (no identity known for ${target.ip})`);
      return;
    }
    let d: SidecarDecision;
    try {
      d = view.decideOutbound({
        destinationIp: target.ip,
        port: target.port,
        method: req.method ?? 'GET',
        path: target.path,
        host: req.headers.host,
        headers: flattenHeaders(req.headers),
      });
    } catch (e) {
      const p = outbound('unmanaged', `decision failed: ${(e as Error).message}`);
      record('error', p, dest, target.port);
      answer(500, 'RBAC: decision error');
      return;
    }
    if (d.verdict === 'deny') {
      record('deny', d.provenance, dest, target.port);
      answer(403, `RBAC: access denied (${provenanceSummary(d.provenance)})`);
      return;
    }
    const up = (this.#opts.upstream ?? ((ip, port) => ({ host: ip, port })))(
      target.ip,
      target.port,
    );
    const headers = forwardHeaders(req.headers, [
      'x-forwarded-client-cert',
      'x-palisade-peer-identity',
    ]);
    headers['x-request-id'] = id;
    const tls = svidClientOptions(this.#creds.svid, {
      trustBundlePem: this.#creds.trustBundlePem,
      trustDomain: view.trustDomain,
      expect: { kind: 'exact', ids: [expected] },
      ...(this.#opts.now ? { now: this.#opts.now } : {}),
    });
    const ureq = httpsRequest({
      ...tls,
      host: up.host,
      port: up.port,
      ...(this.#opts.sourceAddress ? { localAddress: this.#opts.sourceAddress } : {}),
      method: req.method,
      path: target.path,
      headers,
      agent: this.#agent(expected, up.host, up.port),
    });
    let settled = false;
    ureq.on('response', (ures) => {
      settled = true;
      record(d.verdict, d.provenance, dest, target.port);
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
      record(identity ? 'deny' : 'error', p, dest, target.port);
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
}
