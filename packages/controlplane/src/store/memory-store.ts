// The in-memory adapter of the store port: for fast unit tests and `--store memory:`. It keeps the
// whole history (until compaction) as a log of batches, so reads at a past revision and watches
// from a past revision behave exactly as on etcd. Nothing survives the process.

import {
  checkKey,
  checkListOptions,
  checkPrefix,
  checkRevision,
  checkTxnLimits,
  compactedError,
  compareKeys,
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

interface Watcher {
  readonly prefix: string;
  /** Batches before this revision are not delivered (a watch may start in the future). */
  readonly fromRevision: number;
  readonly queue: WatchQueue;
}

export class MemoryStore implements Store {
  readonly name = 'memory';
  private readonly current = new Map<string, KeyValue>();
  /** Every write batch with revision >= compactRevision, oldest first. */
  private readonly history: WatchBatch[] = [];
  private revision = 1;
  private compactRevision = 1;
  private readonly watchers = new Set<Watcher>();
  private closed = false;

  // Methods are async so that every failure is a rejection, never a synchronous throw.
  get(key: string): Promise<KeyValue | undefined> {
    return settle(() => {
      this.checkOpen();
      checkKey(key);
      return this.current.get(key);
    });
  }

  list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    return settle(() => this.listNow(prefix, options));
  }

  private listNow(prefix: string, options: ListOptions): ListResult {
    this.checkOpen();
    checkPrefix(prefix);
    checkListOptions(options);
    const at = options.revision ?? this.revision;
    if (at > this.revision) {
      throw new StoreError(
        'STORE_ERR_FUTURE_REVISION',
        `revision ${at} is ahead of the store (${this.revision})`,
      );
    }
    if (at < this.compactRevision) {
      throw new StoreError('STORE_ERR_COMPACTED', `revision ${at} has been compacted`, {
        compactRevision: this.compactRevision,
      });
    }
    const view = at === this.revision ? this.current : this.viewAt(at);
    let keys = [...view.keys()].filter((k) => k.startsWith(prefix));
    if (options.after !== undefined) {
      const after = options.after;
      keys = keys.filter((k) => compareKeys(k, after) > 0);
    }
    keys.sort(compareKeys);
    const limit = options.limit ?? Infinity;
    const more = keys.length > limit;
    const items = keys.slice(0, limit).map((k) => view.get(k) as KeyValue);
    return { items, revision: at, more };
  }

  txn(txn: Txn): Promise<TxnResult> {
    return settle(() => {
      this.checkOpen();
      checkTxnLimits(txn);
      const succeeded = txn.compares.every((c) => this.holds(c));
      const ops = succeeded ? txn.success : (txn.failure ?? []);
      this.apply(ops);
      return { succeeded, revision: this.revision };
    });
  }

  watch(prefix: string, options: WatchOptions): AsyncIterableIterator<WatchBatch> {
    const watcher: Watcher = {
      prefix,
      fromRevision: options.fromRevision,
      queue: new WatchQueue(() => this.watchers.delete(watcher), options.signal),
    };
    try {
      this.checkOpen();
      checkPrefix(prefix);
      checkRevision(options.fromRevision, 'fromRevision');
    } catch (e) {
      watcher.queue.end(e as Error);
      return watcher.queue;
    }
    if (watchNeedsCompactedHistory(options.fromRevision, this.compactRevision)) {
      watcher.queue.end(compactedError(options.fromRevision, this.compactRevision));
      return watcher.queue;
    }
    for (const batch of this.history) {
      if (batch.revision < options.fromRevision) continue;
      const events = batch.events.filter((e) => e.kv.key.startsWith(prefix));
      if (events.length > 0) watcher.queue.push({ revision: batch.revision, events });
    }
    if (!watcher.queue.closed) this.watchers.add(watcher);
    return watcher.queue;
  }

  compact(revision: number): Promise<void> {
    return settle(() => this.compactNow(revision));
  }

  private compactNow(revision: number): void {
    this.checkOpen();
    checkRevision(revision);
    if (revision > this.revision) {
      throw new StoreError(
        'STORE_ERR_FUTURE_REVISION',
        `cannot compact at ${revision}: the store is at ${this.revision}`,
      );
    }
    if (revision <= this.compactRevision) return;
    this.compactRevision = revision;
    // Batches up to `revision` are no longer replayable (watches need fromRevision > revision).
    let drop = 0;
    while (drop < this.history.length && (this.history[drop] as WatchBatch).revision <= revision)
      drop++;
    this.history.splice(0, drop);
  }

  status(): Promise<{ revision: number; compactRevision: number }> {
    return settle(() => {
      this.checkOpen();
      return { revision: this.revision, compactRevision: this.compactRevision };
    });
  }

  close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.watchers]) w.queue.end();
    return Promise.resolve();
  }

  private checkOpen(): void {
    if (this.closed) throw new StoreError('STORE_ERR_CLOSED', 'the memory store is closed');
  }

  private holds(c: Compare): boolean {
    const kv = this.current.get(c.key);
    if ('modRevision' in c) return (kv?.modRevision ?? 0) === c.modRevision;
    return kv !== undefined && kv.value === c.value;
  }

  /** Applies ops at one new revision (none when nothing changed). */
  private apply(ops: readonly Op[]): void {
    const rev = this.revision + 1;
    const events: WatchEvent[] = [];
    const del = (key: string): void => {
      const prev = this.current.get(key);
      if (prev === undefined) return;
      this.current.delete(key);
      events.push({
        type: 'delete',
        kv: { key, value: '', createRevision: 0, modRevision: rev, version: 0 },
        prevKv: prev,
      });
    };
    for (const op of ops) {
      switch (op.kind) {
        case 'put': {
          const prev = this.current.get(op.key);
          const kv: KeyValue = {
            key: op.key,
            value: op.value,
            createRevision: prev?.createRevision ?? rev,
            modRevision: rev,
            version: (prev?.version ?? 0) + 1,
          };
          this.current.set(op.key, kv);
          events.push(prev === undefined ? { type: 'put', kv } : { type: 'put', kv, prevKv: prev });
          break;
        }
        case 'delete':
          del(op.key);
          break;
        case 'deletePrefix':
          // In key order, as etcd and SQLite delete a range (the batch's event order).
          for (const key of [...this.current.keys()]
            .filter((k) => k.startsWith(op.prefix))
            .sort(compareKeys))
            del(key);
          break;
      }
    }
    if (events.length === 0) return;
    this.revision = rev;
    const batch: WatchBatch = { revision: rev, events };
    this.history.push(batch);
    for (const w of this.watchers) {
      if (rev < w.fromRevision) continue;
      const mine = events.filter((e) => e.kv.key.startsWith(w.prefix));
      if (mine.length > 0) w.queue.push({ revision: rev, events: mine });
    }
  }

  /** The key space as it was at a past revision: undo later batches in reverse. */
  private viewAt(at: number): Map<string, KeyValue> {
    const view = new Map(this.current);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const batch = this.history[i] as WatchBatch;
      if (batch.revision <= at) break;
      for (let j = batch.events.length - 1; j >= 0; j--) {
        const e = batch.events[j] as WatchEvent;
        if (e.prevKv === undefined) view.delete(e.kv.key);
        else view.set(e.kv.key, e.prevKv);
      }
    }
    return view;
  }
}
