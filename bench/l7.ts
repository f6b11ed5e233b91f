// `npm run bench -- l7 [--quick]`: the L7 path end to end, in one run with one load generator
// (bench/l7-load.ts) against three targets, on loopback addresses unique to this run:
//   (a) direct:   client → application (plaintext);
//   (b) palisade: client → outbound sidecar of reviews-v2 → mTLS (SVIDs from the bench's CA, via
//                 the agent) → inbound sidecar of ratings-v1 (20-rule L7 policy) → application;
//   (c) haproxy:  client → HAProxy "client side" → mTLS (certificates from a Palisade CA) →
//                 HAProxy "server side" (client certificate verified, 20 path/method ACLs) → app.
// Each sidecar, each HAProxy (nbthread 1) and the application run in their own process; the
// API server, agent and policy sync (FakeNft: no kernel rules, loopback only) and the load
// generator in this one. Also: p99 at a fixed 1 000 requests/s, the ext_authz benchmark (Check
// against a no-op server on the same gRPC stack), the sidecar's RSS after load, and the CPU per
// decision of the sidecar's outbound decision before (a full `check`) and after (`decideL7Egress`),
// and the policy sync's CPU per change, recomputing every subscriber or only the affected ones.

import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compile } from '@palisade/core';
import type { Engine, Resource } from '@palisade/core';
import { certificateChainPem } from '@palisade/pki';
import { endpointSocketPath } from '../packages/dataplane/src/agent-socket/protocol.js';
import { FakeNft } from '../packages/dataplane/src/nft/fake.js';
import { PolicyView } from '../packages/dataplane/src/sidecar/policy-view.js';
import {
  bookinfo,
  issue,
  loopbackPrefix,
  newCa,
  tempDir,
} from '../packages/dataplane/src/sidecar/test-fixtures.js';
import { SyncWorld, until } from '../packages/dataplane/src/sidecar/test-sync-fixture.js';
import { bundleEntry } from '../scripts/command-bundle.mjs';
import { runAuthzBench } from './authz.js';
import { closedLoop, openLoop } from './l7-load.js';
import { runPolicySyncMeasure } from './l7-policysync.js';
import type { LoadStats, Target } from './l7-load.js';

const TD = 'cluster.local';
const SA = (s: string): string => `spiffe://${TD}/ns/default/sa/${s}`;
const RULES = 20;
const PATH = '/ratings/1';

/** The 20-rule L7 policy on ratings: 19 rules that do not match the bench request, then one that does. */
export function twentyRulePolicy(): Record<string, unknown> {
  const ingress = Array.from({ length: RULES }, (_, i) => {
    const last = i === RULES - 1;
    return {
      action: 'Allow',
      protocol: 'TCP',
      source: { serviceAccounts: { names: ['bookinfo-reviews'] } },
      http: last
        ? { methods: ['GET'], paths: [{ prefix: '/ratings' }] }
        : { methods: [i % 2 === 0 ? 'POST' : 'GET'], paths: [{ prefix: `/api/v${i}/` }] },
    };
  });
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: 'bench-l7-20-rules', namespace: 'default' },
    spec: { order: 100, selector: "app == 'ratings'", types: ['Ingress'], ingress },
  };
}

/** The same 20 rules as HAProxy ACLs (method and path; the client certificate is verified). */
function haproxyAcls(): string {
  const lines: string[] = [];
  for (let i = 0; i < RULES; i++) {
    const last = i === RULES - 1;
    const method = last ? 'GET' : i % 2 === 0 ? 'POST' : 'GET';
    const prefix = last ? '/ratings' : `/api/v${i}/`;
    lines.push(`  http-request allow if { method ${method} } { path_beg ${prefix} }`);
  }
  lines.push('  http-request deny deny_status 403');
  return lines.join('\n');
}

interface Child {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly ready: Record<string, unknown>;
}

async function child(args: string[], what: string, stdin = true): Promise<Child> {
  const proc = spawn(args[0] as string, args.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()).slice(-4000));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${err}`)), 90_000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"ready"'));
      if (line) {
        clearTimeout(t);
        resolve(JSON.parse(line) as Record<string, unknown>);
      }
    });
    proc.on('exit', (c) => {
      clearTimeout(t);
      if (!stdin) resolve({ ready: true });
      reject(new Error(`${what} exited with ${String(c)}: ${err}`));
    });
  });
  return { proc, ready };
}

function stopChild(c: Child | undefined): Promise<void> {
  if (!c || c.proc.exitCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      c.proc.kill('SIGKILL');
      resolve();
    }, 3000);
    c.proc.on('exit', () => {
      clearTimeout(t);
      resolve();
    });
    c.proc.stdin.end();
    c.proc.kill('SIGTERM');
  });
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 102.4) / 10 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system) a process has used so far, in ms. */
function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/** CPU ms per thread kind of a process (user and system apart), e.g. `node user` → 120. */
function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      // Thread names: the main thread is the command, then "libuv-worker", "V8 Worker", ...
      const name = t === String(pid) ? 'main' : f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      for (const [kind, v] of [
        ['user', rest[11]],
        ['sys', rest[12]],
      ] as const) {
        const k = `${name} ${kind}`;
        out.set(k, (out.get(k) ?? 0) + Number(v) * 10);
      }
    } catch {
      // the thread ended
    }
  }
  return out;
}

const loadavg = (): string =>
  readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

async function waitListening(host: string, port: number): Promise<void> {
  const { connect } = await import('node:net');
  await until(
    `${host}:${port} listening`,
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect({ host, port });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    30_000,
  );
}

/** CPU µs per outbound decision: the full check the sidecar used before, and decideL7Egress. */
function outboundDecisionCpu(resources: Resource[], from: string, to: string, n: number) {
  const engine: Engine = compile(resources);
  const probe = { from, to, protocol: 'TCP', port: 9080, method: 'GET', path: PATH, headers: {} };
  const cpu = (f: () => unknown): number => {
    for (let i = 0; i < 500; i++) f();
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) f();
    const c = process.cpuUsage(c0);
    return Math.round(((c.user + c.system) / n) * 100) / 100;
  };
  const before = cpu(() => engine.check(probe, false));
  const after = cpu(() => engine.decideL7Egress(probe));
  const v = PolicyView.fromEngine(engine, from, 1);
  if (!v.ok) throw new Error(v.reason);
  const view = v.view;
  const viaView = cpu(() =>
    view.decideOutbound({
      destinationIp: to,
      port: 9080,
      method: 'GET',
      path: PATH,
      host: undefined,
      headers: {},
    }),
  );
  const fullVerdict = engine.check(probe, false);
  const egress = engine.decideL7Egress(probe);
  if (
    !fullVerdict.ok ||
    !egress.ok ||
    fullVerdict.result.l7.egress?.verdict !== egress.result?.verdict
  )
    throw new Error('decideL7Egress and check disagree on the bench probe');
  return { check_us: before, decideL7Egress_us: after, decideOutbound_us: viaView };
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');

export async function runL7Bench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const MS = quick ? 2500 : 8000;
  // PALISADE_L7_ONLY=palisade,haproxy: measure only these targets (add ext_authz for that part),
  // a shorter run while tuning.
  const only = process.env['PALISADE_L7_ONLY']?.split(',');
  const CONNS = 16;
  const P = loopbackPrefix();
  const REVIEWS = `${P}.22`;
  const RATINGS = `${P}.24`;
  const APP = `${P}.124`;
  const APP_PORT = 9080;
  const HAP_IN = 19443;
  const HAP_OUT = 19080;
  const dir = tempDir('bench-l7');
  const children: Child[] = [];
  const world = new SyncWorld(
    join(dir.path, 'server'),
    `bench-l7-${process.pid}`,
    join(dir.path, 'ep'),
  );
  const results: Record<string, unknown> = { loadavg_start: loadavg() };
  try {
    // ---------------------------------------------------------------- micro: outbound decision
    const res = bookinfo({ 'default/reviews-v2': REVIEWS, 'default/ratings-v1': RATINGS });
    const micro = outboundDecisionCpu(
      [...res, twentyRulePolicy() as unknown as Resource],
      'default/reviews-v2',
      RATINGS,
      quick ? 5000 : 20_000,
    );
    results['outbound_decision_cpu'] = micro;
    log(
      `outbound decision, CPU µs: full check ${micro.check_us}, decideL7Egress ${micro.decideL7Egress_us}, PolicyView.decideOutbound ${micro.decideOutbound_us}   (load ${loadavg()})`,
    );

    if (!only) results['policysync'] = runPolicySyncMeasure(quick, log);

    // ---------------------------------------------------------------- control plane and agent
    await world.startServer();
    await world.applyBookinfo([
      { pod: 'default/ratings-v1', ip: RATINGS, iface: 'lo' },
      { pod: 'default/reviews-v2', ip: REVIEWS, iface: 'lo' },
    ]);
    await world.apply([twentyRulePolicy()]);
    await world.startAgent({ runner: new FakeNft().runner });
    const sock = (name: string): string =>
      endpointSocketPath(join(dir.path, 'ep'), 'default', name);
    await until(
      'endpoint sockets',
      () => existsSync(sock('ratings-v1')) && existsSync(sock('reviews-v2')),
      60_000,
    );

    const tsx = [process.execPath, '--import', 'tsx', join(import.meta.dirname, 'l7-child.ts')];
    // The sidecars run as `palisade sidecar` does: from a bundle of plain JavaScript (the same
    // esbuild options, scripts/command-bundle.mjs), not through tsx. PALISADE_L7_FROM_SOURCE=1:
    // through tsx, as before the bundle.
    const fromSource = process.env['PALISADE_L7_FROM_SOURCE'] === '1';
    const childJs = join(dir.path, 'l7-child.mjs');
    if (!fromSource) {
      const built = await bundleEntry(join(import.meta.dirname, 'l7-child.ts'), childJs);
      const js = built.outputFiles.find((f) => f.path.endsWith('.mjs'));
      if (!js) throw new Error('the bench child did not bundle');
      writeFileSync(childJs, js.text);
    }
    // PALISADE_L7_PROF=DIR: each sidecar writes a CPU profile into DIR when it stops.
    const prof = process.env['PALISADE_L7_PROF'];
    const sidecarCmd = [
      process.execPath,
      // As the demo starts `palisade sidecar` (docs/design/sidecar.md, "Memory");
      // PALISADE_L7_NODE_FLAGS replaces these Node flags.
      ...(process.env['PALISADE_L7_NODE_FLAGS'] ?? '--max-semi-space-size=1')
        .split(' ')
        .filter((x) => x),
      ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []),
      ...(fromSource ? tsx.slice(1) : [childJs]),
    ];
    results['sidecar_runs_from'] = fromSource ? 'sources through tsx' : 'bundle';
    const app = await child([...tsx, 'app', JSON.stringify({ host: APP, port: APP_PORT })], 'app');
    children.push(app);
    const ratingsSc = await child(
      [
        ...sidecarCmd,
        'sidecar',
        JSON.stringify({
          endpoint: 'default/ratings-v1',
          agentSocket: sock('ratings-v1'),
          appHost: APP,
          appPort: APP_PORT,
          inboundHost: RATINGS,
          inboundPort: 9080,
          outboundHost: RATINGS,
          sourceAddress: RATINGS,
          upstreamPort: 9080,
        }),
        join(dir.path, 'mem-ratings.json'),
      ],
      'ratings sidecar',
    );
    children.push(ratingsSc);
    const reviewsSc = await child(
      [
        ...sidecarCmd,
        'sidecar',
        JSON.stringify({
          endpoint: 'default/reviews-v2',
          agentSocket: sock('reviews-v2'),
          appHost: `${P}.122`,
          appPort: APP_PORT,
          inboundHost: REVIEWS,
          inboundPort: 0,
          outboundHost: REVIEWS,
          sourceAddress: REVIEWS,
          upstreamPort: 9080,
        }),
        join(dir.path, 'mem-reviews.json'),
      ],
      'reviews sidecar',
    );
    children.push(reviewsSc);
    const outboundPort = Number(reviewsSc.ready['outboundPort']);
    {
      // What the sidecars use with no traffic (policy sync, flow reports, timers): CPU ms per s.
      const pids = [Number(ratingsSc.ready['pid']), Number(reviewsSc.ready['pid'])];
      const c0 = pids.map(cpuMs);
      await new Promise((r) => setTimeout(r, quick ? 2000 : 5000));
      const used = pids.map((p, i) => (cpuMs(p) - (c0[i] ?? 0)) / (quick ? 2 : 5));
      results['sidecar_idle_cpu_ms_per_s'] = used;
      log(
        `sidecars idle: ${used.map((u) => u.toFixed(1)).join(' / ')} ms CPU per s   (load ${loadavg()})`,
      );
    }
    results['rss_idle'] = {
      ratings_sidecar_mb: rssMb(Number(ratingsSc.ready['pid'])),
      reviews_sidecar_mb: rssMb(Number(reviewsSc.ready['pid'])),
      app_mb: rssMb(Number(app.ready['pid'])),
    };

    const targets: Record<string, Target> = {
      direct: {
        host: APP,
        port: APP_PORT,
        hostHeader: `${APP}:${APP_PORT}`,
        path: PATH,
        localAddress: REVIEWS,
      },
      palisade: {
        host: REVIEWS,
        port: outboundPort,
        hostHeader: `${RATINGS}:9080`,
        path: PATH,
        localAddress: REVIEWS,
      },
    };

    // ---------------------------------------------------------------- HAProxy
    const haproxy = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
    const hapPids: number[] = [];
    if (haproxy.status !== 0) {
      log(
        'HAProxy is not installed, so (c) is skipped: apt-get install -y haproxy (Debian), then run again',
      );
      results['haproxy'] = 'not installed (apt-get install -y haproxy)';
    } else {
      results['haproxy_version'] = haproxy.stdout.split('\n')[0];
      const ca = await newCa(join(dir.path, 'hap-ca'), TD);
      const srv = await issue(ca, SA('bookinfo-ratings'));
      const cli = await issue(ca, SA('bookinfo-reviews'));
      const pem = (name: string, m: typeof srv): string => {
        const p = join(dir.path, `${name}.pem`);
        writeFileSync(p, `${certificateChainPem(m)}${m.keyPem}`, { mode: 0o600 });
        return p;
      };
      const bundle = join(dir.path, 'bundle.pem');
      writeFileSync(bundle, srv.bundlePem);
      const common = `global
  nbthread 1
  maxconn 8192
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
`;
      const inCfg = `${common}
frontend ratings_in
  bind ${RATINGS}:${HAP_IN} ssl crt ${pem('hap-ratings', srv)} ca-file ${bundle} verify required
${haproxyAcls()}
  default_backend app
backend app
  http-reuse always
  server app ${APP}:${APP_PORT}
`;
      const outCfg = `${common}
frontend reviews_out
  bind ${REVIEWS}:${HAP_OUT}
  default_backend ratings
backend ratings
  http-reuse always
  source ${REVIEWS}
  server ratings ${RATINGS}:${HAP_IN} ssl crt ${pem('hap-reviews', cli)} ca-file ${bundle} verify required
`;
      for (const [name, cfg] of [
        ['in', inCfg],
        ['out', outCfg],
      ] as const) {
        const path = join(dir.path, `haproxy-${name}.cfg`);
        writeFileSync(path, cfg);
        const check = spawnSync('haproxy', ['-c', '-q', '-f', path], { encoding: 'utf8' });
        if (check.status !== 0) throw new Error(`haproxy config ${name}: ${check.stderr}`);
        const proc = spawn('haproxy', ['-db', '-f', path], { stdio: ['pipe', 'pipe', 'pipe'] });
        children.push({ proc, ready: {} });
        if (proc.pid !== undefined) hapPids.push(proc.pid);
      }
      await waitListening(RATINGS, HAP_IN);
      await waitListening(REVIEWS, HAP_OUT);
      targets['haproxy'] = {
        host: REVIEWS,
        port: HAP_OUT,
        hostHeader: `${RATINGS}:9080`,
        path: PATH,
        localAddress: REVIEWS,
      };
    }

    // Every target answers 200 before anything is measured (and a denied path is refused).
    for (const [name, t] of Object.entries(targets)) {
      const w = await closedLoop(t, 2, 300, true);
      if (w.requests === 0) throw new Error(`${name}: no successful request (${w.errors} errors)`);
      if (name !== 'direct') {
        const denied = await closedLoop({ ...t, path: '/admin' }, 1, 100, true);
        if (denied.requests !== 0) throw new Error(`${name}: /admin was not refused`);
      }
    }

    // ---------------------------------------------------------------- measurements
    type Cell = LoadStats & {
      loadavg: string;
      proxy_cpu_us_per_request: number | null;
      /** Palisade only: the same CPU split by thread and user/system time, µs per request. */
      proxy_cpu_by_thread?: Record<string, number>;
    };
    const table: Record<string, Record<string, Cell>> = {};
    // The CPU the proxies of a target used per request (both sidecars, or both HAProxies): a
    // figure a busy machine distorts far less than throughput or latency.
    const proxyPids: Record<string, number[]> = {
      direct: [],
      palisade: [Number(ratingsSc.ready['pid']), Number(reviewsSc.ready['pid'])],
      haproxy: hapPids,
    };
    const proxyCpu = (name: string): number =>
      (proxyPids[name] ?? []).reduce((a, pid) => a + cpuMs(pid), 0);
    const threads = (name: string): Map<string, number> => {
      const sum = new Map<string, number>();
      for (const pid of name === 'palisade' ? (proxyPids[name] ?? []) : [])
        for (const [k, v] of threadCpuMs(pid)) sum.set(k, (sum.get(k) ?? 0) + v);
      return sum;
    };
    const put = (
      mode: string,
      name: string,
      s: LoadStats,
      cpu0: number,
      th0: Map<string, number>,
    ): void => {
      const used = proxyCpu(name) - cpu0;
      const n = s.requests + s.errors;
      const byThread: Record<string, number> = {};
      for (const [k, v] of threads(name)) {
        const d = v - (th0.get(k) ?? 0);
        if (d > 0 && n > 0) byThread[k] = Math.round((d * 1000) / n);
      }
      (table[mode] ??= {})[name] = {
        ...s,
        loadavg: loadavg(),
        proxy_cpu_us_per_request:
          name === 'direct' || s.requests === 0 ? null : Math.round((used * 1000) / n),
        ...(name === 'palisade' ? { proxy_cpu_by_thread: byThread } : {}),
      };
    };
    const names = Object.keys(targets).filter((n) => !only || only.includes(n));
    for (const [mode, run] of [
      ['keep-alive, max (16 conns)', (t: Target) => closedLoop(t, CONNS, MS, true)],
      [
        'new connection per request, max (16 in flight)',
        (t: Target) => closedLoop(t, CONNS, MS, false),
      ],
      ['keep-alive, fixed 1000 req/s', (t: Target) => openLoop(t, 1000, MS, true)],
      ['new connection per request, fixed 200 req/s', (t: Target) => openLoop(t, 200, MS, false)],
    ] as const) {
      for (const name of names) {
        const t = targets[name] as Target;
        await closedLoop(t, 4, quick ? 300 : 1000, mode.startsWith('keep')); // warm-up
        const cpu0 = proxyCpu(name);
        const th0 = threads(name);
        put(mode, name, await run(t), cpu0, th0);
      }
    }
    const rss = {
      ratings_sidecar_mb: rssMb(Number(ratingsSc.ready['pid'])),
      reviews_sidecar_mb: rssMb(Number(reviewsSc.ready['pid'])),
      haproxy_mb: hapPids.map(rssMb),
      app_mb: rssMb(Number(app.ready['pid'])),
    };
    results['rss_after_load'] = rss;
    // Where the sidecars' memory is (V8 heap spaces, buffers), from the processes themselves.
    const mem: Record<string, unknown> = {};
    for (const [n, c] of [
      ['ratings', ratingsSc],
      ['reviews', reviewsSc],
    ] as const) {
      const f = join(dir.path, `mem-${n}.json`);
      c.proc.kill('SIGUSR2');
      await until(`${n} memory figures`, () => existsSync(f), 10_000).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
      try {
        mem[n] = JSON.parse(readFileSync(f, 'utf8')) as unknown;
      } catch {
        mem[n] = 'not reported';
      }
    }
    results['sidecar_memory_after_load_mb'] = mem;
    log(`sidecar memory after load, MB: ${JSON.stringify(mem)}`);
    results['l7'] = table;

    log('');
    log(`L7 path, ${MS} ms per cell; latency ms; load generator: bench/l7-load.ts (one process)`);
    for (const [mode, row] of Object.entries(table)) {
      log(`\n${mode}`);
      log(
        `  ${'target'.padEnd(10)}${'req/s'.padStart(9)}${'p50'.padStart(9)}${'p90'.padStart(9)}${'p99'.padStart(9)}${'errors'.padStart(8)}${'conns'.padStart(7)}${'proxy CPU µs/req'.padStart(18)}   loadavg`,
      );
      for (const [name, s] of Object.entries(row))
        log(
          `  ${name.padEnd(10)}${String(s.rps).padStart(9)}${f1(s.p50).padStart(9)}${f1(s.p90).padStart(9)}${f1(s.p99).padStart(9)}${String(s.errors).padStart(8)}${String(s.connections).padStart(7)}${String(s.proxy_cpu_us_per_request ?? '-').padStart(18)}   ${s.loadavg}`,
        );
      const pal = row['palisade']?.proxy_cpu_by_thread;
      if (pal)
        log(
          `    palisade CPU by thread, µs/req: ${Object.entries(pal)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}`,
        );
    }
    const fixed = table['keep-alive, fixed 1000 req/s'] ?? {};
    const maxKa = table['keep-alive, max (16 conns)'] ?? {};
    const addedP99 = (fixed['palisade']?.p99 ?? NaN) - (fixed['direct']?.p99 ?? NaN);
    const addedP99Hap = (fixed['haproxy']?.p99 ?? NaN) - (fixed['direct']?.p99 ?? NaN);
    const ratio = (maxKa['palisade']?.rps ?? NaN) / (maxKa['haproxy']?.rps ?? NaN);
    const maxNew = table['new connection per request, max (16 in flight)'] ?? {};
    const ratioNew = (maxNew['palisade']?.rps ?? NaN) / (maxNew['haproxy']?.rps ?? NaN);
    const maxRss = Math.max(rss.ratings_sidecar_mb, rss.reviews_sidecar_mb);
    const targetsMet = {
      added_p99_at_1k_ms: Math.round(addedP99 * 1000) / 1000,
      added_p99_at_1k_under_1ms: addedP99 < 1,
      throughput_vs_haproxy_keepalive: Math.round(ratio * 100) / 100,
      throughput_vs_haproxy_new_conn: Math.round(ratioNew * 100) / 100,
      throughput_at_least_half_of_haproxy: ratio >= 0.5,
      sidecar_rss_mb: maxRss,
      sidecar_rss_under_60mb: maxRss < 60,
    };
    results['targets'] = targetsMet;
    results['haproxy_added_p99_at_1k_ms'] = Math.round(addedP99Hap * 1000) / 1000;
    log('');
    log(
      `added p99 at 1000 req/s (keep-alive): palisade ${f1(addedP99)} ms (target < 1 ms: ${addedP99 < 1 ? 'met' : 'NOT met'}), haproxy ${f1(addedP99Hap)} ms`,
    );
    log(
      `max throughput vs HAProxy: keep-alive ${f1(ratio)}, new connection ${f1(ratioNew)} (target >= 0.5: ${ratio >= 0.5 ? 'met' : 'NOT met'})`,
    );
    log(
      `RSS after load: sidecars ${rss.ratings_sidecar_mb} MB (ratings), ${rss.reviews_sidecar_mb} MB (reviews) (target < 60 MB: ${maxRss < 60 ? 'met' : 'NOT met'}); haproxy ${rss.haproxy_mb.join(', ')} MB; app ${rss.app_mb} MB`,
    );
  } finally {
    for (const c of children.reverse()) await stopChild(c);
    await world.stop();
    dir.cleanup();
  }

  // ---------------------------------------------------------------- ext_authz
  if (only && !only.includes('ext_authz')) return results;
  log('');
  log(
    `ext_authz (bench/authz.ts: the Palisade server and a no-op server on the same proto and gRPC stack), load ${loadavg()}`,
  );
  results['ext_authz'] = await runAuthzBench(quick, log);
  results['loadavg_end'] = loadavg();
  return results;
}
