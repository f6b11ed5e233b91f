// The `store` benchmark (DESIGN §5): an apply of 10k policy-sized values in one transaction
// (SQLite and a 3-member etcd), watch fan-out latency to 100 watchers, and single-key write
// throughput and p99 latency for SQLite and for the 3-member etcd cluster. The etcd cluster is a
// real one started on loopback ports by the test harness and removed at the end.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdCluster } from '../packages/controlplane/src/store/etcd-harness.js';
import { EtcdStore } from '../packages/controlplane/src/store/etcd-store.js';
import { SqliteStore } from '../packages/controlplane/src/store/sqlite-store.js';
import type { Op, Store } from '../packages/controlplane/src/store/store.js';

function round(x: number, d = 2): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
}

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/** A Calico NetworkPolicy serialized as the API server stores it (about 1.3 KB). */
function policyValue(i: number, generation: number): string {
  const ns = `team-${i % 97}`;
  return JSON.stringify({
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: {
      name: `allow-frontend-${i}`,
      namespace: ns,
      uid: `6f1c${String(i).padStart(8, '0')}-0d3e-4c1b-9a7e-${String(generation).padStart(12, '0')}`,
      labels: { team: ns, env: i % 3 === 0 ? 'prod' : 'staging', generation: String(generation) },
      annotations: { 'palisade.dev/owner': `${ns}@example.com` },
    },
    spec: {
      tier: 'default',
      order: 100 + (i % 50),
      selector: `app == 'api-${i % 40}' && version in {'v1', 'v2'}`,
      types: ['Ingress', 'Egress'],
      ingress: [
        {
          action: 'Allow',
          protocol: 'TCP',
          source: { selector: `app == 'frontend-${i % 40}'`, namespaceSelector: `team == '${ns}'` },
          destination: { ports: [8080, '9000:9100', 'http-metrics'] },
          http: {
            methods: ['GET', 'POST'],
            paths: [{ prefix: '/api/v1/' }, { exact: '/healthz' }],
          },
        },
        {
          action: 'Deny',
          protocol: 'TCP',
          source: { nets: ['10.0.0.0/8', '192.168.0.0/16'], notNets: ['10.1.2.0/24'] },
        },
      ],
      egress: [
        {
          action: 'Allow',
          protocol: 'UDP',
          destination: { selector: "k8s-app == 'kube-dns'", ports: [53] },
        },
        { action: 'Pass' },
      ],
    },
  });
}

function applyOps(prefix: string, generation: number): Op[] {
  return Array.from({ length: 10_000 }, (_, i) => ({
    kind: 'put' as const,
    key: `${prefix}${String(i).padStart(5, '0')}`,
    value: policyValue(i, generation),
  }));
}

async function benchApply(store: Store, runs: number, log: (s: string) => void): Promise<number> {
  const times: number[] = [];
  for (let g = 0; g < runs; g++) {
    const ops = applyOps('/palisade/policies/bench/', g);
    const t0 = performance.now();
    const r = await store.txn({ compares: [], success: ops });
    times.push(performance.now() - t0);
    if (!r.succeeded) throw new Error('apply failed');
  }
  const bytes = applyOps('/palisade/policies/bench/', 0).reduce(
    (n, op) => n + (op.kind === 'put' ? op.value.length : 0),
    0,
  );
  log(
    `  ${store.name.slice(0, 40)}: apply of 10k (${round(bytes / 1e6, 1)} MB) in ${times.map((t) => round(t, 0)).join(', ')} ms`,
  );
  return median(times);
}

/** Latency from the start of a write to its arrival at each of `watchers` watches. */
async function benchFanout(
  store: Store,
  watchers: number,
  writes: number,
  log: (s: string) => void,
): Promise<{ p50: number; p99: number }> {
  const prefix = `/bench/fanout/${Date.now()}/`;
  const { revision } = await store.status();
  // One controller per watch, as independent clients would have.
  const acs = Array.from({ length: watchers }, () => new AbortController());
  const started = new Map<number, number>();
  const latencies: number[] = [];
  let received = 0;
  const done: Promise<void>[] = [];
  for (let w = 0; w < watchers; w++) {
    const it = store.watch(prefix, {
      fromRevision: revision + 1,
      signal: (acs[w] as AbortController).signal,
    });
    done.push(
      (async () => {
        for await (const b of it) {
          const t = started.get(b.revision);
          if (t !== undefined) latencies.push(performance.now() - t);
          received++;
        }
      })(),
    );
  }
  // Let every watch stream be established before the clock starts.
  await new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < writes; i++) {
    const expected = (i + 1) * watchers;
    const t0 = performance.now();
    const pending = store.txn({
      compares: [],
      success: [{ kind: 'put', key: `${prefix}k`, value: String(i) }],
    });
    started.set(revision + 1 + i, t0);
    const r = await pending;
    // Revisions are known only after the commit; fix up if another writer interleaved.
    if (r.revision !== revision + 1 + i) throw new Error('unexpected concurrent writer');
    const deadline = Date.now() + 10_000;
    while (received < expected && Date.now() < deadline)
      await new Promise((res) => setImmediate(res));
    if (received < expected) throw new Error(`fan-out stalled at ${received}/${expected}`);
  }
  for (const ac of acs) ac.abort();
  await Promise.all(done);
  const p50 = quantile(latencies, 0.5);
  const p99 = quantile(latencies, 0.99);
  log(
    `  ${store.name.slice(0, 40)}: ${writes} writes to ${watchers} watchers: p50 ${round(p50)} ms, p99 ${round(p99)} ms`,
  );
  return { p50, p99 };
}

/** Sequential writes of one key (each waits for the previous): throughput and latency. */
async function benchWrites(
  store: Store,
  n: number,
  log: (s: string) => void,
): Promise<{ perS: number; p99: number; p50: number }> {
  const key = `/bench/writes/${Date.now()}`;
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await store.txn({ compares: [], success: [{ kind: 'put', key, value: policyValue(i, 0) }] });
    lat.push(performance.now() - t);
  }
  const total = performance.now() - t0;
  const r = { perS: (n / total) * 1000, p99: quantile(lat, 0.99), p50: quantile(lat, 0.5) };
  log(
    `  ${store.name.slice(0, 40)}: ${n} writes, ${round(r.perS, 0)}/s, p50 ${round(r.p50)} ms, p99 ${round(r.p99)} ms`,
  );
  return r;
}

/** Writes with `concurrency` in flight (separate keys): what a busy API server sees. */
async function benchConcurrentWrites(
  store: Store,
  n: number,
  concurrency: number,
): Promise<number> {
  const prefix = `/bench/cwrites/${Date.now()}/`;
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (next < n) {
        const i = next++;
        await store.txn({
          compares: [],
          success: [{ kind: 'put', key: `${prefix}${w}`, value: policyValue(i, 0) }],
        });
      }
    }),
  );
  return (n / (performance.now() - t0)) * 1000;
}

export async function runStoreBench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), `palisade-bench-store-${process.pid}-`));
  let cluster: EtcdCluster | undefined;
  const stores: Store[] = [];
  try {
    log('SQLite (WAL, synchronous=FULL)');
    const sqlite = new SqliteStore(join(dir, 'bench.db'));
    stores.push(sqlite);
    const sqliteApply = await benchApply(sqlite, quick ? 2 : 5, log);
    const sqliteWrites = await benchWrites(sqlite, quick ? 500 : 3000, log);
    const sqliteFanout = await benchFanout(sqlite, 100, quick ? 30 : 200, log);
    log('SQLite (WAL, synchronous=NORMAL: durable on process crash, not on power loss)');
    const normal = new SqliteStore(join(dir, 'bench-normal.db'), { synchronous: 'NORMAL' });
    stores.push(normal);
    const normalWrites = await benchWrites(normal, quick ? 1000 : 5000, log);

    log('etcd 3.4, 3 members on loopback');
    cluster = await EtcdCluster.start(3);
    const etcd = new EtcdStore({ endpoints: cluster.endpoints, requestTimeoutMs: 10_000 });
    stores.push(etcd);
    const etcdApply = await benchApply(etcd, quick ? 1 : 3, log);
    const etcdWrites = await benchWrites(etcd, quick ? 300 : 2000, log);
    const etcdConcurrent = await benchConcurrentWrites(etcd, quick ? 500 : 3000, 16);
    log(`  ${etcd.name.slice(0, 40)}: 16 writers in flight: ${round(etcdConcurrent, 0)}/s`);
    const etcdFanout = await benchFanout(etcd, 100, quick ? 20 : 100, log);

    const result = {
      apply_10k_ms: round(sqliteApply, 1),
      apply_10k_ms_etcd: round(etcdApply, 1),
      watch_fanout_p99_ms: round(etcdFanout.p99),
      watch_fanout_p99_ms_sqlite: round(sqliteFanout.p99),
      sqlite_writes_per_s: round(sqliteWrites.perS, 0),
      sqlite_write_p99_ms: round(sqliteWrites.p99),
      sqlite_normal_writes_per_s: round(normalWrites.perS, 0),
      sqlite_normal_write_p99_ms: round(normalWrites.p99),
      etcd_writes_per_s: round(etcdWrites.perS, 0),
      etcd_write_p99_ms: round(etcdWrites.p99),
      etcd_writes_per_s_16_in_flight: round(etcdConcurrent, 0),
    };
    log('');
    log(`${'figure'.padEnd(44)}${'SQLite'.padStart(10)}${'etcd x3'.padStart(10)}`);
    const cell = (v: number): string => (Number.isNaN(v) ? '—' : String(v)).padStart(10);
    const row = (label: string, a: number, b: number): void =>
      log(`${label.padEnd(44)}${cell(a)}${cell(b)}`);
    row(
      'apply 10k policies in one txn (ms, median)',
      result.apply_10k_ms,
      result.apply_10k_ms_etcd,
    );
    row(
      'watch fan-out to 100 watchers, p99 (ms)',
      result.watch_fanout_p99_ms_sqlite,
      result.watch_fanout_p99_ms,
    );
    row(
      'single-key writes, one at a time (/s)',
      result.sqlite_writes_per_s,
      result.etcd_writes_per_s,
    );
    row('single-key write latency p99 (ms)', result.sqlite_write_p99_ms, result.etcd_write_p99_ms);
    row('writes with 16 in flight (/s)', NaN, result.etcd_writes_per_s_16_in_flight);
    row('synchronous=NORMAL writes (/s)', result.sqlite_normal_writes_per_s, NaN);
    row('synchronous=NORMAL write p99 (ms)', result.sqlite_normal_write_p99_ms, NaN);
    return result;
  } finally {
    for (const s of stores) await s.close();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
