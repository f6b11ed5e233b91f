// The etcd adapter of the store port (`etcd://h1:2379,h2:2379`): the port maps 1:1 onto etcd v3's
// Range, Txn, Watch and Compact over gRPC (the `etcd3` package's raw RPC clients). We use its
// channels and generated calls but not its retry policies or its high-level Watcher: the
// Watcher resumes from the stream header's revision + 1 (a gap when a replay was in flight) and
// ignores compaction, and blind retries can apply a write twice. Instead:
// - one gRPC client per endpoint; every call has a deadline; reads fail over to the next member
//   on any error, writes only when the request cannot have reached etcd (connection refused,
//   no leader), otherwise STORE_ERR_UNAVAILABLE says the outcome is unknown;
// - watches track the last delivered revision and reconnect (to any member) from it, so after a
//   connection loss nothing is skipped or repeated; etcd's compaction becomes STORE_ERR_COMPACTED.
// It never logs keys or values.

import { Etcd3, type ICompare, type IKeyValue, type IOptions, type IRequestOp } from 'etcd3';
import {
  checkKey,
  checkListOptions,
  checkPrefix,
  checkRevision,
  checkTxnLimits,
  compactedError,
  StoreError,
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
import { WatchQueue } from './watch-queue.js';

export interface EtcdStoreOptions {
  /** `host:port` of each member. */
  readonly endpoints: readonly string[];
  /** TLS (etcds://): the CA that signed the members' certificates, and an optional client pair. */
  readonly tls?: { readonly ca: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  /** Deadline of one read or small write, per attempt (ms, default 5000). */
  readonly requestTimeoutMs?: number;
  /**
   * How long a call keeps trying while some member answers but cannot serve it (an election).
   * When no member can be reached at all, calls fail after two rounds. Default 3 s.
   */
  readonly retryBudgetMs?: number;
  /** How long a watch keeps reconnecting before ending with STORE_ERR_UNAVAILABLE (ms). */
  readonly watchReconnectMs?: number;
  /**
   * gRPC keepalive ping interval (ms, default 10 000; the timeout is the same, at most 5 s): how
   * fast a member that stops answering without closing the connection is noticed. etcd refuses
   * pings more often than its --grpc-keepalive-min-time (5 s by default).
   */
  readonly keepaliveMs?: number;
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type HostPolicy = ReturnType<NonNullable<FaultHandling['host']>>;

/** A pass-through cockatiel policy: this adapter decides itself when a call may be retried. */
const passThrough: HostPolicy = {
  _altReturn: undefined as never,
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
  execute: (fn, signal) =>
    Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal })),
};

/** Keys and values travel as UTF-8 bytes. */
function bytes(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** etcd's range_end for a prefix: the prefix with its last byte incremented; `\0` for all keys. */
export function etcdPrefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function num(s: string | number | undefined | null): number {
  if (s === undefined || s === null || s === '') return 0;
  return Number(s);
}

function kvOf(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value === undefined || kv.value === null ? '' : kv.value.toString('utf8'),
    createRevision: num(kv.create_revision),
    modRevision: num(kv.mod_revision),
    version: num(kv.version),
  };
}

type Failure =
  /** etcd answered with a semantic error: final. */
  | { readonly kind: 'final'; readonly error: StoreError }
  /** The request did not reach a working etcd: another member (or a later try) may serve it. */
  | { readonly kind: 'retry'; readonly error: Error }
  /** The request may or may not have been applied. */
  | { readonly kind: 'unknown'; readonly error: Error };

function classify(e: unknown): Failure {
  const err = e instanceof Error ? e : new Error(String(e));
  const m = err.message;
  const has = (s: string): boolean => m.includes(s);
  if (has('required revision has been compacted'))
    return { kind: 'final', error: new StoreError('STORE_ERR_COMPACTED', m, { cause: e }) };
  if (has('required revision is a future revision'))
    return { kind: 'final', error: new StoreError('STORE_ERR_FUTURE_REVISION', m, { cause: e }) };
  if (has('too many operations in txn') || has('request is too large') || has('larger than max'))
    return { kind: 'final', error: new StoreError('STORE_ERR_TOO_LARGE', m, { cause: e }) };
  if (has('duplicate key given in txn') || has('key is not provided'))
    return { kind: 'final', error: new StoreError('STORE_ERR_INVALID', m, { cause: e }) };
  if (has('database space exceeded') || has('permission denied') || has('authentication'))
    return { kind: 'final', error: new StoreError('STORE_ERR_UNAVAILABLE', m, { cause: e }) };
  // Before the request left this process, or refused by a member that cannot propose it.
  if (
    has('No connection established') ||
    has('ECONNREFUSED') ||
    has('connect ') ||
    has('no leader') ||
    has('not capable') ||
    has('Failed to connect') ||
    has('Name resolution failed') ||
    has('client was already closed')
  )
    return { kind: 'retry', error: err };
  return { kind: 'unknown', error: err };
}

/** The member could not be reached at all (as opposed to answering "no leader"). */
function isConnectionError(e: Error): boolean {
  const m = e.message;
  return (
    m.includes('No connection established') ||
    m.includes('ECONNREFUSED') ||
    m.includes('Failed to connect') ||
    m.includes('connect ') ||
    m.includes('Name resolution failed') ||
    m.includes('DEADLINE_EXCEEDED') ||
    m.includes('Deadline exceeded')
  );
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

interface WatchStream {
  on(event: 'data', fn: (r: WatchResponse) => void): unknown;
  on(event: 'error', fn: (e: Error) => void): unknown;
  on(event: 'end', fn: () => void): unknown;
  write(req: unknown): unknown;
  end(): unknown;
  cancel?: () => void;
}

interface WatchResponse {
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: { type?: string | number; kv: IKeyValue; prev_kv?: IKeyValue | null }[];
}

export class EtcdStore implements Store {
  readonly name: string;
  readonly endpoints: readonly string[];
  private readonly clients: Etcd3[];
  private readonly requestTimeoutMs: number;
  private readonly retryBudgetMs: number;
  private readonly watchReconnectMs: number;
  /** The member that answered last: tried first. */
  private preferred = 0;
  private closed = false;
  private readonly watches = new Set<{ queue: WatchQueue; stop: AbortController }>();
  /** Compact revision seen last (a hint for status()). */
  private knownCompact = 1;

  constructor(options: EtcdStoreOptions) {
    if (options.endpoints.length === 0)
      throw new StoreError('STORE_ERR_INVALID', 'the etcd store needs at least one endpoint');
    this.endpoints = [...options.endpoints];
    this.name = `${options.tls === undefined ? 'etcd' : 'etcds'}://${this.endpoints.join(',')}`;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.retryBudgetMs = options.retryBudgetMs ?? 3000;
    this.watchReconnectMs = options.watchReconnectMs ?? 10_000;
    const scheme = options.tls === undefined ? 'http' : 'https';
    this.clients = this.endpoints.map(
      (ep) =>
        new Etcd3({
          hosts: [`${scheme}://${ep}`],
          ...(options.tls === undefined
            ? {}
            : {
                credentials: {
                  rootCertificate: options.tls.ca,
                  ...(options.tls.key === undefined ? {} : { privateKey: options.tls.key }),
                  ...(options.tls.cert === undefined ? {} : { certChain: options.tls.cert }),
                },
              }),
          dialTimeout: this.requestTimeoutMs,
          faultHandling: { host: () => passThrough, global: passThrough },
          grpcOptions: {
            // Applies of 10k policies and their watch batches are tens of MB.
            'grpc.max_receive_message_length': -1,
            'grpc.max_send_message_length': -1,
            // Notice a dead peer whose TCP connection stays silent.
            'grpc.keepalive_time_ms': options.keepaliveMs ?? 10_000,
            'grpc.keepalive_timeout_ms': Math.min(options.keepaliveMs ?? 5000, 5000),
            'grpc.keepalive_permit_without_calls': 1,
            'grpc.initial_reconnect_backoff_ms': 100,
            'grpc.max_reconnect_backoff_ms': 1000,
          },
        }),
    );
  }

  /**
   * Runs `fn` against the members until one answers: reads (`idempotent`) on any failure,
   * writes only while the failure proves the request was not applied.
   */
  private async call<T>(
    what: string,
    idempotent: boolean,
    timeoutMs: number,
    fn: (c: Etcd3, options: { deadline: number }) => Promise<T>,
  ): Promise<T> {
    const budgetEnd = Date.now() + Math.max(this.retryBudgetMs, timeoutMs);
    let last: Error | undefined;
    let unreachableRounds = 0;
    for (let round = 0; ; round++) {
      let answered = false;
      const first = this.preferred;
      for (let i = 0; i < this.clients.length; i++) {
        if (this.closed) throw new StoreError('STORE_ERR_CLOSED', `${this.name} is closed`);
        const idx = (first + i) % this.clients.length;
        const client = this.clients[idx] as Etcd3;
        try {
          const r = await fn(client, { deadline: Date.now() + timeoutMs });
          this.preferred = idx;
          return r;
        } catch (e) {
          if (this.closed) throw new StoreError('STORE_ERR_CLOSED', `${this.name} is closed`);
          const f = classify(e);
          if (f.kind === 'final') throw f.error;
          last = f.error;
          // Whatever happens next, the following call starts with another member.
          if (this.preferred === idx) this.preferred = (idx + 1) % this.clients.length;
          if (!isConnectionError(f.error)) answered = true;
          if (f.kind === 'unknown' && !idempotent) {
            throw new StoreError(
              'STORE_ERR_UNAVAILABLE',
              `etcd ${this.endpoints[idx]} failed during ${what}; it may or may not have been applied (re-read before retrying): ${f.error.message}`,
              { cause: e, maybeApplied: true },
            );
          }
        }
      }
      unreachableRounds = answered ? 0 : unreachableRounds + 1;
      if (unreachableRounds >= 2 || Date.now() + 200 > budgetEnd) break;
      await sleep(Math.min(100 * 2 ** round, 1000));
    }
    throw new StoreError(
      'STORE_ERR_UNAVAILABLE',
      `etcd unreachable or without quorum (${this.endpoints.join(', ')}) during ${what}: ${last?.message ?? 'no answer'}`,
      { cause: last },
    );
  }

  private guard(): void {
    if (this.closed) throw new StoreError('STORE_ERR_CLOSED', `${this.name} is closed`);
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.guard();
    checkKey(key);
    const r = await this.call('get', true, this.requestTimeoutMs, (c, o) =>
      c.kv.range({ key: bytes(key) }, o),
    );
    const kv = r.kvs[0];
    return kv === undefined ? undefined : kvOf(kv);
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    this.guard();
    checkPrefix(prefix);
    checkListOptions(options);
    const p = bytes(prefix);
    const end = etcdPrefixEnd(p);
    let start = p.length === 0 ? Buffer.from([0]) : p;
    if (options.after !== undefined) {
      const after = Buffer.concat([bytes(options.after), Buffer.from([0])]);
      if (Buffer.compare(after, start) > 0) start = after;
    }
    // Without a limit, read in pages at one revision so no single response is huge.
    const page = options.limit ?? 1000;
    let revision = options.revision ?? 0;
    const items: KeyValue[] = [];
    try {
      for (;;) {
        const from = start;
        const at = revision;
        const r = await this.call('list', true, this.requestTimeoutMs * 2, (c, o) =>
          c.kv.range({ key: from, range_end: end, limit: page, revision: at }, o),
        );
        if (revision === 0) revision = num(r.header.revision);
        for (const kv of r.kvs) items.push(kvOf(kv));
        if (options.limit !== undefined || !r.more || r.kvs.length === 0) {
          return { items, revision, more: options.limit !== undefined && r.more };
        }
        start = Buffer.concat([(r.kvs.at(-1) as IKeyValue).key, Buffer.from([0])]);
      }
    } catch (e) {
      if (e instanceof StoreError && e.code === 'STORE_ERR_COMPACTED') {
        const compactRevision = await this.compactRevision((await this.status()).revision);
        throw new StoreError(
          'STORE_ERR_COMPACTED',
          `revision ${revision} has been compacted (oldest readable: ${compactRevision})`,
          { compactRevision, cause: e },
        );
      }
      throw e;
    }
  }

  async txn(txn: Txn): Promise<TxnResult> {
    this.guard();
    checkTxnLimits(txn);
    const compare: ICompare[] = txn.compares.map((c) =>
      'modRevision' in c
        ? { key: bytes(c.key), target: 'Mod', result: 'Equal', mod_revision: c.modRevision }
        : { key: bytes(c.key), target: 'Value', result: 'Equal', value: bytes(c.value) },
    );
    const ops = (list: readonly Op[]): IRequestOp[] =>
      list.map((op): IRequestOp => {
        switch (op.kind) {
          case 'put':
            return { request_put: { key: bytes(op.key), value: bytes(op.value) } };
          case 'delete':
            return { request_delete_range: { key: bytes(op.key) } };
          case 'deletePrefix': {
            const p = bytes(op.prefix);
            return {
              request_delete_range: {
                key: p.length === 0 ? Buffer.from([0]) : p,
                range_end: etcdPrefixEnd(p),
              },
            };
          }
        }
      });
    const size = txn.success.length + (txn.failure?.length ?? 0);
    const request = { compare, success: ops(txn.success), failure: ops(txn.failure ?? []) };
    // A 10k-operation apply takes seconds on a loaded cluster: scale the deadline, bounded.
    const timeout = this.requestTimeoutMs + 4 * size;
    const r = await this.call('txn', false, timeout, (c, o) => c.kv.txn(request, o));
    return { succeeded: r.succeeded, revision: num(r.header.revision) };
  }

  watch(prefix: string, options: WatchOptions): AsyncIterableIterator<WatchBatch> {
    const stop = new AbortController();
    const entry = {
      stop,
      queue: new WatchQueue(() => {
        stop.abort();
        this.watches.delete(entry);
      }, options.signal),
    };
    try {
      this.guard();
      checkPrefix(prefix);
      checkRevision(options.fromRevision, 'fromRevision');
    } catch (e) {
      entry.queue.end(e as Error);
      return entry.queue;
    }
    if (entry.queue.closed) return entry.queue;
    this.watches.add(entry);
    this.runWatch(prefix, options.fromRevision, entry.queue, stop.signal).catch((e: unknown) =>
      entry.queue.end(e instanceof Error ? e : new Error(String(e))),
    );
    return entry.queue;
  }

  /** Keeps one watch alive across connection losses, delivering every revision once. */
  private async runWatch(
    prefix: string,
    fromRevision: number,
    queue: WatchQueue,
    stop: AbortSignal,
  ): Promise<void> {
    const key = bytes(prefix);
    const rangeEnd = etcdPrefixEnd(key);
    /** The next revision to deliver. */
    let next = fromRevision;
    let downSince: number | undefined;
    /** Members tried since the last stream that worked (delivered or stayed up for 1 s). */
    let attempt = 0;
    let connectedAt = 0;
    let lastError = '';
    while (!stop.aborted) {
      const idx = (this.preferred + attempt) % this.clients.length;
      attempt++;
      const client = this.clients[idx] as Etcd3;
      let outcome: 'stopped' | 'failed' = 'failed';
      try {
        const stream = (await client.watchClient.watch()) as unknown as WatchStream;
        outcome = await new Promise<'stopped' | 'failed'>((resolve) => {
          let settled = false;
          const finish = (o: 'stopped' | 'failed', why?: string): void => {
            if (settled) return;
            settled = true;
            stop.removeEventListener('abort', onStop);
            if (why !== undefined) lastError = why;
            try {
              stream.cancel?.();
              stream.end();
            } catch {
              // already gone
            }
            resolve(o);
          };
          const onStop = (): void => finish('stopped');
          stop.addEventListener('abort', onStop, { once: true });
          stream.on('error', (e) => finish('failed', e.message));
          stream.on('end', () => finish('failed', 'watch stream ended'));
          stream.on('data', (res) => {
            if (settled) return;
            const compact = num(res.compact_revision);
            if (compact > 0) {
              // We asked from next - 1, so etcd compacted at `compact` >= next: the port's rule.
              queue.end(compactedError(next, compact));
              this.knownCompact = Math.max(this.knownCompact, compact);
              finish('stopped');
              return;
            }
            if (res.canceled === true) {
              // Not compaction: permissions or a server-side limit. Retrying would loop.
              queue.end(
                new StoreError(
                  'STORE_ERR_UNAVAILABLE',
                  `etcd canceled the watch: ${res.cancel_reason ?? 'no reason given'}`,
                ),
              );
              finish('stopped');
              return;
            }
            if (res.created === true) {
              downSince = undefined;
              connectedAt = Date.now();
              this.preferred = idx;
            }
            if ((res.events ?? []).length > 0) attempt = 0;
            let batch: { revision: number; events: WatchEvent[] } | undefined;
            for (const ev of res.events ?? []) {
              const rev = num(ev.kv.mod_revision);
              if (rev < next) continue; // the revision before `next`, or already delivered
              if (batch !== undefined && batch.revision !== rev) {
                queue.push(batch);
                next = batch.revision + 1;
                batch = undefined;
              }
              batch ??= { revision: rev, events: [] };
              const kv = kvOf(ev.kv);
              // protobufjs names enum values as declared (`Put`, `Delete`); accept any spelling.
              const type = String(ev.type).toUpperCase() === 'DELETE' ? 'delete' : 'put';
              const e: WatchEvent =
                ev.prev_kv === undefined || ev.prev_kv === null
                  ? { type, kv }
                  : { type, kv, prevKv: kvOf(ev.prev_kv) };
              batch.events.push(e);
            }
            if (batch !== undefined) {
              queue.push(batch);
              next = batch.revision + 1;
            }
          });
          stream.write({
            create_request: {
              key: key.length === 0 ? Buffer.from([0]) : key,
              range_end: rangeEnd,
              // One revision early: etcd then reports compaction exactly when the port's rule
              // (fromRevision <= compactRevision) says so; that revision's events are dropped.
              start_revision: Math.max(1, next - 1),
              prev_kv: true,
            },
          });
        });
      } catch (e) {
        lastError = e instanceof Error ? e.message : String(e);
      }
      if (outcome === 'stopped' || stop.aborted || queue.closed) return;
      if (connectedAt > 0 && Date.now() - connectedAt > 1000) attempt = 1;
      connectedAt = 0;
      downSince ??= Date.now();
      if (Date.now() - downSince > this.watchReconnectMs) {
        queue.end(
          new StoreError(
            'STORE_ERR_UNAVAILABLE',
            `watch lost every etcd member (${this.endpoints.join(', ')}) for ${this.watchReconnectMs} ms: ${lastError}`,
          ),
        );
        return;
      }
      // The first retry goes straight to the next member; then back off, so a member that
      // accepts and drops streams in a loop is not hammered.
      if (attempt > 1) await sleep(Math.min(50 * 2 ** Math.min(attempt, 4), 800), stop);
    }
  }

  async compact(revision: number): Promise<void> {
    this.guard();
    checkRevision(revision);
    if (revision <= 1) return;
    try {
      await this.call('compact', true, this.requestTimeoutMs, (c, o) =>
        c.kv.compact({ revision, physical: false }, o),
      );
      this.knownCompact = Math.max(this.knownCompact, revision);
    } catch (e) {
      // Already compacted at or beyond this revision: nothing to do (as the other adapters).
      if (e instanceof StoreError && e.code === 'STORE_ERR_COMPACTED') return;
      throw e;
    }
  }

  async status(): Promise<{ revision: number; compactRevision: number }> {
    this.guard();
    const r = await this.call('status', true, this.requestTimeoutMs, (c, o) =>
      c.kv.range({ key: Buffer.from([0]), count_only: true }, o),
    );
    const revision = num(r.header.revision);
    return { revision, compactRevision: await this.compactRevision(revision) };
  }

  /**
   * etcd does not report its compact revision directly: it is the oldest revision a range can
   * still read. Checks the last known value first, then searches.
   */
  private async compactRevision(current: number): Promise<number> {
    const readable = async (rev: number): Promise<boolean> => {
      try {
        await this.call('status', true, this.requestTimeoutMs, (c, o) =>
          c.kv.range({ key: Buffer.from([0]), count_only: true, revision: rev }, o),
        );
        return true;
      } catch (e) {
        if (e instanceof StoreError && e.code === 'STORE_ERR_COMPACTED') return false;
        throw e;
      }
    };
    const hint = Math.min(this.knownCompact, current);
    if ((await readable(hint)) && (hint <= 1 || !(await readable(hint - 1)))) return hint;
    let lo = 1; // not readable below lo is unknown; find the smallest readable in [lo, current]
    let hi = current;
    if (await readable(hint)) hi = hint;
    else lo = hint + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (await readable(mid)) hi = mid;
      else lo = mid + 1;
    }
    this.knownCompact = lo;
    return lo;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    for (const w of [...this.watches]) w.queue.end();
    for (const c of this.clients) c.close();
    return Promise.resolve();
  }
}
