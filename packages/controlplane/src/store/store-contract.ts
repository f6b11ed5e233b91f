// The one contract suite of the store port (STYLE 8): every adapter's test file calls
// `runStoreContract` and must pass all of it. The suite speaks only through the `Store` interface
// and asserts revisions relative to what it observed, so it also runs against a shared etcd
// cluster; `fresh` enables the checks that need a new, empty store.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  STORE_LIMITS,
  StoreError,
  type KeyValue,
  type Op,
  type Store,
  type WatchBatch,
} from './store.js';
import type { StoreErrorCode } from './store-error.js';

export interface ContractOptions {
  /** makeStore returns a new, empty store (revision 1). False for a shared etcd cluster. */
  readonly fresh?: boolean;
  /** How long to wait for a watch batch before failing (default 5 s). */
  readonly watchTimeoutMs?: number;
  /** Per-test timeout (default 30 s). */
  readonly testTimeoutMs?: number;
  /**
   * Opens a second, independent handle on the same data (another client, another connection to
   * the same file). Without it, the two-handle test races two writers on one handle.
   */
  readonly secondHandle?: (s: Store) => Promise<Store>;
}

export type MakeStore = () => Promise<Store>;

let prefixCounter = 0;

function uniquePrefix(): string {
  prefixCounter += 1;
  return `/contract/${process.pid}-${Date.now().toString(36)}-${prefixCounter}/`;
}

function isStoreError(code: StoreErrorCode): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StoreError, `expected a StoreError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return true;
  };
}

function put(key: string, value: string): Op {
  return { kind: 'put', key, value };
}

/**
 * Reads a watch with timeouts without losing results: a `next()` that timed out stays pending and
 * is the one the following read waits for.
 */
class Reader {
  private pending: Promise<IteratorResult<WatchBatch>> | undefined;

  constructor(private readonly it: AsyncIterator<WatchBatch>) {}

  /** The next result, or `undefined` when nothing came within `ms`. */
  async within(ms: number): Promise<IteratorResult<WatchBatch> | undefined> {
    this.pending ??= this.it.next();
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    });
    try {
      const r = await Promise.race([this.pending, idle]);
      if (r !== undefined) this.pending = undefined;
      return r;
    } finally {
      clearTimeout(timer);
    }
  }

  async batch(ms: number): Promise<WatchBatch> {
    const r = await this.within(ms);
    if (r === undefined) throw new Error(`no watch batch within ${ms} ms`);
    assert.equal(r.done, false, 'the watch ended early');
    return r.value;
  }

  async batches(n: number, ms: number): Promise<WatchBatch[]> {
    const out: WatchBatch[] = [];
    for (let i = 0; i < n; i++) out.push(await this.batch(ms));
    return out;
  }
}

function summary(b: WatchBatch): string[] {
  return b.events.map((e) => `${b.revision} ${e.type} ${e.kv.key}=${e.kv.value}`);
}

export function runStoreContract(
  name: string,
  makeStore: MakeStore,
  options: ContractOptions = {},
): void {
  const wait = options.watchTimeoutMs ?? 5000;
  const timeout = options.testTimeoutMs ?? 30_000;

  /** Runs `body` with a store and a key prefix no other test uses; always closes the store. */
  function contract(title: string, body: (s: Store, p: string) => Promise<void>): void {
    test(`${name} store contract: ${title}`, { timeout }, async () => {
      const s = await makeStore();
      try {
        await body(s, uniquePrefix());
      } finally {
        await s.close();
      }
    });
  }

  if (options.fresh === true) {
    contract('a new store is empty at revision 1 with nothing compacted', async (s) => {
      assert.deepEqual(await s.status(), { revision: 1, compactRevision: 1 });
      const l = await s.list('');
      assert.deepEqual(l.items, []);
      assert.equal(l.revision, 1);
      assert.equal(l.more, false);
    });
  }

  contract('each write transaction takes exactly one new revision', async (s, p) => {
    const r0 = (await s.status()).revision;
    const t1 = await s.txn({ compares: [], success: [put(`${p}a`, '1'), put(`${p}b`, '2')] });
    assert.deepEqual(t1, { succeeded: true, revision: r0 + 1 });
    const a = await s.get(`${p}a`);
    const b = await s.get(`${p}b`);
    assert.deepEqual(a, {
      key: `${p}a`,
      value: '1',
      createRevision: r0 + 1,
      modRevision: r0 + 1,
      version: 1,
    });
    assert.equal(b?.modRevision, r0 + 1);
    const t2 = await s.txn({ compares: [], success: [put(`${p}a`, '3')] });
    assert.equal(t2.revision, r0 + 2);
    assert.deepEqual(await s.get(`${p}a`), {
      key: `${p}a`,
      value: '3',
      createRevision: r0 + 1,
      modRevision: r0 + 2,
      version: 2,
    });
    assert.equal((await s.status()).revision, r0 + 2);
  });

  contract('a deleted and re-created key starts a new life at version 1', async (s, p) => {
    const k = `${p}k`;
    await s.txn({ compares: [], success: [put(k, 'a')] });
    await s.txn({ compares: [], success: [put(k, 'b')] });
    const del = await s.txn({ compares: [], success: [{ kind: 'delete', key: k }] });
    assert.equal(await s.get(k), undefined);
    const re = await s.txn({ compares: [], success: [put(k, 'c')] });
    assert.equal(re.revision, del.revision + 1);
    assert.deepEqual(await s.get(k), {
      key: k,
      value: 'c',
      createRevision: re.revision,
      modRevision: re.revision,
      version: 1,
    });
  });

  contract('a transaction that changes nothing does not take a revision', async (s, p) => {
    const r0 = (await s.status()).revision;
    const t = await s.txn({
      compares: [],
      success: [
        { kind: 'delete', key: `${p}missing` },
        { kind: 'deletePrefix', prefix: `${p}none/` },
      ],
    });
    assert.deepEqual(t, { succeeded: true, revision: r0 });
    assert.equal((await s.status()).revision, r0);
  });

  contract('get and list never see keys of another prefix', async (s, p) => {
    await s.txn({
      compares: [],
      success: [
        put(`${p}a`, '1'),
        put(`${p}a/x`, '2'),
        put(`${p}ab`, '3'),
        put(`${p}b`, '4'),
        put(`${p.slice(0, -1)}`, '5'),
      ],
    });
    const keys = async (prefix: string): Promise<string[]> =>
      (await s.list(prefix)).items.map((kv) => kv.key.slice(p.length));
    assert.deepEqual(await keys(`${p}a/`), ['a/x']);
    assert.deepEqual(await keys(`${p}a`), ['a', 'a/x', 'ab']);
    assert.deepEqual(await keys(p), ['a', 'a/x', 'ab', 'b']);
    assert.deepEqual(await keys(`${p}c`), []);
    assert.equal(await s.get(`${p}`), undefined);
    assert.equal((await s.get(p.slice(0, -1)))?.value, '5');
  });

  contract('keys are ordered by their UTF-8 bytes, hostile characters included', async (s, p) => {
    const suffixes = ['😀', '\uffff', 'é', 'z', 'Z', ' ', '\n', '\u0000x', 'a\u0000', 'a', '~'];
    await s.txn({ compares: [], success: suffixes.map((x, i) => put(p + x, String(i))) });
    const want = [...suffixes].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const got = (await s.list(p)).items.map((kv) => kv.key.slice(p.length));
    assert.deepEqual(got, want);
    for (const [i, x] of suffixes.entries()) assert.equal((await s.get(p + x))?.value, String(i));
    // Paging by `after` follows the same order.
    const paged: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await s.list(p, after === undefined ? { limit: 3 } : { limit: 3, after });
      paged.push(...page.items.map((kv) => kv.key.slice(p.length)));
      if (!page.more) break;
      after = page.items.at(-1)?.key;
    }
    assert.deepEqual(paged, want);
  });

  contract('paging with limit and after at a fixed revision sees one snapshot', async (s, p) => {
    const n = 25;
    await s.txn({
      compares: [],
      success: Array.from({ length: n }, (_, i) => put(`${p}${String(i).padStart(3, '0')}`, 'v1')),
    });
    const first = await s.list(p, { limit: 10 });
    assert.equal(first.items.length, 10);
    assert.equal(first.more, true);
    // Writes between pages must not show up in later pages read at the first page's revision.
    await s.txn({
      compares: [],
      success: [put(`${p}000a`, 'new'), put(`${p}015`, 'v2'), { kind: 'delete', key: `${p}020` }],
    });
    const seen: KeyValue[] = [...first.items];
    let more: boolean = first.more;
    while (more) {
      const last = seen.at(-1) as KeyValue;
      const page = await s.list(p, { limit: 10, after: last.key, revision: first.revision });
      assert.equal(page.revision, first.revision);
      seen.push(...page.items);
      more = page.more;
    }
    assert.equal(seen.length, n);
    assert.ok(seen.every((kv) => kv.value === 'v1'));
    const exact = await s.list(p, { limit: n + 1 });
    assert.equal(exact.more, false);
    assert.equal(exact.items.length, n); // one added, one deleted
    const exactly = await s.list(p, { limit: n });
    assert.equal(exactly.more, false);
  });

  contract('compare-and-swap on modRevision applies success or failure', async (s, p) => {
    const k = `${p}cas`;
    const created = await s.txn({
      compares: [{ key: k, modRevision: 0 }],
      success: [put(k, 'first')],
      failure: [put(`${p}lost`, 'x')],
    });
    assert.equal(created.succeeded, true);
    const again = await s.txn({
      compares: [{ key: k, modRevision: 0 }],
      success: [put(k, 'second')],
      failure: [put(`${p}lost`, 'yes')],
    });
    assert.equal(again.succeeded, false);
    assert.equal(again.revision, created.revision + 1, 'failure ops take a revision');
    assert.equal((await s.get(k))?.value, 'first');
    assert.equal((await s.get(`${p}lost`))?.value, 'yes');
    const stale = await s.txn({
      compares: [{ key: k, modRevision: created.revision - 1 }],
      success: [put(k, 'stale')],
    });
    assert.deepEqual(stale, { succeeded: false, revision: again.revision });
    const fresh = await s.txn({
      compares: [{ key: k, modRevision: created.revision }],
      success: [put(k, 'swapped')],
    });
    assert.equal(fresh.succeeded, true);
    assert.equal((await s.get(k))?.value, 'swapped');
  });

  contract('compare on value, and every compare must hold', async (s, p) => {
    await s.txn({ compares: [], success: [put(`${p}a`, 'x'), put(`${p}b`, 'y')] });
    const both = await s.txn({
      compares: [
        { key: `${p}a`, value: 'x' },
        { key: `${p}b`, value: 'y' },
      ],
      success: [put(`${p}c`, 'ok')],
    });
    assert.equal(both.succeeded, true);
    const one = await s.txn({
      compares: [
        { key: `${p}a`, value: 'x' },
        { key: `${p}b`, value: 'nope' },
      ],
      success: [put(`${p}d`, 'bad')],
    });
    assert.equal(one.succeeded, false);
    assert.equal(await s.get(`${p}d`), undefined);
    const missing = await s.txn({
      compares: [{ key: `${p}missing`, value: '' }],
      success: [put(`${p}e`, 'bad')],
    });
    assert.equal(missing.succeeded, false, 'a value compare on a missing key fails');
  });

  contract('delete and deletePrefix remove exactly their keys at one revision', async (s, p) => {
    await s.txn({
      compares: [],
      success: [put(`${p}d/1`, 'a'), put(`${p}d/2`, 'b'), put(`${p}d2`, 'c'), put(`${p}e`, 'd')],
    });
    const t = await s.txn({
      compares: [],
      success: [
        { kind: 'deletePrefix', prefix: `${p}d/` },
        { kind: 'delete', key: `${p}e` },
      ],
    });
    const l = await s.list(p);
    assert.deepEqual(
      l.items.map((kv) => kv.key),
      [`${p}d2`],
    );
    assert.equal(l.revision, t.revision);
  });

  contract('reads at a past revision see the key space as it was', async (s, p) => {
    const r1 = await s.txn({ compares: [], success: [put(`${p}a`, '1'), put(`${p}b`, '1')] });
    const r2 = await s.txn({ compares: [], success: [put(`${p}a`, '2'), put(`${p}c`, '2')] });
    await s.txn({ compares: [], success: [{ kind: 'delete', key: `${p}b` }] });
    const at1 = await s.list(p, { revision: r1.revision });
    assert.equal(at1.revision, r1.revision);
    assert.deepEqual(
      at1.items.map((kv) => [kv.key.slice(p.length), kv.value, kv.version]),
      [
        ['a', '1', 1],
        ['b', '1', 1],
      ],
    );
    const at2 = await s.list(p, { revision: r2.revision });
    assert.deepEqual(
      at2.items.map((kv) => [kv.key.slice(p.length), kv.value, kv.modRevision]),
      [
        ['a', '2', r2.revision],
        ['b', '1', r1.revision],
        ['c', '2', r2.revision],
      ],
    );
    const before = await s.list(p, { revision: r1.revision - 1 });
    assert.deepEqual(before.items, []);
    const now = await s.list(p);
    assert.deepEqual(
      now.items.map((kv) => kv.key.slice(p.length)),
      ['a', 'c'],
    );
  });

  contract('reads and compactions at a future revision fail', async (s) => {
    const { revision } = await s.status();
    await assert.rejects(
      s.list('', { revision: revision + 1000 }),
      isStoreError('STORE_ERR_FUTURE_REVISION'),
    );
    await assert.rejects(s.compact(revision + 1000), isStoreError('STORE_ERR_FUTURE_REVISION'));
  });

  contract(
    'watch from a past revision replays history, one batch per transaction',
    async (s, p) => {
      const r1 = await s.txn({ compares: [], success: [put(`${p}a`, '1'), put(`${p}b`, '1')] });
      await s.txn({ compares: [], success: [put(`${p}a`, '2')] });
      await s.txn({ compares: [], success: [{ kind: 'delete', key: `${p}b` }] });
      const ac = new AbortController();
      const w = new Reader(s.watch(p, { fromRevision: r1.revision, signal: ac.signal }));
      const got = await w.batches(3, wait);
      ac.abort();
      assert.deepEqual(got.map(summary), [
        [`${r1.revision} put ${p}a=1`, `${r1.revision} put ${p}b=1`],
        [`${r1.revision + 1} put ${p}a=2`],
        [`${r1.revision + 2} delete ${p}b=`],
      ]);
      const del = got[2]?.events[0];
      assert.equal(del?.kv.modRevision, r1.revision + 2);
      assert.equal(del?.prevKv?.value, '1');
      // A watch starting in the middle of the history starts exactly there.
      const ac2 = new AbortController();
      const w2 = new Reader(s.watch(p, { fromRevision: r1.revision + 1, signal: ac2.signal }));
      const mid = await w2.batch(wait);
      ac2.abort();
      assert.equal(mid.revision, r1.revision + 1);
    },
  );

  contract('watch from the next revision sees only new changes, live', async (s, p) => {
    await s.txn({ compares: [], success: [put(`${p}old`, 'x')] });
    const { revision } = await s.list(p);
    const ac = new AbortController();
    const w = new Reader(s.watch(p, { fromRevision: revision + 1, signal: ac.signal }));
    assert.equal(await w.within(150), undefined, 'nothing before a write');
    const t = await s.txn({
      compares: [],
      success: [put(`${p}n1`, 'a'), put(`${p}n2`, 'b'), { kind: 'delete', key: `${p}old` }],
    });
    const b = await w.batch(wait);
    ac.abort();
    assert.deepEqual(summary(b), [
      `${t.revision} put ${p}n1=a`,
      `${t.revision} put ${p}n2=b`,
      `${t.revision} delete ${p}old=`,
    ]);
  });

  contract('a watch from a revision not reached yet waits for it', async (s, p) => {
    const { revision } = await s.status();
    const ac = new AbortController();
    const w = new Reader(s.watch(p, { fromRevision: revision + 2, signal: ac.signal }));
    await s.txn({ compares: [], success: [put(`${p}a`, '1')] });
    assert.equal(await w.within(150), undefined, 'the revision before fromRevision is not sent');
    const t = await s.txn({ compares: [], success: [put(`${p}a`, '2')] });
    const b = await w.batch(wait);
    ac.abort();
    assert.deepEqual(summary(b), [`${t.revision} put ${p}a=2`]);
  });

  contract('ending many watches that share one signal releases them', async (s, p) => {
    const shared = new AbortController();
    const { revision } = await s.status();
    for (let i = 0; i < 50; i++) {
      const w = s.watch(p, { fromRevision: revision + 1, signal: shared.signal });
      await w.return?.();
    }
    // Node warns (MaxListenersExceededWarning) when listeners pile up on one signal.
    const warnings: Error[] = [];
    const onWarning = (e: Error): void => {
      warnings.push(e);
    };
    process.on('warning', onWarning);
    const live = Array.from({ length: 5 }, () =>
      s.watch(p, { fromRevision: revision + 1, signal: shared.signal }),
    );
    await new Promise((r) => setTimeout(r, 20));
    process.off('warning', onWarning);
    shared.abort();
    for (const w of live) assert.equal((await w.next()).done, true);
    assert.deepEqual(
      warnings.map((e) => e.name),
      [],
    );
  });

  contract('watch delivers only keys under its prefix', async (s, p) => {
    const { revision } = await s.status();
    const ac = new AbortController();
    const w = new Reader(s.watch(`${p}in/`, { fromRevision: revision + 1, signal: ac.signal }));
    await s.txn({ compares: [], success: [put(`${p}out`, '1'), put(`${p}in`, '1')] });
    const t = await s.txn({ compares: [], success: [put(`${p}in/a`, '2'), put(`${p}inx`, '2')] });
    const b = await w.batch(wait);
    assert.deepEqual(summary(b), [`${t.revision} put ${p}in/a=2`]);
    assert.equal(await w.within(150), undefined);
    ac.abort();
  });

  contract('watch events carry prevKv for overwrites and deletes', async (s, p) => {
    const { revision } = await s.status();
    const ac = new AbortController();
    const w = new Reader(s.watch(p, { fromRevision: revision + 1, signal: ac.signal }));
    const t1 = await s.txn({ compares: [], success: [put(`${p}k`, 'v1')] });
    const t2 = await s.txn({ compares: [], success: [put(`${p}k`, 'v2')] });
    const t3 = await s.txn({ compares: [], success: [{ kind: 'delete', key: `${p}k` }] });
    const [b1, b2, b3] = await w.batches(3, wait);
    ac.abort();
    const e1 = b1?.events[0];
    assert.equal(e1?.type, 'put');
    assert.equal(e1?.prevKv, undefined, 'a create has no prevKv');
    assert.deepEqual(e1?.kv, {
      key: `${p}k`,
      value: 'v1',
      createRevision: t1.revision,
      modRevision: t1.revision,
      version: 1,
    });
    const e2 = b2?.events[0];
    assert.equal(e2?.kv.version, 2);
    assert.deepEqual(e2?.prevKv, e1?.kv);
    const e3 = b3?.events[0];
    assert.equal(e3?.type, 'delete');
    assert.deepEqual(e3?.kv, {
      key: `${p}k`,
      value: '',
      createRevision: 0,
      modRevision: t3.revision,
      version: 0,
    });
    assert.deepEqual(e3?.prevKv, e2?.kv);
    assert.equal(b2?.revision, t2.revision);
  });

  contract('aborting the signal ends the watch', async (s, p) => {
    const pre = new AbortController();
    pre.abort();
    const dead = s.watch(p, { fromRevision: 1, signal: pre.signal });
    assert.deepEqual(await dead.next(), { value: undefined, done: true });
    const ac = new AbortController();
    const { revision } = await s.status();
    const w = s.watch(p, { fromRevision: revision + 1 });
    const w2 = s.watch(p, { fromRevision: revision + 1, signal: ac.signal });
    const pending = w2.next();
    ac.abort();
    assert.equal((await pending).done, true);
    // The other watch is unaffected; ending it with return() stops it too.
    await s.txn({ compares: [], success: [put(`${p}x`, '1')] });
    const r = await new Reader(w).batch(wait);
    assert.equal(r.events.length, 1);
    await w.return?.();
    assert.equal((await w.next()).done, true);
  });

  contract(
    'a watch resumed from the last seen revision + 1 has no gap and no duplicate',
    async (s, p) => {
      const { revision } = await s.status();
      const ac = new AbortController();
      const w = new Reader(s.watch(p, { fromRevision: revision + 1, signal: ac.signal }));
      const written: number[] = [];
      for (let i = 0; i < 5; i++)
        written.push(
          (await s.txn({ compares: [], success: [put(`${p}k${i % 2}`, String(i))] })).revision,
        );
      const seen = await w.batches(3, wait);
      ac.abort(); // the "disconnect"
      const last = (seen.at(-1) as WatchBatch).revision;
      for (let i = 5; i < 8; i++)
        written.push(
          (await s.txn({ compares: [], success: [put(`${p}k${i % 2}`, String(i))] })).revision,
        );
      const ac2 = new AbortController();
      const w2 = new Reader(s.watch(p, { fromRevision: last + 1, signal: ac2.signal }));
      const rest = await w2.batches(written.length - seen.length, wait);
      assert.equal(await w2.within(150), undefined, 'no extra batch');
      ac2.abort();
      const revs = [...seen, ...rest].map((b) => b.revision);
      assert.deepEqual(revs, written);
      assert.deepEqual(
        [...seen, ...rest].map((b) => b.events[0]?.kv.value),
        written.map((_, i) => String(i)),
      );
    },
  );

  contract(
    'compaction drops history: COMPACTED with the compact revision, values kept',
    async (s, p) => {
      const r1 = await s.txn({ compares: [], success: [put(`${p}a`, '1'), put(`${p}b`, '1')] });
      const r2 = await s.txn({ compares: [], success: [put(`${p}a`, '2')] });
      const r3 = await s.txn({ compares: [], success: [{ kind: 'delete', key: `${p}b` }] });
      const r4 = await s.txn({ compares: [], success: [put(`${p}c`, '4')] });
      await s.compact(r3.revision);
      const st = await s.status();
      assert.equal(st.compactRevision, r3.revision);
      assert.equal(st.revision, r4.revision);
      await assert.rejects(
        s.list(p, { revision: r2.revision }),
        isStoreError('STORE_ERR_COMPACTED'),
      );
      const at3 = await s.list(p, { revision: r3.revision });
      assert.deepEqual(
        at3.items.map((kv) => [kv.key.slice(p.length), kv.value]),
        [['a', '2']],
      );
      for (const from of [r1.revision, r3.revision]) {
        const w = s.watch(p, { fromRevision: from });
        await assert.rejects(w.next(), (e: unknown) => {
          isStoreError('STORE_ERR_COMPACTED')(e);
          assert.equal((e as StoreError).compactRevision, r3.revision);
          return true;
        });
      }
      const ac = new AbortController();
      const w = new Reader(s.watch(p, { fromRevision: r3.revision + 1, signal: ac.signal }));
      const b = await w.batch(wait);
      ac.abort();
      assert.deepEqual(summary(b), [`${r4.revision} put ${p}c=4`]);
      assert.deepEqual(
        (await s.list(p)).items.map((kv) => [kv.key.slice(p.length), kv.value, kv.version]),
        [
          ['a', '2', 2],
          ['c', '4', 1],
        ],
      );
      // Compacting at an older revision again changes nothing.
      await s.compact(r2.revision);
      assert.equal((await s.status()).compactRevision, r3.revision);
      // Writing after compaction still works and is watchable.
      const r5 = await s.txn({
        compares: [{ key: `${p}a`, modRevision: r2.revision }],
        success: [put(`${p}a`, '5')],
      });
      assert.equal(r5.succeeded, true);
    },
  );

  contract('limits: oversized values, keys and transactions fail with TOO_LARGE', async (s, p) => {
    const r0 = (await s.status()).revision;
    await assert.rejects(
      s.txn({
        compares: [],
        success: [put(`${p}big`, 'x'.repeat(STORE_LIMITS.maxValueBytes + 1))],
      }),
      isStoreError('STORE_ERR_TOO_LARGE'),
    );
    await assert.rejects(
      s.txn({ compares: [], success: [put(p + 'k'.repeat(STORE_LIMITS.maxKeyBytes), 'x')] }),
      isStoreError('STORE_ERR_TOO_LARGE'),
    );
    const tooMany = Array.from({ length: STORE_LIMITS.maxOpsPerTxn + 1 }, (_, i) =>
      put(`${p}m/${i}`, 'x'),
    );
    await assert.rejects(
      s.txn({ compares: [], success: tooMany }),
      isStoreError('STORE_ERR_TOO_LARGE'),
    );
    assert.equal((await s.status()).revision, r0, 'a rejected transaction changes nothing');
  });

  contract(
    'a transaction of the maximum size applies at one revision and watches as one batch',
    async (s, p) => {
      const { revision } = await s.status();
      const ac = new AbortController();
      const w = new Reader(s.watch(`${p}m/`, { fromRevision: revision + 1, signal: ac.signal }));
      const n = STORE_LIMITS.maxOpsPerTxn - 1;
      const ops = Array.from({ length: n }, (_, i) =>
        put(`${p}m/${String(i).padStart(5, '0')}`, `{"i":${i}}`),
      );
      const t = await s.txn({ compares: [{ key: `${p}guard`, modRevision: 0 }], success: ops });
      assert.deepEqual(t, { succeeded: true, revision: revision + 1 });
      const b = await w.batch(wait * 4);
      ac.abort();
      assert.equal(b.revision, t.revision);
      assert.equal(b.events.length, n);
      assert.equal(b.events[n - 1]?.kv.value, `{"i":${n - 1}}`);
      const l = await s.list(`${p}m/`);
      assert.equal(l.items.length, n);
      assert.ok(l.items.every((kv) => kv.modRevision === t.revision));
    },
  );

  contract('malformed requests fail with INVALID and change nothing', async (s, p) => {
    const r0 = (await s.status()).revision;
    const bad = isStoreError('STORE_ERR_INVALID');
    await assert.rejects(s.get(''), bad);
    await assert.rejects(s.get('\ud800'), bad);
    await assert.rejects(s.txn({ compares: [], success: [put('', 'x')] }), bad);
    await assert.rejects(
      s.txn({ compares: [], success: [put(`${p}a`, '1'), put(`${p}a`, '2')] }),
      bad,
    );
    await assert.rejects(
      s.txn({
        compares: [],
        success: [put(`${p}a/b`, '1'), { kind: 'deletePrefix', prefix: `${p}a/` }],
      }),
      bad,
    );
    await assert.rejects(
      s.txn({ compares: [], success: [put(`${p}a`, '1'), { kind: 'delete', key: `${p}a` }] }),
      bad,
    );
    await assert.rejects(
      s.txn({ compares: [{ key: `${p}a`, modRevision: -1 }], success: [] }),
      bad,
    );
    await assert.rejects(s.list(p, { limit: 0 }), bad);
    await assert.rejects(s.list(p, { revision: 0 }), bad);
    await assert.rejects(s.list(p, { revision: 1.5 }), bad);
    await assert.rejects(s.compact(0), bad);
    await assert.rejects(s.watch(p, { fromRevision: 0 }).next(), bad);
    await assert.rejects(s.watch('\udc00', { fromRevision: 1 }).next(), bad);
    assert.equal((await s.status()).revision, r0);
  });

  contract('concurrent compare-and-swap increments lose no update', async (s, p) => {
    const k = `${p}counter`;
    const writers = 6;
    const increments = 15;
    let conflicts = 0;
    const writer = async (): Promise<void> => {
      for (let i = 0; i < increments; i++) {
        for (;;) {
          const cur = await s.get(k);
          const next = String(Number(cur?.value ?? '0') + 1);
          const r = await s.txn({
            compares: [{ key: k, modRevision: cur?.modRevision ?? 0 }],
            success: [put(k, next)],
          });
          if (r.succeeded) break;
          conflicts++;
        }
      }
    };
    await Promise.all(Array.from({ length: writers }, writer));
    const kv = await s.get(k);
    assert.equal(kv?.value, String(writers * increments));
    assert.equal(kv?.version, writers * increments);
    assert.ok(conflicts >= 0);
  });

  contract('concurrent writers through two handles of one store lose no update', async (s, p) => {
    const other = options.secondHandle === undefined ? s : await options.secondHandle(s);
    try {
      const k = `${p}counter`;
      const writer = async (h: Store): Promise<void> => {
        for (let i = 0; i < 10; i++) {
          for (;;) {
            const cur = await h.get(k);
            const r = await h.txn({
              compares: [{ key: k, modRevision: cur?.modRevision ?? 0 }],
              success: [put(k, String(Number(cur?.value ?? '0') + 1))],
            });
            if (r.succeeded) break;
          }
        }
      };
      await Promise.all([writer(s), writer(other), writer(s), writer(other)]);
      assert.equal((await s.get(k))?.value, '40');
      assert.equal((await other.get(k))?.value, '40');
    } finally {
      if (other !== s) await other.close();
    }
  });

  contract('close ends watches and rejects every later call with CLOSED', async (s, p) => {
    const { revision } = await s.status();
    const w = s.watch(p, { fromRevision: revision + 1 });
    const pending = w.next();
    await s.close();
    assert.equal((await pending).done, true, 'an open watch ends when the store closes');
    const closed = isStoreError('STORE_ERR_CLOSED');
    await assert.rejects(s.get(`${p}a`), closed);
    await assert.rejects(s.list(p), closed);
    await assert.rejects(s.txn({ compares: [], success: [put(`${p}a`, '1')] }), closed);
    await assert.rejects(s.status(), closed);
    await assert.rejects(s.compact(1), closed);
    await assert.rejects(s.watch(p, { fromRevision: 1 }).next(), closed);
    await s.close(); // closing twice is harmless
  });
}
