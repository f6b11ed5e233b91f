// The store contract against a real 3-member etcd cluster started once for this file, then the
// cluster losing a member: reads, writes and watches must keep working (quorum is 2 of 3), and
// a watch connected to the killed member must resume elsewhere without a gap or a duplicate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { runStoreContract } from './store-contract.js';
import { EtcdCluster } from './etcd-harness.js';
import { EtcdStore } from './etcd-store.js';
import { StoreError, type WatchBatch } from './store.js';

let cluster: EtcdCluster | undefined;
before(async () => {
  cluster = await EtcdCluster.start(3);
});
after(async () => {
  await cluster?.stop();
});

function running(): EtcdCluster {
  if (cluster === undefined) throw new Error('etcd did not start (see the before hook)');
  return cluster;
}

runStoreContract(
  'etcd 3-member',
  () => Promise.resolve(new EtcdStore({ endpoints: running().endpoints })),
  { secondHandle: () => Promise.resolve(new EtcdStore({ endpoints: running().endpoints })) },
);

/** Collects batches of a watch in the background until aborted. */
function collect(it: AsyncIterableIterator<WatchBatch>): {
  seen: WatchBatch[];
  done: Promise<void>;
} {
  const seen: WatchBatch[] = [];
  const done = (async () => {
    for await (const b of it) seen.push(b);
  })();
  return { seen, done };
}

async function until(what: string, ms: number, ok: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test(
  'etcd 3-member: with a member killed, reads, writes and watches go on without gaps',
  { timeout: 60_000 },
  async () => {
    const c = running();
    const p = `/failover/${process.pid}/`;
    // Each member gets its own client first in line, so one of them watches through the victim.
    const stores = c.endpoints.map(
      (_, i) => new EtcdStore({ endpoints: [...c.endpoints.slice(i), ...c.endpoints.slice(0, i)] }),
    );
    const writer = new EtcdStore({ endpoints: c.endpoints });
    const acs = stores.map(() => new AbortController());
    try {
      const from = (await writer.status()).revision + 1;
      const watches = stores.map((s, i) => {
        const signal = acs[i]?.signal;
        return collect(
          s.watch(
            p,
            signal === undefined ? { fromRevision: from } : { fromRevision: from, signal },
          ),
        );
      });
      const revs: number[] = [];
      let ambiguous = 0;
      // A write in flight when its member dies fails with UNAVAILABLE "may or may not have been
      // applied"; as the error says, the caller re-reads and retries only if it was not.
      const write = async (i: number): Promise<void> => {
        const key = `${p}k${i % 3}`;
        for (let attempt = 0; ; attempt++) {
          try {
            const r = await writer.txn({
              compares: [],
              success: [{ kind: 'put', key, value: String(i) }],
            });
            revs.push(r.revision);
            return;
          } catch (e) {
            if (!(e instanceof StoreError) || e.code !== 'STORE_ERR_UNAVAILABLE' || attempt > 2)
              throw e;
            assert.equal(e.maybeApplied, true, 'only an in-flight write has an unknown outcome');
            ambiguous++;
            const kv = await writer.get(key);
            if (kv?.value === String(i)) {
              revs.push(kv.modRevision);
              return;
            }
          }
        }
      };
      for (let i = 0; i < 10; i++) await write(i);
      await until('watches before the kill', 10_000, () =>
        watches.every((w) => w.seen.length === 10),
      );
      // Kill the leader: an election, and the watch of the store that prefers it must move.
      const leader = await c.leaderIndex();
      assert.ok(leader >= 0, 'the cluster has a leader');
      await c.kill(leader);
      for (let i = 10; i < 30; i++) await write(i);
      assert.ok(ambiguous <= 1, `${ambiguous} writes had an unknown outcome`);
      // Reads keep working, including at a past revision and compare-and-swap.
      const listed = await writer.list(p);
      assert.deepEqual(
        listed.items.map((kv) => kv.value),
        ['27', '28', '29'],
      );
      const past = await writer.list(p, { revision: revs[5] as number });
      assert.equal(past.items.length, 3);
      const k0 = await writer.get(`${p}k0`);
      const cas = await writer.txn({
        compares: [{ key: `${p}k0`, modRevision: k0?.modRevision ?? -1 }],
        success: [{ kind: 'put', key: `${p}k0`, value: 'cas' }],
      });
      assert.equal(cas.succeeded, true);
      revs.push(cas.revision);
      await until('watches after the kill', 20_000, () =>
        watches.every((w) => w.seen.length >= revs.length),
      );
      for (const [i, w] of watches.entries()) {
        assert.deepEqual(
          w.seen.map((b) => b.revision),
          revs,
          `watch ${i} (first member ${i}) has every revision once, in order`,
        );
      }
      // A new watch from the beginning replays everything from the surviving members.
      const ac = new AbortController();
      const replay = collect(writer.watch(p, { fromRevision: from, signal: ac.signal }));
      await until('replay', 10_000, () => replay.seen.length === revs.length);
      ac.abort();
      await replay.done;
      // The killed member comes back and catches up; the cluster serves all three again.
      await c.restart(leader);
      const back = new EtcdStore({ endpoints: [c.endpoints[leader] as string] });
      try {
        await until('the restarted member catches up', 10_000, () => true);
        const st = await back.status();
        assert.ok(st.revision >= (revs.at(-1) as number));
        assert.equal((await back.get(`${p}k0`))?.value, 'cas');
      } finally {
        await back.close();
      }
    } finally {
      for (const ac of acs) ac.abort();
      for (const s of stores) await s.close();
      await writer.close();
    }
  },
);

test(
  'etcd 3-member: a member that freezes without closing its connections is left behind',
  { timeout: 60_000 },
  async () => {
    const c = running();
    await c.waitHealthy();
    const leader = await c.leaderIndex();
    const victim = (leader + 1) % c.members.length;
    const others = c.endpoints.filter((_, i) => i !== victim);
    const p = `/freeze/${process.pid}/`;
    // The watching store talks to the victim first; keepalive notices the silence.
    const watching = new EtcdStore({
      endpoints: [c.endpoints[victim] as string, ...others],
      keepaliveMs: 1000,
      requestTimeoutMs: 1500,
    });
    const writer = new EtcdStore({ endpoints: others });
    const ac = new AbortController();
    try {
      const from = (await watching.status()).revision + 1;
      const w = collect(watching.watch(p, { fromRevision: from, signal: ac.signal }));
      const revs: number[] = [];
      const write = async (i: number): Promise<void> => {
        const r = await writer.txn({
          compares: [],
          success: [{ kind: 'put', key: `${p}k`, value: String(i) }],
        });
        revs.push(r.revision);
      };
      for (let i = 0; i < 5; i++) await write(i);
      await until('watch before the freeze', 10_000, () => w.seen.length === 5);
      c.pause(victim);
      for (let i = 5; i < 15; i++) await write(i);
      // A read through the frozen member times out there and is answered by another.
      const t0 = Date.now();
      assert.equal((await watching.get(`${p}k`))?.value, '14');
      assert.ok(Date.now() - t0 < 5000, `read took ${Date.now() - t0} ms`);
      await until('watch after the freeze', 20_000, () => w.seen.length >= revs.length);
      assert.deepEqual(
        w.seen.map((b) => b.revision),
        revs,
      );
      ac.abort();
      await w.done;
    } finally {
      c.resume(victim);
      ac.abort();
      await watching.close();
      await writer.close();
    }
  },
);
