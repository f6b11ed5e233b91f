// Differential test: random transaction sequences (puts, deletes, prefix deletes, compares that
// hold or fail, compactions) applied to the memory and SQLite adapters must leave them
// indistinguishable — same results, same lists at every readable revision, same watch replay.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { MemoryStore } from './memory-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Compare, Op, Store, WatchBatch } from './store.js';

const dir = mkdtempSync(join(tmpdir(), `palisade-store-diff-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

const KEYS = ['a', 'a/b', 'a/c', 'ab', 'b', 'b/a', 'é', '😀', '\uffff', 'a\u0000'];
const PREFIXES = ['', 'a', 'a/', 'b/', 'é', 'z'];

type Step =
  | {
      readonly t: 'txn';
      readonly ops: Op[];
      readonly cmp: 'none' | 'hold' | 'fail';
      readonly key: string;
    }
  | { readonly t: 'compact'; readonly back: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('put' as const),
    key: fc.constantFrom(...KEYS),
    value: fc.string({ maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant('delete' as const), key: fc.constantFrom(...KEYS) }),
  fc.record({ kind: fc.constant('deletePrefix' as const), prefix: fc.constantFrom(...PREFIXES) }),
);

/** Drops ops that would touch a key twice (the port rejects those; tested elsewhere). */
function legal(ops: Op[]): Op[] {
  const out: Op[] = [];
  const puts = new Set<string>();
  const touched = new Set<string>();
  const prefixes: string[] = [];
  for (const op of ops) {
    if (op.kind === 'put') {
      if (touched.has(op.key) || prefixes.some((p) => op.key.startsWith(p))) continue;
      puts.add(op.key);
      touched.add(op.key);
    } else if (op.kind === 'delete') {
      if (puts.has(op.key)) continue;
      touched.add(op.key);
    } else {
      if ([...puts].some((k) => k.startsWith(op.prefix))) continue;
      prefixes.push(op.prefix);
    }
    out.push(op);
  }
  return out;
}

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant('txn' as const),
      ops: fc.array(opArb, { minLength: 1, maxLength: 5 }).map(legal),
      cmp: fc.constantFrom('none' as const, 'hold' as const, 'fail' as const),
      key: fc.constantFrom(...KEYS),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('compact' as const), back: fc.nat(4) }) },
);

async function compareFor(s: Store, step: Extract<Step, { t: 'txn' }>): Promise<Compare[]> {
  if (step.cmp === 'none') return [];
  const kv = await s.get(step.key);
  const rev = kv?.modRevision ?? 0;
  return [{ key: step.key, modRevision: step.cmp === 'hold' ? rev : rev + 1000 }];
}

async function replay(s: Store, from: number, prefix: string, upTo: number): Promise<WatchBatch[]> {
  const ac = new AbortController();
  const out: WatchBatch[] = [];
  if (upTo < from) return out;
  // Bounded: a replay that stops short shows up as a difference, not a hang.
  const timer = setTimeout(() => ac.abort(), 500);
  for await (const b of s.watch(prefix, { fromRevision: from, signal: ac.signal })) {
    out.push(b);
    if (b.revision >= upTo) break;
  }
  clearTimeout(timer);
  ac.abort();
  return out;
}

test('memory and SQLite adapters agree on random histories, reads and replays', async () => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 25 }), async (steps) => {
      run++;
      const m = new MemoryStore();
      const q = new SqliteStore(join(dir, `d${run}.db`));
      try {
        for (const step of steps) {
          if (step.t === 'compact') {
            const { revision } = await m.status();
            const at = Math.max(1, revision - step.back);
            await m.compact(at);
            await q.compact(at);
            continue;
          }
          const [cm, cq] = [await compareFor(m, step), await compareFor(q, step)];
          assert.deepEqual(cm, cq);
          const txn = { compares: cm, success: step.ops, failure: step.ops.slice(0, 1) };
          assert.deepEqual(await q.txn(txn), await m.txn(txn));
        }
        const sm = await m.status();
        assert.deepEqual(await q.status(), sm);
        for (let r = sm.compactRevision; r <= sm.revision; r++) {
          for (const prefix of PREFIXES) {
            assert.deepEqual(
              await q.list(prefix, { revision: r }),
              await m.list(prefix, { revision: r }),
              `list ${prefix} at ${r}`,
            );
          }
        }
        const from = sm.compactRevision === 1 ? 1 : sm.compactRevision + 1;
        for (const prefix of ['', 'a/']) {
          // A sentinel write under the prefix marks where the replay ends.
          const end = {
            compares: [],
            success: [{ kind: 'put' as const, key: `${prefix}~end`, value: '' }],
          };
          const last = (await m.txn(end)).revision;
          assert.equal((await q.txn(end)).revision, last);
          const [bm, bq] = [
            await replay(m, from, prefix, last),
            await replay(q, from, prefix, last),
          ];
          assert.deepEqual(bq, bm, `replay ${prefix} from ${from}`);
        }
        assert.deepEqual(q.integrityCheck(), []);
      } finally {
        await m.close();
        await q.close();
      }
    }),
    {
      numRuns: Number(process.env.PALISADE_FC_RUNS ?? 40),
      seed: Number(process.env.PALISADE_FC_SEED ?? 20261201),
    },
  );
});
