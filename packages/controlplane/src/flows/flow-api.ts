// The flow routes of the API server (issue 8 §2): nodes POST batches to /api/v1/flows; readers
// query /api/v1/flows (optionally as a live stream), /api/v1/flows/graph, /api/v1/flows/policies
// and /api/v1/flows/stats. Owns: query parsing and the node-only ingest rule. Must never: store a
// record a node sent for another node (the server stamps the authenticated node's name), accept
// an unvalidated field, or stream without a bound on what it buffers.

import type { Principal } from '../auth/principal.js';
import { ApiError } from '../server/api-error.js';
import type { ApiResponse } from '../server/http-types.js';
import type { FlowBatch } from './flow-record.js';
import { FLOW_LIMITS, validateFlowBatch } from './flow-record.js';
import type { FlowMetrics } from './flow-metrics.js';
import type { FlowQuery, FlowStore } from './flow-store.js';
import type { PolicyGraph } from './policy-graph.js';

export interface FlowRouteContext {
  readonly method: string;
  readonly url: URL;
  readonly body: Buffer;
  readonly principal: Principal;
  readonly signal?: AbortSignal;
  /** Refuses (403, audited) unless the principal may list flow records in `namespace` (or all). */
  readonly authorizeRead: (namespace: string | undefined) => Promise<void>;
  /** Refuses (403, audited) with this reason. */
  readonly refuse: (reason: string) => Promise<never>;
  /** What policy allows between the stored endpoints (absent: the graph has no policy edges). */
  readonly policyGraph?: (namespace: string | undefined) => Promise<PolicyGraph>;
}

export interface FlowServiceOptions {
  readonly store: FlowStore;
  readonly metrics: FlowMetrics;
  readonly now?: () => number;
  /** Heartbeat interval of follow streams (default 15 s). */
  readonly heartbeatMs?: number;
}

function json(status: number, body: unknown): ApiResponse {
  return {
    status,
    headers: { 'content-type': 'application/json' },
    body: `${JSON.stringify(body)}\n`,
  };
}

const DURATION_RE = /^(\d{1,9})(s|m|h|d)$/;
const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3600_000, d: 86400_000 };

/** `2026-01-01T00:00:00Z`, a millisecond timestamp, or a duration before now (`15m`, `2h`). */
export function parseFlowTime(s: string, what: string, nowMs: number): number {
  const d = DURATION_RE.exec(s);
  if (d) return nowMs - Number(d[1]) * (UNIT_MS[d[2] ?? 's'] ?? 1000);
  if (/^\d{10,15}$/.test(s)) return Number(s);
  const t = Date.parse(s);
  if (s.length > 40 || Number.isNaN(t))
    throw new ApiError(
      'API_ERR_BAD_REQUEST',
      `${what} ${JSON.stringify(s.slice(0, 40))} is not a time`,
      {
        hint: 'use an ISO 8601 time (2026-01-01T10:00:00Z) or a duration before now (15m, 2h, 1d)',
      },
    );
  return t;
}

/**
 * A page cursor: `END.ID` (the `next` of a page, newest window first) or a bare id (the cursor
 * of earlier versions: smaller ids, newest id first).
 */
function parseBefore(v: string | null): number | { endMs: number; id: number } | undefined {
  if (v === null) return undefined;
  if (/^\d{1,15}$/.test(v)) return Number(v);
  const m = /^(-?\d{1,15})\.(\d{1,15})$/.exec(v);
  if (m) return { endMs: Number(m[1]), id: Number(m[2]) };
  throw new ApiError('API_ERR_BAD_REQUEST', 'before must be the next cursor of a page (or an id)');
}

const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export class FlowService {
  readonly store: FlowStore;
  readonly metrics: FlowMetrics;
  private readonly now: () => number;
  private readonly heartbeatMs: number;

  constructor(o: FlowServiceOptions) {
    this.store = o.store;
    this.metrics = o.metrics;
    this.now = o.now ?? Date.now;
    this.heartbeatMs = o.heartbeatMs ?? 15_000;
  }

  async route(ctx: FlowRouteContext, rest: readonly string[]): Promise<ApiResponse> {
    const sub = rest[0];
    if (rest.length > 1) throw new ApiError('API_ERR_NOT_FOUND', 'no such flow path');
    if (sub === undefined || sub === '') {
      if (ctx.method === 'POST') return this.ingest(ctx);
      this.expect(ctx, ['GET', 'POST']);
      return this.list(ctx);
    }
    this.expect(ctx, ['GET']);
    switch (sub) {
      case 'graph':
        return this.graph(ctx);
      case 'policies':
        return this.policies(ctx);
      case 'stats':
        await ctx.authorizeRead(undefined);
        return json(200, this.store.stats());
      default:
        throw new ApiError(
          'API_ERR_NOT_FOUND',
          `no flow view ${JSON.stringify(sub.slice(0, 40))}`,
          {
            hint: 'GET /api/v1/flows, /api/v1/flows/graph, /api/v1/flows/policies, /api/v1/flows/stats',
          },
        );
    }
  }

  private expect(ctx: FlowRouteContext, allowed: readonly string[]): void {
    if (!allowed.includes(ctx.method))
      throw new ApiError(
        'API_ERR_METHOD_NOT_ALLOWED',
        `${ctx.method} is not served here; use ${allowed.join(' or ')}`,
        { headers: { allow: allowed.join(', ') } },
      );
  }

  private async ingest(ctx: FlowRouteContext): Promise<ApiResponse> {
    if (ctx.principal.kind !== 'Node')
      return ctx.refuse(
        `${ctx.principal.kind} ${JSON.stringify(ctx.principal.name)} may not report flows: only node credentials may`,
      );
    if (ctx.body.length > FLOW_LIMITS.bodyBytes) {
      this.metrics.rejectedBatches++;
      throw new ApiError(
        'API_ERR_TOO_LARGE',
        `a flow batch is at most ${FLOW_LIMITS.bodyBytes} bytes; this one is ${ctx.body.length}`,
        { hint: 'send smaller batches more often' },
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(ctx.body.toString('utf8')) as unknown;
    } catch {
      this.metrics.rejectedBatches++;
      throw new ApiError('API_ERR_BAD_REQUEST', 'the flow batch is not JSON');
    }
    const problems = validateFlowBatch(value, this.now());
    if (problems.length > 0) {
      this.metrics.rejectedBatches++;
      throw new ApiError(
        'API_ERR_INVALID',
        `${problems.length}${problems.length >= 50 ? '+' : ''} problem(s) in the flow batch; nothing was stored`,
        { hint: problems.slice(0, 20).join('; ') },
      );
    }
    const batch = value as FlowBatch;
    const before = this.store.stats().evicted;
    const ids = this.store.ingest(ctx.principal.name, batch);
    this.metrics.batch(ctx.principal.name, batch);
    this.metrics.evicted += Math.max(0, this.store.stats().evicted - before);
    return json(200, {
      stored: batch.records.length,
      shed: (batch.shed ?? []).reduce((a, s) => a + s.count, 0),
      ...(ids.last > 0 ? { firstId: ids.first, lastId: ids.last } : {}),
    });
  }

  /** The filter of a read, authorized for its namespace (cluster-wide without one). */
  private async filter(ctx: FlowRouteContext): Promise<Omit<FlowQuery, 'limit'>> {
    const q = ctx.url.searchParams;
    const known = new Set([
      'since',
      'until',
      'endpoint',
      'namespace',
      'policy',
      'verdict',
      'point',
      'node',
      'limit',
      'before',
      'after',
      'follow',
      'allowed',
    ]);
    for (const k of q.keys())
      if (!known.has(k))
        throw new ApiError(
          'API_ERR_BAD_REQUEST',
          `unknown query parameter ${JSON.stringify(k.slice(0, 40))}`,
          {
            hint: [...known].join(', '),
          },
        );
    const now = this.now();
    const get = (k: string) => q.get(k) ?? undefined;
    const since = get('since');
    const until = get('until');
    const endpoint = get('endpoint');
    let ep: { namespace: string; name: string } | undefined;
    if (endpoint !== undefined) {
      const [ns, name, more] = endpoint.split('/');
      if (
        ns === undefined ||
        name === undefined ||
        more !== undefined ||
        !NAME_RE.test(ns) ||
        !NAME_RE.test(name)
      )
        throw new ApiError('API_ERR_BAD_REQUEST', 'endpoint must be namespace/name');
      ep = { namespace: ns, name };
    }
    const namespace = get('namespace');
    if (namespace !== undefined && !NAME_RE.test(namespace))
      throw new ApiError('API_ERR_BAD_REQUEST', 'namespace is not a namespace name');
    const policy = get('policy');
    if (policy !== undefined && (policy.length === 0 || policy.length > 253))
      throw new ApiError('API_ERR_BAD_REQUEST', 'policy must be 1..253 characters');
    const verdict = get('verdict');
    if (verdict !== undefined && verdict !== 'allow' && verdict !== 'deny')
      throw new ApiError('API_ERR_BAD_REQUEST', 'verdict must be allow or deny');
    const point = get('point');
    if (point !== undefined && point !== 'kernel' && point !== 'l7')
      throw new ApiError('API_ERR_BAD_REQUEST', 'point must be kernel or l7');
    const node = get('node');
    if (node !== undefined && !NAME_RE.test(node))
      throw new ApiError('API_ERR_BAD_REQUEST', 'node is not a node name');
    // A namespace-scoped reader sees only its namespace: the namespace (of the filter or of the
    // endpoint) is what is authorized, and it restricts the query.
    const scope = namespace ?? ep?.namespace;
    await ctx.authorizeRead(scope);
    return {
      ...(since !== undefined ? { sinceMs: parseFlowTime(since, 'since', now) } : {}),
      ...(until !== undefined ? { untilMs: parseFlowTime(until, 'until', now) } : {}),
      ...(ep ? { endpoint: ep } : {}),
      ...(scope !== undefined ? { namespace: scope } : {}),
      ...(policy !== undefined ? { policy } : {}),
      ...(verdict !== undefined ? { verdict: verdict } : {}),
      ...(point !== undefined ? { point: point } : {}),
      ...(node !== undefined ? { node } : {}),
    };
  }

  private intParam(ctx: FlowRouteContext, name: string, max: number): number | undefined {
    const v = ctx.url.searchParams.get(name);
    if (v === null) return undefined;
    const n = Number(v);
    if (!/^\d{1,15}$/.test(v) || n > max)
      throw new ApiError('API_ERR_BAD_REQUEST', `${name} must be an integer 0..${max}`);
    return n;
  }

  private async list(ctx: FlowRouteContext): Promise<ApiResponse> {
    const f = await this.filter(ctx);
    const limit = this.intParam(ctx, 'limit', 10_000) ?? 500;
    if (limit < 1) throw new ApiError('API_ERR_BAD_REQUEST', 'limit must be at least 1');
    const before = parseBefore(ctx.url.searchParams.get('before'));
    const after = this.intParam(ctx, 'after', Number.MAX_SAFE_INTEGER);
    const follow = ['1', 'true'].includes(ctx.url.searchParams.get('follow') ?? '');
    if (follow) return this.follow(ctx, f, after, limit);
    const records = this.store.query({
      ...f,
      limit,
      ...(typeof before === 'number' ? { beforeId: before } : {}),
      ...(typeof before === 'object' ? { beforeKey: before } : {}),
      ...(after !== undefined ? { afterId: after } : {}),
    });
    const last = records[records.length - 1];
    // `next` continues the page's order: a legacy id cursor gives an id, else the (end, id) key.
    const next =
      records.length === limit && last && after === undefined
        ? typeof before === 'number'
          ? String(last.id)
          : `${Date.parse(last.end)}.${last.id}`
        : undefined;
    return json(200, { records, ...(next !== undefined ? { next } : {}) });
  }

  /** NDJSON: matching records as they are stored (from `after`, else from now), heartbeats. */
  private follow(
    ctx: FlowRouteContext,
    f: Omit<FlowQuery, 'limit'>,
    after: number | undefined,
    limit: number,
  ): ApiResponse {
    const store = this.store;
    const heartbeatMs = this.heartbeatMs;
    const signal = ctx.signal;
    async function* stream(): AsyncGenerator<string> {
      let cursor = after ?? store.lastId();
      yield `${JSON.stringify({ type: 'BOOKMARK', after: cursor })}\n`;
      while (!signal?.aborted) {
        // Read in pages so a burst never builds one huge answer.
        const page = store.query({ ...f, afterId: cursor, limit: Math.min(limit, 1000) });
        for (const r of page) yield `${JSON.stringify({ type: 'FLOW', record: r })}\n`;
        const lastRecord = page[page.length - 1];
        if (lastRecord) cursor = lastRecord.id;
        // The newest id may be past the filter's matches: skip ahead so pages stay cheap.
        if (page.length < Math.min(limit, 1000)) cursor = Math.max(cursor, store.lastId());
        if (page.length === Math.min(limit, 1000)) continue;
        const woke = await new Promise<boolean>((resolve) => {
          const done = (v: boolean) => {
            clearTimeout(t);
            store.events.off('records', onRecords);
            signal?.removeEventListener('abort', onAbort);
            resolve(v);
          };
          const onRecords = () => done(true);
          const onAbort = () => done(false);
          const t = setTimeout(() => done(false), heartbeatMs);
          store.events.on('records', onRecords);
          signal?.addEventListener('abort', onAbort);
        });
        if (!woke && !signal?.aborted)
          yield `${JSON.stringify({ type: 'BOOKMARK', after: cursor })}\n`;
      }
    }
    return { status: 200, headers: { 'content-type': 'application/x-ndjson' }, stream: stream() };
  }

  private async graph(ctx: FlowRouteContext): Promise<ApiResponse> {
    const f = await this.filter(ctx);
    const limit = this.intParam(ctx, 'limit', 100_000) ?? 20_000;
    const observed = this.store.graph({ sinceMs: this.now() - 3600_000, ...f }, Math.max(1, limit));
    // `allowed=1`: also the edges policy allows (what the engine decides over the stored policies
    // and endpoints), beside the observed ones.
    const allowed = ['1', 'true'].includes(ctx.url.searchParams.get('allowed') ?? '');
    if (!allowed) return json(200, observed);
    if (!ctx.policyGraph)
      throw new ApiError('API_ERR_NOT_FOUND', 'this server computes no policy graph');
    return json(200, { ...observed, allowed: await ctx.policyGraph(f.namespace) });
  }

  private async policies(ctx: FlowRouteContext): Promise<ApiResponse> {
    const f = await this.filter(ctx);
    return json(200, { hits: this.store.policyHits({ sinceMs: this.now() - 3600_000, ...f }) });
  }
}
