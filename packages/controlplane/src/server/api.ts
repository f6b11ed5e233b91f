// The API server's request handler (DESIGN §6, §7): authentication, rate limits, authorization,
// CRUD + list + watch of every kind with optimistic concurrency, the all-or-nothing apply with a
// server-side dry run, tokens, and the audit log. A pure function from ApiRequest to ApiResponse
// (tests call it without a socket; server/listen.ts serves it over HTTPS).
// Owns: routing and the write path (one store transaction per write, the audit entry included).
// Must never: write half of an apply; answer before the audit entry of a write is committed;
// log or return a credential.

import { randomUUID } from 'node:crypto';
import type { Resource } from '@palisade/core';
import type { AuditChange, AuditRecord } from '../audit/audit-log.js';
import {
  appendAudit,
  appendOps,
  change,
  CHANGES_PER_ENTRY,
  principalRecord,
  queryAudit,
  readHead,
  verifyAudit,
} from '../audit/audit-log.js';
import type { Principal } from '../auth/principal.js';
import { describePrincipal, principalFromCertificate } from '../auth/principal.js';
import type { RoleRule, Target, Verb } from '../auth/rbac.js';
import { authorize, BUILTIN_ROLES, holdsRules } from '../auth/rbac.js';
import type { TokenRecord } from '../auth/tokens.js';
import { lookupToken, mintToken } from '../auth/tokens.js';
import type { ServerKind } from '../resources/kinds.js';
import { kindByPath, qualifiedKind, SERVER_KINDS } from '../resources/kinds.js';
import type { ApiObject } from '../resources/keys.js';
import {
  decodeObject,
  encodeObject,
  kindPrefix,
  namespacePrefix,
  omit,
  objectKey,
  parseObjectKey,
  RESOURCES_PREFIX,
  tokenKey,
} from '../resources/keys.js';
import { checkNamespaceName, checkResourceName } from '../resources/names.js';
import type { Compare, KeyValue, Op, Store, WatchBatch } from '../store/store.js';
import { StoreError } from '../store/store.js';
import { readAccess, targetOf } from './access.js';
import { ApiError } from './api-error.js';
import { connectivityDiff } from './connectivity-diff.js';
import type { ConnectivityDiff } from './connectivity-diff.js';
import type { ApiRequest, ApiResponse } from './http-types.js';
import { Metrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import type { RateLimitOptions } from './rate-limit.js';
import { RateLimiter } from './rate-limit.js';
import { validateBody } from './validate-body.js';
import type { CertificateAuthority } from '@palisade/pki';
import { PkiError, renewalTime } from '@palisade/pki';
import { PKI_ERRORS } from '@palisade/core';
import type { IssuanceAudit } from '../ca/server-ca.js';
import { CERTIFICATE_KIND, storeAuthorizer } from '../ca/server-ca.js';
import type { ValidObject } from './validate-body.js';
import type { FlowService } from '../flows/flow-api.js';
import { policyGraph } from '../flows/policy-graph.js';
import type { PolicyGraph } from '../flows/policy-graph.js';

export interface ApiServerOptions {
  readonly store: Store;
  readonly now?: () => Date;
  /** One structured line per request or event; never receives a credential. */
  readonly log?: (line: Readonly<Record<string, unknown>>) => void;
  /** Largest request body (default 8 MiB); larger bodies get 413. */
  readonly maxBodyBytes?: number;
  /** Most documents in one apply (default 4000, so an apply fits one store transaction). */
  readonly maxApplyDocuments?: number;
  /** Per-principal token bucket (default 100/s, burst 200); false disables it. */
  readonly rateLimit?: RateLimitOptions | false;
  /** Bookmark interval of watch streams (default 15 s). */
  readonly watchHeartbeatMs?: number;
  readonly metrics?: Metrics;
  /**
   * The Palisade CA: serves POST /api/v1/certificates and GET /api/v1/trust-bundle. Its audit
   * sink must be `issuanceAudit.sink`, so issuances land in this server's audit log.
   */
  readonly ca?: {
    readonly authority: CertificateAuthority;
    readonly audit: IssuanceAudit;
    /** Called after POST /api/v1/ca/rotate: the listener takes the new bundle as client CA. */
    readonly onRotated?: () => Promise<void>;
  };
  /** Unauthenticated static assets (GET/HEAD outside /api, e.g. the web console). */
  readonly staticRoute?: StaticRoute;
  /** The flow store and its routes under /api/v1/flows (absent: 404). */
  readonly flows?: FlowService;
}

/** Most bytes of a certificate request body (a CSR is at most 64 KiB). */
const MAX_CERT_REQUEST_BYTES = 80 * 1024;

/** Answers a static path, or undefined when it is not one of its files. Never sees credentials. */
export type StaticRoute = (path: string) => Promise<ApiResponse | undefined>;

export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;

interface Ctx {
  readonly req: ApiRequest;
  readonly url: URL;
  readonly remote: string;
  principal: Principal | undefined;
}

const JSON_HEADERS = { 'content-type': 'application/json' } as const;

function json(status: number, body: unknown, headers: Record<string, string> = {}): ApiResponse {
  return { status, headers: { ...JSON_HEADERS, ...headers }, body: `${JSON.stringify(body)}\n` };
}

interface WritePlan {
  readonly kind: ServerKind;
  readonly namespace: string | undefined;
  readonly name: string;
  readonly key: string;
  /** `upsert` is apply's create-or-update. */
  readonly verb: 'create' | 'update' | 'delete' | 'upsert';
  /** The desired object (absent for delete). */
  readonly object?: ApiObject;
  /** The resourceVersion the client said it read: a mismatch is a 409. */
  readonly expectRevision?: number;
  /** For label: builds the new object from the current one. */
  readonly mutate?: (current: ApiObject) => ApiObject;
}

interface PlannedChange {
  readonly plan: WritePlan;
  readonly verb: 'create' | 'update' | 'delete' | 'unchanged';
  readonly before: ApiObject | undefined;
  readonly after: ApiObject | undefined;
  readonly current: KeyValue | undefined;
}

export interface WriteOutcome {
  readonly revision: number;
  readonly results: readonly {
    readonly kind: string;
    readonly namespace?: string;
    readonly name: string;
    readonly action: 'created' | 'configured' | 'unchanged' | 'deleted';
    readonly object?: ApiObject;
  }[];
  readonly diff?: ConnectivityDiff;
}

function stripForCompare(o: ApiObject | undefined): string {
  if (!o) return '';
  const rest = omit(o, ['source']);
  return JSON.stringify({ ...rest, metadata: omit(o.metadata, ['resourceVersion']) });
}

function parseRevision(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' && typeof v !== 'number')
    throw new ApiError('API_ERR_BAD_REQUEST', `${what} must be a string`);
  const s = String(v);
  if (!/^\d{1,15}$/.test(s))
    throw new ApiError(
      'API_ERR_BAD_REQUEST',
      `${what} ${JSON.stringify(s.slice(0, 40))} is not a resourceVersion`,
      {
        hint: 'resourceVersion is the decimal number the server returned in metadata.resourceVersion',
      },
    );
  return Number(s);
}

function segment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new ApiError('API_ERR_BAD_REQUEST', 'the path has a malformed %-escape');
  }
}

function checkName(name: string): void {
  const p = checkResourceName(name);
  if (p) throw new ApiError('API_ERR_INVALID_NAME', p);
}

function checkNs(ns: string): void {
  const p = checkNamespaceName(ns);
  if (p) throw new ApiError('API_ERR_INVALID_NAME', p);
}

export class ApiServer {
  readonly store: Store;
  readonly metrics: Metrics;
  private readonly now: () => Date;
  private readonly log: (line: Readonly<Record<string, unknown>>) => void;
  private readonly maxBodyBytes: number;
  private readonly maxApplyDocuments: number;
  private readonly limiter: RateLimiter | undefined;
  private readonly authFailures: RateLimiter | undefined;
  private readonly heartbeatMs: number;
  private readonly ca: ApiServerOptions['ca'];
  readonly flows: FlowService | undefined;
  private policyGraphCache:
    { revision: number; byScope: Map<string, Promise<PolicyGraph>> } | undefined;
  private readonly staticRoute: StaticRoute | undefined;

  constructor(options: ApiServerOptions) {
    this.store = options.store;
    this.now = options.now ?? (() => new Date());
    this.log = options.log ?? (() => undefined);
    this.maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.maxApplyDocuments = options.maxApplyDocuments ?? 4000;
    this.limiter =
      options.rateLimit === false
        ? undefined
        : new RateLimiter(options.rateLimit ?? { perSecond: 100, burst: 200 });
    this.authFailures =
      options.rateLimit === false ? undefined : new RateLimiter({ perSecond: 2, burst: 20 });
    this.heartbeatMs = options.watchHeartbeatMs ?? 15_000;
    this.metrics = options.metrics ?? new Metrics();
    this.ca = options.ca;
    this.flows = options.flows;
    this.staticRoute = options.staticRoute;
  }

  get maxBody(): number {
    return this.maxBodyBytes;
  }

  /** Handles one request. Never throws: every failure is an error response. */
  async handle(req: ApiRequest): Promise<ApiResponse> {
    const started = Date.now();
    let url: URL;
    try {
      url = new URL(req.url, 'https://palisade.invalid');
    } catch {
      return json(400, { code: 'API_ERR_BAD_REQUEST', message: 'the request URL is malformed' });
    }
    const ctx: Ctx = { req, url, remote: req.remoteAddress, principal: undefined };
    let res: ApiResponse;
    let route = 'other';
    try {
      route = routeName(url.pathname);
      res = await this.route(ctx);
    } catch (e) {
      res = this.errorResponse(e, ctx);
    }
    this.metrics.request(route, req.method, res.status);
    this.log({
      msg: 'request',
      method: req.method,
      path: url.pathname,
      status: res.status,
      principal: ctx.principal ? describePrincipal(ctx.principal) : undefined,
      remote: ctx.remote,
      ms: Date.now() - started,
    });
    return res;
  }

  /** As handle, with the stream collected (tests). */
  async inject(
    req: Omit<Partial<ApiRequest>, 'body'> & {
      method: string;
      url: string;
      token?: string;
      body?: Buffer | string | object;
    },
  ): Promise<{
    status: number;
    headers: Readonly<Record<string, string>>;
    body: string;
    json: () => unknown;
  }> {
    const body =
      req.body === undefined
        ? Buffer.alloc(0)
        : Buffer.isBuffer(req.body)
          ? req.body
          : Buffer.from(typeof req.body === 'string' ? req.body : JSON.stringify(req.body));
    const res = await this.handle({
      method: req.method,
      url: req.url,
      headers: {
        ...(req.token !== undefined ? { authorization: `Bearer ${req.token}` } : {}),
        ...(req.headers ?? {}),
      },
      body,
      remoteAddress: req.remoteAddress ?? '127.0.0.1',
      ...(req.tls ? { tls: req.tls } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
    });
    let text: string;
    if ('stream' in res) {
      const parts: string[] = [];
      for await (const c of res.stream) parts.push(c);
      text = parts.join('');
    } else text = res.body;
    return {
      status: res.status,
      headers: res.headers,
      body: text,
      json: () => JSON.parse(text) as unknown,
    };
  }

  private errorResponse(e: unknown, ctx: Ctx): ApiResponse {
    if (e instanceof ApiError) return json(e.status, e.body(), e.headers);
    if (e instanceof StoreError) {
      switch (e.code) {
        case 'STORE_ERR_UNAVAILABLE':
        case 'STORE_ERR_CLOSED':
          return json(503, {
            code: 'API_ERR_UNAVAILABLE',
            message: `the store is unavailable: ${e.message}`,
            hint: e.maybeApplied
              ? 'the write may or may not have been applied: read the resource (or the audit log) before retrying'
              : 'nothing was written; retry when the store is back (GET /readyz)',
          });
        case 'STORE_ERR_TOO_LARGE':
          return json(413, {
            code: 'API_ERR_TOO_LARGE',
            message: e.message,
            hint: 'split the change into smaller applies',
          });
        case 'STORE_ERR_COMPACTED':
          return json(410, {
            code: 'API_ERR_GONE',
            message: e.message,
            hint: 'list again and watch from the list resourceVersion',
          });
        case 'STORE_ERR_FUTURE_REVISION':
          return json(400, { code: 'API_ERR_BAD_REQUEST', message: e.message });
        case 'STORE_ERR_CONFLICT':
          return json(409, { code: 'API_ERR_CONFLICT', message: e.message });
        case 'STORE_ERR_INVALID':
        case 'STORE_ERR_CORRUPT':
          // A malformed store request is the server's bug and a corrupt file an operator's
          // problem; the client learns neither detail. Logged below as internal.
          break;
      }
    }
    this.log({
      msg: 'internal error',
      path: ctx.url.pathname,
      error: e instanceof Error ? `${e.name}: ${e.message}` : 'non-error thrown',
    });
    return json(500, {
      code: 'API_ERR_INTERNAL',
      message: 'internal error; nothing was written',
      hint: 'the server log has the details',
    });
  }

  // ------------------------------------------------------------------ routing

  private async route(ctx: Ctx): Promise<ApiResponse> {
    const path = ctx.url.pathname;
    const method = ctx.req.method;
    if (path === '/healthz')
      return { status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok\n' };
    if (path === '/readyz') {
      try {
        const s = await this.store.status();
        return json(200, { ready: true, store: this.store.name, revision: s.revision });
      } catch (e) {
        return json(503, {
          code: 'API_ERR_UNAVAILABLE',
          message: `the store is not reachable: ${e instanceof Error ? e.message : 'unknown error'}`,
        });
      }
    }
    if (path === '/metrics')
      return {
        status: 200,
        headers: { 'content-type': 'text/plain; version=0.0.4' },
        body:
          this.metrics.render() +
          (this.ca?.authority.metrics.toPrometheus() ?? '') +
          (this.flows?.metrics.render() ?? ''),
      };
    if (path === '/openapi.json') return json(200, openApiDocument());
    if (this.staticRoute && !path.startsWith('/api/') && (method === 'GET' || method === 'HEAD')) {
      const r = await this.staticRoute(path);
      if (r) return r;
    }
    if (!path.startsWith('/api/v1/') && path !== '/api/v1')
      throw new ApiError('API_ERR_NOT_FOUND', `no such path: ${path.slice(0, 200)}`, {
        hint: 'the API lives under /api/v1; see /openapi.json',
      });

    if (ctx.req.body.length > this.maxBodyBytes)
      throw new ApiError(
        'API_ERR_TOO_LARGE',
        `the body is ${ctx.req.body.length} bytes; the limit is ${this.maxBodyBytes}`,
        {
          hint: 'split the input into several applies',
        },
      );
    try {
      await this.authenticate(ctx);
    } catch (e) {
      // Failed authentications are limited per remote address, so tokens cannot be guessed fast.
      const wait = e instanceof ApiError ? (this.authFailures?.take(`addr:${ctx.remote}`) ?? 0) : 0;
      if (wait > 0)
        throw new ApiError(
          'API_ERR_RATE_LIMITED',
          'too many failed authentications from this address',
          {
            hint: `retry after ${wait} s with a valid credential`,
            headers: { 'retry-after': String(wait) },
          },
        );
      throw e;
    }
    this.rateLimit(ctx);

    const parts = path
      .slice('/api/v1/'.length)
      .split('/')
      .filter((s, i, a) => s !== '' || i < a.length - 1);
    const [first, ...rest] = parts;
    switch (first) {
      case 'whoami':
        return json(200, ctx.principal);
      case 'kinds':
        return json(200, {
          kinds: SERVER_KINDS.map((k) => ({
            kind: k.kind,
            group: k.group,
            apiVersion: k.apiVersions[0],
            namespaced: k.namespaced,
            plural: k.plural,
            shortNames: k.shortNames,
            tiered: k.tiered !== false,
          })),
        });
      case 'apply':
        this.expect(method, ['POST']);
        return this.apply(ctx);
      case 'tokens':
        this.expect(method, ['POST']);
        return this.createToken(ctx);
      case 'audit':
        this.expect(method, ['GET']);
        return rest[0] === 'verify' ? this.auditVerify(ctx) : this.auditQuery(ctx);
      case 'watch':
        this.expect(method, ['GET']);
        return this.watch(ctx, undefined, undefined);
      case 'certificates':
        this.expect(method, ['POST']);
        return this.issueCertificate(ctx);
      case 'trust-bundle':
        this.expect(method, ['GET']);
        return this.trustBundle(ctx);
      case 'ca':
        if (rest[0] !== 'rotate' || rest.length !== 1)
          throw new ApiError('API_ERR_NOT_FOUND', 'no such path', {
            hint: 'POST /api/v1/ca/rotate',
          });
        this.expect(method, ['POST']);
        return this.rotateCa(ctx);
      case 'flows':
        return this.flowRoute(ctx, rest);
      case undefined:
        throw new ApiError('API_ERR_NOT_FOUND', 'no such path', { hint: 'see /openapi.json' });
      default:
        return this.resource(ctx, first, rest);
    }
  }

  private expect(method: string, allowed: readonly string[]): void {
    if (!allowed.includes(method))
      throw new ApiError(
        'API_ERR_METHOD_NOT_ALLOWED',
        `${method} is not served here; use ${allowed.join(' or ')}`,
        {
          headers: { allow: allowed.join(', ') },
        },
      );
  }

  // ------------------------------------------------------------------ authentication

  private async authenticate(ctx: Ctx): Promise<void> {
    const tls = ctx.req.tls;
    const auth = ctx.req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer ([^\s]+)$/i.exec(auth.trim());
      if (!m?.[1])
        throw new ApiError(
          'AUTH_ERR_INVALID_TOKEN',
          'the Authorization header must be "Bearer <token>"',
          {
            hint: 'run `palisade login` or pass --token-file',
          },
        );
      const r = await lookupToken(this.store, m[1], this.now());
      if (!r.ok) {
        if (r.principal)
          await this.auditRefusal(
            ctx,
            r.principal,
            'authenticate',
            undefined,
            401,
            'AUTH_ERR_INVALID_TOKEN',
            r.reason,
          );
        throw new ApiError('AUTH_ERR_INVALID_TOKEN', `the token is not valid: ${r.reason}`, {
          hint: 'run `palisade login` with a current token, or ask an admin for one (`palisade token create`)',
        });
      }
      ctx.principal = r.principal;
      return;
    }
    if (tls?.presented) {
      if (!tls.authorized)
        throw new ApiError(
          'AUTH_ERR_BAD_CERTIFICATE',
          `the client certificate was refused: ${describeTlsError(tls.authorizationError)}`,
          {
            hint: "use a current certificate issued by this server's CA (palisade ca issue), or a token",
          },
        );
      const p = tls.peer ? principalFromCertificate(tls.peer) : undefined;
      if (!p)
        throw new ApiError(
          'AUTH_ERR_BAD_CERTIFICATE',
          'the client certificate names no subject (no CN and no SPIFFE URI)',
        );
      ctx.principal = p;
      return;
    }
    throw new ApiError('AUTH_ERR_UNAUTHENTICATED', 'the request carries no credential', {
      hint: 'pass a bearer token (palisade login, --token-file, PALISADE_TOKEN) or a client certificate',
    });
  }

  private rateLimit(ctx: Ctx): void {
    if (!this.limiter) return;
    const key = ctx.principal
      ? `${ctx.principal.kind}:${ctx.principal.name}`
      : `addr:${ctx.remote}`;
    const wait = this.limiter.take(key);
    if (wait > 0)
      throw new ApiError('API_ERR_RATE_LIMITED', `too many requests from ${key}`, {
        hint: `retry after ${wait} s`,
        headers: { 'retry-after': String(wait) },
      });
  }

  private principal(ctx: Ctx): Principal {
    if (!ctx.principal) throw new ApiError('AUTH_ERR_UNAUTHENTICATED', 'not authenticated');
    return ctx.principal;
  }

  // ------------------------------------------------------------------ authorization

  /** Refuses (403, audited) unless the principal may `verb` every target. */
  private async authorize(
    ctx: Ctx,
    verb: Verb,
    targets: readonly Target[],
    what: {
      verb: string;
      kind?: string;
      namespace?: string | undefined;
      name?: string | undefined;
    },
    access?: Awaited<ReturnType<typeof readAccess>>,
  ): Promise<void> {
    const p = this.principal(ctx);
    const { roles, bindings } = access ?? (await readAccess(this.store));
    const d = authorize({ principal: p, verb, targets }, roles, bindings);
    if (d.allowed) return;
    this.metrics.refused();
    await this.auditRefusal(ctx, p, what.verb, what, 403, 'AUTH_ERR_FORBIDDEN', d.reason);
    throw new ApiError('AUTH_ERR_FORBIDDEN', `forbidden: ${d.reason}`, {
      hint: 'ask an admin for a RoleBinding that grants it; this attempt was recorded in the audit log',
    });
  }

  /** Filters objects to those the principal may read (list and watch across tiers). */
  private readFilter(
    p: Principal,
    verb: Verb,
    access: Awaited<ReturnType<typeof readAccess>>,
  ): (k: ServerKind, o: ApiObject) => boolean {
    return (k, o) =>
      authorize({ principal: p, verb, targets: [targetOf(k, o)] }, access.roles, access.bindings)
        .allowed;
  }

  private async auditRefusal(
    ctx: Ctx,
    p: Principal | undefined,
    verb: string,
    what: { kind?: string; namespace?: string | undefined; name?: string | undefined } | undefined,
    status: number,
    code: string,
    message: string,
  ): Promise<void> {
    const rec: AuditRecord = {
      time: this.now().toISOString(),
      principal: principalRecord(p),
      remote: ctx.remote,
      verb,
      ...(what?.kind !== undefined ? { kind: what.kind } : {}),
      ...(what?.namespace !== undefined ? { namespace: what.namespace } : {}),
      ...(what?.name !== undefined ? { name: what.name } : {}),
      outcome: 'refused',
      status,
      code,
      message,
    };
    await appendAudit(this.store, [rec]);
  }

  // ------------------------------------------------------------------ resources

  private async resource(
    ctx: Ctx,
    groupRaw: string,
    rest: readonly string[],
  ): Promise<ApiResponse> {
    const group = segment(groupRaw);
    const kindName = rest[0] === undefined ? undefined : segment(rest[0]);
    const k = kindName === undefined ? undefined : kindByPath(group, kindName);
    if (!k)
      throw new ApiError(
        'API_ERR_UNKNOWN_KIND',
        `no kind ${JSON.stringify(`${kindName ?? ''}`.slice(0, 80))} in group ${JSON.stringify(group.slice(0, 80))}`,
        {
          hint: `served kinds: ${SERVER_KINDS.map((s) => `${s.group}/${s.kind}`).join(', ')}`,
        },
      );
    const tail = rest.slice(1).map(segment);
    let namespace: string | undefined;
    let name: string | undefined;
    if (k.namespaced) {
      if (tail.length > 2)
        throw new ApiError('API_ERR_NOT_FOUND', 'too many path segments', {
          hint: `use /api/v1/${k.group}/${k.kind}/<namespace>/<name>`,
        });
      [namespace, name] = tail;
    } else {
      if (tail.length > 1)
        throw new ApiError(
          'API_ERR_NOT_FOUND',
          `${k.kind} is cluster-scoped: no namespace in its path`,
          { hint: `use /api/v1/${k.group}/${k.kind}/<name>` },
        );
      [name] = tail;
    }
    if (namespace !== undefined) checkNs(namespace);
    if (name !== undefined) checkName(name);
    const method = ctx.req.method;
    if (name === undefined) {
      if (method === 'GET') {
        const w = ctx.url.searchParams.get('watch');
        if (w === '1' || w === 'true') return this.watch(ctx, k, namespace);
        return this.list(ctx, k, namespace);
      }
      if (method === 'POST') return this.create(ctx, k, namespace);
      this.expect(method, ['GET', 'POST']);
    }
    const n = name as string;
    switch (method) {
      case 'GET':
        return this.get(ctx, k, namespace, n);
      case 'PUT':
        return this.update(ctx, k, namespace, n);
      case 'PATCH':
        return this.patch(ctx, k, namespace, n);
      case 'DELETE':
        return this.remove(ctx, k, namespace, n);
      default:
        this.expect(method, ['GET', 'PUT', 'PATCH', 'DELETE']);
        throw new Error('unreachable');
    }
  }

  private async get(
    ctx: Ctx,
    k: ServerKind,
    namespace: string | undefined,
    name: string,
  ): Promise<ApiResponse> {
    const what = { verb: 'get', kind: qualifiedKind(k), namespace, name };
    const kv = await this.store.get(objectKey(k, namespace, name));
    if (!kv) {
      await this.authorize(ctx, 'get', [{ kind: k.kind, group: k.group, namespace, name }], what);
      throw new ApiError(
        'API_ERR_NOT_FOUND',
        `${k.kind} ${namespace ? `${namespace}/` : ''}${name} does not exist`,
        {
          hint: `list them with: palisade get ${k.kind}${k.namespaced ? ' -A' : ''}`,
        },
      );
    }
    const o = decodeObject(kv);
    await this.authorize(ctx, 'get', [targetOf(k, o)], what);
    return json(200, o);
  }

  private async list(ctx: Ctx, k: ServerKind, namespace: string | undefined): Promise<ApiResponse> {
    const p = this.principal(ctx);
    await this.authorize(ctx, 'list', [{ kind: k.kind, group: k.group, namespace }], {
      verb: 'list',
      kind: qualifiedKind(k),
      namespace,
    });
    const access = await readAccess(this.store);
    const may = this.readFilter(p, 'list', access);
    const limitParam = ctx.url.searchParams.get('limit');
    const limit = limitParam === null ? undefined : Number(limitParam);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 100_000))
      throw new ApiError('API_ERR_BAD_REQUEST', 'limit must be an integer 1..100000');
    const cont = ctx.url.searchParams.get('continue');
    const prefix = namespace === undefined ? kindPrefix(k) : namespacePrefix(k, namespace);
    let after: string | undefined;
    if (cont !== null) {
      after = Buffer.from(cont, 'base64url').toString('utf8');
      if (!after.startsWith(prefix))
        throw new ApiError(
          'API_ERR_BAD_REQUEST',
          'the continue token does not belong to this list',
        );
    }
    const rv = parseRevision(ctx.url.searchParams.get('resourceVersion'), 'resourceVersion');
    const r = await this.store.list(prefix, {
      ...(limit !== undefined ? { limit } : {}),
      ...(after !== undefined ? { after } : {}),
      ...(rv !== undefined ? { revision: rv } : {}),
    });
    const items = r.items
      .filter((kv) => parseObjectKey(kv.key) !== undefined)
      .map(decodeObject)
      .filter((o) => may(k, o));
    const last = r.items[r.items.length - 1];
    return json(200, {
      apiVersion: 'v1',
      kind: 'List',
      metadata: {
        resourceVersion: String(r.revision),
        ...(r.more && last ? { continue: Buffer.from(last.key).toString('base64url') } : {}),
      },
      items,
    });
  }

  /** Reads one object from a create/update body, checked against the path. */
  private singleObject(
    ctx: Ctx,
    k: ServerKind,
    namespace: string | undefined,
    name: string | undefined,
  ): ValidObject {
    const text = this.bodyText(ctx);
    const v = validateBody(text, '<request>', 1);
    if (v.diagnostics.length > 0)
      throw new ApiError(
        'API_ERR_INVALID',
        `the ${k.kind} does not validate (${v.diagnostics.length} problem(s))`,
        {
          diagnostics: v.diagnostics,
          hint: 'fix the fields the diagnostics name; palisade validate -f FILE shows the same offline',
        },
      );
    const [o] = v.objects;
    if (!o || v.objects.length !== 1)
      throw new ApiError('API_ERR_BAD_REQUEST', 'the body must hold exactly one resource');
    if (o.kind !== k)
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `the body is a ${o.object.kind} (${o.object.apiVersion}) but the path is for ${qualifiedKind(k)}`,
      );
    if (name !== undefined && o.object.metadata.name !== name)
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `metadata.name ${JSON.stringify(o.object.metadata.name)} does not match the path (${name})`,
      );
    if (k.namespaced && namespace !== undefined && o.object.metadata.namespace !== namespace)
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `metadata.namespace ${JSON.stringify(o.object.metadata.namespace)} does not match the path (${namespace})`,
      );
    return o;
  }

  private bodyText(ctx: Ctx): string {
    const ct = (ctx.req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    const ok = [
      '',
      'application/json',
      'application/yaml',
      'application/x-yaml',
      'text/yaml',
      'text/plain',
      'application/merge-patch+json',
    ];
    if (!ok.includes(ct))
      throw new ApiError(
        'API_ERR_UNSUPPORTED_MEDIA_TYPE',
        `content type ${JSON.stringify(ct.slice(0, 80))} is not served`,
        {
          hint: 'send application/json or application/yaml',
        },
      );
    if (ctx.req.body.length === 0) throw new ApiError('API_ERR_BAD_REQUEST', 'the body is empty');
    const text = ctx.req.body.toString('utf8');
    if (text.includes('\u0000'))
      throw new ApiError('API_ERR_BAD_REQUEST', 'the body contains NUL characters');
    return text;
  }

  private async create(
    ctx: Ctx,
    k: ServerKind,
    namespace: string | undefined,
  ): Promise<ApiResponse> {
    const o = this.singleObject(ctx, k, namespace, undefined);
    const m = o.object.metadata;
    const out = await this.write(ctx, 'create', [
      {
        kind: k,
        namespace: m.namespace,
        name: m.name,
        key: objectKey(k, m.namespace, m.name),
        verb: 'create',
        object: o.object,
      },
    ]);
    return json(201, out.results[0]?.object);
  }

  private async update(
    ctx: Ctx,
    k: ServerKind,
    namespace: string | undefined,
    name: string,
  ): Promise<ApiResponse> {
    const o = this.singleObject(ctx, k, namespace, name);
    const rv = parseRevision(o.object.metadata.resourceVersion, 'metadata.resourceVersion');
    const out = await this.write(ctx, 'update', [
      {
        kind: k,
        namespace: o.object.metadata.namespace,
        name,
        key: objectKey(k, o.object.metadata.namespace, name),
        verb: 'update',
        object: o.object,
        ...(rv !== undefined ? { expectRevision: rv } : {}),
      },
    ]);
    return json(200, out.results[0]?.object);
  }

  /** A merge patch of metadata.labels only (`palisade label`): `{"metadata":{"labels":{k: v|null}}}`. */
  private async patch(
    ctx: Ctx,
    k: ServerKind,
    namespace: string | undefined,
    name: string,
  ): Promise<ApiResponse> {
    let body: unknown;
    try {
      body = JSON.parse(this.bodyText(ctx));
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `the patch is not valid JSON: ${(e as Error).message}`,
      );
    }
    const meta = (body as { metadata?: unknown } | null)?.metadata as
      Record<string, unknown> | undefined;
    const labels = meta?.labels;
    const extra = Object.keys((body as Record<string, unknown> | null) ?? {}).filter(
      (x) => x !== 'metadata',
    );
    const extraMeta = Object.keys(meta ?? {}).filter(
      (x) => x !== 'labels' && x !== 'resourceVersion',
    );
    if (
      typeof labels !== 'object' ||
      labels === null ||
      Array.isArray(labels) ||
      extra.length > 0 ||
      extraMeta.length > 0
    )
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        'a patch may only set metadata.labels (and metadata.resourceVersion)',
        {
          hint: 'e.g. {"metadata":{"labels":{"team":"payments","old":null}}}; use apply for other changes',
        },
      );
    const changes = labels as Record<string, unknown>;
    for (const [lk, lv] of Object.entries(changes))
      if (lv !== null && typeof lv !== 'string')
        throw new ApiError(
          'API_ERR_BAD_REQUEST',
          `label ${JSON.stringify(lk)} must be a string or null`,
        );
    const rv = parseRevision(meta?.resourceVersion, 'metadata.resourceVersion');
    const key = objectKey(k, namespace, name);
    const out = await this.write(ctx, 'label', [
      {
        kind: k,
        namespace,
        name,
        key,
        verb: 'update',
        ...(rv !== undefined ? { expectRevision: rv } : {}),
        mutate: (cur) => {
          const next: Record<string, string> = {
            ...((cur.metadata.labels as Record<string, string> | undefined) ?? {}),
          };
          for (const [lk, lv] of Object.entries(changes)) {
            if (lv === null) delete next[lk];
            else next[lk] = lv as string;
          }
          const candidate = { ...cur, metadata: { ...cur.metadata, labels: next } };
          const v = validateBody(JSON.stringify(candidate), '<patch>', 1);
          if (v.diagnostics.length > 0)
            throw new ApiError('API_ERR_INVALID', 'the labels do not validate', {
              diagnostics: v.diagnostics,
            });
          return candidate;
        },
      },
    ]);
    return json(200, out.results[0]?.object);
  }

  private async remove(
    ctx: Ctx,
    k: ServerKind,
    namespace: string | undefined,
    name: string,
  ): Promise<ApiResponse> {
    const rv = parseRevision(ctx.url.searchParams.get('resourceVersion'), 'resourceVersion');
    const out = await this.write(ctx, 'delete', [
      {
        kind: k,
        namespace: k.namespaced ? (namespace ?? 'default') : undefined,
        name,
        key: objectKey(k, namespace, name),
        verb: 'delete',
        ...(rv !== undefined ? { expectRevision: rv } : {}),
      },
    ]);
    return json(200, {
      status: 'deleted',
      kind: k.kind,
      namespace,
      name,
      resourceVersion: String(out.revision),
    });
  }

  // ------------------------------------------------------------------ apply

  private async apply(ctx: Ctx): Promise<ApiResponse> {
    const started = performance.now();
    const dryRun = ['1', 'true', 'all'].includes(ctx.url.searchParams.get('dryRun') ?? '');
    const file = (ctx.url.searchParams.get('file') ?? '<request>').slice(0, 200);
    const text = this.bodyText(ctx);
    const v = validateBody(text, file, this.maxApplyDocuments);
    const tooMany = v.diagnostics.find(
      (d) => d.code === 'POLICY_ERR_LIMIT_EXCEEDED' && d.message.startsWith('more than'),
    );
    if (tooMany)
      throw new ApiError(
        'API_ERR_TOO_LARGE',
        `more than ${this.maxApplyDocuments} documents in one apply`,
        {
          hint: 'split the input into several applies',
          diagnostics: v.diagnostics,
        },
      );
    if (v.diagnostics.length > 0)
      throw new ApiError(
        'API_ERR_INVALID',
        `${v.diagnostics.length} problem(s) in the input; nothing was applied`,
        {
          diagnostics: v.diagnostics,
          hint: 'fix them and apply again (palisade validate -f FILE shows the same offline)',
        },
      );
    if (v.objects.length === 0)
      throw new ApiError('API_ERR_BAD_REQUEST', 'the input holds no resources');
    const plans: WritePlan[] = v.objects.map((o) => {
      const m = o.object.metadata;
      const rv = parseRevision(
        m.resourceVersion,
        `metadata.resourceVersion of ${o.object.kind} ${m.name}`,
      );
      return {
        kind: o.kind,
        namespace: m.namespace,
        name: m.name,
        key: objectKey(o.kind, m.namespace, m.name),
        verb: 'upsert',
        object: o.object,
        ...(rv !== undefined ? { expectRevision: rv } : {}),
      };
    });
    const out = await this.write(ctx, dryRun ? 'apply.dryRun' : 'apply', plans, dryRun);
    if (!dryRun) this.metrics.apply((performance.now() - started) / 1000);
    return json(200, {
      dryRun,
      resourceVersion: String(out.revision),
      results: out.results.map(({ object: _o, ...r }) => r),
      ...(out.diff ? { connectivity: out.diff } : {}),
    });
  }

  // ------------------------------------------------------------------ the write path

  /**
   * Applies plans in one store transaction together with their audit entries: every plan's key
   * is compared with the revision it was read at, so a concurrent change makes the transaction
   * fail as a whole; it is then retried from a fresh read (or answered 409 when the client named
   * a resourceVersion that is no longer current).
   */
  private async write(
    ctx: Ctx,
    auditVerb: string,
    plans: readonly WritePlan[],
    dryRun = false,
  ): Promise<WriteOutcome> {
    const p = this.principal(ctx);
    const single = plans.length === 1 ? plans[0] : undefined;
    const what = {
      verb: auditVerb,
      ...(single
        ? { kind: qualifiedKind(single.kind), namespace: single.namespace, name: single.name }
        : {}),
    };
    for (let attempt = 0; attempt < 20; attempt++) {
      const [currents, head] = await Promise.all([
        Promise.all(plans.map((pl) => this.store.get(pl.key))),
        readHead(this.store),
      ]);
      const planned: PlannedChange[] = plans.map((pl, i) => this.plan(pl, currents[i]));
      // Authorization sees the current object (tier and node before the change) and the new one.
      const access = await readAccess(this.store);
      for (const c of planned) {
        const verb: Verb = c.verb === 'unchanged' ? 'update' : c.verb;
        const targets = [c.before, c.after]
          .filter((o): o is ApiObject => o !== undefined)
          .map((o) => targetOf(c.plan.kind, o));
        await this.authorize(
          ctx,
          verb,
          targets,
          {
            verb: auditVerb,
            kind: qualifiedKind(c.plan.kind),
            namespace: c.plan.namespace,
            name: c.plan.name,
          },
          access,
        );
      }
      await this.checkEscalation(ctx, auditVerb, planned, access);
      if (dryRun) {
        const diff = await this.dryRunDiff(planned);
        return {
          revision: (await this.store.status()).revision,
          results: this.results(planned, 0),
          diff,
        };
      }
      const effective = planned.filter((c) => c.verb !== 'unchanged');
      if (effective.length === 0)
        return {
          revision: (await this.store.status()).revision,
          results: this.results(planned, 0),
        };
      const compares: Compare[] = [
        head.compare,
        ...effective.map((c) => ({ key: c.plan.key, modRevision: c.current?.modRevision ?? 0 })),
      ];
      const ops: Op[] = effective.map((c) =>
        c.verb === 'delete'
          ? { kind: 'delete', key: c.plan.key }
          : { kind: 'put', key: c.plan.key, value: encodeObject(c.after as ApiObject) },
      );
      const inline = effective.length <= 10;
      const auditChanges: AuditChange[] = effective.map((c) =>
        change(
          c.verb as AuditChange['verb'],
          qualifiedKind(c.plan.kind),
          c.plan.namespace,
          c.plan.name,
          c.before ? JSON.parse(encodeObject(c.before)) : undefined,
          c.after ? JSON.parse(encodeObject(c.after)) : undefined,
          inline,
        ),
      );
      const records: AuditRecord[] = [];
      for (let i = 0; i < auditChanges.length; i += CHANGES_PER_ENTRY) {
        records.push({
          time: this.now().toISOString(),
          principal: principalRecord(p),
          remote: ctx.remote,
          verb: auditVerb,
          ...(what.kind !== undefined ? { kind: what.kind } : {}),
          ...(what.namespace !== undefined ? { namespace: what.namespace } : {}),
          ...(what.name !== undefined ? { name: what.name } : {}),
          outcome: 'allowed',
          status: 200,
          changes: auditChanges.slice(i, i + CHANGES_PER_ENTRY),
        });
      }
      const audit = appendOps(head.head, records);
      const r = await this.store.txn({ compares, success: [...ops, ...audit.ops] });
      if (r.succeeded) {
        this.log({
          msg: 'write',
          verb: auditVerb,
          principal: describePrincipal(p),
          changes: effective.length,
          revision: r.revision,
        });
        return { revision: r.revision, results: this.results(planned, r.revision) };
      }
      // Someone else wrote in between: re-read; plan() answers 409 if a named version is stale.
    }
    throw new ApiError(
      'API_ERR_CONFLICT',
      'the resources kept changing while this write was retried',
      {
        hint: 'retry; if it persists, fewer concurrent writers on the same objects help',
      },
    );
  }

  /**
   * Writing a Role or RoleBinding must not grant more than the writer holds (Kubernetes'
   * escalation rule): a new or changed Role's rules, and the rules of the role a new or changed
   * RoleBinding refers to (built-in, stored, or written in the same apply), are checked.
   */
  private async checkEscalation(
    ctx: Ctx,
    auditVerb: string,
    planned: readonly PlannedChange[],
    access: Awaited<ReturnType<typeof readAccess>>,
  ): Promise<void> {
    const p = this.principal(ctx);
    const pendingRoles = new Map<string, RoleRule[]>();
    for (const c of planned)
      if (c.plan.kind.kind === 'Role' && c.after && c.verb !== 'delete')
        pendingRoles.set(c.plan.name, (c.after as { rules?: RoleRule[] }).rules ?? []);
    for (const c of planned) {
      if (!c.plan.kind.access || c.verb === 'delete' || c.verb === 'unchanged' || !c.after)
        continue;
      let rules: readonly RoleRule[];
      if (c.plan.kind.kind === 'Role') rules = pendingRoles.get(c.plan.name) ?? [];
      else {
        const ref = (c.after as { roleRef?: { name?: string } }).roleRef?.name ?? '';
        if (ref === 'node') continue; // only ever applies to Node principals, as the node role
        rules =
          pendingRoles.get(ref) ??
          BUILTIN_ROLES.get(ref)?.rules ??
          access.roles.get(ref)?.rules ??
          [];
      }
      const d = holdsRules(p, rules, access.roles, access.bindings, kindInfo);
      if (d.allowed) continue;
      this.metrics.refused();
      await this.auditRefusal(
        ctx,
        p,
        auditVerb,
        { kind: qualifiedKind(c.plan.kind), name: c.plan.name },
        403,
        'AUTH_ERR_FORBIDDEN',
        `escalation: ${d.reason}`,
      );
      throw new ApiError(
        'AUTH_ERR_FORBIDDEN',
        `forbidden: ${c.plan.kind.kind} ${c.plan.name} would grant more than you hold: ${d.reason}`,
        {
          hint: 'an admin must write this role or binding; this attempt was recorded in the audit log',
        },
      );
    }
  }

  private plan(pl: WritePlan, current: KeyValue | undefined): PlannedChange {
    const label = `${pl.kind.kind} ${pl.namespace ? `${pl.namespace}/` : ''}${pl.name}`;
    const before = current ? decodeObject(current) : undefined;
    if (pl.expectRevision !== undefined && (current?.modRevision ?? 0) !== pl.expectRevision)
      throw new ApiError(
        'API_ERR_CONFLICT',
        current
          ? `${label} is at resourceVersion ${current.modRevision}, not ${pl.expectRevision}: it changed since you read it`
          : `${label} no longer exists (you read resourceVersion ${pl.expectRevision})`,
        { hint: 'get it again, reapply your change to the current version, and retry' },
      );
    if (pl.verb === 'delete') {
      if (!before) throw new ApiError('API_ERR_NOT_FOUND', `${label} does not exist`);
      return { plan: pl, verb: 'delete', before, after: undefined, current };
    }
    if (pl.verb === 'create' && before)
      throw new ApiError('API_ERR_ALREADY_EXISTS', `${label} already exists`, {
        hint: 'use palisade apply to change it',
      });
    if (pl.verb === 'update' && !before)
      throw new ApiError('API_ERR_NOT_FOUND', `${label} does not exist`, {
        hint: 'create it with palisade apply',
      });
    const desired = pl.mutate ? pl.mutate(before as ApiObject) : (pl.object as ApiObject);
    const after = this.stamp(desired, before);
    if (before && stripForCompare(before) === stripForCompare(after))
      return { plan: pl, verb: 'unchanged', before, after, current };
    return { plan: pl, verb: before ? 'update' : 'create', before, after, current };
  }

  /** Server-owned metadata: uid and creationTimestamp kept from the first version. */
  private stamp(o: ApiObject, before: ApiObject | undefined): ApiObject {
    const rest = omit(o, ['source']);
    const meta = omit(o.metadata, ['resourceVersion', 'uid', 'creationTimestamp', 'generation']);
    const uid = before?.metadata.uid ?? randomUUID();
    const creationTimestamp = before?.metadata.creationTimestamp ?? this.now().toISOString();
    return { ...rest, metadata: { ...meta, uid, creationTimestamp } } as unknown as ApiObject;
  }

  private results(planned: readonly PlannedChange[], revision: number): WriteOutcome['results'] {
    return planned.map((c) => {
      const action =
        c.verb === 'create'
          ? 'created'
          : c.verb === 'update'
            ? 'configured'
            : c.verb === 'delete'
              ? 'deleted'
              : 'unchanged';
      const object =
        c.after && c.verb !== 'delete'
          ? {
              ...c.after,
              metadata: {
                ...c.after.metadata,
                resourceVersion: String(
                  c.verb === 'unchanged' ? (c.current?.modRevision ?? 0) : revision,
                ),
              },
            }
          : undefined;
      return {
        kind: qualifiedKind(c.plan.kind),
        ...(c.plan.namespace !== undefined ? { namespace: c.plan.namespace } : {}),
        name: c.plan.name,
        action,
        ...(object ? { object } : {}),
      };
    });
  }

  /** Every policy-relevant resource now, and as it would be after the planned changes. */
  private async dryRunDiff(planned: readonly PlannedChange[]): Promise<ConnectivityDiff> {
    const all = await this.store.list(RESOURCES_PREFIX);
    const current = new Map<string, Resource>();
    for (const kv of all.items) {
      const ref = parseObjectKey(kv.key);
      if (!ref || ref.kind.access) continue;
      current.set(kv.key, decodeObject(kv) as unknown as Resource);
    }
    const after = new Map(current);
    const changed = [];
    for (const c of planned) {
      if (c.plan.kind.access || c.verb === 'unchanged') continue;
      if (c.verb === 'delete') after.delete(c.plan.key);
      else after.set(c.plan.key, c.after as unknown as Resource);
      changed.push({ before: current.get(c.plan.key), after: after.get(c.plan.key) });
    }
    return connectivityDiff([...current.values()], [...after.values()], changed);
  }

  // ------------------------------------------------------------------ watch

  private async watch(
    ctx: Ctx,
    k: ServerKind | undefined,
    namespace: string | undefined,
  ): Promise<ApiResponse> {
    const p = this.principal(ctx);
    if (k)
      await this.authorize(ctx, 'watch', [{ kind: k.kind, group: k.group, namespace }], {
        verb: 'watch',
        kind: qualifiedKind(k),
        namespace,
      });
    const prefix = k
      ? namespace === undefined
        ? kindPrefix(k)
        : namespacePrefix(k, namespace)
      : RESOURCES_PREFIX;
    const rv = parseRevision(ctx.url.searchParams.get('resourceVersion'), 'resourceVersion');
    const status = await this.store.status();
    if (rv !== undefined && rv + 1 < status.compactRevision)
      throw new ApiError(
        'API_ERR_GONE',
        `resourceVersion ${rv} is older than the kept history (${status.compactRevision})`,
        {
          hint: 'list again and watch from the list resourceVersion',
        },
      );
    if (rv !== undefined && rv > status.revision)
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `resourceVersion ${rv} is ahead of the store (${status.revision})`,
      );
    const access = await readAccess(this.store);
    const may = this.readFilter(p, 'watch', access);
    const heartbeatMs = this.heartbeatMs;
    const store = this.store;
    const metrics = this.metrics;
    const signal = ctx.req.signal;
    async function* events(): AsyncGenerator<string> {
      metrics.watchers++;
      const ac = new AbortController();
      const onAbort = () => ac.abort();
      signal?.addEventListener('abort', onAbort);
      try {
        let from: number;
        if (rv === undefined) {
          const l = await store.list(prefix);
          for (const kv of l.items) {
            const ref = parseObjectKey(kv.key);
            if (!ref) continue;
            const o = decodeObject(kv);
            if (may(ref.kind, o)) yield `${JSON.stringify({ type: 'ADDED', object: o })}\n`;
          }
          from = l.revision + 1;
        } else from = rv + 1;
        let last = from - 1;
        yield `${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: String(last) } } })}\n`;
        const it = store.watch(prefix, { fromRevision: from, signal: ac.signal });
        let pending = it.next();
        for (;;) {
          let timer: NodeJS.Timeout | undefined;
          const tick = new Promise<'tick'>((resolve) => {
            timer = setTimeout(() => resolve('tick'), heartbeatMs);
          });
          let r: IteratorResult<WatchBatch> | 'tick';
          try {
            r = await Promise.race([pending, tick]);
          } catch (e) {
            clearTimeout(timer);
            if (e instanceof StoreError && e.code === 'STORE_ERR_COMPACTED') {
              yield `${JSON.stringify({ type: 'ERROR', object: { code: 'API_ERR_GONE', status: 410, message: 'the watch fell behind the kept history', hint: 'list again and watch from the list resourceVersion' } })}\n`;
              return;
            }
            if (ac.signal.aborted) return;
            yield `${JSON.stringify({ type: 'ERROR', object: { code: 'API_ERR_UNAVAILABLE', status: 503, message: e instanceof Error ? e.message : 'the watch failed', hint: 'watch again from the last resourceVersion seen' } })}\n`;
            return;
          }
          clearTimeout(timer);
          if (r === 'tick') {
            yield `${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: String(last) } } })}\n`;
            continue;
          }
          if (r.done) return;
          const batch = r.value;
          for (const ev of batch.events) {
            const ref = parseObjectKey(ev.kv.key);
            if (!ref) continue;
            let o: ApiObject;
            let type: string;
            if (ev.type === 'put') {
              o = decodeObject(ev.kv);
              type = ev.kv.version === 1 ? 'ADDED' : 'MODIFIED';
            } else {
              o = ev.prevKv
                ? {
                    ...decodeObject(ev.prevKv),
                    metadata: {
                      ...decodeObject(ev.prevKv).metadata,
                      resourceVersion: String(ev.kv.modRevision),
                    },
                  }
                : {
                    apiVersion: ref.kind.apiVersions[0] ?? '',
                    kind: ref.kind.kind,
                    metadata: {
                      name: ref.name,
                      ...(ref.namespace ? { namespace: ref.namespace } : {}),
                      resourceVersion: String(ev.kv.modRevision),
                    },
                  };
              type = 'DELETED';
            }
            if (may(ref.kind, o)) yield `${JSON.stringify({ type, object: o })}\n`;
          }
          last = batch.revision;
          pending = it.next();
        }
      } finally {
        metrics.watchers--;
        signal?.removeEventListener('abort', onAbort);
        ac.abort();
      }
    }
    return {
      status: 200,
      headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' },
      stream: events(),
    };
  }

  /**
   * A small JSON object body: at most `maxBytes`, an object, no field but `fields` (the first
   * unknown one named, cut to 40 characters).
   */
  private jsonObjectBody(
    ctx: Ctx,
    o: {
      readonly maxBytes: number;
      readonly what: string;
      readonly shape: string;
      readonly fields: readonly string[];
      readonly hint: string;
    },
  ): Record<string, unknown> {
    if (ctx.req.body.length > o.maxBytes)
      throw new ApiError('API_ERR_TOO_LARGE', `${o.what} is at most ${o.maxBytes / 1024} KiB`);
    let body: Record<string, unknown>;
    try {
      const v = JSON.parse(this.bodyText(ctx)) as unknown;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      body = v as Record<string, unknown>;
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw new ApiError('API_ERR_BAD_REQUEST', `the body must be a JSON object ${o.shape}`);
    }
    const unknown = Object.keys(body).find((x) => !o.fields.includes(x));
    if (unknown !== undefined)
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `unknown field ${JSON.stringify(unknown.slice(0, 40))}`,
        {
          hint: o.hint,
        },
      );
    return body;
  }

  // ------------------------------------------------------------------ tokens

  private async createToken(ctx: Ctx): Promise<ApiResponse> {
    const p = this.principal(ctx);
    const body = this.jsonObjectBody(ctx, {
      maxBytes: 64 * 1024,
      what: 'a token request',
      shape: '{"user"|"node", "groups"?, "ttlSeconds"?}',
      fields: ['user', 'node', 'groups', 'ttlSeconds'],
      hint: 'fields: user or node, groups, ttlSeconds',
    });
    const user = body.user;
    const node = body.node;
    if ((user === undefined) === (node === undefined))
      throw new ApiError('API_ERR_BAD_REQUEST', 'give exactly one of user and node');
    const subjectName = user ?? node;
    if (
      typeof subjectName !== 'string' ||
      subjectName.length === 0 ||
      subjectName.length > 253 ||
      !/^[A-Za-z0-9@:._/-]+$/.test(subjectName)
    )
      throw new ApiError(
        'API_ERR_INVALID_NAME',
        'the user or node name must be 1-253 letters, digits and @:._/-',
      );
    if (node !== undefined) checkName(subjectName);
    const groups = body.groups ?? [];
    if (
      !Array.isArray(groups) ||
      groups.length > 64 ||
      !groups.every((g) => typeof g === 'string' && /^[A-Za-z0-9:._-]{1,253}$/.test(g))
    )
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        'groups must be a list of at most 64 names of letters, digits and :._-',
      );
    const ttl = body.ttlSeconds;
    if (
      ttl !== undefined &&
      (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 60 || ttl > 10 * 365 * 86400)
    )
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        'ttlSeconds must be an integer from 60 to 315360000',
      );
    const subject = {
      kind: node !== undefined ? ('Node' as const) : ('User' as const),
      name: subjectName,
    };
    await this.authorize(
      ctx,
      'create',
      [{ kind: 'Token', group: 'palisade.dev', name: subjectName }],
      {
        verb: 'token.create',
        kind: 'Token.palisade.dev',
        name: `${subject.kind} ${subjectName}`,
      },
    );
    const minted = mintToken();
    const now = this.now();
    const rec: TokenRecord = {
      id: minted.id,
      subject,
      groups: groups as string[],
      createdAt: now.toISOString(),
      createdBy: describePrincipal(p),
      ...(ttl !== undefined
        ? { expiresAt: new Date(now.getTime() + ttl * 1000).toISOString() }
        : {}),
    };
    for (let attempt = 0; attempt < 20; attempt++) {
      const head = await readHead(this.store);
      const audit = appendOps(head.head, [
        {
          time: now.toISOString(),
          principal: principalRecord(p),
          remote: ctx.remote,
          verb: 'token.create',
          kind: 'Token.palisade.dev',
          name: `${subject.kind} ${subjectName}`,
          outcome: 'allowed',
          status: 201,
          message: `token ${rec.id} for ${subject.kind} ${subjectName}${rec.groups.length ? ` (groups ${rec.groups.join(', ')})` : ''}`,
        },
      ]);
      const key = tokenKey(minted.hash);
      const r = await this.store.txn({
        compares: [head.compare, { key, modRevision: 0 }],
        success: [{ kind: 'put', key, value: JSON.stringify(rec) }, ...audit.ops],
      });
      if (r.succeeded) return json(201, { ...rec, token: minted.token });
    }
    throw new ApiError('API_ERR_CONFLICT', 'could not record the token; retry');
  }

  // ------------------------------------------------------------------ certificates

  private requireCa(): NonNullable<ApiServerOptions['ca']> {
    if (!this.ca)
      throw new ApiError('API_ERR_UNAVAILABLE', 'this server runs without a certificate authority');
    return this.ca;
  }

  /**
   * POST /api/v1/certificates `{csr, spiffeId, ttlSeconds?}`: an X509-SVID for the CSR's public
   * key, only for a Node principal and only while an endpoint running as that identity is
   * registered on that node. Every issuance and refusal is in the audit log before the answer.
   */
  private async issueCertificate(ctx: Ctx): Promise<ApiResponse> {
    const { authority, audit } = this.requireCa();
    const p = this.principal(ctx);
    if (p.kind !== 'Node') {
      this.metrics.refused();
      await this.auditRefusal(
        ctx,
        p,
        'certificate.issue',
        { kind: CERTIFICATE_KIND },
        403,
        'AUTH_ERR_FORBIDDEN',
        `${describePrincipal(p)} is not a node; only node credentials may request workload certificates`,
      );
      throw new ApiError(
        'AUTH_ERR_FORBIDDEN',
        'forbidden: only a node credential may request workload certificates',
        {
          hint: 'node agents call this with a node token (palisade token create --node N); this attempt was recorded in the audit log',
        },
      );
    }
    let parsed: { csr: string; spiffeId: string; ttlSeconds: number | undefined };
    try {
      parsed = this.certificateRequest(ctx);
    } catch (e) {
      // A malformed request is a refusal like any other: recorded before the answer.
      if (e instanceof ApiError)
        await this.auditRefusal(
          ctx,
          p,
          'certificate.issue',
          { kind: CERTIFICATE_KIND },
          e.status,
          e.code,
          e.message,
        );
      throw e;
    }
    const { csr, spiffeId, ttlSeconds } = parsed;
    const now = this.now();
    const r = await audit.run({ principal: p, remote: ctx.remote }, () =>
      authority.issueFromCsr(csr, {
        spiffeId,
        requester: `node:${p.name}`,
        now,
        ...(ttlSeconds !== undefined ? { ttl: ttlSeconds * 1000 } : {}),
        authorize: storeAuthorizer(this.store, p.name, authority.trustDomain),
      }),
    );
    if (!r.ok)
      return json(PKI_ERRORS[r.code].status, {
        code: r.code,
        message: r.message,
        hint: 'this refusal was recorded in the audit log',
      });
    return json(201, {
      spiffeId: r.svid.spiffeId,
      serial: r.svid.serial,
      certPem: r.svid.certPem,
      chainPem: r.svid.chainPem,
      bundlePem: r.svid.bundlePem,
      notBefore: r.svid.notBefore.toISOString(),
      notAfter: r.svid.notAfter.toISOString(),
      renewAt: renewalTime(r.svid, Math.random).toISOString(),
    });
  }

  private certificateRequest(ctx: Ctx): {
    csr: string;
    spiffeId: string;
    ttlSeconds: number | undefined;
  } {
    const body = this.jsonObjectBody(ctx, {
      maxBytes: MAX_CERT_REQUEST_BYTES,
      what: 'a certificate request',
      shape: '{"csr": PEM, "spiffeId": "spiffe://…", "ttlSeconds"?}',
      fields: ['csr', 'spiffeId', 'ttlSeconds'],
      hint: 'fields: csr, spiffeId, ttlSeconds',
    });
    const { csr, spiffeId, ttlSeconds } = body;
    if (typeof csr !== 'string' || typeof spiffeId !== 'string')
      throw new ApiError('API_ERR_BAD_REQUEST', 'csr and spiffeId must be strings');
    if (
      ttlSeconds !== undefined &&
      (typeof ttlSeconds !== 'number' || !Number.isInteger(ttlSeconds))
    )
      throw new ApiError('API_ERR_BAD_REQUEST', 'ttlSeconds must be an integer');
    return { csr, spiffeId, ttlSeconds };
  }

  /**
   * POST /api/v1/ca/rotate `{"overlapSeconds"?, "activateAfterSeconds"?}`: a new root joins the
   * bundle at once and signs from `activateAfterSeconds` (default half the overlap, so relying
   * parties have time to fetch the new bundle first); the old root stays trusted until the overlap ends and its last
   * certificate expires, so no workload loses trust. Admins only; audited either way.
   */
  private async rotateCa(ctx: Ctx): Promise<ApiResponse> {
    const { authority, onRotated } = this.requireCa();
    const p = this.principal(ctx);
    let overlapSeconds: unknown;
    let activateAfterSeconds: unknown;
    try {
      const text = this.bodyText(ctx).trim();
      const v = (text === '' ? {} : JSON.parse(text)) as unknown;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      const extra = Object.keys(v).filter(
        (k) => k !== 'overlapSeconds' && k !== 'activateAfterSeconds',
      );
      if (extra.length > 0) throw new Error(`unknown field ${JSON.stringify(extra[0])}`);
      ({ overlapSeconds, activateAfterSeconds } = v as {
        overlapSeconds?: unknown;
        activateAfterSeconds?: unknown;
      });
    } catch (e) {
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        `the body must be a JSON object {"overlapSeconds"?}: ${e instanceof Error ? e.message : 'unreadable'}`,
      );
    }
    if (
      overlapSeconds !== undefined &&
      (typeof overlapSeconds !== 'number' ||
        !Number.isInteger(overlapSeconds) ||
        overlapSeconds < 60 ||
        overlapSeconds > 90 * 86400)
    )
      throw new ApiError(
        'API_ERR_BAD_REQUEST',
        'overlapSeconds must be an integer from 60 to 7776000',
      );
    const what = {
      verb: 'ca.rotate',
      kind: 'CertificateAuthority.palisade.dev',
      name: authority.trustDomain,
    };
    await this.authorize(
      ctx,
      'update',
      [{ kind: 'CertificateAuthority', group: 'palisade.dev', name: authority.trustDomain }],
      what,
    );
    const now = this.now();
    let info;
    try {
      info = await authority.rotate({
        now,
        ...(typeof overlapSeconds === 'number' ? { overlapMs: overlapSeconds * 1000 } : {}),
        ...(typeof activateAfterSeconds === 'number'
          ? { activateAfterMs: activateAfterSeconds * 1000 }
          : {}),
      });
    } catch (e) {
      if (e instanceof PkiError) {
        const status = PKI_ERRORS[e.code].status;
        await this.auditRefusal(ctx, p, what.verb, what, status, e.code, e.message);
        return json(status, { code: e.code, message: e.message });
      }
      throw e;
    }
    await appendAudit(this.store, [
      {
        time: now.toISOString(),
        principal: principalRecord(p),
        remote: ctx.remote,
        verb: what.verb,
        kind: what.kind,
        name: what.name,
        outcome: 'allowed',
        status: 200,
        message: `root rotation started; the bundle holds ${authority.bundleCertificates(now).length} certificates`,
      },
    ]);
    if (onRotated) await onRotated();
    return json(200, { rotated: true, authority: info });
  }

  /** GET /api/v1/trust-bundle: PEM, or the SPIFFE bundle (JWKS) with `?format=jwks`. */
  private trustBundle(ctx: Ctx): ApiResponse {
    const { authority } = this.requireCa();
    this.principal(ctx);
    const format = ctx.url.searchParams.get('format') ?? 'pem';
    const now = this.now();
    if (format === 'jwks')
      return json(200, authority.bundleJwks(now), { 'cache-control': 'no-store' });
    if (format !== 'pem') throw new ApiError('API_ERR_BAD_REQUEST', 'format must be pem or jwks');
    return {
      status: 200,
      headers: { 'content-type': 'application/x-pem-file', 'cache-control': 'no-store' },
      body: authority.bundle(now),
    };
  }

  // ------------------------------------------------------------------ audit

  private async auditQuery(ctx: Ctx): Promise<ApiResponse> {
    await this.authorize(ctx, 'list', [{ kind: 'AuditEntry', group: 'palisade.dev' }], {
      verb: 'audit.read',
      kind: 'AuditEntry.palisade.dev',
    });
    const q = ctx.url.searchParams;
    const since = q.get('since');
    const until = q.get('until');
    const parseTime = (s: string, what: string): Date => {
      const t = Date.parse(s);
      if (Number.isNaN(t))
        throw new ApiError(
          'API_ERR_BAD_REQUEST',
          `${what} ${JSON.stringify(s.slice(0, 40))} is not an ISO time`,
        );
      return new Date(t);
    };
    const outcome = q.get('outcome');
    if (outcome !== null && outcome !== 'allowed' && outcome !== 'refused')
      throw new ApiError('API_ERR_BAD_REQUEST', 'outcome must be allowed or refused');
    const limit = q.get('limit');
    const lim = limit === null ? 1000 : Number(limit);
    if (!Number.isInteger(lim) || lim < 1 || lim > 100_000)
      throw new ApiError('API_ERR_BAD_REQUEST', 'limit must be an integer 1..100000');
    const entries = await queryAudit(this.store, {
      ...(q.get('user') !== null ? { user: q.get('user') as string } : {}),
      ...(q.get('kind') !== null ? { kind: q.get('kind') as string } : {}),
      ...(q.get('name') !== null ? { name: q.get('name') as string } : {}),
      ...(q.get('namespace') !== null ? { namespace: q.get('namespace') as string } : {}),
      ...(since !== null ? { since: parseTime(since, 'since') } : {}),
      ...(until !== null ? { until: parseTime(until, 'until') } : {}),
      ...(outcome !== null ? { outcome } : {}),
      limit: lim,
    });
    return json(200, { entries });
  }

  private async flowRoute(ctx: Ctx, rest: readonly string[]): Promise<ApiResponse> {
    if (!this.flows) throw new ApiError('API_ERR_NOT_FOUND', 'this server keeps no flow records');
    const p = this.principal(ctx);
    const what = { verb: 'flows', kind: 'FlowRecord.palisade.dev' };
    return this.flows.route(
      {
        method: ctx.req.method,
        url: ctx.url,
        body: ctx.req.body,
        principal: p,
        ...(ctx.req.signal ? { signal: ctx.req.signal } : {}),
        authorizeRead: (namespace) =>
          this.authorize(ctx, 'list', [{ kind: 'FlowRecord', group: 'palisade.dev', namespace }], {
            ...what,
            verb: 'flows.read',
            namespace,
          }),
        policyGraph: (namespace) => this.policyGraphOf(namespace),
        refuse: async (reason) => {
          this.metrics.refused();
          await this.auditRefusal(ctx, p, 'flows.report', what, 403, 'AUTH_ERR_FORBIDDEN', reason);
          throw new ApiError('AUTH_ERR_FORBIDDEN', `forbidden: ${reason}`, {
            hint: 'flow batches come from node agents (palisade token create --node NAME)',
          });
        },
      },
      rest,
    );
  }

  /**
   * What policy allows between the stored endpoints, computed once per store revision and
   * namespace scope (concurrent readers share one computation).
   */
  private async policyGraphOf(namespace: string | undefined): Promise<PolicyGraph> {
    const revision = (await this.store.status()).revision;
    const key = namespace ?? '';
    if (this.policyGraphCache?.revision !== revision)
      this.policyGraphCache = { revision, byScope: new Map() };
    const cache = this.policyGraphCache;
    let g = cache.byScope.get(key);
    if (!g) {
      g = (async () => {
        const all = await this.store.list(RESOURCES_PREFIX);
        const resources: Resource[] = [];
        for (const kv of all.items) {
          const ref = parseObjectKey(kv.key);
          if (!ref || ref.kind.access) continue;
          resources.push(decodeObject(kv) as unknown as Resource);
        }
        return policyGraph(resources, namespace !== undefined ? { namespace } : {});
      })();
      cache.byScope.set(key, g);
      // A failed computation is not kept.
      g.catch(() => cache.byScope.delete(key));
    }
    return g;
  }

  private async auditVerify(ctx: Ctx): Promise<ApiResponse> {
    await this.authorize(ctx, 'get', [{ kind: 'AuditEntry', group: 'palisade.dev' }], {
      verb: 'audit.verify',
      kind: 'AuditEntry.palisade.dev',
    });
    const r = await verifyAudit(this.store);
    return json(200, r);
  }
}

function kindInfo(kind: string): { group: string; tiered: boolean } {
  if (kind === 'Token' || kind === 'AuditEntry') return { group: 'palisade.dev', tiered: false };
  const k = SERVER_KINDS.find((x) => x.kind === kind);
  return { group: k?.group ?? '', tiered: k !== undefined && k.tiered !== false };
}

function describeTlsError(code: string | undefined): string {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return 'it has expired (CERT_HAS_EXPIRED)';
    case 'CERT_NOT_YET_VALID':
      return 'it is not valid yet (CERT_NOT_YET_VALID)';
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return `it was not issued by this server's CA (${code})`;
    case undefined:
      return 'it could not be verified';
    default:
      return `it could not be verified (${code})`;
  }
}

/** A fixed route name for metrics (never user input). */
function routeName(path: string): string {
  if (path === '/healthz' || path === '/readyz' || path === '/metrics' || path === '/openapi.json')
    return path;
  const m = /^\/api\/v1\/([^/]+)/.exec(path);
  if (!m) return 'other';
  const first = m[1] ?? '';
  if (
    [
      'whoami',
      'kinds',
      'apply',
      'tokens',
      'audit',
      'watch',
      'certificates',
      'trust-bundle',
      'flows',
    ].includes(first)
  )
    return `/api/v1/${first}`;
  return SERVER_KINDS.some((k) => k.group === first) ? `/api/v1/${first}` : 'other';
}
