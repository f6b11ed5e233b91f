// The SQLite adapter of the store port: the embedded default (`sqlite:<data-dir>/palisade.db`).
// One file in WAL mode with synchronous=FULL, so a transaction that returned is on disk and a
// crash leaves every transaction entirely applied or not at all (one SQLite transaction each).
// It keeps the current key space (`kv`) and every version since the compacted revision
// (`history`, etcd's MVCC in a table) for reads at past revisions and watch replay.
// Watches in this process are pushed on commit; changes committed by other processes on the
// same file are picked up by polling `PRAGMA data_version` while watches are open.
// It never interprets values and never logs them.

import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import {
  checkKey,
  checkListOptions,
  checkPrefix,
  checkRevision,
  checkTxnLimits,
  compactedError,
  StoreError,
  watchNeedsCompactedHistory,
  type Compare,
  type KeyValue,
  type ListOptions,
  type ListResult,
  type Op,
  type Store,
  type Txn,
  type TxnResult,
  type WatchBatch,
  type WatchEvent,
  type WatchOptions,
} from './store.js';
import { settle } from './settle.js';
import { WatchQueue } from './watch-queue.js';

/** 'PLSD' in the SQLite header's application_id: marks a file as a Palisade store. */
const APPLICATION_ID = 0x504c5344;
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('revision', 1), ('compact_revision', 1);
-- The live keys; their values are in the history row at mod_rev (each value is written once).
CREATE TABLE kv (
  key BLOB PRIMARY KEY,
  create_rev INTEGER NOT NULL,
  mod_rev INTEGER NOT NULL,
  version INTEGER NOT NULL
) WITHOUT ROWID;
-- Every version of every key since the compacted revision; a deletion is a row with deleted = 1.
-- Rows are appended in commit order, so id orders the changes of one transaction (etcd's
-- sub-revision). A rowid table, because rows of ~1 KB make WITHOUT ROWID B-trees slow to grow.
CREATE TABLE history (
  id INTEGER PRIMARY KEY,
  key BLOB NOT NULL,
  mod_rev INTEGER NOT NULL,
  deleted INTEGER NOT NULL,
  value TEXT NOT NULL,
  create_rev INTEGER NOT NULL,
  version INTEGER NOT NULL
);
CREATE UNIQUE INDEX history_by_key ON history (key, mod_rev);
CREATE INDEX history_by_rev ON history (mod_rev);
`;

export interface SqliteStoreOptions {
  /** How long a write waits for another process's lock before STORE_ERR_UNAVAILABLE (ms). */
  readonly busyTimeoutMs?: number;
  /** How often open watches look for commits by other processes (ms). */
  readonly pollMs?: number;
  /**
   * `FULL` (default): a returned transaction survives power loss. `NORMAL`: in WAL mode still
   * atomic and consistent after a crash, but the last transactions may roll back on power loss.
   */
  readonly synchronous?: 'FULL' | 'NORMAL';
}

interface KvRow {
  key: Buffer;
  value: string;
  create_rev: number;
  mod_rev: number;
  version: number;
}

interface HistoryRow extends KvRow {
  deleted: number;
  p_value: string | null;
  p_create: number | null;
  p_mod: number | null;
  p_version: number | null;
  p_deleted: number | null;
}

interface Watcher {
  readonly prefix: string;
  /** Batches before this revision are not delivered (a watch may start in the future). */
  readonly fromRevision: number;
  readonly queue: WatchQueue;
}

function kvOf(r: KvRow): KeyValue {
  return {
    key: r.key.toString('utf8'),
    value: r.value,
    createRevision: r.create_rev,
    modRevision: r.mod_rev,
    version: r.version,
  };
}

function keyBuf(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

/** [start, end) of the byte range of keys with this prefix: no UTF-8 byte is 0xFF. */
function prefixRange(prefix: string): [Buffer, Buffer] {
  const start = keyBuf(prefix);
  return [start, Buffer.concat([start, Buffer.from([0xff])])];
}

function sqliteCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** Maps SQLite failures onto the catalogue; StoreErrors pass through. */
function mapError(e: unknown, file: string): Error {
  if (e instanceof StoreError) return e;
  const code = sqliteCode(e) ?? '';
  const msg = e instanceof Error ? e.message : String(e);
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    return new StoreError(
      'STORE_ERR_CORRUPT',
      `${file} is not a usable SQLite database (${code}: ${msg})`,
      { cause: e },
    );
  }
  if (code.startsWith('SQLITE_')) {
    return new StoreError('STORE_ERR_UNAVAILABLE', `SQLite store ${file}: ${code}: ${msg}`, {
      cause: e,
    });
  }
  return e instanceof Error ? e : new Error(msg);
}

function prepareStatements(db: Database.Database) {
  return {
    meta: db.prepare<[string], { value: number }>('SELECT value FROM meta WHERE name = ?'),
    setMeta: db.prepare<[number, string]>('UPDATE meta SET value = ? WHERE name = ?'),
    get: db.prepare<[Buffer], KvRow>(
      `SELECT k.key, h.value, k.create_rev, k.mod_rev, k.version FROM kv k JOIN history h ON h.key = k.key AND h.mod_rev = k.mod_rev WHERE k.key = ?`,
    ),
    listNow: db.prepare<[Buffer, Buffer, Buffer, number], KvRow>(
      `SELECT k.key, h.value, k.create_rev, k.mod_rev, k.version FROM kv k JOIN history h ON h.key = k.key AND h.mod_rev = k.mod_rev
       WHERE k.key >= ? AND k.key < ? AND k.key > ? ORDER BY k.key LIMIT ?`,
    ),
    listAt: db.prepare<[Buffer, Buffer, Buffer, number, number], KvRow>(
      `SELECT key, value, create_rev, mod_rev, version FROM (
         SELECT key, value, create_rev, MAX(mod_rev) AS mod_rev, version, deleted FROM history
         WHERE key >= ? AND key < ? AND key > ? AND mod_rev <= ? GROUP BY key
       ) WHERE deleted = 0 ORDER BY key LIMIT ?`,
    ),
    keysIn: db.prepare<[Buffer, Buffer], KvRow>(
      `SELECT k.key, h.value, k.create_rev, k.mod_rev, k.version FROM kv k JOIN history h ON h.key = k.key AND h.mod_rev = k.mod_rev WHERE k.key >= ? AND k.key < ? ORDER BY k.key`,
    ),
    upsert: db.prepare<[Buffer, number, number, number]>(
      `INSERT INTO kv (key, create_rev, mod_rev, version) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET mod_rev = excluded.mod_rev, version = excluded.version`,
    ),
    remove: db.prepare<[Buffer]>('DELETE FROM kv WHERE key = ?'),
    record: db.prepare<[Buffer, number, number, string, number, number]>(
      `INSERT INTO history (key, mod_rev, deleted, value, create_rev, version)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    replay: db.prepare<[number, number, Buffer, Buffer], HistoryRow>(
      `SELECT h.key, h.mod_rev, h.deleted, h.value, h.create_rev, h.version,
         p.value AS p_value, p.create_rev AS p_create, p.mod_rev AS p_mod,
         p.version AS p_version, p.deleted AS p_deleted
       FROM history h
       LEFT JOIN history p ON p.key = h.key AND p.mod_rev =
         (SELECT MAX(q.mod_rev) FROM history q WHERE q.key = h.key AND q.mod_rev < h.mod_rev)
       WHERE h.mod_rev >= ? AND h.mod_rev <= ? AND h.key >= ? AND h.key < ?
       ORDER BY h.mod_rev, h.id`,
    ),
    compact: db.prepare<{ c: number }>(
      `DELETE FROM history WHERE mod_rev <= @c AND (deleted = 1 OR EXISTS (
         SELECT 1 FROM history n WHERE n.key = history.key AND n.mod_rev > history.mod_rev
           AND n.mod_rev <= @c))`,
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

export class SqliteStore implements Store {
  readonly name: string;
  readonly path: string;
  private readonly db: Database.Database;
  private readonly watchers = new Set<Watcher>();
  private closed = false;
  /** Every revision up to this one has been pushed to the watches of this process. */
  private pushedRevision: number;
  private dataVersion: number;
  private poller: NodeJS.Timeout | undefined;
  private readonly pollMs: number;
  private readonly stmt: Statements;

  /** Opens (creating if needed) the store file. Throws StoreError CORRUPT or UNAVAILABLE. */
  constructor(path: string, options: SqliteStoreOptions = {}) {
    if (typeof path !== 'string' || path === '' || path.includes('\0'))
      throw new StoreError('STORE_ERR_INVALID', 'the SQLite store needs a file path');
    this.path = resolve(path);
    this.name = `sqlite:${this.path}`;
    this.pollMs = options.pollMs ?? 100;
    let db: Database.Database | undefined;
    try {
      const dir = dirname(this.path);
      if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (!existsSync(this.path)) {
        // Create it ourselves so it is never readable by others, not even for a moment.
        closeSync(openSync(this.path, 'wx', 0o600));
      } else if (statSync(this.path).isFile() && (statSync(this.path).mode & 0o077) !== 0) {
        chmodSync(this.path, 0o600);
      }
      db = new Database(this.path, { timeout: options.busyTimeoutMs ?? 5000 });
      // Larger pages suit ~1 KB values; ignored once the file exists.
      db.pragma('page_size = 16384');
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
      this.initSchema(db);
    } catch (e) {
      db?.close();
      if (e instanceof StoreError) throw e;
      const code = sqliteCode(e);
      if (code !== undefined && !code.startsWith('SQLITE_')) {
        throw new StoreError(
          'STORE_ERR_UNAVAILABLE',
          `cannot open the SQLite store ${this.path}: ${(e as Error).message}`,
          { cause: e },
        );
      }
      throw mapError(e, this.path);
    }
    this.db = db;
    this.stmt = prepareStatements(db);
    this.pushedRevision = this.meta('revision');
    this.dataVersion = this.readDataVersion();
  }

  private initSchema(db: Database.Database): void {
    const appId = db.pragma('application_id', { simple: true }) as number;
    const tables = db
      .prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table'")
      .get() as { n: number };
    if (appId === 0 && tables.n === 0) {
      db.transaction(() => {
        db.exec(SCHEMA);
        db.pragma(`application_id = ${APPLICATION_ID}`);
        db.pragma(`user_version = ${SCHEMA_VERSION}`);
      }).immediate();
      return;
    }
    if (appId !== APPLICATION_ID) {
      throw new StoreError(
        'STORE_ERR_CORRUPT',
        `${this.path} is an SQLite database but not a Palisade store (application_id ${appId})`,
      );
    }
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version !== SCHEMA_VERSION) {
      throw new StoreError(
        'STORE_ERR_CORRUPT',
        `${this.path} has store schema version ${version}; this Palisade reads version ${SCHEMA_VERSION}`,
      );
    }
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.run(() => {
      checkKey(key);
      const row = this.stmt.get.get(keyBuf(key));
      return row === undefined ? undefined : kvOf(row);
    });
  }

  list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    return this.run(() => {
      checkPrefix(prefix);
      checkListOptions(options);
      // One read transaction: the revision and the rows come from one snapshot.
      return this.db.transaction(() => this.listIn(prefix, options))();
    });
  }

  private listIn(prefix: string, options: ListOptions): ListResult {
    const revision = this.meta('revision');
    const at = options.revision ?? revision;
    if (at > revision) {
      throw new StoreError(
        'STORE_ERR_FUTURE_REVISION',
        `revision ${at} is ahead of the store (${revision})`,
      );
    }
    const compactRevision = this.meta('compact_revision');
    if (at < compactRevision) {
      throw new StoreError(
        'STORE_ERR_COMPACTED',
        `revision ${at} has been compacted (oldest readable: ${compactRevision})`,
        { compactRevision },
      );
    }
    const [start, end] = prefixRange(prefix);
    const after = options.after === undefined ? Buffer.alloc(0) : keyBuf(options.after);
    // Ask for one more row than the limit to learn whether the list was cut short.
    const limit = options.limit === undefined ? -1 : options.limit + 1;
    const rows =
      at === revision
        ? this.stmt.listNow.all(start, end, after, limit)
        : this.stmt.listAt.all(start, end, after, at, limit);
    const more = options.limit !== undefined && rows.length > options.limit;
    if (more) rows.pop();
    return { items: rows.map(kvOf), revision: at, more };
  }

  txn(txn: Txn): Promise<TxnResult> {
    return this.run(() => {
      checkTxnLimits(txn);
      let base = 0;
      let batch: WatchBatch | undefined;
      const apply = this.db.transaction((): TxnResult => {
        base = this.meta('revision');
        const succeeded = txn.compares.every((c) => this.holds(c));
        const ops = succeeded ? txn.success : (txn.failure ?? []);
        const events = this.applyOps(ops, base + 1);
        if (events.length === 0) return { succeeded, revision: base };
        this.stmt.setMeta.run(base + 1, 'revision');
        batch = { revision: base + 1, events };
        return { succeeded, revision: base + 1 };
      });
      const result = apply.immediate();
      // Commits by other processes come first, then ours: watches see revision order.
      if (base > this.pushedRevision) this.pump(base);
      if (batch !== undefined) {
        this.pushedRevision = batch.revision;
        this.fanOut(batch);
      }
      return result;
    });
  }

  private holds(c: Compare): boolean {
    const row = this.stmt.get.get(keyBuf(c.key));
    if ('modRevision' in c) return (row?.mod_rev ?? 0) === c.modRevision;
    return row !== undefined && row.value === c.value;
  }

  private applyOps(ops: readonly Op[], rev: number): WatchEvent[] {
    const events: WatchEvent[] = [];
    const del = (row: KvRow): void => {
      this.stmt.remove.run(row.key);
      this.stmt.record.run(row.key, rev, 1, '', 0, 0);
      const key = row.key.toString('utf8');
      events.push({
        type: 'delete',
        kv: { key, value: '', createRevision: 0, modRevision: rev, version: 0 },
        prevKv: kvOf(row),
      });
    };
    for (const op of ops) {
      switch (op.kind) {
        case 'put': {
          const k = keyBuf(op.key);
          const prev = this.stmt.get.get(k);
          const kv: KeyValue = {
            key: op.key,
            value: op.value,
            createRevision: prev?.create_rev ?? rev,
            modRevision: rev,
            version: (prev?.version ?? 0) + 1,
          };
          this.stmt.upsert.run(k, kv.createRevision, rev, kv.version);
          this.stmt.record.run(k, rev, 0, op.value, kv.createRevision, kv.version);
          events.push(
            prev === undefined ? { type: 'put', kv } : { type: 'put', kv, prevKv: kvOf(prev) },
          );
          break;
        }
        case 'delete': {
          const prev = this.stmt.get.get(keyBuf(op.key));
          if (prev !== undefined) del(prev);
          break;
        }
        case 'deletePrefix': {
          const [start, end] = prefixRange(op.prefix);
          for (const row of this.stmt.keysIn.all(start, end)) del(row);
          break;
        }
      }
    }
    return events;
  }

  watch(prefix: string, options: WatchOptions): AsyncIterableIterator<WatchBatch> {
    const watcher: Watcher = {
      prefix,
      fromRevision: options.fromRevision,
      queue: new WatchQueue(() => this.dropWatcher(watcher), options.signal),
    };
    try {
      if (this.closed) throw new StoreError('STORE_ERR_CLOSED', `${this.name} is closed`);
      checkPrefix(prefix);
      checkRevision(options.fromRevision, 'fromRevision');
      if (watcher.queue.closed) return watcher.queue;
      // Synchronous from here on: no commit of this process can slip between replay and live.
      const compactRevision = this.meta('compact_revision');
      if (watchNeedsCompactedHistory(options.fromRevision, compactRevision)) {
        watcher.queue.end(compactedError(options.fromRevision, compactRevision));
        return watcher.queue;
      }
      for (const batch of this.history(options.fromRevision, this.pushedRevision, prefix))
        watcher.queue.push(batch);
      this.watchers.add(watcher);
      this.poller ??= setInterval(() => this.poll(), this.pollMs).unref();
    } catch (e) {
      watcher.queue.end(mapError(e, this.path));
    }
    return watcher.queue;
  }

  private dropWatcher(w: Watcher): void {
    this.watchers.delete(w);
    if (this.watchers.size === 0 && this.poller !== undefined) {
      clearInterval(this.poller);
      this.poller = undefined;
    }
  }

  /** Batches of revisions [from, to] under prefix, read from the history table. */
  private history(from: number, to: number, prefix: string): WatchBatch[] {
    const [start, end] = prefixRange(prefix);
    const out: WatchBatch[] = [];
    let cur: { revision: number; events: WatchEvent[] } | undefined;
    for (const r of this.stmt.replay.iterate(from, to, start, end)) {
      const key = r.key.toString('utf8');
      const prevKv: KeyValue | undefined =
        r.p_mod === null || r.p_deleted === 1
          ? undefined
          : {
              key,
              value: r.p_value ?? '',
              createRevision: r.p_create ?? 0,
              modRevision: r.p_mod,
              version: r.p_version ?? 0,
            };
      const kv: KeyValue =
        r.deleted === 1
          ? { key, value: '', createRevision: 0, modRevision: r.mod_rev, version: 0 }
          : kvOf(r);
      const type = r.deleted === 1 ? 'delete' : 'put';
      const e: WatchEvent = prevKv === undefined ? { type, kv } : { type, kv, prevKv };
      if (cur === undefined || cur.revision !== r.mod_rev) {
        cur = { revision: r.mod_rev, events: [] };
        out.push(cur);
      }
      cur.events.push(e);
    }
    return out;
  }

  /** Pushes commits of other processes (revisions after pushedRevision up to `to`). */
  private pump(to: number): void {
    if (to <= this.pushedRevision) return;
    const compactRevision = this.meta('compact_revision');
    if (watchNeedsCompactedHistory(this.pushedRevision + 1, compactRevision)) {
      // Another process compacted history these watches had not seen yet.
      for (const w of [...this.watchers])
        w.queue.end(compactedError(this.pushedRevision + 1, compactRevision));
    } else {
      for (const batch of this.history(this.pushedRevision + 1, to, '')) this.fanOut(batch);
    }
    this.pushedRevision = to;
  }

  private poll(): void {
    if (this.closed) return;
    try {
      const v = this.readDataVersion();
      if (v === this.dataVersion) return;
      this.dataVersion = v;
      this.pump(this.meta('revision'));
    } catch (e) {
      const err = mapError(e, this.path);
      for (const w of [...this.watchers]) w.queue.end(err);
    }
  }

  private fanOut(batch: WatchBatch): void {
    for (const w of this.watchers) {
      if (batch.revision < w.fromRevision) continue;
      const mine = batch.events.filter((e) => e.kv.key.startsWith(w.prefix));
      if (mine.length === batch.events.length) w.queue.push(batch);
      else if (mine.length > 0) w.queue.push({ revision: batch.revision, events: mine });
    }
  }

  compact(revision: number): Promise<void> {
    return this.run(() => {
      checkRevision(revision);
      this.db
        .transaction(() => {
          const current = this.meta('revision');
          if (revision > current) {
            throw new StoreError(
              'STORE_ERR_FUTURE_REVISION',
              `cannot compact at ${revision}: the store is at ${current}`,
            );
          }
          if (revision <= this.meta('compact_revision')) return;
          this.stmt.compact.run({ c: revision });
          this.stmt.setMeta.run(revision, 'compact_revision');
        })
        .immediate();
    });
  }

  status(): Promise<{ revision: number; compactRevision: number }> {
    return this.run(() =>
      this.db.transaction(() => ({
        revision: this.meta('revision'),
        compactRevision: this.meta('compact_revision'),
      }))(),
    );
  }

  /**
   * SQLite's integrity check plus the store's own invariants (current values agree with the
   * history, no version beyond the revision). Returns the problems; empty means healthy.
   */
  integrityCheck(): string[] {
    if (this.closed) throw new StoreError('STORE_ERR_CLOSED', `${this.name} is closed`);
    const problems: string[] = [];
    try {
      for (const r of this.db.pragma('integrity_check') as { integrity_check: string }[])
        if (r.integrity_check !== 'ok') problems.push(`sqlite: ${r.integrity_check}`);
      const revision = this.meta('revision');
      const compactRevision = this.meta('compact_revision');
      const q = (sql: string): number =>
        (this.db.prepare(sql).get() as { n: number | null }).n ?? 0;
      const maxRev = q('SELECT MAX(mod_rev) AS n FROM history');
      if (maxRev > revision) problems.push(`history has revision ${maxRev} > store ${revision}`);
      if (compactRevision > revision)
        problems.push(`compact revision ${compactRevision} > store revision ${revision}`);
      const stale = q(`SELECT count(*) AS n FROM kv k WHERE NOT EXISTS (
          SELECT 1 FROM history h WHERE h.key = k.key AND h.mod_rev = k.mod_rev AND h.deleted = 0
            AND h.version = k.version AND h.create_rev = k.create_rev)
        OR EXISTS (SELECT 1 FROM history h WHERE h.key = k.key AND h.mod_rev > k.mod_rev)`);
      if (stale > 0) problems.push(`${stale} current values disagree with the history`);
      const lost = q(`SELECT count(*) AS n FROM (
          SELECT key, MAX(mod_rev) AS m, deleted FROM history GROUP BY key)
        WHERE deleted = 0 AND key NOT IN (SELECT key FROM kv)`);
      if (lost > 0) problems.push(`${lost} live keys of the history are missing`);
    } catch (e) {
      problems.push(mapError(e, this.path).message);
    }
    return problems;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.poller !== undefined) clearInterval(this.poller);
    this.poller = undefined;
    for (const w of [...this.watchers]) w.queue.end();
    this.db.close();
    return Promise.resolve();
  }

  private run<T>(fn: () => T): Promise<T> {
    return settle(() => {
      if (this.closed) throw new StoreError('STORE_ERR_CLOSED', `${this.name} is closed`);
      try {
        return fn();
      } catch (e) {
        throw mapError(e, this.path);
      }
    });
  }

  private meta(name: 'revision' | 'compact_revision'): number {
    const row = this.stmt.meta.get(name);
    if (row === undefined)
      throw new StoreError('STORE_ERR_CORRUPT', `${this.path} has no ${name} record`);
    return row.value;
  }

  private readDataVersion(): number {
    return this.db.pragma('data_version', { simple: true }) as number;
  }
}
