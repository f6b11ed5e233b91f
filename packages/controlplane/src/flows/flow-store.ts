// The flow store: flow records in their own SQLite file (`<data-dir>/flows.db`), kept apart from
// the policy store so high-volume writes never contend with policy transactions or grow its
// revision history. Bounded by age, by record count and by file size; indexed for the console's
// and the CLI's queries; per-minute and per-hour rollups (kept in the insert's and the
// deletion's transaction) answer the graph and policy-hit aggregations: whole hours from the
// hour level, whole minutes at the edges from the minute level, the rest from the records. Owns: the schema, retention, queries, rollups and
// the shed ledger.
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
  /** Records with a smaller id, newest id first (the page cursor of earlier versions). */
  readonly beforeId?: number;
  /** Records below this `(end_ms, id)` key, newest window first (pages). */
  readonly beforeKey?: { readonly endMs: number; readonly id: number };
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

/** The edge and policy rollup tables of one level (`''` per minute, `_hour` per hour). */
function rollupTables(suffix: '' | '_hour'): string {
  return `CREATE TABLE IF NOT EXISTS flow_rollup${suffix} (
  bucket INTEGER NOT NULL, node TEXT NOT NULL,
  src_ns TEXT NOT NULL, src_name TEXT NOT NULL, src_key TEXT NOT NULL,
  dst_ns TEXT NOT NULL, dst_name TEXT NOT NULL, dst_key TEXT NOT NULL,
  verdict TEXT NOT NULL, point TEXT NOT NULL, policy TEXT NOT NULL, tier TEXT NOT NULL,
  prov_kind TEXT NOT NULL,
  src_ip TEXT NOT NULL, dst_ip TEXT NOT NULL, last_ms INTEGER NOT NULL,
  src_labels TEXT NOT NULL, dst_labels TEXT NOT NULL, count INTEGER NOT NULL, records INTEGER NOT NULL,
  PRIMARY KEY (bucket, node, src_ns, src_name, src_key, dst_ns, dst_name, dst_key, verdict, point,
               policy, tier, prov_kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flow_policy_rollup${suffix} (
  bucket INTEGER NOT NULL, node TEXT NOT NULL, policy TEXT NOT NULL, tier TEXT NOT NULL,
  prov_kind TEXT NOT NULL, point TEXT NOT NULL, verdict TEXT NOT NULL,
  count INTEGER NOT NULL, records INTEGER NOT NULL,
  PRIMARY KEY (bucket, node, policy, tier, prov_kind, point, verdict)
) WITHOUT ROWID;`;
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
CREATE TABLE IF NOT EXISTS flow_shed (
  time_ms INTEGER NOT NULL, node TEXT NOT NULL, point TEXT NOT NULL, reason TEXT NOT NULL,
  count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
${rollupTables('')}
${rollupTables('_hour')}
`;

/**
 * The secondary indexes. `flows_end` is `(end_ms, id)` (SQLite keeps the rowid at the end of
 * every index): time windows and pages read it in order, newest window first.
 */
const INDEXES = `
CREATE INDEX IF NOT EXISTS flows_end ON flows(end_ms);
CREATE INDEX IF NOT EXISTS flows_src ON flows(src_ns, src_name, end_ms);
CREATE INDEX IF NOT EXISTS flows_dst ON flows(dst_ns, dst_name, end_ms);
CREATE INDEX IF NOT EXISTS flows_policy ON flows(policy, end_ms);
CREATE INDEX IF NOT EXISTS flows_verdict ON flows(verdict, end_ms);
`;
const INDEX_NAMES = ['flows_end', 'flows_src', 'flows_dst', 'flows_policy', 'flows_verdict'];

/** Width of a minute rollup bucket. */
export const ROLLUP_BUCKET_MS = 60_000;
/** Width of an hour rollup bucket: 60 minute buckets. */
export const ROLLUP_HOUR_MS = 3_600_000;
const MINUTES_PER_HOUR = ROLLUP_HOUR_MS / ROLLUP_BUCKET_MS;
/** Version of the rollup tables' contents; a store opened with an older one rebuilds them. */
const ROLLUP_VERSION = 2;

/** `floor(x / width)` in SQL (integer division truncates toward zero). */
const floorDiv = (x: string, width: number) => `(${x} / ${width} - (${x} % ${width} < 0))`;

const bucketOf = (endMs: number): number => Math.floor(endMs / ROLLUP_BUCKET_MS);
const hourOf = (endMs: number): number => Math.floor(endMs / ROLLUP_HOUR_MS);

/** The edge rollup's grouping over raw records (in primary-key order) and its aggregates. */
const edgeRollupSelect = (width: number) => `SELECT ${floorDiv('end_ms', width)} AS bucket, node,
    coalesce(src_ns, '') AS src_ns, coalesce(src_name, '') AS src_name,
    CASE WHEN src_name IS NULL THEN src_ip ELSE '' END AS src_key,
    coalesce(dst_ns, '') AS dst_ns, coalesce(dst_name, '') AS dst_name,
    CASE WHEN dst_name IS NULL THEN dst_ip ELSE '' END AS dst_key,
    verdict, point, coalesce(policy, '') AS policy, coalesce(tier, '') AS tier, prov_kind,
    min(src_ip), min(dst_ip), max(end_ms), coalesce(max(src_labels), ''),
    coalesce(max(dst_labels), ''), sum(count), count(*)
  FROM flows`;
const EDGE_ROLLUP_GROUP = `GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13`;
const policyRollupSelect = (width: number) => `SELECT ${floorDiv('end_ms', width)} AS bucket, node,
    coalesce(policy, '') AS policy, coalesce(tier, '') AS tier, prov_kind, point, verdict,
    sum(count), count(*) FROM flows`;
const POLICY_ROLLUP_GROUP = `GROUP BY 1, 2, 3, 4, 5, 6, 7`;
/**
 * An hour's rollup rows from its minute rows (every aggregate is a sum, min or max, so the hour
 * of the minutes equals the hour of the records; an empty label set is '' and sorts first).
 */
const EDGE_HOUR_FROM_MINUTES = `SELECT ${floorDiv('bucket', MINUTES_PER_HOUR)}, node, src_ns,
    src_name, src_key, dst_ns, dst_name, dst_key, verdict, point, policy, tier, prov_kind,
    min(src_ip), min(dst_ip), max(last_ms), max(src_labels), max(dst_labels), sum(count),
    sum(records)
  FROM flow_rollup WHERE bucket >= ? AND bucket < ? ${EDGE_ROLLUP_GROUP}`;
const POLICY_HOUR_FROM_MINUTES = `SELECT ${floorDiv('bucket', MINUTES_PER_HOUR)}, node, policy,
    tier, prov_kind, point, verdict, sum(count), sum(records)
  FROM flow_policy_rollup WHERE bucket >= ? AND bucket < ? ${POLICY_ROLLUP_GROUP}`;

const APPLICATION_ID = 0x50464c57; // "PFLW"

export interface FlowStoreOptions {
  readonly retention?: Partial<FlowRetention>;
  readonly now?: () => number;
  /** `OFF` for benchmarks that build a database; default `NORMAL` (WAL: durable to the last checkpoint). */
  readonly synchronous?: 'OFF' | 'NORMAL' | 'FULL';
  /** How long a writer waits for another connection's transaction (default 10 s). */
  readonly busyTimeoutMs?: number;
}

/**
 * Where an aggregation reads from: hour and minute rollups (and raw records at the edges), the
 * minute rollups and raw records only (the plan before the hour level, for comparison), or the
 * raw records only.
 */
export type AggregateSource = 'rollup' | 'minute' | 'raw';

/** See `FlowStore.plan`: bucket ranges (either end open) per level, and the raw remainder. */
interface ReadPlan {
  readonly hours: readonly [number | undefined, number | undefined] | undefined;
  readonly minutes: readonly (readonly [number | undefined, number | undefined])[];
  readonly raw: { readonly sql: string; readonly args: number[] } | undefined;
  /** The window holds no whole minute: read it raw. */
  readonly rawAll: boolean;
}

type TimeFilter = Omit<FlowQuery, 'limit' | 'afterId' | 'beforeId' | 'beforeKey'>;

interface EdgeAgg {
  bucket: number;
  node: string;
  srcNs: string;
  srcName: string;
  srcKey: string;
  dstNs: string;
  dstName: string;
  dstKey: string;
  verdict: string;
  point: string;
  policy: string;
  tier: string;
  kind: string;
  srcIp: string;
  dstIp: string;
  last: number;
  srcLabels: string;
  dstLabels: string;
  count: number;
  records: number;
}

interface PolicyAgg {
  bucket: number;
  node: string;
  policy: string;
  tier: string;
  kind: string;
  point: string;
  verdict: string;
  count: number;
  records: number;
}

/** Adds records one at a time; see `FlowStore.bulkLoad`. */
export type BulkAdd = (node: string, record: FlowRecordInput) => void;

/**
 * One record as the columns of the `flows` table, in order (start_ms, end_ms, node, src_ns,
 * src_name, src_ip, src_port, src_identity, src_labels (sorted-key JSON), dst_ns, ... count),
 * for generators that write rows directly (`rowValues` makes one from a record).
 */
export type FlowRow = (string | number | null)[];

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
  /** Rollup upserts by level: minute first, then hour. */
  private readonly upserts: readonly {
    readonly edge: Database.Statement;
    readonly policy: Database.Statement;
  }[];
  private readonly metaAdd: Database.Statement;
  private readonly metaMax: Database.Statement;
  private readonly metaGet: Database.Statement;

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
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 10_000))}`);
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.synchronous ?? 'NORMAL'}`);
      // Index pages of a large store are touched at random on insert: a 64 MiB page cache keeps
      // the hot ones (SQLite's default is 2 MiB).
      db.pragma('cache_size = -65536');
      db.pragma('temp_store = MEMORY');
      const appId = db.pragma('application_id', { simple: true }) as number;
      if (appId !== 0 && appId !== APPLICATION_ID)
        throw new Error(`${this.file} is not a Palisade flow database`);
      db.transaction(() => {
        db.exec(SCHEMA);
        db.exec(INDEXES);
        db.pragma(`application_id = ${APPLICATION_ID}`);
        this.upgrade();
      }).immediate();
    } catch (e) {
      db.close();
      throw e;
    }
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
    this.upserts = (['', '_hour'] as const).map((suffix) => ({
      edge: db.prepare(
        `INSERT INTO flow_rollup${suffix} VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
         ON CONFLICT DO UPDATE SET src_ip = min(src_ip, excluded.src_ip),
           dst_ip = min(dst_ip, excluded.dst_ip), last_ms = max(last_ms, excluded.last_ms),
           src_labels = max(src_labels, excluded.src_labels),
           dst_labels = max(dst_labels, excluded.dst_labels), count = count + excluded.count,
           records = records + excluded.records`,
      ),
      policy: db.prepare(
        `INSERT INTO flow_policy_rollup${suffix} VALUES (?,?,?,?,?,?,?,?,?)
         ON CONFLICT DO UPDATE SET count = count + excluded.count, records = records + excluded.records`,
      ),
    }));
    this.metaAdd = db.prepare(
      `INSERT INTO flow_meta (key, value) VALUES (?, ?)
       ON CONFLICT(key) DO UPDATE SET value = value + excluded.value RETURNING value`,
    );
    this.metaMax = db.prepare(
      `INSERT INTO flow_meta (key, value) VALUES (?, ?)
       ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)`,
    );
    this.metaGet = db.prepare('SELECT value FROM flow_meta WHERE key = ?');
    this.rows = this.meta('rows');
  }

  /**
   * A store written before the rollups (or the row and span counters) existed gets them, built
   * from its records once, in the opening transaction.
   */
  private upgrade(): void {
    const get = (k: string) =>
      (
        this.db.prepare('SELECT value FROM flow_meta WHERE key = ?').get(k) as
          { value: number } | undefined
      )?.value;
    const set = (k: string, v: number) =>
      this.db
        .prepare(
          'INSERT INTO flow_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
        )
        .run(k, v);
    if (get('rows') === undefined)
      set('rows', (this.db.prepare('SELECT count(*) AS n FROM flows').get() as { n: number }).n);
    if (get('max_span') === undefined)
      set(
        'max_span',
        (
          this.db.prepare('SELECT coalesce(max(end_ms - start_ms), 0) AS m FROM flows').get() as {
            m: number;
          }
        ).m,
      );
    if (get('rollup_version') !== ROLLUP_VERSION) {
      this.rebuildRollups();
      set('rollup_version', ROLLUP_VERSION);
    }
  }

  private meta(key: string): number {
    return (this.metaGet.get(key) as { value: number } | undefined)?.value ?? 0;
  }

  /** Records in the store (kept in the database, so several connections agree). */
  get count(): number {
    return this.rows;
  }

  /** Stores a validated batch from `node` in one transaction; returns the ids given. */
  ingest(node: string, batch: FlowBatch): { first: number; last: number } {
    let first = 0;
    let last = 0;
    const tx = this.db.transaction(() => {
      const folds = newFolds();
      let span = 0;
      for (const r of batch.records) {
        const values = rowValues(node, r);
        const info = this.insertStmt.run(...values);
        last = Number(info.lastInsertRowid);
        if (first === 0) first = last;
        span = Math.max(span, (values[1] as number) - (values[0] as number));
        foldRecord(values, folds);
      }
      this.upsertRollups(folds);
      if (batch.records.length > 0) {
        this.rows = (this.metaAdd.get('rows', batch.records.length) as { value: number }).value;
        this.metaMax.run('max_span', span);
      } else this.rows = this.meta('rows');
      const t = this.now();
      for (const s of batch.shed ?? [])
        if (s.count > 0) this.shedStmt.run(t, node, s.point, s.reason, s.count);
    });
    tx.immediate();
    if (this.rows > this.retention.maxRecords) this.prune();
    if (last > 0) this.events.emit('records', last);
    return { first, last };
  }

  /** Merges a batch's folded groups into the rollup tables of both levels. */
  private upsertRollups(folds: Folds): void {
    folds.forEach((level, i) => {
      const st = this.upserts[i];
      if (!st) return;
      for (const e of level.edges.values())
        st.edge.run(
          e.bucket,
          e.node,
          e.srcNs,
          e.srcName,
          e.srcKey,
          e.dstNs,
          e.dstName,
          e.dstKey,
          e.verdict,
          e.point,
          e.policy,
          e.tier,
          e.kind,
          e.srcIp,
          e.dstIp,
          e.last,
          e.srcLabels,
          e.dstLabels,
          e.count,
          e.records,
        );
      for (const p of level.policies.values())
        st.policy.run(
          p.bucket,
          p.node,
          p.policy,
          p.tier,
          p.kind,
          p.point,
          p.verdict,
          p.count,
          p.records,
        );
    });
  }

  /**
   * Loads many records into a store nobody else uses yet (a benchmark's database, an import):
   * the secondary indexes are dropped, `fill` adds records in transactions of `chunk` (the
   * rollups folded in memory and merged into their tables every `chunk` records, in the same
   * transaction as those records), then the indexes are built in bulk (a sort each, not a B-tree
   * insert per row) and the retention bounds applied. Returns the records added.
   */
  bulkLoad(fill: (add: BulkAdd, addRow: (row: FlowRow) => void) => void, chunk = 200_000): number {
    const db = this.db;
    for (const i of INDEX_NAMES) db.exec(`DROP INDEX IF EXISTS ${i}`);
    let added = 0;
    let inTx = 0;
    let span = 0;
    let folds = newFolds();
    const commit = () => {
      this.upsertRollups(folds);
      this.rows = (this.metaAdd.get('rows', inTx) as { value: number }).value;
      this.metaMax.run('max_span', span);
      db.exec('COMMIT');
      folds = newFolds();
      inTx = 0;
    };
    db.exec('BEGIN IMMEDIATE');
    try {
      const addRow = (values: FlowRow) => {
        if (values.length !== 31) throw new Error('a flow row has 31 columns');
        this.insertStmt.run(...values);
        span = Math.max(span, (values[1] as number) - (values[0] as number));
        foldRecord(values, folds);
        added++;
        if (++inTx >= chunk) {
          commit();
          db.exec('BEGIN IMMEDIATE');
        }
      };
      fill((node, r) => addRow(rowValues(node, r)), addRow);
      commit();
    } finally {
      if (db.inTransaction) db.exec('ROLLBACK');
      db.exec(INDEXES);
    }
    if (this.rows > this.retention.maxRecords) this.prune();
    return added;
  }

  /** Rebuilds every rollup table from the records (inside the caller's transaction). */
  private rebuildRollups(): void {
    for (const [suffix, width] of [
      ['', ROLLUP_BUCKET_MS],
      ['_hour', ROLLUP_HOUR_MS],
    ] as const) {
      this.db.exec(`DELETE FROM flow_rollup${suffix}; DELETE FROM flow_policy_rollup${suffix};`);
      this.db.exec(
        `INSERT INTO flow_rollup${suffix} ${edgeRollupSelect(width)} ${EDGE_ROLLUP_GROUP}`,
      );
      this.db.exec(
        `INSERT INTO flow_policy_rollup${suffix} ${policyRollupSelect(width)} ${POLICY_ROLLUP_GROUP}`,
      );
    }
  }

  /**
   * After the records before `(e, i)` were deleted: drops the buckets of both levels wholly
   * before `e`'s, recomputes `e`'s minute bucket from the records left in it and `e`'s hour from
   * its minute buckets (the earlier minutes of that hour hold no records any more).
   */
  private trimRollups(e: number): void {
    const b = bucketOf(e);
    const h = hourOf(e);
    const lo = b * ROLLUP_BUCKET_MS;
    const run = (sql: string, ...args: number[]) => this.db.prepare(sql).run(...args);
    run('DELETE FROM flow_rollup WHERE bucket <= ?', b);
    run('DELETE FROM flow_policy_rollup WHERE bucket <= ?', b);
    run(
      `INSERT INTO flow_rollup ${edgeRollupSelect(ROLLUP_BUCKET_MS)} WHERE end_ms >= ? AND end_ms < ? ${EDGE_ROLLUP_GROUP}`,
      lo,
      lo + ROLLUP_BUCKET_MS,
    );
    run(
      `INSERT INTO flow_policy_rollup ${policyRollupSelect(ROLLUP_BUCKET_MS)} WHERE end_ms >= ? AND end_ms < ? ${POLICY_ROLLUP_GROUP}`,
      lo,
      lo + ROLLUP_BUCKET_MS,
    );
    run('DELETE FROM flow_rollup_hour WHERE bucket <= ?', h);
    run('DELETE FROM flow_policy_rollup_hour WHERE bucket <= ?', h);
    const m0 = h * MINUTES_PER_HOUR;
    run(`INSERT INTO flow_rollup_hour ${EDGE_HOUR_FROM_MINUTES}`, m0, m0 + MINUTES_PER_HOUR);
    run(
      `INSERT INTO flow_policy_rollup_hour ${POLICY_HOUR_FROM_MINUTES}`,
      m0,
      m0 + MINUTES_PER_HOUR,
    );
  }

  /**
   * Rollup rows that differ from a recomputation over the records (0 when consistent), both
   * levels: for tests and `palisade flows stats` checks; reads every rollup table in full.
   */
  verifyRollups(): number {
    const diff = (table: string, select: string, group: string) =>
      (
        this.db
          .prepare(
            `SELECT (SELECT count(*) FROM (SELECT * FROM (${select} ${group})
                                            EXCEPT SELECT * FROM ${table}))
                  + (SELECT count(*) FROM (SELECT * FROM ${table}
                                            EXCEPT SELECT * FROM (${select} ${group}))) AS n`,
          )
          .get() as { n: number }
      ).n;
    return this.db.transaction(
      () =>
        diff('flow_rollup', edgeRollupSelect(ROLLUP_BUCKET_MS), EDGE_ROLLUP_GROUP) +
        diff('flow_policy_rollup', policyRollupSelect(ROLLUP_BUCKET_MS), POLICY_ROLLUP_GROUP) +
        diff('flow_rollup_hour', edgeRollupSelect(ROLLUP_HOUR_MS), EDGE_ROLLUP_GROUP) +
        diff('flow_policy_rollup_hour', policyRollupSelect(ROLLUP_HOUR_MS), POLICY_ROLLUP_GROUP),
    )();
  }

  /** Applies the retention bounds; returns how many records were deleted. */
  prune(): number {
    let deleted = 0;
    const cutoff = this.now() - this.retention.maxAgeMs;
    // Age: every record whose window ended before the cutoff.
    deleted += this.deleteThrough(cutoff - 1, Number.MAX_SAFE_INTEGER);
    this.rows = this.meta('rows');
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
    if (deleted > 0) this.metaAdd.get('evicted', deleted);
    // The shed ledger keeps the same age bound.
    this.db.prepare('DELETE FROM flow_shed WHERE time_ms < ?').run(cutoff);
    return deleted;
  }

  /** Deletes the `n` records whose windows ended first (ties: the lower id first). */
  private deleteOldest(n: number): number {
    let deleted = 0;
    while (deleted < n) {
      const edge = this.db
        .prepare('SELECT end_ms AS e, id FROM flows ORDER BY end_ms, id LIMIT 1 OFFSET ?')
        .get(Math.min(n - deleted, 50_000) - 1) as { e: number; id: number } | undefined;
      const last =
        edge ??
        (this.db
          .prepare('SELECT end_ms AS e, id FROM flows ORDER BY end_ms DESC, id DESC LIMIT 1')
          .get() as { e: number; id: number } | undefined);
      if (!last) break;
      const d = this.deleteThrough(last.e, last.id);
      if (d === 0) break;
      deleted += d;
    }
    return deleted;
  }

  /**
   * Deletes the records at or before `(endMs, id)` in `(end_ms, id)` order, 50 000 a
   * transaction, keeping the rollups equal to the records: buckets wholly before `endMs`'s are
   * dropped, and `endMs`'s bucket is recomputed from what is left in it.
   */
  private deleteThrough(endMs: number, id: number): number {
    let deleted = 0;
    for (;;) {
      const d = this.db
        .transaction(() => {
          const chunk = this.db
            .prepare(
              `SELECT end_ms AS e, id FROM flows WHERE end_ms <= ? AND (end_ms < ? OR id <= ?)
             ORDER BY end_ms, id LIMIT 1 OFFSET 49999`,
            )
            .get(endMs, endMs, id) as { e: number; id: number } | undefined;
          const [e, i] = chunk ? [chunk.e, chunk.id] : [endMs, id];
          const r = this.db
            .prepare('DELETE FROM flows WHERE end_ms <= ? AND (end_ms < ? OR id <= ?)')
            .run(e, e, i);
          if (r.changes === 0) return 0;
          this.trimRollups(e);
          this.rows = (this.metaAdd.get('rows', -r.changes) as { value: number }).value;
          return r.changes;
        })
        .immediate();
      deleted += d;
      if (d < 50_000) break;
    }
    return deleted;
  }

  /**
   * A page of records. `afterId`: larger ids, oldest first (follow). `beforeId`: smaller ids,
   * newest id first (the cursor of earlier versions). Otherwise newest window first, in
   * `(end_ms, id)` order, continuing below `beforeKey`.
   */
  query(q: FlowQuery): FlowRecord[] {
    const { sql, args } = this.querySql(q);
    return (this.db.prepare(sql).all(...args) as Row[]).map(recordOf);
  }

  /** SQLite's plan for `query(q)` (which index a page reads), for tests and diagnosis. */
  explain(q: FlowQuery): string[] {
    const { sql, args } = this.querySql(q);
    return (this.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as { detail: string }[]).map(
      (r) => r.detail,
    );
  }

  private querySql(q: FlowQuery): { sql: string; args: (string | number)[] } {
    const { where, args } = whereOf(q, this.maxSpan());
    let order = 'end_ms DESC, id DESC';
    if (q.afterId !== undefined) {
      where.push('id > ?');
      args.push(q.afterId);
      order = 'id ASC';
    } else if (q.beforeId !== undefined) {
      where.push('id < ?');
      args.push(q.beforeId);
      order = 'id DESC';
    } else if (q.beforeKey !== undefined) {
      where.push('end_ms <= ? AND (end_ms < ? OR id < ?)');
      args.push(q.beforeKey.endMs, q.beforeKey.endMs, q.beforeKey.id);
    }
    const sql = `SELECT * FROM flows ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ?`;
    return { sql, args: [...args, q.limit] };
  }

  /** The longest window of any record ever stored (bounds `until` on the end-time index). */
  private maxSpan(): number {
    return this.meta('max_span');
  }

  /**
   * How a time filter is read exactly: the hour buckets wholly inside it, minute buckets for
   * the whole minutes at either edge, raw records for the rest (a record is in bucket
   * `floor(end_ms / width)`; a bucket is wholly inside when every record in it overlaps the
   * window). `hours: false` plans minutes and raw records only (the previous version's plan).
   */
  private plan(q: TimeFilter, hours: boolean): ReadPlan {
    // Whole minutes: their records all satisfy `end_ms >= since`, and `start_ms <= until` as the
    // bucket's last millisecond is <= until (a window never ends before it starts).
    const mlo = q.sinceMs !== undefined ? Math.ceil(q.sinceMs / ROLLUP_BUCKET_MS) : undefined;
    const mhi =
      q.untilMs !== undefined ? Math.floor((q.untilMs + 1) / ROLLUP_BUCKET_MS) - 1 : undefined;
    if (mlo !== undefined && mhi !== undefined && mlo > mhi)
      return { hours: undefined, minutes: [], raw: undefined, rawAll: true };
    const raw: string[] = [];
    const rawArgs: number[] = [];
    if (mlo !== undefined) {
      raw.push('end_ms < ?');
      rawArgs.push(mlo * ROLLUP_BUCKET_MS);
    }
    if (mhi !== undefined) {
      raw.push('end_ms >= ?');
      rawArgs.push((mhi + 1) * ROLLUP_BUCKET_MS);
    }
    const rawPart = raw.length ? { sql: `(${raw.join(' OR ')})`, args: rawArgs } : undefined;
    const M = MINUTES_PER_HOUR;
    const hlo = mlo !== undefined ? Math.ceil(mlo / M) : undefined;
    const hhi = mhi !== undefined ? Math.floor((mhi + 1) / M) - 1 : undefined;
    if (!hours || (hlo !== undefined && hhi !== undefined && hlo > hhi))
      return { hours: undefined, minutes: [[mlo, mhi]], raw: rawPart, rawAll: false };
    const minutes: [number | undefined, number | undefined][] = [];
    if (mlo !== undefined && hlo !== undefined && mlo <= hlo * M - 1)
      minutes.push([mlo, hlo * M - 1]);
    if (mhi !== undefined && hhi !== undefined && (hhi + 1) * M <= mhi)
      minutes.push([(hhi + 1) * M, mhi]);
    return { hours: [hlo, hhi], minutes, raw: rawPart, rawAll: false };
  }

  /**
   * One aggregation over a window, read through the plan: `select.raw` from the records and
   * `select.rollup` from the rollup table of each level (`select.table`), all with the filter's
   * conditions, unioned for `outer` (a statement over `(...)` with its own trailing `args`).
   * `source: 'raw'` reads the records only, `'minute'` the minute rollups and the records.
   */
  private aggregate(
    q: TimeFilter,
    source: AggregateSource,
    select: {
      readonly raw: string;
      readonly rollup: string;
      readonly table: (level: '' | '_hour') => string;
    },
    outer: (union: string) => string,
    args: readonly (string | number)[],
  ): unknown[] {
    const parts: { sql: string; args: (string | number)[] }[] = [];
    const rawPart = (extra: { sql: string; args: number[] } | undefined) => {
      const f = whereOf(q, this.maxSpan());
      const w = [...f.where, ...(extra ? [extra.sql] : [])];
      parts.push({
        sql: `SELECT ${select.raw} FROM flows ${w.length ? `WHERE ${w.join(' AND ')}` : ''}`,
        args: [...f.args, ...(extra?.args ?? [])],
      });
    };
    const rollupPart = (level: '' | '_hour', lo: number | undefined, hi: number | undefined) => {
      const f = whereOf(q, 0, false);
      const w = [...f.where];
      const a: (string | number)[] = [...f.args];
      if (lo !== undefined) {
        w.push('bucket >= ?');
        a.push(lo);
      }
      if (hi !== undefined) {
        w.push('bucket <= ?');
        a.push(hi);
      }
      parts.push({
        sql: `SELECT ${select.rollup} FROM ${select.table(level)} ${w.length ? `WHERE ${w.join(' AND ')}` : ''}`,
        args: a,
      });
    };
    if (source === 'raw') rawPart(undefined);
    else {
      const p = this.plan(q, source === 'rollup');
      if (p.rawAll) rawPart(undefined);
      else {
        if (p.hours) rollupPart('_hour', p.hours[0], p.hours[1]);
        for (const [lo, hi] of p.minutes) rollupPart('', lo, hi);
        if (p.raw) rawPart(p.raw);
      }
    }
    return this.db
      .transaction(() =>
        this.db
          .prepare(outer(parts.map((p) => p.sql).join(' UNION ALL ')))
          .all(...parts.flatMap((p) => p.args), ...args),
      )
      .deferred();
  }

  /** Edges of the service graph over a window (at most `limit` groups, the busiest first). */
  graph(
    q: TimeFilter,
    limit = 20000,
    source: AggregateSource = 'rollup',
  ): {
    edges: GraphEdge[];
    nodes: GraphNode[];
  } {
    const keys = `src_ns, src_name, src_key, dst_ns, dst_name, dst_key, verdict, point, policy, prov_kind`;
    const rows = this.aggregate(
      q,
      source,
      {
        raw: `src_ns, src_name, CASE WHEN src_name IS NULL THEN src_ip ELSE '' END AS src_key,
                src_ip, dst_ns, dst_name, CASE WHEN dst_name IS NULL THEN dst_ip ELSE '' END AS dst_key,
                dst_ip, verdict, point, policy, prov_kind, count AS n, end_ms AS last,
                src_labels AS sl, dst_labels AS dl`,
        rollup: `nullif(src_ns, '') AS src_ns, nullif(src_name, '') AS src_name, src_key, src_ip,
                  nullif(dst_ns, '') AS dst_ns, nullif(dst_name, '') AS dst_name, dst_key, dst_ip,
                  verdict, point, nullif(policy, '') AS policy, prov_kind, count AS n, last_ms AS last,
                  nullif(src_labels, '') AS sl, nullif(dst_labels, '') AS dl`,
        table: (level) => `flow_rollup${level}`,
      },
      (union) =>
        `SELECT src_ns, src_name, min(src_ip) AS src_ip, dst_ns, dst_name, min(dst_ip) AS dst_ip,
           verdict, point, policy, prov_kind, sum(n) AS n, max(last) AS last,
           max(sl) AS sl, max(dl) AS dl
         FROM (${union})
         GROUP BY ${keys}
         ORDER BY n DESC, ${keys} LIMIT ?`,
      [limit],
    ) as {
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
  policyHits(q: TimeFilter, source: AggregateSource = 'rollup'): PolicyHits[] {
    const keys = 'policy, tier, prov_kind, point, verdict';
    // The policy rollup answers filters on policy, verdict, point and node; an endpoint or
    // namespace filter needs the edge rollup.
    const byPolicy = q.endpoint === undefined && q.namespace === undefined;
    const rows = this.aggregate(
      q,
      source,
      {
        raw: `policy, tier, prov_kind, point, verdict, count AS n`,
        rollup: `nullif(policy, '') AS policy, nullif(tier, '') AS tier, prov_kind, point,
                  verdict, count AS n`,
        table: (level) => (byPolicy ? `flow_policy_rollup${level}` : `flow_rollup${level}`),
      },
      (union) =>
        `SELECT ${keys}, sum(n) AS n FROM (${union})
         GROUP BY ${keys} ORDER BY n DESC, ${keys} LIMIT 10000`,
      [],
    ) as {
      policy: string | null;
      tier: string | null;
      prov_kind: string;
      point: FlowPoint;
      verdict: FlowVerdict;
      n: number;
    }[];
    return rows.map((r) => ({
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
    const evicted = this.meta('evicted');
    this.rows = this.meta('rows');
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

  /** Rows in the rollup tables (how much an aggregation reads instead of the records). */
  rollupSizes(): { edges: number; policies: number; hourEdges: number; hourPolicies: number } {
    const n = (t: string) =>
      (this.db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
    return {
      edges: n('flow_rollup'),
      policies: n('flow_policy_rollup'),
      hourEdges: n('flow_rollup_hour'),
      hourPolicies: n('flow_policy_rollup_hour'),
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

/** A batch's rollup groups per level (minute, hour), folded in memory before the upserts. */
type Folds = readonly {
  readonly edges: Map<string, EdgeAgg>;
  readonly policies: Map<string, PolicyAgg>;
}[];

function newFolds(): Folds {
  return [
    { edges: new Map(), policies: new Map() },
    { edges: new Map(), policies: new Map() },
  ];
}

/** Folds one record's row values into the batch's rollup groups of both levels. */
function foldRecord(v: (string | number | null)[], folds: Folds): void {
  const str = (i: number) => (v[i] as string | null) ?? '';
  const endMs = v[1] as number;
  const node = v[2] as string;
  const srcNs = str(3);
  const srcName = str(4);
  const dstNs = str(9);
  const dstName = str(10);
  const srcIp = v[5] as string;
  const dstIp = v[11] as string;
  const srcKey = v[4] === null ? srcIp : '';
  const dstKey = v[10] === null ? dstIp : '';
  const verdict = v[18] as string;
  const point = v[19] as string;
  const kind = v[21] as string;
  const tier = str(22);
  const policy = str(23);
  const count = v[30] as number;
  const srcLabels = str(8);
  const dstLabels = str(14);
  const group = [node, srcNs, srcName, srcKey, dstNs, dstName, dstKey, verdict, point]
    .concat([policy, tier, kind])
    .join('\u0000');
  const pgroup = [node, policy, tier, kind, point, verdict].join('\u0000');
  folds.forEach(({ edges, policies }, level) => {
    const bucket = level === 0 ? bucketOf(endMs) : hourOf(endMs);
    const ek = `${bucket}\u0000${group}`;
    const e = edges.get(ek);
    if (e) {
      if (srcIp < e.srcIp) e.srcIp = srcIp;
      if (dstIp < e.dstIp) e.dstIp = dstIp;
      if (endMs > e.last) e.last = endMs;
      if (srcLabels > e.srcLabels) e.srcLabels = srcLabels;
      if (dstLabels > e.dstLabels) e.dstLabels = dstLabels;
      e.count += count;
      e.records++;
    } else
      edges.set(ek, {
        bucket,
        node,
        srcNs,
        srcName,
        srcKey,
        dstNs,
        dstName,
        dstKey,
        verdict,
        point,
        policy,
        tier,
        kind,
        srcIp,
        dstIp,
        last: endMs,
        srcLabels,
        dstLabels,
        count,
        records: 1,
      });
    const pk = `${bucket}\u0000${pgroup}`;
    const p = policies.get(pk);
    if (p) {
      p.count += count;
      p.records++;
    } else
      policies.set(pk, { bucket, node, policy, tier, kind, point, verdict, count, records: 1 });
  });
}

/**
 * The filter's conditions. A window is `end_ms >= since AND start_ms <= until` (records that
 * overlap it); `end_ms <= until + maxSpan` says the same for any stored record (none is longer
 * than `maxSpan`) and lets the end-time index bound the scan. `withTime: false` leaves the time
 * out (for the rollups, whose buckets are chosen separately); their columns share the names.
 */
function whereOf(
  q: Omit<FlowQuery, 'limit'>,
  maxSpan: number,
  withTime = true,
): { where: string[]; args: (string | number)[] } {
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (withTime && q.sinceMs !== undefined) {
    where.push('end_ms >= ?');
    args.push(q.sinceMs);
  }
  if (withTime && q.untilMs !== undefined) {
    where.push('start_ms <= ? AND end_ms <= ?');
    args.push(q.untilMs, q.untilMs + Math.max(0, maxSpan));
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

/** The `flows` columns of a validated record. */
export function rowValues(node: string, r: FlowRecordInput): FlowRow {
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
