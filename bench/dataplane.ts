// `npm run bench -- dataplane [--quick]`: the kernel dataplane at scale — 100 local endpoints with
// 1k and 10k active policies: calculation and render time, ruleset size, one full nft
// transaction, membership (element-only) updates, and policy-to-kernel latency (calc + render +
// apply), through the long-lived nft session and, side by side on the same table, through one
// `nft` process per change; a lone element update against a one-set table shows what nft's cache
// costs. Then traffic (iperf3 throughput, connections/s) with 10k policies (--quick: 1k) against
// no table and a linear iptables-nft ruleset (bench/agent.ts trafficBench).
// Runs inside network namespaces it creates (root needed); never touches the host's rules.

import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Resource } from '@palisade/core';
import { Calculation, NftDriver, openSession, render } from '@palisade/dataplane';
import { trafficBench } from './agent.js';

const LOCAL = 100;
const REMOTE = 1000;
const PEER_SELECTORS = 500;

export function benchResources(policies: number): Resource[] {
  const out: Resource[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } }];
  for (let i = 0; i < LOCAL; i++)
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `local-${i}`, namespace: 'bench', labels: { app: `app-${i}` } },
      spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
      status: { podIP: `10.200.0.${i + 1}` },
    });
  for (let j = 0; j < REMOTE; j++)
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `remote-${j}`,
        namespace: 'bench',
        labels: { role: `peer-${j % PEER_SELECTORS}` },
      },
      spec: { nodeName: 'elsewhere', containers: [{ name: 'c' }] },
      status: { podIP: `10.201.${Math.floor(j / 250)}.${(j % 250) + 1}` },
    });
  for (let p = 0; p < policies; p++) out.push(policy(p, 80 + (p % 50)));
  return out;
}

function policy(p: number, port: number): Resource {
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: `pol-${p}`, namespace: 'bench' },
    spec: {
      order: p,
      selector: `app == 'app-${p % LOCAL}'`,
      types: ['Ingress', 'Egress'],
      ingress: [
        {
          action: 'Allow',
          protocol: 'TCP',
          source: { selector: `role == 'peer-${p % PEER_SELECTORS}'` },
          destination: { ports: [port, 'http'] },
        },
      ],
      egress: [
        {
          action: 'Allow',
          protocol: 'UDP',
          destination: { selector: `role == 'peer-${(p * 7) % PEER_SELECTORS}'`, ports: [53] },
        },
      ],
    },
  };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? 0;
}

const round = (x: number) => Math.round(x * 10) / 10;
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

function remotePod(j: number, role: string): Resource {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `remote-${j}`, namespace: 'bench', labels: { role } },
    spec: { nodeName: 'elsewhere', containers: [{ name: 'c' }] },
    status: { podIP: `10.201.${Math.floor(j / 250)}.${(j % 250) + 1}` },
  };
}

/**
 * A lone `add element` + `delete element` pair to one plain hash set, `n` times through a session:
 * in the benchmark's table and in a namespace holding only a one-set table. nft refetches its
 * cache of the whole ruleset whenever the kernel's generation moved (libnftables 1.0.6 does after
 * every commit, its own included), so the difference is what the cache of this table costs.
 */
async function loneElements(
  ns: string,
  table: string,
  set: string,
  n: number,
  library: boolean,
): Promise<number> {
  const session = openSession({ netns: ns, ...(library ? {} : { library: false }) });
  try {
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      const add = `add element inet ${table} ${set} { 10.250.${i % 250}.1 }\n`;
      const del = `delete element inet ${table} ${set} { 10.250.${i % 250}.1 }\n`;
      const t = performance.now();
      const r = await session.run(['-f', '-'], add);
      xs.push(performance.now() - t);
      if (r.code !== 0) throw new Error(`lone element: ${r.stderr}`);
      const d = await session.run(['-f', '-'], del);
      if (d.code !== 0) throw new Error(`lone element: ${d.stderr}`);
    }
    return round(quantile(xs, 0.5));
  } finally {
    session.close();
  }
}

interface Loop {
  /** End to end: calculation, render, kernel. */
  readonly p50: number;
  readonly p99: number;
  /** The kernel transaction alone (as the driver reports it). */
  readonly kernelP50: number;
  readonly kernelP99: number;
  /** CPU time of nft for the transaction (the worker reports it; load-independent). */
  readonly cpuP50: number | null;
  readonly cpuP99: number | null;
  readonly kinds: string;
}

async function loop(
  n: number,
  step: (k: number) => void,
  calc: Calculation,
  driver: NftDriver,
  table: string,
): Promise<Loop> {
  const lat: number[] = [];
  const kernel: number[] = [];
  const cpu: number[] = [];
  const kinds = new Set<string>();
  for (let k = 0; k < n; k++) {
    await driver.settled();
    const t = performance.now();
    step(k);
    const r = await driver.apply(render(calc.desired(), { table }));
    lat.push(performance.now() - t);
    kernel.push(r.ms);
    if (r.nftCpuMs !== undefined) cpu.push(r.nftCpuMs);
    kinds.add(r.kind);
  }
  return {
    p50: round(quantile(lat, 0.5)),
    p99: round(quantile(lat, 0.99)),
    kernelP50: round(quantile(kernel, 0.5)),
    kernelP99: round(quantile(kernel, 0.99)),
    cpuP50: cpu.length > 0 ? round(quantile(cpu, 0.5)) : null,
    cpuP99: cpu.length > 0 ? round(quantile(cpu, 0.99)) : null,
    kinds: [...kinds].join('/'),
  };
}

async function size(
  policies: number,
  samples: number,
  ns: string,
  log: (s: string) => void,
): Promise<Record<string, number | string>> {
  const table = `palisade_bench`;
  const calc = new Calculation();
  let t = performance.now();
  for (const r of benchResources(policies)) calc.upsert(r);
  calc.setLocalEndpoints(
    Array.from({ length: LOCAL }, (_, i) => ({ ref: `bench/local-${i}`, iface: `pb${i}` })),
  );
  const desired = calc.desired();
  const calcMs = performance.now() - t;
  t = performance.now();
  const rendered = render(desired, { table });
  const renderMs = performance.now() - t;
  const rules = rendered.script.split('\n').filter((l) => l.includes(' counter ')).length;
  const intervalSets = rendered.skeleton.split('flags interval').length - 1;
  const load0 = loadavg();
  const driver = new NftDriver({ table, netns: ns, timeoutMs: 600_000 });
  // The session (worker) starts once per agent lifetime: not part of the apply figure.
  t = performance.now();
  await driver.readBack();
  const sessionStartMs = performance.now() - t;
  t = performance.now();
  const full = await driver.apply(rendered);
  const applyMs = performance.now() - t;
  const session = driver.sessionKind();
  t = performance.now();
  await driver.settled();
  const readBackMs = performance.now() - t;
  // Membership only: a remote pod changes role (set elements, no rule changes).
  let role = 0;
  const mem = await loop(
    Math.max(5, samples),
    (k) => calc.upsert(remotePod(k % REMOTE, `peer-${(role++ * 7 + 1) % PEER_SELECTORS}`)),
    calc,
    driver,
    table,
  );
  t = performance.now();
  assert((await driver.resync()).drift === false, 'no drift after our own updates');
  const resyncMs = performance.now() - t;
  // A policy edit reaches the kernel: calculation, render and one transaction.
  const pol = await loop(samples, (k) => calc.upsert(policy(k, 1000 + k)), calc, driver, table);
  // The same loops through one `nft` process per change, on the same table (the baseline).
  const proc = new NftDriver({ table, netns: ns, timeoutMs: 600_000, library: false });
  t = performance.now();
  await proc.resync(render(calc.desired(), { table }));
  const applyProcMs = performance.now() - t;
  const memProc = await loop(
    Math.max(5, samples),
    (k) => calc.upsert(remotePod(k % REMOTE, `peer-${(role++ * 7 + 1) % PEER_SELECTORS}`)),
    calc,
    proc,
    table,
  );
  const polProc = await loop(samples, (k) => calc.upsert(policy(k, 3000 + k)), calc, proc, table);
  // nft's cache: a lone element update in this table and in a namespace with a one-set table.
  const set = [...rendered.elements.keys()].find((k) => k.startsWith('s_') && k.endsWith('_v4'));
  const tiny = `${ns}e`;
  execFileSync('ip', ['netns', 'add', tiny]);
  let lone: Record<string, number>;
  try {
    execFileSync('ip', ['netns', 'exec', tiny, 'nft', '-f', '-'], {
      input: `table inet ${table} {\n\tset s_x_v4 {\n\t\ttype ipv4_addr\n\t}\n}\n`,
    });
    lone = {
      lone_element_library_ms: await loneElements(ns, table, set ?? '', 20, true),
      lone_element_library_tiny_table_ms: await loneElements(tiny, table, 's_x_v4', 20, true),
      lone_element_process_ms: await loneElements(ns, table, set ?? '', 10, false),
      lone_element_process_tiny_table_ms: await loneElements(tiny, table, 's_x_v4', 10, false),
    };
  } finally {
    execFileSync('ip', ['netns', 'del', tiny]);
  }
  const out = {
    policies,
    local_endpoints: LOCAL,
    // Kernel sets declared (a family no rule references and without elements is left out).
    sets: rendered.parts?.sets.size ?? desired.sets.length * 2,
    interval_sets: intervalSets,
    rules,
    script_kb: Math.round(rendered.script.length / 1024),
    session,
    load_before: load0,
    load_after: loadavg(),
    calc_ms: round(calcMs),
    render_ms: round(renderMs),
    session_start_ms: round(sessionStartMs),
    apply_ms: round(applyMs),
    apply_nft_cpu_ms: round(full.nftCpuMs ?? -1),
    apply_process_ms: round(applyProcMs),
    read_back_ms: round(readBackMs),
    resync_ms: round(resyncMs),
    membership_to_kernel_p50_ms: mem.p50,
    membership_to_kernel_p99_ms: mem.p99,
    membership_kernel_p50_ms: mem.kernelP50,
    membership_nft_cpu_p50_ms: mem.cpuP50 ?? -1,
    membership_kinds: mem.kinds,
    membership_to_kernel_p50_ms_process: memProc.p50,
    membership_to_kernel_p99_ms_process: memProc.p99,
    membership_kernel_p50_ms_process: memProc.kernelP50,
    policy_to_kernel_p50_ms: pol.p50,
    policy_to_kernel_p99_ms: pol.p99,
    policy_kernel_p50_ms: pol.kernelP50,
    policy_kernel_p99_ms: pol.kernelP99,
    policy_nft_cpu_p50_ms: pol.cpuP50 ?? -1,
    policy_nft_cpu_p99_ms: pol.cpuP99 ?? -1,
    policy_kinds: pol.kinds,
    policy_to_kernel_p50_ms_process: polProc.p50,
    policy_to_kernel_p99_ms_process: polProc.p99,
    policy_kernel_p50_ms_process: polProc.kernelP50,
    policy_kernel_p99_ms_process: polProc.kernelP99,
    ...lone,
  };
  log(
    `${String(policies).padStart(6)} policies (${session}; load ${load0} → ${out.load_after}): ${out.rules} rules, ${out.sets} sets (${intervalSets} interval), ${out.script_kb} KiB; calc ${out.calc_ms} ms, render ${out.render_ms} ms, session start ${out.session_start_ms} ms, full apply ${out.apply_ms} ms (nft CPU ${out.apply_nft_cpu_ms} ms; nft process ${out.apply_process_ms} ms), read-back ${out.read_back_ms} ms, resync ${out.resync_ms} ms`,
  );
  log(
    `        membership→kernel p50/p99 ${mem.p50}/${mem.p99} ms (kernel p50 ${mem.kernelP50} ms, nft CPU p50 ${mem.cpuP50} ms, ${mem.kinds}); nft process ${memProc.p50}/${memProc.p99} ms (kernel p50 ${memProc.kernelP50} ms)`,
  );
  log(
    `        policy→kernel p50/p99 ${pol.p50}/${pol.p99} ms (kernel ${pol.kernelP50}/${pol.kernelP99} ms, nft CPU ${pol.cpuP50}/${pol.cpuP99} ms, ${pol.kinds}); nft process ${polProc.p50}/${polProc.p99} ms (kernel ${polProc.kernelP50}/${polProc.kernelP99} ms)`,
  );
  log(
    `        lone element update p50: library ${lone['lone_element_library_ms']} ms (one-set table ${lone['lone_element_library_tiny_table_ms']} ms), nft process ${lone['lone_element_process_ms']} ms (one-set table ${lone['lone_element_process_tiny_table_ms']} ms)`,
  );
  await driver.removeTable();
  driver.close();
  proc.close();
  return out;
}

export async function runDataplaneBench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  if (process.getuid?.() !== 0) {
    log('the dataplane benchmark needs root (it creates a network namespace)');
    return { error: 'needs root' };
  }
  const ns = `plbench${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  // PALISADE_BENCH_PART=latency|traffic runs one half.
  const part = process.env['PALISADE_BENCH_PART'];
  try {
    log(`100 local endpoints, ${REMOTE} remote, ${PEER_SELECTORS} distinct peer selectors`);
    const small = part === 'traffic' ? undefined : await size(1000, quick ? 10 : 50, ns, log);
    const large = quick || part === 'traffic' ? undefined : await size(10_000, 20, ns, log);
    const traffic = part === 'latency' ? {} : await trafficBench(quick, log, quick ? 1000 : 10_000);
    return {
      apply_ms_1k: small?.['apply_ms'] ?? null,
      apply_ms_10k: large?.['apply_ms'] ?? null,
      policy_to_kernel_p99_ms: (large ?? small)?.['policy_to_kernel_p99_ms'] ?? null,
      ...traffic,
      detail: { ...(small ? { '1k': small } : {}), ...(large ? { '10k': large } : {}) },
    };
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}
