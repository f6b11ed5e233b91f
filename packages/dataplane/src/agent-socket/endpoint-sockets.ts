// The agent's per-endpoint sockets (protocol.ts, "Policy sync and SVIDs"): one unix socket per
// local workload endpoint, `<dir>/<namespace>/<name>/agent.sock`, directories 0700 and socket 0600
// (root only). The orchestrator mounts an endpoint's directory into that pod alone, so what a
// caller can connect to is who it is: a request on one endpoint's socket naming another endpoint
// is refused, and an SVID is only ever requested for the socket's own endpoint.
// Owns: the sockets' life cycle (created when an endpoint becomes local, removed when it goes) and
// the HTTP routes. Must never: answer on one endpoint's socket for another endpoint, follow a
// symbolic link while creating the directories, or replace a socket another process serves.

import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  rmdirSync,
  unlinkSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import {
  DEFAULT_ENDPOINT_SOCKET_DIR,
  INTERCEPT_PREFIX,
  MAX_BODY_BYTES,
  POLICYSYNC_PREFIX,
  SVID_PREFIX,
  endpointSocketPath,
  parseSyncPorts,
  splitEndpoint,
  validateInterceptAnnouncement,
  validateSvidRequest,
} from './protocol.js';
import type { InterceptAnnouncement, PolicySyncMessage, SvidRequest } from './protocol.js';
import { claimSocketPath, listenRootOnly } from './root-socket.js';
import { L7_REPORT_PREFIX, MAX_REPORT_BYTES } from '../flows/l7-report.js';

/** What the sockets serve from (the agent's `PolicySync`). */
export interface PolicySyncSource {
  localEndpoints(): string[];
  onLocalEndpointsChanged(f: () => void): () => void;
  subscribe(
    endpoint: string,
    ports: readonly number[],
    send: (m: PolicySyncMessage) => void,
  ): { readonly unsubscribe: () => void; readonly version: () => number | undefined };
  issue(endpoint: string, req: SvidRequest): Promise<{ status: number; body: unknown }>;
}

/** Where interception announcements go (the agent's `InterceptionManager`). */
export interface InterceptSink {
  announce(endpoint: string, a: InterceptAnnouncement): Promise<{ status: number; body: unknown }>;
}

export interface EndpointSocketsOptions {
  readonly source: PolicySyncSource;
  /** Interception announcements (PUT /v1/intercept/...); without it they are answered 503. */
  readonly intercept?: InterceptSink;
  /**
   * The sidecars' uid and gid: each endpoint's directory and socket are handed to them (mode
   * 0700/0600), and the directories above become traversable (0711, not listable), so a sidecar
   * that dropped root can still reach its own socket. Default: root only.
   */
  readonly owner?: { readonly uid: number; readonly gid: number };
  /** Default /run/palisade/endpoints. */
  readonly dir?: string;
  /** Heartbeat interval of the streams (default 10 s). */
  readonly heartbeatMs?: number;
  readonly say?: (line: string) => void;
  /**
   * L7 flow reports (`POST /v1/flows/endpoints/NS/NAME`, flows/l7-report.ts) from the endpoint's
   * sidecar or ext_authz server; absent: the route answers 404 (flows off).
   */
  readonly flows?: (endpoint: string, body: string) => { status: number; body: unknown };
}

type ErrorCode =
  | 'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN'
  | 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST'
  | 'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE';

const STATUS: Record<ErrorCode, number> = {
  DATAPLANE_ERR_POLICYSYNC_FORBIDDEN: 403,
  DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST: 400,
  DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE: 503,
};

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function fail(res: ServerResponse, code: ErrorCode, message: string): void {
  sendJson(res, STATUS[code], { error: { code, message } });
}

function readBody(req: IncomingMessage, max = MAX_BODY_BYTES): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        chunks.length = 0;
        reject(new Error('too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Makes `path` a directory of mode 0700 owned by us, refusing links and other file types. */
function ensurePrivateDir(path: string, mode = 0o700): void {
  if (existsSync(path)) {
    const st = lstatSync(path);
    if (!st.isDirectory() || st.isSymbolicLink())
      throw new Error(`${path} exists and is not a directory; refusing to use it`);
    chmodSync(path, mode);
    return;
  }
  mkdirSync(path, { mode });
  chmodSync(path, mode);
}

interface Served {
  readonly endpoint: string;
  readonly path: string;
  readonly server: Server;
}

export class EndpointSockets {
  private readonly dir: string;
  private readonly served = new Map<string, Served>();
  private chain: Promise<void> = Promise.resolve();
  private unlisten: (() => void) | undefined;
  private closed = false;

  constructor(private readonly options: EndpointSocketsOptions) {
    this.dir = (options.dir ?? DEFAULT_ENDPOINT_SOCKET_DIR).replace(/\/+$/, '');
  }

  /** Mode of the directories above the endpoint directories. */
  private get traverse(): number {
    return this.options.owner ? 0o711 : 0o700;
  }

  /** Creates the sockets of the current local endpoints and follows changes. */
  async start(): Promise<void> {
    if (!existsSync(this.dir)) mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    ensurePrivateDir(this.dir, this.traverse);
    this.unlisten = this.options.source.onLocalEndpointsChanged(() => void this.reconcile());
    await this.reconcile();
  }

  /** Socket path of each endpoint served now. */
  paths(): ReadonlyMap<string, string> {
    return new Map([...this.served.values()].map((s) => [s.endpoint, s.path]));
  }

  /** Serialised: the sockets follow `localEndpoints()`. Resolves when caught up. */
  reconcile(): Promise<void> {
    this.chain = this.chain.then(async () => {
      if (this.closed) return;
      const want = new Set(this.options.source.localEndpoints());
      for (const [ep, s] of this.served)
        if (!want.has(ep)) {
          this.served.delete(ep);
          await this.stopOne(s);
          this.options.say?.(`policy sync socket of ${ep} removed`);
        }
      for (const ep of want) {
        if (this.served.has(ep)) continue;
        try {
          const s = await this.startOne(ep);
          this.served.set(ep, s);
          this.options.say?.(`policy sync socket of ${ep} at ${s.path}`);
        } catch (e) {
          this.options.say?.(
            `error: no policy sync socket for ${ep}: ${e instanceof Error ? e.message : String(e)}`,
          );
        }
      }
    });
    return this.chain;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.unlisten?.();
    await this.chain;
    const all = [...this.served.values()];
    this.served.clear();
    await Promise.all(all.map((s) => this.stopOne(s)));
  }

  private async stopOne(s: Served): Promise<void> {
    s.server.closeAllConnections();
    await new Promise<void>((resolve) => s.server.close(() => resolve()));
    try {
      unlinkSync(s.path);
    } catch {
      // already gone
    }
    try {
      rmdirSync(dirname(s.path));
    } catch {
      // not empty or gone: left in place
    }
  }

  private async startOne(endpoint: string): Promise<Served> {
    const parts = splitEndpoint(endpoint);
    if (!parts) throw new Error(`${JSON.stringify(endpoint)} is not a namespace/name`);
    const path = endpointSocketPath(this.dir, parts.namespace, parts.name);
    ensurePrivateDir(`${this.dir}/${parts.namespace}`, this.traverse);
    ensurePrivateDir(dirname(path));
    await claimSocketPath(path);
    const server = createServer((req, res) => this.handle(endpoint, req, res));
    server.headersTimeout = 5_000;
    server.requestTimeout = 10_000;
    await listenRootOnly(server, path);
    const owner = this.options.owner;
    // Only root can hand a socket to another uid; otherwise the sidecar must run as the agent.
    if (owner && process.getuid?.() === 0) {
      chownSync(dirname(path), owner.uid, owner.gid);
      chownSync(path, owner.uid, owner.gid);
    }
    return { endpoint, path, server };
  }

  /** The routes of one endpoint's socket. */
  private handle(endpoint: string, req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://agent');
    } catch {
      return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', 'the request target is not a URL');
    }
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (path === '/v1/healthz' && method === 'GET')
      return sendJson(res, 200, { ok: true, endpoint });
    // Namespace and pod names never need escaping: the raw path must be the names themselves
    // (an encoded '/' or '%' is refused rather than decoded).
    const named = (prefix: string): string | undefined =>
      path.startsWith(`${prefix}/`) ? path.slice(prefix.length + 1) : undefined;
    const sync = named(POLICYSYNC_PREFIX);
    const svid = named(SVID_PREFIX);
    const flows = named(L7_REPORT_PREFIX);
    if (flows !== undefined) return this.flowReport(endpoint, flows, method, req, res);
    const intercept = named(INTERCEPT_PREFIX);
    const asked = sync ?? svid ?? intercept;
    if (asked === undefined)
      return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', `no route ${method} ${path}`);
    if (!splitEndpoint(asked))
      return fail(
        res,
        'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST',
        `expected ${sync !== undefined ? POLICYSYNC_PREFIX : svid !== undefined ? SVID_PREFIX : INTERCEPT_PREFIX}/NAMESPACE/NAME`,
      );
    if (asked !== endpoint)
      return fail(
        res,
        'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN',
        `this socket belongs to ${endpoint}; it does not answer for ${asked}`,
      );
    if (sync !== undefined) {
      if (method !== 'GET')
        return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', `${method} is not allowed here`);
      const ports = parseSyncPorts(url.searchParams.get('ports'));
      if (typeof ports === 'string')
        return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', ports);
      return this.stream(endpoint, ports, req, res);
    }
    if (intercept !== undefined && method !== 'PUT')
      return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', `${method} is not allowed here`);
    if (svid !== undefined && method !== 'POST')
      return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', `${method} is not allowed here`);
    const sink = this.options.intercept;
    if (intercept !== undefined && !sink)
      return fail(
        res,
        'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
        'this agent does not install interception rules',
      );
    readBody(req)
      .then(async (text) => {
        let doc: unknown;
        try {
          doc = JSON.parse(text ?? '');
        } catch {
          return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', 'the body is not JSON');
        }
        if (intercept !== undefined && sink) {
          const a = validateInterceptAnnouncement(doc);
          if (!a.ok)
            return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', a.problems.join('; '));
          const r = await sink.announce(endpoint, a.value);
          return sendJson(res, r.status, r.body);
        }
        const v = validateSvidRequest(doc);
        if (!v.ok) return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', v.problems.join('; '));
        const r = await this.options.source.issue(endpoint, v.value);
        sendJson(res, r.status, r.body);
      })
      .catch((e: unknown) => {
        if (e instanceof Error && e.message === 'too large')
          return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', 'the body is too large');
        fail(
          res,
          'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
          `the request failed: ${e instanceof Error ? e.message : String(e)}`,
        );
      });
  }

  /** An L7 flow report: only for the socket's own endpoint, handed to the agent's flows. */
  private flowReport(
    endpoint: string,
    asked: string,
    method: string,
    req: IncomingMessage,
    res: ServerResponse,
  ): void {
    const take = this.options.flows;
    if (!take) {
      req.resume();
      return sendJson(res, 404, {
        error: { code: 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', message: 'flow records are off' },
      });
    }
    if (!splitEndpoint(asked))
      return fail(
        res,
        'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST',
        `expected ${L7_REPORT_PREFIX}/NS/NAME`,
      );
    if (asked !== endpoint) {
      req.resume();
      return fail(
        res,
        'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN',
        `this socket belongs to ${endpoint}; it does not answer for ${asked}`,
      );
    }
    if (method !== 'POST')
      return fail(res, 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', `${method} is not allowed here`);
    readBody(req, MAX_REPORT_BYTES)
      .then((text) => {
        const r = take(endpoint, text ?? '');
        sendJson(res, r.status, r.body);
      })
      .catch((e: unknown) => {
        if (e instanceof Error && e.message === 'too large')
          return sendJson(res, 413, {
            error: {
              code: 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST',
              message: 'the report is too large',
            },
          });
        fail(res, 'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE', 'the report could not be read');
      });
  }

  private stream(
    endpoint: string,
    ports: readonly number[],
    req: IncomingMessage,
    res: ServerResponse,
  ): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    res.flushHeaders();
    const write = (m: PolicySyncMessage): void => {
      if (!res.writableEnded) res.write(`${JSON.stringify(m)}\n`);
    };
    const sub = this.options.source.subscribe(endpoint, ports, write);
    const beat = setInterval(() => {
      const v = sub.version();
      if (v !== undefined) write({ type: 'heartbeat', version: v });
    }, this.options.heartbeatMs ?? 10_000);
    const done = (): void => {
      clearInterval(beat);
      sub.unsubscribe();
    };
    req.socket.setTimeout(0);
    res.on('close', done);
    req.on('error', done);
  }
}
