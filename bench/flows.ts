// The `flows` benchmark (DESIGN §5): records per second the node-to-store pipeline sustains end
// to end without shedding (observations → aggregator → HTTPS shipper with a node token → a live
// server → the SQLite flow store), query latency over 10 million stored records (the database is
// built here, in a temp dir, not in tests), and the console's load time for a graph of 1,000
// endpoints in Debian chromium.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlowStore } from '../packages/controlplane/src/flows/flow-store.js';
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

function buildDb(file: string, n: number, log: (s: string) => void): FlowStore {
  const store = new FlowStore(file, {
    synchronous: 'OFF',
    retention: { maxRecords: n + 1, maxAgeMs: 30 * 86400_000 },
  });
  const r = rng(42);
  const now = Date.now();
  const batch = 50_000;
  const t0 = performance.now();
  for (let done = 0; done < n; done += batch) {
    const records: FlowRecordInput[] = [];
    for (let i = 0; i < Math.min(batch, n - done); i++) {
      // Spread over the last 24 h, roughly in arrival order.
      const endMs =
        now - 86400_000 + Math.floor(((done + i) / n) * 86400_000) - Math.floor(r() * 60_000);
      records.push(record(r, 2000, 500, endMs));
    }
    store.ingest(`node-${done % 10}`, { records });
    if ((done / batch) % 20 === 0)
      log(
        `  built ${done + records.length} records (${Math.round((done + records.length) / ((performance.now() - t0) / 1000))}/s)`,
      );
  }
  log(`built ${n} records in ${round((performance.now() - t0) / 1000, 1)} s`);
  return store;
}

function queries(store: FlowStore, log: (s: string) => void): Record<string, number> {
  const now = Date.now();
  const mix: [string, () => unknown][] = [
    ['newest page', () => store.query({ limit: 100 })],
    [
      'endpoint, last hour',
      () =>
        store.query({
          endpoint: { namespace: 'ns-7', name: 'ep-1207' },
          sinceMs: now - 3600_000,
          limit: 100,
        }),
    ],
    [
      'endpoint, all',
      () => store.query({ endpoint: { namespace: 'ns-3', name: 'ep-53' }, limit: 100 }),
    ],
    [
      'namespace + deny, last hour',
      () =>
        store.query({ namespace: 'ns-12', verdict: 'deny', sinceMs: now - 3600_000, limit: 100 }),
    ],
    [
      'policy, last 6 h',
      () => store.query({ policy: 'ns-9/policy-259', sinceMs: now - 6 * 3600_000, limit: 100 }),
    ],
    [
      'deny at l7, last hour',
      () => store.query({ verdict: 'deny', point: 'l7', sinceMs: now - 3600_000, limit: 100 }),
    ],
    [
      'page 2 of a time window',
      () =>
        store.query({
          sinceMs: now - 12 * 3600_000,
          untilMs: now - 11 * 3600_000,
          limit: 100,
        }),
    ],
  ];
  const out: Record<string, number> = {};
  for (const [name, q] of mix) {
    q();
    const times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      q();
      times.push(performance.now() - t);
    }
    out[name] = round(median(times), 2);
    log(`  query ${name}: ${out[name]} ms`);
  }
  const tg = performance.now();
  const g = store.graph({ sinceMs: now - 3600_000 });
  out['graph, last hour'] = round(performance.now() - tg, 1);
  log(`  graph of the last hour: ${g.edges.length} edges, ${out['graph, last hour']} ms`);
  const th = performance.now();
  store.policyHits({ sinceMs: now - 3600_000 });
  out['policy hits, last hour'] = round(performance.now() - th, 1);
  log(`  policy hits of the last hour: ${out['policy hits, last hour']} ms`);
  return out;
}

async function consoleLoad(
  dir: string,
  log: (s: string) => void,
): Promise<{ cold: number; warm: number } | undefined> {
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
      await ctx.close();
    }
    const cold = Math.round(times[0] ?? 0);
    const warm = Math.round(median(times.slice(1)));
    log(
      `console: graph of 1000 endpoints / 3000 edges ready in ${cold} ms cold (bundle built), ${warm} ms warm`,
    );
    return { cold, warm };
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
  try {
    const recordsPerS = await pipeline(quick, log, dir);
    const n = quick ? 1_000_000 : 10_000_000;
    const store = buildDb(join(dir, 'flows.db'), n, log);
    const q = queries(store, log);
    store.close();
    const typical = median(
      Object.entries(q)
        .filter(([k]) => !k.startsWith('graph') && !k.startsWith('policy hits'))
        .map(([, v]) => v),
    );
    const ui = await consoleLoad(dir, log);
    log('');
    log(`| figure | value |`);
    log(`|---|---|`);
    log(`| records/s end to end, no shedding | ${recordsPerS} |`);
    log(`| query ms over ${n / 1e6} M records (median of the mix) | ${typical} |`);
    for (const [k, v] of Object.entries(q)) log(`| ${k} | ${v} ms |`);
    if (ui) log(`| console graph, 1000 endpoints | ${ui.cold} ms cold, ${ui.warm} ms warm |`);
    return {
      records_per_s: recordsPerS,
      [quick ? 'query_ms_1m' : 'query_ms_10m']: typical,
      ...(quick ? {} : { query_ms_10m: typical }),
      queries_ms: q,
      stored_records: n,
      ...(ui
        ? { console_load_ms_1k_endpoints: ui.warm, console_load_ms_1k_endpoints_cold: ui.cold }
        : {}),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
