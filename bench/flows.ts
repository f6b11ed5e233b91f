// The `flows` benchmark (DESIGN §5): records per second the node-to-store pipeline sustains end
// to end without shedding (observations → aggregator → HTTPS shipper with a node token → a live
// server → the SQLite flow store), query latency over 10 million stored records (the database is
// built here, in a temp dir, not in tests), and the console's load time for a graph of 1,000
// endpoints in Debian chromium.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlowStore, rowValues } from '../packages/controlplane/src/flows/flow-store.js';
import type { FlowRow } from '../packages/controlplane/src/flows/flow-store.js';
import type { FlowRecordInput } from '../packages/controlplane/src/flows/flow-record.js';
import { runServer } from '../packages/controlplane/src/server/run-server.js';
import { consoleRoute } from '../packages/console/src/index.js';
import { FlowAggregator } from '../packages/dataplane/src/flows/aggregator.js';
import { flowShipper } from '../packages/dataplane/src/flows/shipper.js';

function round(x: number, d = 1): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

/** A deterministic generator (xorshift). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const NAMESPACES = 50;

function endpoint(i: number) {
  const ns = `ns-${i % NAMESPACES}`;
  return {
    ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    namespace: ns,
    name: `ep-${i}`,
    labels: { app: `app-${i % 40}` },
  };
}

function record(
  r: () => number,
  endpoints: number,
  policies: number,
  endMs: number,
): FlowRecordInput {
  const s = Math.floor(r() * endpoints);
  const d = Math.floor(r() * endpoints);
  const deny = r() < 0.2;
  const l7 = r() < 0.3;
  const p = Math.floor(r() * policies);
  return {
    start: new Date(endMs - 10_000).toISOString(),
    end: new Date(endMs).toISOString(),
    source: endpoint(s),
    destination: { ...endpoint(d), port: 8000 + (p % 20) },
    protocol: 'TCP',
    ...(l7 ? { method: 'GET', path: `/api/v1/items/${p % 100}` } : {}),
    verdict: deny ? 'deny' : 'allow',
    point: l7 ? 'l7' : 'kernel',
    direction: 'ingress',
    provenance:
      deny && r() < 0.5
        ? { kind: 'tier-default', tier: `tier-${p % 5}` }
        : {
            kind: 'rule',
            tier: `tier-${p % 5}`,
            policy: `${endpoint(d).namespace}/policy-${p}`,
            rule: p % 4,
          },
    packets: 3,
    bytes: 180,
    count: 1 + Math.floor(r() * 5),
  };
}

async function pipeline(quick: boolean, log: (s: string) => void, dir: string) {
  const server = await runServer({
    listen: '127.0.0.1:0',
    dataDir: join(dir, 'pipeline'),
    store: 'memory:',
    insecurePlaintext: false,
    rateLimit: false,
    log: () => undefined,
    say: () => undefined,
  });
  try {
    const admin = readFileSync(join(dir, 'pipeline', 'admin.token'), 'utf8').trim();
    const tok = await server.api.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      token: admin,
      body: { node: 'bench-node' },
    });
    const token = (tok.json() as { token: string }).token;
    const agg = new FlowAggregator({
      send: flowShipper({
        server: server.url,
        token,
        timeoutMs: 120_000,
        ca: readFileSync(join(dir, 'pipeline', 'ca.pem'), 'utf8'),
      }),
      resolve: (ip) => {
        const parts = ip.split('.').map(Number);
        const i = ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0);
        const e = endpoint(i);
        return { namespace: e.namespace, name: e.name, labels: e.labels };
      },
      maxKeys: 50_000,
    });
    const total = quick ? 60_000 : 300_000;
    const perInterval = 20_000;
    const r = rng(7);
    const t0 = performance.now();
    for (let done = 0; done < total; done += perInterval) {
      const now = Date.now();
      for (let i = 0; i < perInterval; i++) {
        // Distinct flows: every observation becomes one record.
        const n = done + i;
        agg.observe({
          timeMs: now,
          point: 'kernel',
          direction: 'ingress',
          srcIp: endpoint(n % 60_000).ip,
          dstIp: endpoint((n * 7 + 3) % 1000).ip,
          dstPort: 1 + Math.floor(n / 60_000),
          protocol: 'TCP',
          verdict: r() < 0.2 ? 'deny' : 'allow',
          provenance: { kind: 'rule', tier: 'default', policy: `ns-1/policy-${n % 500}`, rule: 0 },
          packets: 1,
          bytes: 60,
        });
      }
      await agg.flush();
    }
    // A batch whose send timed out on a loaded machine is kept and sent again, not lost.
    for (let i = 0; i < 50 && agg.pendingBatches > 0; i++) await agg.flush();
    const secs = (performance.now() - t0) / 1000;
    const stats = server.flows.stats();
    const shed = Object.values(agg.counters.shed).reduce((a, b) => a + b, 0) + stats.shedTotal;
    if (stats.records !== total || shed !== 0)
      throw new Error(
        `pipeline lost records: stored ${stats.records} of ${total}, shed ${shed}, send failures ${agg.counters.sendFailures}`,
      );
    const perSec = total / secs;
    log(
      `pipeline: ${total} records end to end in ${round(secs, 2)} s = ${Math.round(perSec)} records/s, shed 0, ${agg.counters.sendFailures} sends retried`,
    );
    return Math.round(perSec);
  } finally {
    await server.stop();
  }
}

/** The service graph the query database's traffic runs on: steady edges plus random noise. */
interface BenchEdge {
  readonly src: number;
  readonly dst: number;
  readonly port: number;
  readonly deny: boolean;
  readonly l7: boolean;
  readonly policy: number;
  readonly tierDefault: boolean;
}

function benchEdges(r: () => number, endpoints: number, policies: number, n: number): BenchEdge[] {
  return Array.from({ length: n }, () => {
    const deny = r() < 0.2;
    return {
      src: Math.floor(r() * endpoints),
      dst: Math.floor(r() * endpoints),
      port: 8000 + Math.floor(r() * 20),
      deny,
      l7: r() < 0.3,
      policy: Math.floor(r() * policies),
      tierDefault: deny && r() < 0.5,
    };
  });
}

function edgeRecord(r: () => number, e: BenchEdge, endMs: number): FlowRecordInput {
  const d = endpoint(e.dst);
  return {
    start: new Date(endMs - 10_000).toISOString(),
    end: new Date(endMs).toISOString(),
    source: { ...endpoint(e.src), port: 30000 + Math.floor(r() * 30000) },
    destination: { ...d, port: e.port },
    protocol: 'TCP',
    ...(e.l7 ? { method: 'GET', path: `/api/v1/items/${Math.floor(r() * 100)}` } : {}),
    verdict: e.deny ? 'deny' : 'allow',
    point: e.l7 ? 'l7' : 'kernel',
    direction: 'ingress',
    provenance: e.tierDefault
      ? { kind: 'tier-default', tier: `tier-${e.policy % 5}` }
      : {
          kind: 'rule',
          tier: `tier-${e.policy % 5}`,
          policy: `${d.namespace}/policy-${e.policy}`,
          rule: e.policy % 4,
        },
    packets: 3,
    bytes: 180,
    count: 1 + Math.floor(r() * 5),
  };
}

/** `edgeRecord` as table columns (the same draws from `r` in the same order). */
function edgeRow(
  r: () => number,
  e: BenchEdge,
  endMs: number,
  node: string,
  labels: readonly string[],
): FlowRow {
  const s = endpoint(e.src);
  const d = endpoint(e.dst);
  const sport = 30000 + Math.floor(r() * 30000);
  const path = e.l7 ? `/api/v1/items/${Math.floor(r() * 100)}` : null;
  const count = 1 + Math.floor(r() * 5);
  return [
    endMs - 10_000,
    endMs,
    node,
    s.namespace,
    s.name,
    s.ip,
    sport,
    null,
    labels[e.src] ?? null,
    d.namespace,
    d.name,
    d.ip,
    e.port,
    null,
    labels[e.dst] ?? null,
    'TCP',
    e.l7 ? 'GET' : null,
    path,
    e.deny ? 'deny' : 'allow',
    e.l7 ? 'l7' : 'kernel',
    'ingress',
    e.tierDefault ? 'tier-default' : 'rule',
    `tier-${e.policy % 5}`,
    e.tierDefault ? null : `${d.namespace}/policy-${e.policy}`,
    e.tierDefault ? null : e.policy % 4,
    null,
    null,
    null,
    3,
    180,
    count,
  ];
}

/**
 * The query database: `n` records over the last 24 h in arrival order from 10 nodes, 2 000
 * endpoints in 50 namespaces, 500 policies; 95 % on a service graph of 1 500 steady edges (20 %
 * refused, 30 % at L7), 5 % random pairs (scans, strays: every one its own edge). Loaded with
 * `FlowStore.bulkLoad` (indexes and rollups built after the inserts).
 */
function buildDb(
  file: string,
  n: number,
  log: (s: string) => void,
): { store: FlowStore; edges: BenchEdge[]; buildS: number; cpuS: number; now: number } {
  const store = new FlowStore(file, {
    synchronous: 'OFF',
    retention: { maxRecords: n + 1, maxAgeMs: 30 * 86400_000, maxBytes: 64 * 1024 ** 3 },
  });
  const r = rng(42);
  const edges = benchEdges(r, 2000, 500, 1500);
  const now = Date.now();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  // Rows straight in the table's column order (no ISO strings, no record objects): the labels
  // of each endpoint serialised once.
  const labels = Array.from({ length: 2000 }, (_, i) => JSON.stringify(endpoint(i).labels));
  // The direct rows are exactly what the validated records would be stored as.
  for (const e of edges.slice(0, 50)) {
    const row = JSON.stringify(edgeRow(rng(9), e, now, 'node-0', labels));
    const rec = JSON.stringify(rowValues('node-0', edgeRecord(rng(9), e, now)));
    if (row !== rec) throw new Error(`bench row differs from the stored record:\n${row}\n${rec}`);
  }
  store.bulkLoad((add, addRow) => {
    for (let i = 0; i < n; i++) {
      // Spread over the last 24 h, roughly in arrival order.
      const endMs = now - 86400_000 + Math.floor((i / n) * 86400_000) - Math.floor(r() * 10_000);
      if (r() < 0.95) {
        const e = edges[Math.floor(r() * edges.length)] as BenchEdge;
        // Reported by the destination's node (ingress), as an agent would.
        addRow(edgeRow(r, e, endMs, `node-${e.dst % 10}`, labels));
      } else add(`node-${i % 10}`, record(r, 2000, 500, endMs));
      if (i > 0 && i % 1_000_000 === 0)
        log(
          `  inserted ${i} records (${Math.round(i / ((performance.now() - t0) / 1000))}/s), load ${loadavg()}`,
        );
    }
    log(
      `  inserted ${n} records in ${round((performance.now() - t0) / 1000, 1)} s; building indexes`,
    );
  });
  const buildS = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const cpuS = (c.user + c.system) / 1e6;
  log(
    `built ${n} records in ${round(buildS, 1)} s wall, ${round(cpuS, 1)} s CPU (${Math.round(n / buildS)} records/s), load ${loadavg()}`,
  );
  return { store, edges, buildS, cpuS, now };
}

function loadavg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/** How many records (or groups) a query's answer holds, to check that a window is not empty. */
function size(x: unknown): number {
  if (Array.isArray(x)) return x.length;
  if (typeof x === 'object' && x !== null && 'edges' in x)
    return (x as { edges: unknown[] }).edges.length;
  return 0;
}

function timed(q: () => unknown, runs = 7): number {
  q();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    q();
    times.push(performance.now() - t);
  }
  return round(median(times), 2);
}

/**
 * The query mix. `now` is the time the database's records were generated against (the build's
 * start): the build of 10 M records takes many minutes, and windows taken relative to the clock
 * after it would miss the newest records (an empty "last hour"). Every query must find something.
 */
function queries(
  store: FlowStore,
  edges: readonly BenchEdge[],
  now: number,
  log: (s: string) => void,
): Record<string, number> {
  const ep = (i: number) => {
    const e = endpoint(i);
    return { namespace: e.namespace, name: e.name };
  };
  // A steady edge decided by a policy rule (a tier default names no policy).
  const busy = edges.find((e, i) => i >= 7 && !e.tierDefault) as BenchEdge;
  const old = { sinceMs: now - 12 * 3600_000, untilMs: now - 11 * 3600_000 };
  const firstOld = store.query({ ...old, limit: 100 });
  const lastOld = firstOld[firstOld.length - 1];
  const mix: [string, () => unknown][] = [
    ['newest page', () => store.query({ limit: 100 })],
    [
      'endpoint, last hour',
      () => store.query({ endpoint: ep(busy.dst), sinceMs: now - 3600_000, limit: 100 }),
    ],
    ['endpoint, all', () => store.query({ endpoint: ep((edges[3] as BenchEdge).src), limit: 100 })],
    [
      'namespace + deny, last hour',
      () =>
        store.query({ namespace: 'ns-12', verdict: 'deny', sinceMs: now - 3600_000, limit: 100 }),
    ],
    [
      'policy, last 6 h',
      () =>
        store.query({
          policy: `${endpoint(busy.dst).namespace}/policy-${busy.policy}`,
          sinceMs: now - 6 * 3600_000,
          limit: 100,
        }),
    ],
    [
      'deny at l7, last hour',
      () => store.query({ verdict: 'deny', point: 'l7', sinceMs: now - 3600_000, limit: 100 }),
    ],
    ['old one-hour window (12 h ago)', () => store.query({ ...old, limit: 100 })],
    [
      'old window, next page (keyset)',
      () =>
        store.query({
          ...old,
          limit: 100,
          ...(lastOld ? { beforeKey: { endMs: Date.parse(lastOld.end), id: lastOld.id } } : {}),
        }),
    ],
  ];
  mix.push(
    [
      'one-hour window (since and until, 3 h ago)',
      () => store.query({ sinceMs: now - 3 * 3600_000, untilMs: now - 2 * 3600_000, limit: 100 }),
    ],
    [
      'verdict deny, last hour',
      () => store.query({ verdict: 'deny', sinceMs: now - 3600_000, limit: 100 }),
    ],
    [
      'point l7, last hour',
      () => store.query({ point: 'l7', sinceMs: now - 3600_000, limit: 100 }),
    ],
  );
  const out: Record<string, number> = {};
  for (const [name, q] of mix) {
    const found = size(q());
    if (found === 0) throw new Error(`query ${name} found nothing: its window misses the data`);
    out[name] = timed(q);
    log(`  query ${name}: ${out[name]} ms (${found} records)`);
  }
  // Side by side in the same run: the id-ordered plan of the previous version for the old window.
  out['old one-hour window, id order (before)'] = timed(
    () => store.query({ ...old, limit: 100, beforeId: Number.MAX_SAFE_INTEGER }),
    3,
  );
  log(
    `  query old window in id order (before): ${out['old one-hour window, id order (before)']} ms`,
  );
  // The aggregations, each beside the previous version's plan in the same run: minute rollups
  // plus raw edges (before the hour level) and, for one hour, the raw scan. Windows end at `now`
  // and start at an arbitrary millisecond, so every level is read (hours, edge minutes, raw).
  const hour = { sinceMs: now - 3600_000 };
  const day = { sinceMs: now - 86400_000 };
  const agg: [string, () => unknown, number][] = [
    ['graph, last hour', () => store.graph(hour), 3],
    ['graph, last hour, minute rollups (before)', () => store.graph(hour, 20000, 'minute'), 3],
    ['graph, last hour, raw scan', () => store.graph(hour, 20000, 'raw'), 1],
    ['graph, last 24 h', () => store.graph(day), 3],
    ['graph, last 24 h, minute rollups (before)', () => store.graph(day, 20000, 'minute'), 1],
    ['policy hits, last hour', () => store.policyHits(hour), 3],
    ['policy hits, last hour, minute rollups (before)', () => store.policyHits(hour, 'minute'), 3],
    ['policy hits, last hour, raw scan', () => store.policyHits(hour, 'raw'), 1],
    ['policy hits, last 24 h', () => store.policyHits(day), 3],
    ['policy hits, last 24 h, minute rollups (before)', () => store.policyHits(day, 'minute'), 1],
    [
      'policy hits of one namespace, last 24 h',
      () => store.policyHits({ ...day, namespace: 'ns-12' }),
      3,
    ],
  ];
  for (const [name, q, runs] of agg) {
    const c0 = process.cpuUsage();
    const found = size(q());
    if (found === 0) throw new Error(`${name} found nothing: its window misses the data`);
    const c = process.cpuUsage(c0);
    out[name] = timed(q, runs);
    log(
      `  ${name}: ${found} groups, ${out[name]} ms (first run ${round((c.user + c.system) / 1000, 0)} ms CPU), load ${loadavg()}`,
    );
  }
  log(`  rollup rows: ${JSON.stringify(store.rollupSizes())}, load ${loadavg()}`);
  return out;
}

async function consoleLoad(
  dir: string,
  log: (s: string) => void,
): Promise<{ cold: number; warm: number; observed: number; allowed: number } | undefined> {
  const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
  if (!chromium) {
    log('console: chromium not installed, skipped');
    return undefined;
  }
  const data = join(dir, 'console');
  const server = await runServer({
    listen: '127.0.0.1:0',
    dataDir: data,
    store: 'memory:',
    insecurePlaintext: false,
    rateLimit: false,
    staticRoute: consoleRoute,
    log: () => undefined,
    say: () => undefined,
  });
  const { chromium: pw } = await import('playwright-core');
  const browser = await pw.launch({
    executablePath: chromium,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    headless: true,
  });
  try {
    // 1,000 endpoints, 3,000 edges observed in the last hour.
    const r = rng(3);
    const now = Date.now();
    const records: FlowRecordInput[] = [];
    for (let i = 0; i < 3000; i++) {
      const rec = record(r, 1000, 200, now - 60_000);
      const s = i % 1000;
      records.push({
        ...rec,
        source: endpoint(s),
        destination: { ...endpoint((s * 13 + i) % 1000), port: 8080 },
      });
    }
    server.flows.ingest('bench-node', { records });
    const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    // The same 1,000 endpoints as pods, and per namespace a default deny plus one allow (pods of
    // one app from another app of the namespace, TCP 8080): 1,250 pairs policy allows.
    const docs: string[] = [];
    for (let k = 0; k < NAMESPACES; k++)
      docs.push(
        `apiVersion: v1\nkind: Namespace\nmetadata: {name: ns-${k}}`,
        `apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: isolate, namespace: ns-${k}}\nspec: {selector: all(), types: [Ingress]}`,
        `apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-app, namespace: ns-${k}}\nspec:\n  selector: app == 'app-${k % 40}'\n  types: [Ingress]\n  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'app-${(k + 10) % 40}'}, destination: {ports: [8080]}}]`,
      );
    for (let i = 0; i < 1000; i++) {
      const e = endpoint(i);
      docs.push(
        `apiVersion: v1\nkind: Pod\nmetadata: {name: ${e.name}, namespace: ${e.namespace}, labels: {app: ${e.labels.app}}}\nspec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}\nstatus: {podIP: ${e.ip}}`,
      );
    }
    const applied = await server.api.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: admin,
      body: docs.join('\n---\n'),
      headers: { 'content-type': 'application/yaml' },
    });
    if (applied.status !== 200) throw new Error(`apply failed: ${applied.body.slice(0, 300)}`);
    let allowed = 0;
    const times: number[] = [];
    for (let i = 0; i < 4; i++) {
      const ctx = await browser.newContext({
        ignoreHTTPSErrors: true,
        viewport: { width: 1400, height: 1000 },
      });
      await ctx.addInitScript({
        content: `sessionStorage.setItem('palisade.token', ${JSON.stringify(admin)})`,
      });
      const page = await ctx.newPage();
      const t0 = performance.now();
      await page.goto(`${server.url}/console/#/graph`);
      await page.waitForSelector('#app[data-ready="graph"]', { timeout: 120_000 });
      times.push(performance.now() - t0);
      const text = await page.innerText('main');
      if (!/1000 endpoints/.test(text))
        throw new Error(`the graph did not show 1000 endpoints: ${text.slice(0, 200)}`);
      allowed = await page.locator('#graph line.edge.policy').count();
      if (allowed === 0) throw new Error('the graph drew no policy edges');
      await ctx.close();
    }
    const cold = Math.round(times[0] ?? 0);
    const warm = Math.round(median(times.slice(1)));
    log(
      `console: graph of 1000 endpoints, 3000 observed + ${allowed} policy edges ready in ${cold} ms cold (bundle built, policy graph computed), ${warm} ms warm, load ${loadavg()}`,
    );
    return { cold, warm, observed: 3000, allowed };
  } finally {
    await browser.close();
    await server.stop();
  }
}

export async function runFlowsBench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), `palisade-bench-flows-${process.pid}-`));
  // PALISADE_BENCH_FLOWS=pipeline,queries,console picks parts (default: all three).
  const parts = new Set(
    (process.env['PALISADE_BENCH_FLOWS'] ?? 'pipeline,queries,console').split(','),
  );
  try {
    log(`load average at start: ${loadavg()}`);
    const recordsPerS = parts.has('pipeline') ? await pipeline(quick, log, dir) : undefined;
    // PALISADE_BENCH_FLOWS_RECORDS overrides the query database's size (a quick look).
    const n = Number(
      process.env['PALISADE_BENCH_FLOWS_RECORDS'] ?? (quick ? 1_000_000 : 10_000_000),
    );
    if (!Number.isSafeInteger(n) || n < 1000)
      throw new Error('PALISADE_BENCH_FLOWS_RECORDS must be at least 1000');
    let q: Record<string, number> | undefined;
    let build: { buildS: number; cpuS: number } | undefined;
    if (parts.has('queries')) {
      const b = buildDb(join(dir, 'flows.db'), n, log);
      build = { buildS: b.buildS, cpuS: b.cpuS };
      q = queries(b.store, b.edges, b.now, log);
      b.store.close();
      rmSync(join(dir, 'flows.db'), { force: true });
    }
    const typical = q
      ? median(
          Object.entries(q)
            .filter(
              ([k]) =>
                !k.startsWith('graph') && !k.startsWith('policy hits') && !k.includes('(before)'),
            )
            .map(([, v]) => v),
        )
      : undefined;
    const ui = parts.has('console') ? await consoleLoad(dir, log) : undefined;
    log('');
    log(`load average at the end: ${loadavg()}`);
    log(`| figure | value |`);
    log(`|---|---|`);
    if (recordsPerS !== undefined) log(`| records/s end to end, no shedding | ${recordsPerS} |`);
    if (build)
      log(
        `| build of ${n / 1e6} M records | ${round(build.buildS, 1)} s wall, ${round(build.cpuS, 1)} s CPU |`,
      );
    if (q) {
      log(`| query ms over ${n / 1e6} M records (median of the mix) | ${typical} |`);
      for (const [k, v] of Object.entries(q)) log(`| ${k} | ${v} ms |`);
    }
    if (ui)
      log(
        `| console graph, 1000 endpoints, ${ui.observed} observed + ${ui.allowed} policy edges | ${ui.cold} ms cold, ${ui.warm} ms warm |`,
      );
    return {
      ...(recordsPerS !== undefined ? { records_per_s: recordsPerS } : {}),
      ...(typical !== undefined ? { [quick ? 'query_ms_1m' : 'query_ms_10m']: typical } : {}),
      ...(q ? { queries_ms: q, stored_records: n } : {}),
      ...(build ? { build_s: round(build.buildS, 1), build_cpu_s: round(build.cpuS, 1) } : {}),
      ...(ui
        ? { console_load_ms_1k_endpoints: ui.warm, console_load_ms_1k_endpoints_cold: ui.cold }
        : {}),
      loadavg: loadavg(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
