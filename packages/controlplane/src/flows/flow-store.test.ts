// The flow store's rollups and pages over real SQLite files: the per-minute and per-hour rollups
// always equal a scan of the raw records (random batches over minutes and over hours, retention
// by age, count and size, several writers on one file at once, a store from before the rollups
// or before the hour level), the graph and policy hits read from them agree with the raw
// aggregation for any window and filter, and pages in (end, id) order return every record
// exactly once, also while records are added.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import type { FlowRecord } from './flow-record.js';
import { POOL, randomBatch, rng } from './flow-store-fixtures.js';
import type { FlowQuery } from './flow-store.js';
import { FlowStore } from './flow-store.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDb(): string {
  const d = mkdtempSync(join(tmpdir(), `palisade-flowstore-${process.pid}-`));
  dirs.push(d);
  return join(d, 'flows.db');
}

const NOW = Date.parse('2026-03-01T12:00:30.123Z');

type Filter = Omit<FlowQuery, 'limit' | 'afterId' | 'beforeId' | 'beforeKey'>;

/** A random window within `spanMs` before `now` and filter (each part present or not). */
function randomFilter(r: () => number, now: number, spanMs = 900_000): Filter {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const f: {
    -readonly [K in keyof Filter]: Filter[K];
  } = {};
  const a = now - Math.floor(r() * spanMs);
  const b = now - Math.floor(r() * spanMs);
  // Edges on a minute or an hour boundary now and then (the rollups' bucket edges).
  const align = (x: number) => {
    const u = r();
    return u < 0.15
      ? Math.floor(x / 60_000) * 60_000
      : u < 0.3
        ? Math.floor(x / 3_600_000) * 3_600_000
        : x;
  };
  if (r() < 0.7) f.sinceMs = align(Math.min(a, b));
  if (r() < 0.4) {
    const u = align(Math.max(a, b));
    f.untilMs = u !== Math.max(a, b) && r() < 0.7 ? u - 1 : u;
  }
  const scope = r();
  if (scope < 0.15) f.endpoint = { namespace: pick(POOL.namespaces), name: pick(POOL.names) };
  else if (scope < 0.3) f.namespace = pick(POOL.namespaces);
  if (r() < 0.15) f.policy = pick(POOL.policies);
  if (r() < 0.2) f.verdict = pick(['allow', 'deny'] as const);
  if (r() < 0.2) f.point = pick(['kernel', 'l7'] as const);
  if (r() < 0.15) f.node = pick(POOL.nodes);
  return f;
}

/**
 * The rollups of both levels are consistent, and the aggregations read through hours, minutes
 * and raw edges (and through minutes only) equal the raw scan.
 */
function assertAgrees(
  store: FlowStore,
  r: () => number,
  now: number,
  queries = 6,
  spanMs?: number,
): void {
  assert.equal(store.verifyRollups(), 0, 'rollup rows differ from the records');
  for (let i = 0; i < queries; i++) {
    const f = i === 0 ? {} : randomFilter(r, now, spanMs);
    const raw = store.graph(f, 100_000, 'raw');
    assert.deepEqual(store.graph(f, 100_000), raw, JSON.stringify(f));
    assert.deepEqual(store.graph(f, 100_000, 'minute'), raw, JSON.stringify(f));
    const hits = store.policyHits(f, 'raw');
    assert.deepEqual(store.policyHits(f), hits, JSON.stringify(f));
    assert.deepEqual(store.policyHits(f, 'minute'), hits, JSON.stringify(f));
  }
}

describe('rollups', () => {
  test('after any sequence of batches, ticks and retention deletions, the rollups equal a scan of the records', () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('ingest' as const),
        seed: fc.integer({ min: 1, max: 2 ** 30 }),
        n: fc.integer({ min: 0, max: 40 }),
        node: fc.constantFrom(...POOL.nodes),
      }),
      fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 200_000 }) }),
      fc.record({ kind: fc.constant('prune' as const) }),
    );
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 1, maxLength: 10 }),
        fc.integer({ min: 20, max: 200 }),
        fc.integer({ min: 1, max: 2 ** 30 }),
        (ops, maxRecords, qseed) => {
          let now = NOW;
          const store = new FlowStore(tempDb(), {
            now: () => now,
            retention: { maxRecords, maxAgeMs: 5 * 60_000 },
          });
          try {
            for (const o of ops) {
              if (o.kind === 'ingest')
                store.ingest(o.node, { records: randomBatch(rng(o.seed), now, o.n) });
              else if (o.kind === 'tick') now += o.ms;
              else store.prune();
            }
            assert.ok(store.count <= maxRecords);
            assertAgrees(store, rng(qseed), now);
          } finally {
            store.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  test('over hours of records, hour rollups stay equal to the records through age and count deletions, and windows of any hours agree with the raw scan', () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('ingest' as const),
        seed: fc.integer({ min: 1, max: 2 ** 30 }),
        n: fc.integer({ min: 0, max: 60 }),
        node: fc.constantFrom(...POOL.nodes),
      }),
      fc.record({
        kind: fc.constant('tick' as const),
        ms: fc.integer({ min: 0, max: 3 * 3_600_000 }),
      }),
      fc.record({ kind: fc.constant('prune' as const) }),
    );
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 30, max: 400 }),
        fc.integer({ min: 1, max: 2 ** 30 }),
        (ops, maxRecords, qseed) => {
          let now = NOW;
          const store = new FlowStore(tempDb(), {
            now: () => now,
            retention: { maxRecords, maxAgeMs: 5 * 3_600_000 },
          });
          try {
            for (const o of ops) {
              if (o.kind === 'ingest')
                store.ingest(o.node, {
                  records: randomBatch(rng(o.seed), now, o.n, 4 * 3_600_000),
                });
              else if (o.kind === 'tick') now += o.ms;
              else store.prune();
            }
            assertAgrees(store, rng(qseed), now, 8, 6 * 3_600_000);
          } finally {
            store.close();
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  test('the size bound deletes through the rollups too', () => {
    let now = NOW;
    const store = new FlowStore(tempDb(), { now: () => now, retention: { maxBytes: 400 * 1024 } });
    try {
      const r = rng(11);
      for (let i = 0; i < 12; i++) {
        now += 30_000;
        store.ingest('node-0', { records: randomBatch(r, now, 400) });
      }
      const before = store.count;
      store.prune();
      assert.ok(store.count < before && store.count > 0, `count ${store.count}`);
      assertAgrees(store, rng(12), now);
    } finally {
      store.close();
    }
  });

  test('several writers on one database at once (worker threads, each pruning) leave the rollups equal to the records', async () => {
    const file = tempDb();
    const main = new FlowStore(file, { now: () => NOW + 300_000 });
    try {
      const jobs = [1, 2, 3].map(
        (seed) =>
          new Promise<number>((resolveJob, reject) => {
            // The worker registers tsx itself (a worker does not inherit the loader hooks).
            const w = new Worker(
              `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(
                new URL('./flow-store-writer.ts', import.meta.url).href,
              )}); })`,
              {
                eval: true,
                workerData: {
                  file,
                  seed,
                  batches: 40,
                  now: NOW,
                  maxRecords: 500,
                  maxAgeMs: 240_000,
                },
              },
            );
            w.once('message', (m: { stored: number }) => resolveJob(m.stored));
            w.once('error', reject);
            w.once('exit', (code) => {
              if (code !== 0) reject(new Error(`writer ${seed} exited with ${code}`));
            });
          }),
      );
      // The test's own store writes too, meanwhile.
      const r = rng(99);
      for (let i = 0; i < 20; i++) {
        main.ingest('node-main', { records: randomBatch(r, NOW + i * 10_000, 25) });
        await new Promise((res) => setTimeout(res, 5));
      }
      const stored = await Promise.all(jobs);
      assert.ok(stored.every((n) => n > 0));
      const stats = main.stats();
      const db = new Database(file, { readonly: true });
      try {
        const n = (db.prepare('SELECT count(*) AS n FROM flows').get() as { n: number }).n;
        assert.equal(stats.records, n, 'the shared row counter matches the table');
        assert.ok(n <= 500 + 40, `count bound kept (${n})`);
      } finally {
        db.close();
      }
      assertAgrees(main, rng(5), NOW + 400_000, 10);
    } finally {
      main.close();
    }
  });

  test('a store written before the rollups existed gets them built when it is opened', () => {
    const file = tempDb();
    const first = new FlowStore(file, { now: () => NOW });
    first.ingest('node-0', { records: randomBatch(rng(3), NOW, 300) });
    first.close();
    const db = new Database(file);
    db.exec(
      "DROP TABLE flow_rollup; DROP TABLE flow_policy_rollup; DROP TABLE flow_rollup_hour; DROP TABLE flow_policy_rollup_hour; DELETE FROM flow_meta WHERE key IN ('rows', 'max_span', 'rollup_version')",
    );
    db.close();
    const again = new FlowStore(file, { now: () => NOW });
    try {
      assert.equal(again.count, 300);
      assertAgrees(again, rng(4), NOW);
    } finally {
      again.close();
    }
  });

  test('a store from before the hour level (minute rollups only) gets its hour rollups built when it is opened', () => {
    const file = tempDb();
    const first = new FlowStore(file, { now: () => NOW });
    first.ingest('node-0', { records: randomBatch(rng(8), NOW, 400, 3 * 3_600_000) });
    first.close();
    const db = new Database(file);
    db.exec(
      "DROP TABLE flow_rollup_hour; DROP TABLE flow_policy_rollup_hour; UPDATE flow_meta SET value = 1 WHERE key = 'rollup_version'",
    );
    db.close();
    const again = new FlowStore(file, { now: () => NOW });
    try {
      assert.ok(again.rollupSizes().hourEdges > 0);
      assertAgrees(again, rng(9), NOW, 8, 4 * 3_600_000);
    } finally {
      again.close();
    }
  });

  test('bulkLoad builds the indexes and rollups after the inserts and applies the bounds', () => {
    const store = new FlowStore(tempDb(), { now: () => NOW, retention: { maxRecords: 900 } });
    try {
      store.ingest('node-0', { records: randomBatch(rng(1), NOW, 50) });
      const r = rng(2);
      const added = store.bulkLoad((add) => {
        for (let i = 0; i < 1000; i++) add(`node-${i % 3}`, randomBatch(r, NOW, 1)[0]!);
      }, 128);
      assert.equal(added, 1000);
      assert.equal(store.count, 900);
      assertAgrees(store, rng(6), NOW);
      assert.match(
        JSON.stringify(store.explain({ sinceMs: NOW - 120_000, untilMs: NOW - 60_000, limit: 10 })),
        /flows_end/,
      );
    } finally {
      store.close();
    }
  });
});

describe('pages', () => {
  const key = (x: FlowRecord) => [Date.parse(x.end), x.id] as const;
  const below = (a: readonly [number, number], b: readonly [number, number]) =>
    a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

  test('walking pages of any size returns every matching record once, newest window first', () => {
    const store = new FlowStore(tempDb(), { now: () => NOW });
    try {
      const r = rng(21);
      for (let i = 0; i < 8; i++)
        store.ingest(POOL.nodes[i % 3]!, { records: randomBatch(r, NOW, 60) });
      const all = store.query({ limit: 100_000 });
      assert.equal(all.length, 480);
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 2 ** 30 }),
          fc.integer({ min: 1, max: 37 }),
          (seed, limit) => {
            const f = randomFilter(rng(seed), NOW);
            const expected = store.query({ ...f, limit: 100_000 });
            // The full answer is in (end, id) order, descending, without repeats.
            for (let i = 1; i < expected.length; i++)
              assert.ok(below(key(expected[i]!), key(expected[i - 1]!)));
            const got: FlowRecord[] = [];
            let cursor: { endMs: number; id: number } | undefined;
            for (let guard = 0; guard < 1000; guard++) {
              const page = store.query({ ...f, limit, ...(cursor ? { beforeKey: cursor } : {}) });
              got.push(...page);
              const last = page[page.length - 1];
              if (page.length < limit || !last) break;
              cursor = { endMs: Date.parse(last.end), id: last.id };
            }
            assert.deepEqual(
              got.map((x) => x.id),
              expected.map((x) => x.id),
            );
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      store.close();
    }
  });

  test('records added while a reader pages neither repeat nor hide the records it started with', () => {
    let now = NOW;
    const store = new FlowStore(tempDb(), { now: () => now });
    try {
      const r = rng(31);
      store.ingest('node-0', { records: randomBatch(r, now, 300) });
      const start = new Set(store.query({ limit: 100_000 }).map((x) => x.id));
      const seen: number[] = [];
      let cursor: { endMs: number; id: number } | undefined;
      let prev: readonly [number, number] | undefined;
      for (;;) {
        const page = store.query({ limit: 17, ...(cursor ? { beforeKey: cursor } : {}) });
        for (const x of page) {
          if (prev) assert.ok(below(key(x), prev), 'pages keep descending');
          prev = key(x);
          seen.push(x.id);
        }
        // Meanwhile a node reports more, some with windows older than the reader's position.
        now += 1000;
        store.ingest('node-1', { records: randomBatch(r, now, 9) });
        const last = page[page.length - 1];
        if (page.length < 17 || !last) break;
        cursor = { endMs: Date.parse(last.end), id: last.id };
      }
      assert.equal(new Set(seen).size, seen.length, 'no record twice');
      for (const id of start) assert.ok(seen.includes(id), `record ${id} was skipped`);
    } finally {
      store.close();
    }
  });

  test('an old time window reads the end-time index, not every newer record', () => {
    const store = new FlowStore(tempDb(), { now: () => NOW });
    try {
      const plan = JSON.stringify(
        store.explain({ sinceMs: NOW - 7200_000, untilMs: NOW - 3600_000, limit: 100 }),
      );
      assert.match(plan, /flows_end \(end_ms>\? AND end_ms<\?\)|flows_end/);
      assert.doesNotMatch(plan, /USE TEMP B-TREE FOR ORDER BY/);
    } finally {
      store.close();
    }
  });
});
