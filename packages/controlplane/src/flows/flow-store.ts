// The flow store: flow records in their own SQLite file (`<data-dir>/flows.db`), kept apart from
// the policy store so high-volume writes never contend with policy transactions or grow its
// revision history. Bounded by age, by record count and by file size; indexed for the console's
// and the CLI's queries. Owns: the schema, retention, queries and the shed ledger.
// Must never: grow without bound, or lose a shed count (what nodes could not send is recorded
// and summed here beside the records).

import { EventEmitter } from 'node:events';
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import type {
  FlowBatch,
  FlowEndpoint,
  FlowPoint,
  FlowProvenance,
  FlowRecord,
  FlowRecordInput,
  FlowShed,
  FlowStagedVerdict,
  FlowVerdict,
} from './flow-record.js';

export interface FlowRetention {
  /** Records whose window ended longer ago are deleted (default 7 days). */
  readonly maxAgeMs: number;
  /** At most this many records are kept, oldest deleted first (default 10 million). */
  readonly maxRecords: number;
  /** The file's used pages are kept under this many bytes (default 8 GiB). */
  readonly maxBytes: number;
}

export const DEFAULT_FLOW_RETENTION: FlowRetention = {
  maxAgeMs: 7 * 24 * 3600_000,
  maxRecords: 10_000_000,
  maxBytes: 8 * 1024 ** 3,
};

export interface FlowQuery {
  readonly sinceMs?: number;
  readonly untilMs?: number;
  /** `namespace/name`: flows from or to that endpoint. */
  readonly endpoint?: { readonly namespace: string; readonly name: string };
  /** Flows from or to an endpoint of this namespace. */
  readonly namespace?: string;
  readonly policy?: string;
  readonly verdict?: FlowVerdict;
  readonly point?: FlowPoint;
  readonly node?: string;
  /** Records with a larger id, oldest first (follow). */
  readonly afterId?: number;
  /** Records with a smaller id, newest first (pages). */
  readonly beforeId?: number;
  readonly limit: number;
}

export interface GraphEdge {
  readonly source: {
    readonly namespace: string | null;
    readonly name: string | null;
    readonly ip: string;
  };
  readonly destination: {
    readonly namespace: string | null;
    readonly name: string | null;
    readonly ip: string;
  };
  readonly verdict: FlowVerdict;
  readonly point: FlowPoint;
  readonly policy: string | null;
  readonly provenanceKind: string;
  readonly count: number;
  readonly lastMs: number;
}

export interface GraphNode {
  readonly namespace: string | null;
  readonly name: string | null;
  readonly ip: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface PolicyHits {
  readonly policy: string | null;
  readonly tier: string | null;
  readonly provenanceKind: string;
  readonly point: FlowPoint;
  readonly verdict: FlowVerdict;
  readonly count: number;
}

export interface ShedTotal {
  readonly node: string;
  readonly point: FlowPoint;
  readonly reason: string;
  readonly count: number;
}

export interface FlowStats {
  readonly records: number;
  readonly oldestMs: number | null;
  readonly newestMs: number | null;
  readonly evicted: number;
  readonly shed: readonly ShedTotal[];
  readonly shedTotal: number;
  readonly retention: FlowRetention;
}

interface Row {
  id: number;
  start_ms: number;
  end_ms: number;
  node: string;
  src_ns: string | null;
  src_name: string | null;
  src_ip: string;
  src_port: number | null;
  src_identity: string | null;
  src_labels: string | null;
  dst_ns: string | null;
  dst_name: string | null;
  dst_ip: string;
  dst_port: number | null;
  dst_identity: string | null;
  dst_labels: string | null;
  protocol: string;
  method: string | null;
  path: string | null;
  verdict: string;
  point: string;
  direction: string | null;
  prov_kind: string;
  tier: string | null;
  policy: string | null;
  rule: number | null;
  profile: string | null;
  reason: string | null;
  staged: string | null;
  packets: number;
  bytes: number;
  count: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS flows (
  id INTEGER PRIMARY KEY,
  start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, node TEXT NOT NULL,
  src_ns TEXT, src_name TEXT, src_ip TEXT NOT NULL, src_port INTEGER, src_identity TEXT, src_labels TEXT,
  dst_ns TEXT, dst_name TEXT, dst_ip TEXT NOT NULL, dst_port INTEGER, dst_identity TEXT, dst_labels TEXT,
  protocol TEXT NOT NULL, method TEXT, path TEXT,
  verdict TEXT NOT NULL, point TEXT NOT NULL, direction TEXT,
  prov_kind TEXT NOT NULL, tier TEXT, policy TEXT, rule INTEGER, profile TEXT, reason TEXT,
  staged TEXT, packets INTEGER NOT NULL, bytes INTEGER NOT NULL, count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_end ON flows(end_ms);
CREATE INDEX IF NOT EXISTS flows_src ON flows(src_ns, src_name, end_ms);
CREATE INDEX IF NOT EXISTS flows_dst ON flows(dst_ns, dst_name, end_ms);
CREATE INDEX IF NOT EXISTS flows_policy ON flows(policy, end_ms);
CREATE INDEX IF NOT EXISTS flows_verdict ON flows(verdict, end_ms);
CREATE TABLE IF NOT EXISTS flow_shed (
  time_ms INTEGER NOT NULL, node TEXT NOT NULL, point TEXT NOT NULL, reason TEXT NOT NULL,
  count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
`;

const APPLICATION_ID = 0x50464c57; // "PFLW"

export interface FlowStoreOptions {
  readonly retention?: Partial<FlowRetention>;
  readonly now?: () => number;
  /** `OFF` for benchmarks that build a database; default `NORMAL` (WAL: durable to the last checkpoint). */
  readonly synchronous?: 'OFF' | 'NORMAL' | 'FULL';
}

export class FlowStore {
  readonly file: string;
  readonly retention: FlowRetention;
  /** Emits `records` (the newest id) after each ingest, for follow streams. */
  readonly events = new EventEmitter();
  private readonly db: Database.Database;
  private readonly now: () => number;
  private rows: number;
  private readonly insertStmt: Database.Statement;
  private readonly shedStmt: Database.Statement;

  constructor(file: string, options: FlowStoreOptions = {}) {
    this.file = resolve(file);
    this.retention = { ...DEFAULT_FLOW_RETENTION, ...options.retention };
    this.now = options.now ?? Date.now;
    this.events.setMaxListeners(0);
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    const db = new Database(this.file);
    this.db = db;
    try {
      chmodSync(this.file, 0o600);
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.synchronous ?? 'NORMAL'}`);
      // Index pages of a large store are touched at random on insert: a 64 MiB page cache keeps
      // the hot ones (SQLite's default is 2 MiB).
      db.pragma('cache_size = -65536');
      db.pragma('temp_store = MEMORY');
      const appId = db.pragma('application_id', { simple: true }) as number;
      if (appId !== 0 && appId !== APPLICATION_ID)
        throw new Error(`${this.file} is not a Palisade flow database`);
      db.exec(SCHEMA);
      db.pragma(`application_id = ${APPLICATION_ID}`);
    } catch (e) {
      db.close();
      throw e;
    }
    this.rows = (db.prepare('SELECT count(*) AS n FROM flows').get() as { n: number }).n;
    this.insertStmt = db.prepare(
      `INSERT INTO flows (start_ms, end_ms, node, src_ns, src_name, src_ip, src_port, src_identity,
        src_labels, dst_ns, dst_name, dst_ip, dst_port, dst_identity, dst_labels, protocol, method,
        path, verdict, point, direction, prov_kind, tier, policy, rule, profile, reason, staged,
        packets, bytes, count)
       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
    );
    this.shedStmt = db.prepare(
      'INSERT INTO flow_shed (time_ms, node, point, reason, count) VALUES (?,?,?,?,?)',
    );
  }

  get count(): number {
    return this.rows;
  }

  /** Stores a validated batch from `node` in one transaction; returns the ids given. */
  ingest(node: string, batch: FlowBatch): { first: number; last: number } {
    let first = 0;
    let last = 0;
    const tx = this.db.transaction(() => {
      for (const r of batch.records) {
        const info = this.insertStmt.run(...rowValues(node, r));
        last = Number(info.lastInsertRowid);
        if (first === 0) first = last;
      }
      const t = this.now();
      for (const s of batch.shed ?? [])
        if (s.count > 0) this.shedStmt.run(t, node, s.point, s.reason, s.count);
    });
    tx();
    this.rows += batch.records.length;
    if (this.rows > this.retention.maxRecords) this.prune();
    if (last > 0) this.events.emit('records', last);
    return { first, last };
  }

  /** Applies the retention bounds; returns how many records were deleted. */
  prune(): number {
    let deleted = 0;
    const cutoff = this.now() - this.retention.maxAgeMs;
    for (;;) {
      const r = this.db
        .prepare(
          'DELETE FROM flows WHERE id IN (SELECT id FROM flows WHERE end_ms < ? LIMIT 50000)',
        )
        .run(cutoff);
      deleted += r.changes;
      if (r.changes < 50000) break;
    }
    this.rows -= deleted;
    const excess = this.rows - this.retention.maxRecords;
    if (excess > 0) deleted += this.deleteOldest(excess);
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    const used = () =>
      ((this.db.pragma('page_count', { simple: true }) as number) -
        (this.db.pragma('freelist_count', { simple: true }) as number)) *
      pageSize;
    // Size bound: drop the oldest 5% at a time until the used pages fit (freed pages are reused).
    for (let i = 0; i < 20 && this.rows > 0 && used() > this.retention.maxBytes; i++)
      deleted += this.deleteOldest(Math.max(1, Math.ceil(this.rows * 0.05)));
    if (deleted > 0)
      this.db
        .prepare(
          `INSERT INTO flow_meta (key, value) VALUES ('evicted', ?)
           ON CONFLICT(key) DO UPDATE SET value = value + excluded.value`,
        )
        .run(deleted);
    // The shed ledger keeps the same age bound.
    this.db.prepare('DELETE FROM flow_shed WHERE time_ms < ?').run(cutoff);
    return deleted;
  }

  private deleteOldest(n: number): number {
    const r = this.db
      .prepare('DELETE FROM flows WHERE id IN (SELECT id FROM flows ORDER BY id LIMIT ?)')
      .run(n);
    this.rows -= r.changes;
    return r.changes;
  }

  query(q: FlowQuery): FlowRecord[] {
    const { where, args } = whereOf(q);
    if (q.afterId !== undefined) {
      where.push('id > ?');
      args.push(q.afterId);
    }
    if (q.beforeId !== undefined) {
      where.push('id < ?');
      args.push(q.beforeId);
    }
    const order = q.afterId !== undefined ? 'ASC' : 'DESC';
    const sql = `SELECT * FROM flows ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id ${order} LIMIT ?`;
    return (this.db.prepare(sql).all(...args, q.limit) as Row[]).map(recordOf);
  }

  /** Edges of the service graph over a window (at most `limit` groups, the busiest first). */
  graph(
    q: Omit<FlowQuery, 'limit' | 'afterId' | 'beforeId'>,
    limit = 20000,
  ): {
    edges: GraphEdge[];
    nodes: GraphNode[];
  } {
    const { where, args } = whereOf(q);
    const w = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const rows = this.db
      .prepare(
        `SELECT src_ns, src_name, min(src_ip) AS src_ip, dst_ns, dst_name, min(dst_ip) AS dst_ip,
           verdict, point, policy, prov_kind, sum(count) AS n, max(end_ms) AS last,
           max(src_labels) AS sl, max(dst_labels) AS dl
         FROM flows ${w}
         GROUP BY src_ns, src_name, CASE WHEN src_name IS NULL THEN src_ip END,
                  dst_ns, dst_name, CASE WHEN dst_name IS NULL THEN dst_ip END,
                  verdict, point, policy, prov_kind
         ORDER BY n DESC LIMIT ?`,
      )
      .all(...args, limit) as {
      src_ns: string | null;
      src_name: string | null;
      src_ip: string;
      dst_ns: string | null;
      dst_name: string | null;
      dst_ip: string;
      verdict: FlowVerdict;
      point: FlowPoint;
      policy: string | null;
      prov_kind: string;
      n: number;
      last: number;
      sl: string | null;
      dl: string | null;
    }[];
    const nodes = new Map<string, GraphNode>();
    const addNode = (ns: string | null, name: string | null, ip: string, labels: string | null) => {
      const key = name === null ? `ip:${ip}` : `${ns ?? ''}/${name}`;
      if (!nodes.has(key))
        nodes.set(key, { namespace: ns, name, ip, labels: labels ? parseLabels(labels) : {} });
    };
    const edges = rows.map((r) => {
      addNode(r.src_ns, r.src_name, r.src_ip, r.sl);
      addNode(r.dst_ns, r.dst_name, r.dst_ip, r.dl);
      return {
        source: { namespace: r.src_ns, name: r.src_name, ip: r.src_ip },
        destination: { namespace: r.dst_ns, name: r.dst_name, ip: r.dst_ip },
        verdict: r.verdict,
        point: r.point,
        policy: r.policy,
        provenanceKind: r.prov_kind,
        count: r.n,
        lastMs: r.last,
      };
    });
    return { edges, nodes: [...nodes.values()] };
  }

  /** Hits per deciding policy (or provenance kind) over a window, for the policy board. */
  policyHits(q: Omit<FlowQuery, 'limit' | 'afterId' | 'beforeId'>): PolicyHits[] {
    const { where, args } = whereOf(q);
    const w = where.length ? `WHERE ${where.join(' AND ')}` : '';
    return (
      this.db
        .prepare(
          `SELECT policy, tier, prov_kind, point, verdict, sum(count) AS n FROM flows ${w}
           GROUP BY policy, tier, prov_kind, point, verdict ORDER BY n DESC LIMIT 10000`,
        )
        .all(...args) as {
        policy: string | null;
        tier: string | null;
        prov_kind: string;
        point: FlowPoint;
        verdict: FlowVerdict;
        n: number;
      }[]
    ).map((r) => ({
      policy: r.policy,
      tier: r.tier,
      provenanceKind: r.prov_kind,
      point: r.point,
      verdict: r.verdict,
      count: r.n,
    }));
  }

  stats(): FlowStats {
    const span = this.db.prepare('SELECT min(end_ms) AS o, max(end_ms) AS n FROM flows').get() as {
      o: number | null;
      n: number | null;
    };
    const shed = this.db
      .prepare(
        'SELECT node, point, reason, sum(count) AS n FROM flow_shed GROUP BY node, point, reason ORDER BY node, point, reason',
      )
      .all() as { node: string; point: FlowPoint; reason: string; n: number }[];
    const evicted =
      (
        this.db.prepare("SELECT value FROM flow_meta WHERE key = 'evicted'").get() as
          { value: number } | undefined
      )?.value ?? 0;
    const totals = shed.map((s) => ({
      node: s.node,
      point: s.point,
      reason: s.reason,
      count: s.n,
    }));
    return {
      records: this.rows,
      oldestMs: span.o,
      newestMs: span.n,
      evicted,
      shed: totals,
      shedTotal: totals.reduce((a, s) => a + s.count, 0),
      retention: this.retention,
    };
  }

  /** The newest id (0 when empty), where a follow stream starts. */
  lastId(): number {
    return (this.db.prepare('SELECT max(id) AS m FROM flows').get() as { m: number | null }).m ?? 0;
  }

  close(): void {
    this.events.removeAllListeners();
    if (this.db.open) this.db.close();
  }
}

function whereOf(q: Omit<FlowQuery, 'limit'>): { where: string[]; args: (string | number)[] } {
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (q.sinceMs !== undefined) {
    where.push('end_ms >= ?');
    args.push(q.sinceMs);
  }
  if (q.untilMs !== undefined) {
    where.push('start_ms <= ?');
    args.push(q.untilMs);
  }
  if (q.endpoint) {
    where.push('((src_ns = ? AND src_name = ?) OR (dst_ns = ? AND dst_name = ?))');
    args.push(q.endpoint.namespace, q.endpoint.name, q.endpoint.namespace, q.endpoint.name);
  }
  if (q.namespace !== undefined) {
    where.push('(src_ns = ? OR dst_ns = ?)');
    args.push(q.namespace, q.namespace);
  }
  if (q.policy !== undefined) {
    where.push('policy = ?');
    args.push(q.policy);
  }
  if (q.verdict !== undefined) {
    where.push('verdict = ?');
    args.push(q.verdict);
  }
  if (q.point !== undefined) {
    where.push('point = ?');
    args.push(q.point);
  }
  if (q.node !== undefined) {
    where.push('node = ?');
    args.push(q.node);
  }
  return { where, args };
}

function labelsText(l: FlowEndpoint['labels']): string | null {
  if (!l) return null;
  const keys = Object.keys(l).sort();
  return keys.length === 0 ? null : JSON.stringify(Object.fromEntries(keys.map((k) => [k, l[k]])));
}

function parseLabels(s: string): Record<string, string> {
  try {
    const v = JSON.parse(s) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, string>) : {};
  } catch {
    return {};
  }
}

function rowValues(node: string, r: FlowRecordInput): (string | number | null)[] {
  const p = r.provenance;
  return [
    Date.parse(r.start),
    Date.parse(r.end),
    node,
    r.source.namespace ?? null,
    r.source.name ?? null,
    r.source.ip,
    r.source.port ?? null,
    r.source.identity ?? null,
    labelsText(r.source.labels),
    r.destination.namespace ?? null,
    r.destination.name ?? null,
    r.destination.ip,
    r.destination.port ?? null,
    r.destination.identity ?? null,
    labelsText(r.destination.labels),
    r.protocol,
    r.method ?? null,
    r.path ?? null,
    r.verdict,
    r.point,
    r.direction ?? null,
    p.kind,
    p.tier ?? null,
    p.policy ?? null,
    p.rule ?? null,
    p.profile ?? null,
    p.reason ?? null,
    r.staged && r.staged.length > 0 ? JSON.stringify(r.staged) : null,
    r.packets,
    r.bytes,
    r.count,
  ];
}

function endpointOf(
  ns: string | null,
  name: string | null,
  ip: string,
  port: number | null,
  identity: string | null,
  labels: string | null,
): FlowEndpoint {
  return {
    ip,
    ...(port !== null ? { port } : {}),
    ...(ns !== null ? { namespace: ns } : {}),
    ...(name !== null ? { name } : {}),
    ...(labels !== null ? { labels: parseLabels(labels) } : {}),
    ...(identity !== null ? { identity } : {}),
  };
}

function recordOf(r: Row): FlowRecord {
  const provenance: FlowProvenance = {
    kind: r.prov_kind as FlowProvenance['kind'],
    ...(r.tier !== null ? { tier: r.tier } : {}),
    ...(r.policy !== null ? { policy: r.policy } : {}),
    ...(r.rule !== null ? { rule: r.rule } : {}),
    ...(r.profile !== null ? { profile: r.profile } : {}),
    ...(r.reason !== null ? { reason: r.reason } : {}),
  };
  return {
    id: r.id,
    node: r.node,
    start: new Date(r.start_ms).toISOString(),
    end: new Date(r.end_ms).toISOString(),
    source: endpointOf(r.src_ns, r.src_name, r.src_ip, r.src_port, r.src_identity, r.src_labels),
    destination: endpointOf(
      r.dst_ns,
      r.dst_name,
      r.dst_ip,
      r.dst_port,
      r.dst_identity,
      r.dst_labels,
    ),
    protocol: r.protocol,
    ...(r.method !== null ? { method: r.method } : {}),
    ...(r.path !== null ? { path: r.path } : {}),
    verdict: r.verdict as FlowVerdict,
    point: r.point as FlowPoint,
    ...(r.direction !== null ? { direction: r.direction as 'ingress' | 'egress' } : {}),
    provenance,
    ...(r.staged !== null ? { staged: JSON.parse(r.staged) as FlowStagedVerdict[] } : {}),
    packets: r.packets,
    bytes: r.bytes,
    count: r.count,
  };
}

export type { FlowShed };
