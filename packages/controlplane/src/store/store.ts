// The store port: a revisioned key-value store shaped by what the API server needs (STYLE 8).
// Every adapter (memory, SQLite, etcd) implements exactly this and passes the one contract suite.
// Semantics follow etcd v3, so the etcd adapter is a thin translation and the others imitate it:
// - one global revision, starting at 1 for an empty store, incremented once per write transaction;
// - every key carries createRevision, modRevision and version (writes since creation);
// - a transaction is all or nothing: either every compare holds and every op applies at one new
//   revision, or nothing changes;
// - watch delivers every change with modRevision >= fromRevision, in revision order, the changes
//   of one transaction in one batch; history older than the compacted revision is gone and asking
//   for it fails with STORE_ERR_COMPACTED (the caller relists).
// The port never interprets values: resources are serialized by the server.

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
  /** etcd's default request limit is 1.5 MiB; a value must fit in one request. */
  maxValueBytes: 1_000_000,
  /**
   * An apply is one transaction (all or nothing). etcd's default --max-txn-ops is 128, so etcd
   * must run with --max-txn-ops and --max-request-bytes raised to match (docs/design/store.md).
   */
  maxOpsPerTxn: 10_000,
} as const;

export function checkTxnLimits(txn: Txn): void {
  const ops = txn.success.length + (txn.failure?.length ?? 0) + txn.compares.length;
  if (ops > STORE_LIMITS.maxOpsPerTxn) {
    throw new StoreError(
      'STORE_ERR_TOO_LARGE',
      `transaction has ${ops} compares and operations; the limit is ${STORE_LIMITS.maxOpsPerTxn}`,
    );
  }
  for (const op of [...txn.success, ...(txn.failure ?? [])]) {
    if (op.kind === 'put' && Buffer.byteLength(op.value) > STORE_LIMITS.maxValueBytes) {
      throw new StoreError(
        'STORE_ERR_TOO_LARGE',
        `value of ${op.key} is ${Buffer.byteLength(op.value)} bytes; the limit is ${STORE_LIMITS.maxValueBytes}`,
      );
    }
  }
}

/** The smallest key greater than every key with this prefix (etcd's range_end for a prefix). */
export function prefixEnd(prefix: string): string {
  return prefix + '\uffff';
}
