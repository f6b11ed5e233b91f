// `npm run bench -- agent [--quick]`: the node agent end to end. A real API server (SQLite, loopback)
// holds 100 local workload endpoints of this node, 1000 remote pods and N policies (100 and 1k);
// the agent applies inside a network namespace it does not share with the host. Each sample edits
// one policy through the API (HTTP PUT) and waits until the agent reports that revision committed
// in the kernel (`nft -f` returned): p50/p99 policy-to-kernel latency. Then a membership-only
// change (a remote pod's label) the same way. Then traffic (iperf3, when installed) between two
// namespaces through the node namespace: no table, Palisade's table with 1k policies, and an
// equivalent linear iptables-nft ruleset: throughput and new connections per second.
// Needs root. Never touches the host's own rules or interfaces.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Resource } from '@palisade/core';
import { runServer } from '@palisade/controlplane';
import { Agent, ApiClient } from '@palisade/dataplane/agent';
import type { ApplyTrace } from '@palisade/dataplane/agent';
import { benchResources } from './dataplane.js';

const NODE = 'bench-node';
const LOCAL = 100;

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? 0;
}
const round = (x: number) => Math.round(x * 10) / 10;

function localWeps(): Resource[] {
  return Array.from({ length: LOCAL }, (_, i) => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'WorkloadEndpoint',
    metadata: { name: `${NODE}-k8s-local--${i}-eth0`, namespace: 'bench' },
    spec: {
      node: NODE,
      orchestrator: 'k8s',
      pod: `local-${i}`,
      endpoint: 'eth0',
      interfaceName: `pb${i}`,
      ipNetworks: [`10.200.0.${i + 1}/32`],
    },
  }));
}

async function applyAll(url: string, token: string, resources: Resource[]): Promise<void> {
  const body = resources.map((r) => JSON.stringify(r)).join('\n---\n');
  const r = await fetch(`${url}/api/v1/apply`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/yaml' },
    body,
  });
  if (r.status !== 200)
    throw new Error(`apply: HTTP ${r.status} ${(await r.text()).slice(0, 500)}`);
}

export async function latency(
  policies: number,
  samples: number,
  ns: string | undefined,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), `palisade-bench-agent-${process.pid}-`));
  const server = await runServer({
    listen: '127.0.0.1:0',
    dataDir: dir,
    store: `sqlite:${join(dir, 'store.db')}`,
    insecurePlaintext: true,
    rateLimit: false,
    log: () => undefined,
    say: () => undefined,
  });
  let agent: Agent | undefined;
  try {
    const adminToken = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    const admin = new ApiClient({ server: server.url, token: adminToken });
    const all = benchResources(policies);
    const nonPolicy = all.filter((r) => r.kind !== 'NetworkPolicy');
    await applyAll(server.url, adminToken, [...nonPolicy, ...localWeps()]);
    const pols = all.filter((r) => r.kind === 'NetworkPolicy');
    for (let i = 0; i < pols.length; i += 500)
      await applyAll(server.url, adminToken, pols.slice(i, i + 500));
    const tok = await admin.call('POST', '/api/v1/tokens', { node: NODE });
    const lines: string[] = [];
    const traces: ApplyTrace[] = [];
    let notifiedAt = 0;
    agent = new Agent({
      trace: (x) => traces.push(x),
      server: server.url,
      token: (tok.body as { token: string }).token,
      node: NODE,
      table: 'palisade_bench',
      ...(ns !== undefined ? { netns: ns } : {}),
      resyncMs: 0,
      say: (l) => lines.push(l),
    });
    let t = performance.now();
    agent.start();
    const applied = (rv: number, ms = 120_000) =>
      new Promise<void>((resolve, reject) => {
        const done = () => Number(agent?.status().appliedRevision ?? -1) >= rv;
        if (done()) return resolve();
        const timer = setTimeout(() => {
          off?.();
          reject(
            new Error(`revision ${rv} not applied in ${ms} ms; ${lines.slice(-3).join(' | ')}`),
          );
        }, ms);
        const off = agent?.onApplied(() => {
          if (!done()) return;
          notifiedAt = performance.now();
          clearTimeout(timer);
          off?.();
          resolve();
        });
      });
    const first = await admin.call('GET', '/api/v1/projectcalico.org/NetworkPolicy/bench/pol-0');
    const rv0 = Number(
      (first.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
    );
    // The first ruleset: a full calculation and apply (minutes at 10k on a loaded machine).
    await applied(rv0, policies >= 10_000 ? 900_000 : 120_000);
    const startMs = performance.now() - t;
    const status = agent.status();
    const write = async (r: Resource): Promise<number> => {
      const m = r.metadata;
      const path =
        r.kind === 'Pod'
          ? `/api/v1/core/Pod/bench/${m.name}`
          : `/api/v1/projectcalico.org/NetworkPolicy/bench/${m.name}`;
      const res = await admin.call('PUT', path, r);
      if (res.status !== 200)
        throw new Error(`PUT ${path}: ${res.status} ${JSON.stringify(res.body)}`);
      return Number(
        (res.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
      );
    };
    const lat: number[] = [];
    // Per sample, where the time went: stage → [wall ms, cpu ms].
    const stages: Record<string, { wall: number[]; cpu: number[] }> = {};
    const stage = (name: string, wall: number, cpu = NaN) => {
      const s = (stages[name] ??= { wall: [], cpu: [] });
      s.wall.push(wall);
      if (Number.isFinite(cpu)) s.cpu.push(cpu);
    };
    const sampleBreakdown = (t0: number, tPut: number, rv: number) => {
      // The apply that brought this revision into the kernel (possibly folding other events).
      const tr = traces.find((x) => Number(x.revision ?? -1) >= rv && x.doneAt >= t0);
      if (!tr) return;
      stage('api write (PUT returned)', tPut - t0);
      if (tr.firstEventAt !== undefined && tr.lastEventAt !== undefined) {
        stage('write → watch event at agent', tr.firstEventAt - t0);
        stage('event handling (loader, engine upsert)', tr.feedMs, tr.feedCpuMs);
        stage('debounce and queue', tr.startedAt - tr.lastEventAt - tr.feedMs / tr.events);
      }
      stage('calculation', tr.calcMs, tr.calcCpuMs);
      stage('render', tr.renderMs, tr.renderCpuMs);
      stage('kernel (nft commit)', tr.kernelMs, tr.kernelCpuMs);
      stage('applied → seen by the writer', notifiedAt - tr.doneAt);
    };
    const c0 = process.cpuUsage();
    for (let k = 0; k < samples; k++) {
      const p = pols[(k * 37) % pols.length] as Resource & {
        spec: { ingress: { destination: { ports: unknown[] } }[] };
      };
      const edited = structuredClone(p);
      (edited.spec.ingress[0] as { destination: { ports: unknown[] } }).destination.ports = [
        2000 + k,
        'http',
      ];
      await new Promise((r) => setTimeout(r, 30)); // let the previous apply's tail settle
      t = performance.now();
      const rv = await write(edited);
      const tPut = performance.now();
      await applied(rv);
      lat.push(performance.now() - t);
      sampleBreakdown(t, tPut, rv);
    }
    const cTotal = process.cpuUsage(c0);
    const cpuPerEdit = (cTotal.user + cTotal.system) / 1000 / Math.max(1, samples);
    const mem: number[] = [];
    for (let k = 0; k < Math.max(5, Math.floor(samples / 2)); k++) {
      await new Promise((r) => setTimeout(r, 30));
      t = performance.now();
      await applied(
        await write({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            name: `remote-${k}`,
            namespace: 'bench',
            labels: { role: `peer-${(k + 1) % 500}` },
          },
          spec: { nodeName: 'elsewhere', containers: [{ name: 'c' }] },
          status: { podIP: `10.201.0.${k + 1}` },
        }),
      );
      mem.push(performance.now() - t);
    }
    const appliedLines = lines.filter((l) => l.startsWith('applied revision'));
    const kinds = appliedLines.map((l) => /\((\w+),/.exec(l)?.[1]);
    // The agent's own breakdown of every apply after the first: calculation, render, kernel.
    const part = (re: RegExp) =>
      appliedLines
        .slice(1)
        .map((l) => Number(re.exec(l)?.[1] ?? NaN))
        .filter((x) => Number.isFinite(x));
    const calcMs = part(/calc (\d+) ms/);
    const renderMs = part(/render (\d+) ms/);
    const kernelMs = part(/kernel (\d+) ms/);
    const via = /via (\w+)/.exec(appliedLines.at(-1) ?? '')?.[1] ?? 'unknown';
    const out = {
      policies,
      rules: status.ruleCount,
      agent_start_to_kernel_ms: round(startMs),
      policy_to_kernel_p50_ms: round(quantile(lat, 0.5)),
      policy_to_kernel_p99_ms: round(quantile(lat, 0.99)),
      membership_to_kernel_p50_ms: round(quantile(mem, 0.5)),
      membership_to_kernel_p99_ms: round(quantile(mem, 0.99)),
      samples: lat.length,
      apply_calc_p50_ms: quantile(calcMs, 0.5),
      apply_render_p50_ms: quantile(renderMs, 0.5),
      apply_kernel_p50_ms: quantile(kernelMs, 0.5),
      apply_kernel_p99_ms: quantile(kernelMs, 0.99),
      load: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
      session: via,
      process_cpu_per_edit_ms: round(cpuPerEdit),
      breakdown: Object.fromEntries(
        Object.entries(stages).map(([n, v]) => [
          n,
          {
            wall_p50: round(quantile(v.wall, 0.5)),
            wall_p99: round(quantile(v.wall, 0.99)),
            ...(v.cpu.length > 0
              ? { cpu_p50: round(quantile(v.cpu, 0.5)), cpu_p99: round(quantile(v.cpu, 0.99)) }
              : {}),
          },
        ]),
      ),
    };
    log(
      `${String(policies).padStart(5)} policies, ${out.rules} rules: start→kernel ${out.agent_start_to_kernel_ms} ms; policy edit→kernel p50 ${out.policy_to_kernel_p50_ms} ms p99 ${out.policy_to_kernel_p99_ms} ms (${lat.length} samples); membership→kernel p50 ${out.membership_to_kernel_p50_ms} ms p99 ${out.membership_to_kernel_p99_ms} ms; apply kinds ${[...new Set(kinds)].join('/')}; nft via ${via}; per apply p50 calc ${out.apply_calc_p50_ms} ms, render ${out.apply_render_p50_ms} ms, kernel ${out.apply_kernel_p50_ms} ms (p99 ${out.apply_kernel_p99_ms}); load ${out.load}`,
    );
    log(`  where a policy edit's time goes (wall p50 / p99; CPU p50 / p99), load ${out.load}:`);
    for (const [n, v] of Object.entries(stages))
      log(
        `    ${n.padEnd(42)} ${String(round(quantile(v.wall, 0.5))).padStart(7)} / ${String(round(quantile(v.wall, 0.99))).padStart(7)} ms${v.cpu.length > 0 ? `;  CPU ${round(quantile(v.cpu, 0.5))} / ${round(quantile(v.cpu, 0.99))} ms` : ''}`,
      );
    log(
      `    process CPU per edit (server + agent, all threads): ${out.process_cpu_per_edit_ms} ms`,
    );
    if (process.env['BENCH_VERBOSE']) for (const l of lines.slice(-12)) log(`  ${l}`);
    return out;
  } finally {
    await agent?.stop();
    spawnSync(ns !== undefined ? 'ip' : 'nft', [
      ...(ns !== undefined ? ['netns', 'exec', ns, 'nft'] : []),
      'delete',
      'table',
      'inet',
      'palisade_bench',
    ]);
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runAgentBench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  if (process.getuid?.() !== 0) {
    log('the agent benchmark needs root (it creates network namespaces)');
    return { error: 'needs root' };
  }
  const ns = `plbagent${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    // The agent runs inside the namespace (as on a node: nft without an `ip netns exec` wrapper,
    // which alone costs tens of milliseconds per call), with its API server on the namespace's
    // loopback.
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    // PALISADE_BENCH_PART=traffic|latency runs one half.
    const part = process.env['PALISADE_BENCH_PART'];
    // PALISADE_BENCH_AGENT_SIZES=1000,10000 picks the policy counts (default 100 and 1k; 10k
    // also with PALISADE_BENCH_AGENT_10K=1 — minutes to start on a loaded machine).
    const sizes = (process.env['PALISADE_BENCH_AGENT_SIZES'] ?? '')
      .split(',')
      .filter((x) => x !== '')
      .map(Number);
    const want = (n: number) =>
      part !== 'traffic' &&
      (sizes.length > 0
        ? sizes.includes(n)
        : n !== 10_000 || process.env['PALISADE_BENCH_AGENT_10K'] === '1');
    const s100: Record<string, unknown> = want(100)
      ? inNamespace(ns, 100, quick ? 10 : 50, log)
      : {};
    const s1k: Record<string, unknown> = want(1000)
      ? inNamespace(ns, 1000, quick ? 10 : 100, log)
      : {};
    const s10k: Record<string, unknown> = want(10_000)
      ? inNamespace(ns, 10_000, quick ? 5 : 50, log)
      : {};
    const traffic = part === 'latency' ? {} : await trafficBench(quick, log);
    return {
      policy_to_kernel_p50_ms_100: s100['policy_to_kernel_p50_ms'],
      policy_to_kernel_p99_ms_100: s100['policy_to_kernel_p99_ms'],
      policy_to_kernel_p50_ms_1k: s1k['policy_to_kernel_p50_ms'],
      policy_to_kernel_p99_ms_1k: s1k['policy_to_kernel_p99_ms'],
      policy_to_kernel_p50_ms_10k: s10k['policy_to_kernel_p50_ms'] ?? null,
      policy_to_kernel_p99_ms_10k: s10k['policy_to_kernel_p99_ms'] ?? null,
      ...traffic,
      detail: { '100': s100, '1k': s1k, ...(s10k['policies'] ? { '10k': s10k } : {}) },
    };
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

function inNamespace(
  ns: string,
  policies: number,
  samples: number,
  log: (s: string) => void,
): Record<string, unknown> {
  const child = fileURLToPath(new URL('./agent-child.ts', import.meta.url));
  const r = spawnSync(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '--import',
      'tsx',
      child,
      String(policies),
      String(samples),
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 1_800_000 },
  );
  for (const l of (r.stdout ?? '').split('\n')) if (l && !l.startsWith('CHILD ')) log(l);
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('CHILD '));
  if (!line) throw new Error(`agent bench child failed: ${(r.stderr ?? '').slice(-2000)}`);
  return JSON.parse(line.slice(6)) as Record<string, unknown>;
}

// ------------------------------------------------------------------ traffic

const sh = (args: string[], input?: string): string =>
  execFileSync(args[0] ?? 'true', args.slice(1), {
    encoding: 'utf8',
    ...(input !== undefined ? { input } : {}),
    stdio: [input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
const inNs = (ns: string, args: string[], input?: string) =>
  sh(['ip', 'netns', 'exec', ns, ...args], input);

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Client A (local-0, 10.200.0.1) and server B (local-1, 10.200.0.2) behind a node namespace. */
function topology(tag: string): { node: string; a: string; b: string; ifA: string; ifB: string } {
  const node = `plt${tag}n`;
  const a = `plt${tag}a`;
  const b = `plt${tag}b`;
  const ifA = `plt${tag}ha`;
  const ifB = `plt${tag}hb`;
  sh(['ip', 'netns', 'add', node]);
  inNs(node, ['ip', 'link', 'set', 'lo', 'up']);
  inNs(node, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  for (const [ns, ifn, ip] of [
    [a, ifA, '10.200.0.1'],
    [b, ifB, '10.200.0.2'],
  ] as const) {
    sh(['ip', 'netns', 'add', ns]);
    inNs(node, ['ip', 'link', 'add', ifn, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    inNs(node, ['ip', 'addr', 'add', '10.200.255.1/32', 'dev', ifn]);
    inNs(node, ['ip', 'link', 'set', ifn, 'up']);
    inNs(node, ['ip', 'route', 'add', `${ip}/32`, 'dev', ifn]);
    inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(ns, ['ip', 'addr', 'add', `${ip}/32`, 'dev', 'eth0']);
    inNs(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    inNs(ns, ['ip', 'route', 'add', '10.200.255.1', 'dev', 'eth0', 'scope', 'link']);
    inNs(ns, ['ip', 'route', 'add', 'default', 'via', '10.200.255.1', 'dev', 'eth0']);
  }
  return { node, a, b, ifA, ifB };
}

/** iperf3 TCP throughput A → B, in Gbit/s. */
function gbps(t: { a: string }, seconds: number): number {
  const out = inNs(t.a, ['iperf3', '-c', '10.200.0.2', '-t', String(seconds), '-J']);
  const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } } };
  return Math.round(((j.end?.sum_received?.bits_per_second ?? 0) / 1e9) * 100) / 100;
}

const CPS_CLIENT = `
const net = require('node:net');
const end = Date.now() + Number(process.argv[1]) * 1000;
let n = 0, failed = 0;
function one() {
  if (Date.now() > end) return done();
  const s = net.connect({ host: '10.200.0.2', port: 5301 });
  s.setTimeout(1000);
  s.on('connect', () => { n++; s.destroy(); setImmediate(one); });
  s.on('error', () => { failed++; setImmediate(one); });
  s.on('timeout', () => { failed++; s.destroy(); setImmediate(one); });
}
let live = 4;
function done() { if (--live === 0) { console.log(JSON.stringify({ n, failed })); process.exit(0); } }
for (let i = 0; i < 4; i++) one();
`;

/** New TCP connections per second A → B (four sequential connectors, handshake then close). */
function cps(t: { a: string }, seconds: number): number {
  const out = inNs(t.a, [process.execPath, '-e', CPS_CLIENT, String(seconds)]);
  const j = JSON.parse(out.trim()) as { n: number; failed: number };
  if (j.failed > j.n / 10) throw new Error(`cps: ${j.failed} failed connections of ${j.n}`);
  return Math.round(j.n / seconds);
}

/** The Palisade table for N policies, with an allow A → B after B's own bench policies. */
async function palisadeTable(
  t: { node: string; ifA: string; ifB: string },
  policies: number,
): Promise<{ rules: number; apply: () => Promise<void>; remove: () => Promise<void> }> {
  const { Calculation, NftDriver, render } = await import('@palisade/dataplane');
  const calc = new Calculation();
  for (const r of benchResources(policies)) calc.upsert(r);
  calc.upsert({
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: 'bench-a-to-b', namespace: 'bench' },
    spec: {
      order: 100_000,
      selector: "app == 'app-1'",
      types: ['Ingress'],
      ingress: [
        {
          action: 'Allow',
          protocol: 'TCP',
          source: { selector: "app == 'app-0'" },
          destination: { ports: [5201, 5301] },
        },
      ],
    },
  });
  calc.upsert({
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: 'bench-a-out', namespace: 'bench' },
    spec: {
      order: 100_000,
      selector: "app == 'app-0'",
      types: ['Egress'],
      egress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [5201, 5301] } }],
    },
  });
  calc.setLocalEndpoints(
    Array.from({ length: LOCAL }, (_, i) => ({
      ref: `bench/local-${i}`,
      iface: i === 0 ? t.ifA : i === 1 ? t.ifB : `pb${i}`,
    })),
  );
  const r = render(calc.desired(), { table: 'palisade_bench' });
  const driver = new NftDriver({ table: 'palisade_bench', netns: t.node, timeoutMs: 600_000 });
  return {
    rules: r.skeleton.split('\n').filter((l) => l.includes(' counter ')).length,
    apply: async () => {
      await driver.apply(r);
    },
    remove: async () => {
      await driver.removeTable();
      driver.close();
    },
  };
}

/**
 * The same policy as a linear iptables-nft ruleset, the way a per-rule firewall without sets
 * writes it: conntrack first, then for each policy rule of each local endpoint one rule per peer
 * address and port, in order; the A → B allow comes last.
 */
function iptablesRules(t: { ifA: string; ifB: string }, policies: number): string {
  const lines = ['*filter', ':FORWARD ACCEPT [0:0]'];
  lines.push('-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT');
  const all = benchResources(policies);
  const peers = new Map<string, string[]>();
  for (const r of all)
    if (r.kind === 'Pod' && r.metadata.labels?.['role']) {
      const l = peers.get(r.metadata.labels['role']) ?? [];
      l.push((r as { status?: { podIP?: string } }).status?.podIP ?? '');
      peers.set(r.metadata.labels['role'], l);
    }
  const ifOf = (i: number) => (i === 0 ? t.ifA : i === 1 ? t.ifB : `pb${i}`);
  for (const r of all) {
    if (r.kind !== 'NetworkPolicy') continue;
    const spec = (
      r as unknown as {
        spec: {
          selector: string;
          ingress: { source: { selector: string }; destination: { ports: (number | string)[] } }[];
          egress: { destination: { selector: string } }[];
        };
      }
    ).spec;
    const local = Number(/app-(\d+)/.exec(spec.selector)?.[1] ?? 0);
    const inPeer = /peer-(\d+)/.exec(spec.ingress[0]?.source.selector ?? '')?.[0] ?? '';
    const port = spec.ingress[0]?.destination.ports.find((p) => typeof p === 'number') ?? 80;
    for (const ip of peers.get(inPeer) ?? []) {
      lines.push(`-A FORWARD -o ${ifOf(local)} -p tcp -s ${ip} --dport ${port} -j ACCEPT`);
      lines.push(`-A FORWARD -o ${ifOf(local)} -p tcp -s ${ip} --dport 8080 -j ACCEPT`);
    }
    const outPeer = /peer-(\d+)/.exec(spec.egress[0]?.destination.selector ?? '')?.[0] ?? '';
    for (const ip of peers.get(outPeer) ?? [])
      lines.push(`-A FORWARD -i ${ifOf(local)} -p udp -d ${ip} --dport 53 -j ACCEPT`);
  }
  lines.push(`-A FORWARD -i ${t.ifA} -o ${t.ifB} -p tcp -m multiport --dports 5201,5301 -j ACCEPT`);
  lines.push('-A FORWARD -j DROP', 'COMMIT', '');
  return lines.join('\n');
}

const median = (xs: number[]): number => quantile(xs, 0.5);

/**
 * Traffic through the node namespace with no table, with only a conntrack fast path (what any
 * stateful table costs), with Palisade's table for N policies and with the linear iptables-nft
 * ruleset for the same policies. Rounds alternate no table and Palisade's table (the machine's
 * load drifts; the medians of interleaved rounds compare like with like).
 */
export async function trafficBench(
  quick: boolean,
  log: (s: string) => void,
  policies = 1000,
): Promise<Record<string, number | null>> {
  const tag = policies >= 1000 && policies % 1000 === 0 ? `${policies / 1000}k` : String(policies);
  const none: Record<string, number | null> = {
    gbps_none: null,
    [`gbps_palisade_${tag}`]: null,
    [`gbps_iptables_${tag}`]: null,
    cps_none: null,
    [`cps_palisade_${tag}`]: null,
    [`cps_iptables_${tag}`]: null,
  };
  if (!has('iperf3')) {
    log('traffic: iperf3 is not installed (apt-get install iperf3); figures left out');
    return none;
  }
  const t = topology(String(process.pid % 100000));
  const servers: ReturnType<typeof spawn>[] = [];
  try {
    servers.push(spawn('ip', ['netns', 'exec', t.b, 'iperf3', '-s'], { stdio: 'ignore' }));
    servers.push(
      spawn(
        'ip',
        [
          'netns',
          'exec',
          t.b,
          process.execPath,
          '-e',
          "require('node:net').createServer((s) => s.destroy()).listen(5301, '0.0.0.0')",
        ],
        { stdio: 'ignore' },
      ),
    );
    await new Promise((r) => setTimeout(r, 1500));
    const secs = quick ? 3 : 10;
    const cpsSecs = quick ? 3 : 5;
    const rounds = quick ? 1 : 3;
    const out: Record<string, number | null> = { ...none };
    const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    const table = await palisadeTable(t, policies);
    const g: Record<'none' | 'ct' | 'pal', number[]> = { none: [], ct: [], pal: [] };
    const c: Record<'none' | 'ct' | 'pal', number[]> = { none: [], ct: [], pal: [] };
    const ctOnly = `table inet palisade_ct {\n\tchain ctonly {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tct state established,related accept\n\t}\n}\n`;
    for (let round = 0; round < rounds; round++) {
      g.none.push(gbps(t, secs));
      c.none.push(cps(t, cpsSecs));
      inNs(t.node, ['nft', '-f', '-'], ctOnly);
      g.ct.push(gbps(t, secs));
      c.ct.push(cps(t, cpsSecs));
      inNs(t.node, ['nft', 'delete', 'table', 'inet', 'palisade_ct']);
      await table.apply();
      g.pal.push(gbps(t, secs));
      c.pal.push(cps(t, cpsSecs));
      await table.remove();
      log(
        `round ${round + 1}/${rounds} (load ${load()}): no table ${g.none.at(-1)} Gbit/s ${c.none.at(-1)} conn/s; conntrack only ${g.ct.at(-1)} / ${c.ct.at(-1)}; Palisade ${tag} ${g.pal.at(-1)} / ${c.pal.at(-1)}`,
      );
    }
    out['gbps_none'] = median(g.none);
    out['cps_none'] = median(c.none);
    out['gbps_conntrack_only'] = median(g.ct);
    out['cps_conntrack_only'] = median(c.ct);
    out[`gbps_palisade_${tag}`] = median(g.pal);
    out[`cps_palisade_${tag}`] = median(c.pal);
    const loss = (1 - median(g.pal) / median(g.none)) * 100;
    out[`throughput_loss_pct_${tag}`] = Math.round(loss * 10) / 10;
    log(`no rules:          ${out['gbps_none']} Gbit/s, ${out['cps_none']} connections/s (median)`);
    log(
      `conntrack only:    ${out['gbps_conntrack_only']} Gbit/s, ${out['cps_conntrack_only']} connections/s`,
    );
    log(
      `Palisade, ${tag}:${' '.repeat(Math.max(1, 8 - tag.length))}${out[`gbps_palisade_${tag}`]} Gbit/s, ${out[`cps_palisade_${tag}`]} connections/s (${table.rules} rules); throughput loss ${out[`throughput_loss_pct_${tag}`]} %`,
    );
    if (has('iptables-nft-restore')) {
      const text = iptablesRules(t, policies);
      inNs(t.node, ['iptables-nft-restore'], text);
      out[`gbps_iptables_${tag}`] = gbps(t, secs);
      out[`cps_iptables_${tag}`] = cps(t, cpsSecs);
      log(
        `iptables-nft, ${tag} (load ${load()}): ${out[`gbps_iptables_${tag}`]} Gbit/s, ${out[`cps_iptables_${tag}`]} connections/s (${text.split('\n').filter((l) => l.startsWith('-A')).length} linear rules)`,
      );
    } else log('iptables-nft-restore is not installed: the iptables comparison is left out');
    return out;
  } finally {
    for (const s of servers) s.kill('SIGKILL');
    for (const ns of [t.a, t.b, t.node]) spawnSync('ip', ['netns', 'del', ns]);
  }
}
