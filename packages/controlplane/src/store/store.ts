// The store port: a revisioned key-value store shaped by what the API server needs (STYLE 8).
// Every adapter (memory, SQLite, etcd) implements exactly this and passes the one contract suite.
// Semantics follow etcd v3, so the etcd adapter is a thin translation and the others imitate it:
// - one global revision, starting at 1 for an empty store, incremented once per write transaction;
// - every key carries createRevision, modRevision and version (writes since creation);
// - a transaction is all or nothing: either every compare holds and every op applies at one new
//   revision, or nothing changes;
// - watch delivers every change with modRevision >= fromRevision, in revision order, the changes
//   of one transaction in one batch; history older than the compacted revision is gone and asking
//   for it fails with STORE_ERR_COMPACTED (the caller relists). After compact(C), lists at C or
//   later work and watches need fromRevision > C: a watch from F is valid exactly when a list at
//   F - 1 is (etcd may drop a deletion recorded at C itself), so "list at R, watch from R + 1" is
//   always consistent. Watching from a revision the store has not reached yet waits for it.
// - keys are non-empty, well-formed strings ordered by their UTF-8 bytes (as etcd and SQLite
//   order them; `compareKeys`); a transaction may not touch one key twice (as etcd).
// The port never interprets values: resources are serialized by the server. Every method reports
// failure by rejecting (or, for watch, by the iterator throwing), never by a synchronous throw.

import { StoreError } from './store-error.js';

export { StoreError };

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  /** Number of writes since the key was (re)created; 1 after the first put. */
  readonly version: number;
}

/** A compare of a transaction. `modRevision: 0` means "the key does not exist". */
export type Compare =
  | { readonly key: string; readonly modRevision: number }
  | { readonly key: string; readonly value: string };

export type Op =
  | { readonly kind: 'put'; readonly key: string; readonly value: string }
  | { readonly kind: 'delete'; readonly key: string }
  /** Deletes every key starting with the prefix. */
  | { readonly kind: 'deletePrefix'; readonly prefix: string };

export interface Txn {
  readonly compares: readonly Compare[];
  readonly success: readonly Op[];
  /** Applied instead of `success` when a compare fails (default: nothing). */
  readonly failure?: readonly Op[];
}

export interface TxnResult {
  readonly succeeded: boolean;
  /** The store revision after the transaction (unchanged when nothing was written). */
  readonly revision: number;
}

export interface ListOptions {
  /** Read at this past revision (must not be compacted). Default: the current revision. */
  readonly revision?: number;
  /** At most this many keys, in key order. */
  readonly limit?: number;
  /** Only keys strictly greater than this one (for paging). */
  readonly after?: string;
}

export interface ListResult {
  readonly items: readonly KeyValue[];
  /** The revision the list was read at: watch from `revision + 1` to follow on. */
  readonly revision: number;
  /** True when `limit` cut the list short. */
  readonly more: boolean;
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  /** For a delete: the key, an empty value and the revision of the deletion as modRevision. */
  readonly kv: KeyValue;
  readonly prevKv?: KeyValue;
}

export interface WatchBatch {
  /** The revision of the transaction these events belong to. */
  readonly revision: number;
  readonly events: readonly WatchEvent[];
}

export interface WatchOptions {
  /** First revision to deliver (inclusive), as etcd's start_revision. */
  readonly fromRevision: number;
  readonly signal?: AbortSignal;
}

export interface Store {
  /** A short name for logs and metrics: `memory`, `sqlite:/path`, `etcd://h1,h2`. */
  readonly name: string;
  get(key: string): Promise<KeyValue | undefined>;
  list(prefix: string, options?: ListOptions): Promise<ListResult>;
  txn(txn: Txn): Promise<TxnResult>;
  /**
   * Changes under `prefix` from `fromRevision` on. The iterator ends when the signal aborts or the
   * store closes; it throws StoreError STORE_ERR_COMPACTED when the history is gone.
   */
  watch(prefix: string, options: WatchOptions): AsyncIterableIterator<WatchBatch>;
  /** Drops history older than `revision`; current values are kept. */
  compact(revision: number): Promise<void>;
  /** The current revision and the oldest revision still readable. */
  status(): Promise<{ readonly revision: number; readonly compactRevision: number }>;
  close(): Promise<void>;
}

/** Limits every adapter enforces, so behaviour does not depend on the backend. */
export const STORE_LIMITS = {
  /** Keys name resources (`/palisade/<kind>/<namespace>/<name>`); names are at most 253 bytes. */
  maxKeyBytes: 1024,
  /** etcd's default request limit is 1.5 MiB; a value must fit in one request. */
  maxValueBytes: 1_000_000,
  /**
   * Keys and values of one transaction branch together. etcd must run with --max-request-bytes
   * above this (the harness uses 48 MiB); 10k policies of 3 KB fit.
   */
  maxTxnBytes: 32 * 1024 * 1024,
  /**
   * An apply is one transaction (all or nothing). etcd's default --max-txn-ops is 128, so etcd
   * must run with --max-txn-ops and --max-request-bytes raised to match (docs/design/store.md).
   */
  maxOpsPerTxn: 10_000,
} as const;

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether a string is valid UTF-16 (so it survives UTF-8 encoding unchanged). */
function wellFormed(s: string): boolean {
  // String.prototype.isWellFormed (Node 20) is native and fast; the regex is the fallback.
  const native = (s as { isWellFormed?: () => boolean }).isWellFormed;
  return native !== undefined ? native.call(s) : !LONE_SURROGATE.test(s);
}

function invalid(message: string): StoreError {
  return new StoreError('STORE_ERR_INVALID', message);
}

/** Throws STORE_ERR_INVALID unless `key` is a usable key (non-empty, well-formed, bounded). */
export function checkKey(key: string, what = 'key'): void {
  if (typeof key !== 'string' || key.length === 0)
    throw invalid(`${what} must be a non-empty string`);
  if (!wellFormed(key)) throw invalid(`${what} ${JSON.stringify(key)} is not well-formed UTF-16`);
  const n = Buffer.byteLength(key);
  if (n > STORE_LIMITS.maxKeyBytes)
    throw new StoreError(
      'STORE_ERR_TOO_LARGE',
      `${what} is ${n} bytes; the limit is ${STORE_LIMITS.maxKeyBytes}`,
    );
}

/** A prefix may be empty (every key); otherwise it follows the key rules. */
export function checkPrefix(prefix: string): void {
  if (typeof prefix !== 'string') throw invalid('prefix must be a string');
  if (prefix !== '') checkKey(prefix, 'prefix');
}

/** Throws STORE_ERR_INVALID unless `n` is a revision (an integer >= 1). */
export function checkRevision(n: number, what = 'revision'): void {
  if (!Number.isSafeInteger(n) || n < 1)
    throw invalid(`${what} must be an integer >= 1, not ${String(n)}`);
}

export function checkListOptions(options: ListOptions): void {
  if (options.revision !== undefined) checkRevision(options.revision);
  if (options.limit !== undefined && (!Number.isSafeInteger(options.limit) || options.limit < 1))
    throw invalid(`limit must be an integer >= 1, not ${String(options.limit)}`);
  if (options.after !== undefined) checkKey(options.after, 'after');
}

/** Validates one branch: keys, value sizes, and no key touched twice (etcd's rule). */
function checkOps(ops: readonly Op[], branch: string): void {
  const puts = new Set<string>();
  const deletes = new Set<string>();
  const prefixes: string[] = [];
  let bytes = 0;
  for (const op of ops) {
    switch (op.kind) {
      case 'put': {
        checkKey(op.key);
        if (typeof op.value !== 'string') throw invalid(`value of ${op.key} must be a string`);
        if (!wellFormed(op.value)) throw invalid(`value of ${op.key} is not well-formed UTF-16`);
        const n = Buffer.byteLength(op.value);
        if (n > STORE_LIMITS.maxValueBytes) {
          throw new StoreError(
            'STORE_ERR_TOO_LARGE',
            `value of ${op.key} is ${n} bytes; the limit is ${STORE_LIMITS.maxValueBytes}`,
          );
        }
        bytes += n + op.key.length;
        if (puts.has(op.key) || deletes.has(op.key))
          throw invalid(`${branch} touches ${op.key} twice; a transaction may write a key once`);
        puts.add(op.key);
        break;
      }
      case 'delete':
        checkKey(op.key);
        if (puts.has(op.key))
          throw invalid(`${branch} touches ${op.key} twice; a transaction may write a key once`);
        deletes.add(op.key);
        break;
      case 'deletePrefix':
        checkPrefix(op.prefix);
        prefixes.push(op.prefix);
        break;
      default:
        throw invalid(`unknown operation ${JSON.stringify((op as { kind?: unknown }).kind)}`);
    }
  }
  if (bytes > STORE_LIMITS.maxTxnBytes) {
    throw new StoreError(
      'STORE_ERR_TOO_LARGE',
      `${branch} writes ${bytes} bytes; the limit is ${STORE_LIMITS.maxTxnBytes}`,
    );
  }
  for (const p of prefixes) {
    for (const k of puts) {
      if (k.startsWith(p))
        throw invalid(
          `${branch} puts ${k} and deletes the prefix ${JSON.stringify(p)} containing it`,
        );
    }
  }
}

/** Array.isArray without narrowing to any[] (callers may pass anything at runtime). */
function isList(x: unknown): boolean {
  return Array.isArray(x);
}

/** Validates a transaction against the port's rules and limits (every adapter calls it). */
export function checkTxnLimits(txn: Txn): void {
  if (typeof txn !== 'object' || txn === null || !isList(txn.compares) || !isList(txn.success))
    throw invalid('a transaction needs compares and success arrays');
  if (txn.failure !== undefined && !isList(txn.failure))
    throw invalid('failure must be an array of operations');
  const ops = txn.success.length + (txn.failure?.length ?? 0) + txn.compares.length;
  if (ops > STORE_LIMITS.maxOpsPerTxn) {
    throw new StoreError(
      'STORE_ERR_TOO_LARGE',
      `transaction has ${ops} compares and operations; the limit is ${STORE_LIMITS.maxOpsPerTxn}`,
    );
  }
  for (const c of txn.compares) {
    checkKey(c.key, 'compare key');
    if ('modRevision' in c) {
      if (!Number.isSafeInteger(c.modRevision) || c.modRevision < 0)
        throw invalid(`compare modRevision must be an integer >= 0, not ${String(c.modRevision)}`);
    } else if (typeof (c as { value?: unknown }).value !== 'string') {
      throw invalid('a compare needs modRevision or value');
    }
  }
  checkOps(txn.success, 'success');
  checkOps(txn.failure ?? [], 'failure');
}

/**
 * Whether a watch from `fromRevision` needs history that compaction dropped (see the header): a
 * store never compacted reports compactRevision 1 and can replay everything.
 */
export function watchNeedsCompactedHistory(fromRevision: number, compactRevision: number): boolean {
  return compactRevision > 1 && fromRevision <= compactRevision;
}

export function compactedError(fromRevision: number, compactRevision: number): StoreError {
  return new StoreError(
    'STORE_ERR_COMPACTED',
    `watch from revision ${fromRevision}: history up to ${compactRevision} has been compacted; relist and watch from the list's revision + 1`,
    { compactRevision },
  );
}

/**
 * Orders keys by their UTF-8 bytes, which is code point order (etcd's and SQLite's order);
 * JavaScript's `<` compares UTF-16 code units, which differs above U+FFFF.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates encode code points above U+FFFF: they sort after every other code unit.
    if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
    return x - y;
  }
  return a.length - b.length;
}

/**
 * A string greater, in UTF-16 order, than every key with this prefix whose next character is in
 * the BMP. Prefer `key.startsWith(prefix)`; adapters compute byte range ends themselves.
 */
export function prefixEnd(prefix: string): string {
  return prefix + '\uffff';
}
