// The `engine` benchmark (DESIGN §5): compile time and heap, incremental updates and decision
// rates on the compiled form, for 10k endpoints / 1k policies and 100k / 10k.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Engine } from '../packages/core/src/engine/engine.js';
import type { Resource } from '../packages/core/src/model/resources.js';
import { generateCluster, generateProbes } from './gen-cluster.js';

export interface SizeResult {
  compile_ms: number;
  heap_mb: number;
  incremental_label_ms: number;
  incremental_policy_ms: number;
  kernel_decisions_per_s: number;
  l7_decisions_per_s: number;
  /** The same figures per second of this process's CPU time (all threads), which load on the
   * machine's other cores does not dilute. */
  compile_cpu_ms: number;
  kernel_decisions_per_cpu_s: number;
  /** Kernel decisions per CPU second once every probe was decided twice (warm, as an agent runs). */
  kernel_steady_decisions_per_cpu_s: number;
  /** The same, by endpoint handles (`Engine.kernelAllowsByHandle`: no name lookups). */
  kernel_steady_by_handle_per_cpu_s: number;
  /** /proc/loadavg (1, 5, 15 minutes) when the kernel figures were taken. */
  loadavg: string;
  /** `Engine.decideL7` (the destination L7 point's per-request verdict, what a sidecar asks). */
  l7_only_decisions_per_cpu_s: number;
  l7_only_us_per_decision: number;
  /** The full `check` (kernel both sides, L7 both sides, Istio), per CPU second. */
  full_check_decisions_per_cpu_s: number;
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function loadavg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'n/a';
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

function round(x: number, d = 2): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

export function benchSize(
  endpoints: number,
  policies: number,
  log: (s: string) => void,
): SizeResult {
  const t0 = performance.now();
  const cluster = generateCluster({ endpoints, policies, seed: 42 });
  log(
    `  generated ${cluster.resources.length} resources in ${round(performance.now() - t0, 0)} ms`,
  );
  const probes = generateProbes(cluster, 20_000);
  const httpProbes = generateProbes(cluster, 20_000, 11, true);
  gc();
  const heapBefore = process.memoryUsage().heapUsed;

  const c0 = performance.now();
  const cpu0 = process.cpuUsage();
  const engine = new Engine();
  for (const r of cluster.resources) engine.upsert(r);
  // Force the lazy work: every endpoint's active tiers and policies (the agent computes this for
  // the endpoints of its node; here it is the whole cluster).
  for (const p of cluster.pods) engine.activeTiers(p.id);
  const compileMs = performance.now() - c0;
  const compileCpuMs = cpuMs(cpu0);
  gc();
  const heapMb = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  log(
    `  compiled (every endpoint's active policies computed) in ${round(compileMs, 0)} ms (${round(compileCpuMs, 0)} ms CPU), heap +${round(heapMb, 0)} MB`,
  );

  // Kernel decisions.
  let n = 0;
  let allowed = 0;
  const k0 = performance.now();
  const kc0 = process.cpuUsage();
  while (performance.now() - k0 < 1000) {
    for (let i = 0; i < 1000; i++) {
      const p = probes[(n + i) % probes.length];
      if (p && engine.kernelAllows(p.from, p.to, 'TCP', p.port ?? 80)) allowed++;
    }
    n += 1000;
  }
  const kernelRate = n / ((performance.now() - k0) / 1000);
  const kernelCpuRate = n / (cpuMs(kc0) / 1000);
  log(
    `  kernel: ${Math.round(kernelRate)} decisions/s, ${Math.round(kernelCpuRate)} per CPU second (${round((100 * allowed) / n, 1)}% allowed)`,
  );

  // Steady state: every probe decided twice first (untimed, so everything lazy is built and
  // warm), then the same probes twice more, timed.
  for (let pass = 0; pass < 2; pass++)
    for (const p of probes) engine.kernelAllows(p.from, p.to, 'TCP', p.port ?? 80);
  const sc0 = process.cpuUsage();
  for (let pass = 0; pass < 2; pass++)
    for (const p of probes) engine.kernelAllows(p.from, p.to, 'TCP', p.port ?? 80);
  const steadyRate = (2 * probes.length) / (cpuMs(sc0) / 1000);
  const handles = probes.map(
    (p) => [engine.endpointHandle(p.from) ?? -1, engine.endpointHandle(p.to) ?? -1] as const,
  );
  for (let i = 0; i < probes.length; i++)
    engine.kernelAllowsByHandle(
      handles[i]?.[0] ?? -1,
      handles[i]?.[1] ?? -1,
      6,
      probes[i]?.port ?? 80,
    );
  const hc0 = process.cpuUsage();
  for (let pass = 0; pass < 2; pass++)
    for (let i = 0; i < probes.length; i++)
      engine.kernelAllowsByHandle(
        handles[i]?.[0] ?? -1,
        handles[i]?.[1] ?? -1,
        6,
        probes[i]?.port ?? 80,
      );
  const handleRate = (2 * probes.length) / (cpuMs(hc0) / 1000);
  const load = loadavg();
  log(
    `  kernel, steady state: ${Math.round(steadyRate)} decisions per CPU second by name (${round(1e6 / steadyRate, 2)} CPU µs each), ${Math.round(handleRate)} by handle (${round(1e6 / handleRate, 2)} µs); load ${load}`,
  );

  // L7 decisions (full check: kernel both sides, L7 both sides, Istio), no trace strings.
  n = 0;
  const l0 = performance.now();
  while (performance.now() - l0 < 1000) {
    for (let i = 0; i < 500; i++) {
      const p = httpProbes[(n + i) % httpProbes.length];
      if (p) engine.check(p, false);
    }
    n += 500;
  }
  const l7Rate = n / ((performance.now() - l0) / 1000);
  log(`  full check (kernel + L7): ${Math.round(l7Rate)} decisions/s`);
  const fullCpu0 = process.cpuUsage();
  for (const p of httpProbes.slice(0, 5000)) engine.check(p, false);
  const fullCpuRate = 5000 / (cpuMs(fullCpu0) / 1000);

  // The destination L7 point's verdict alone (what a sidecar decides per request), warm.
  for (const p of httpProbes) engine.decideL7(p);
  const lc0 = process.cpuUsage();
  let ln = 0;
  const lw0 = performance.now();
  while (performance.now() - lw0 < 1000) {
    for (let i = 0; i < 1000; i++) {
      const p = httpProbes[(ln + i) % httpProbes.length];
      if (p) engine.decideL7(p);
    }
    ln += 1000;
  }
  const l7OnlyRate = ln / (cpuMs(lc0) / 1000);
  log(
    `  L7 only (decideL7): ${Math.round(l7OnlyRate)} decisions per CPU second (${round(1e6 / l7OnlyRate, 1)} µs each); full check ${Math.round(fullCpuRate)} per CPU second (${round(1e6 / fullCpuRate, 1)} µs)`,
  );

  // Incremental: one pod's labels change, then a decision on it.
  const pods = cluster.resources.filter(
    (r): r is Extract<Resource, { kind: 'Pod' }> => r.kind === 'Pod',
  );
  const labelTimes: number[] = [];
  for (let i = 0; i < 200; i++) {
    const pod = pods[(i * 7919) % pods.length];
    if (!pod) continue;
    const changed = {
      ...pod,
      metadata: { ...pod.metadata, labels: { ...pod.metadata.labels, version: `v${i % 5}` } },
    };
    const s = performance.now();
    engine.upsert(changed);
    engine.kernelAllows(
      `${pod.metadata.namespace}/${pod.metadata.name}`,
      cluster.pods[0]?.id ?? '',
      'TCP',
      8080,
    );
    labelTimes.push(performance.now() - s);
  }
  // Incremental: one namespaced policy changes, then a decision on an endpoint it selects.
  const nps = cluster.resources.filter(
    (r): r is Extract<Resource, { kind: 'NetworkPolicy'; apiVersion: 'projectcalico.org/v3' }> =>
      r.kind === 'NetworkPolicy' && r.apiVersion === 'projectcalico.org/v3',
  );
  const policyTimes: number[] = [];
  for (let i = 0; i < 200 && nps.length > 0; i++) {
    const np = nps[(i * 104729) % nps.length];
    if (!np) continue;
    const target = cluster.pods.find((p) => p.ns === np.metadata.namespace) ?? cluster.pods[0];
    const changed = { ...np, spec: { ...np.spec, order: i } };
    const s = performance.now();
    engine.upsert(changed);
    engine.kernelAllows(cluster.pods[0]?.id ?? '', target?.id ?? '', 'TCP', 8080);
    policyTimes.push(performance.now() - s);
  }
  const inc = { label: median(labelTimes), policy: median(policyTimes) };
  log(
    `  incremental: label change ${round(inc.label, 3)} ms, policy change ${round(inc.policy, 3)} ms (medians)`,
  );
  return {
    compile_ms: round(compileMs, 0),
    heap_mb: round(heapMb, 0),
    incremental_label_ms: round(inc.label, 3),
    incremental_policy_ms: round(inc.policy, 3),
    kernel_decisions_per_s: Math.round(kernelRate),
    l7_decisions_per_s: Math.round(l7Rate),
    compile_cpu_ms: round(compileCpuMs, 0),
    kernel_decisions_per_cpu_s: Math.round(kernelCpuRate),
    kernel_steady_decisions_per_cpu_s: Math.round(steadyRate),
    kernel_steady_by_handle_per_cpu_s: Math.round(handleRate),
    loadavg: load,
    l7_only_decisions_per_cpu_s: Math.round(l7OnlyRate),
    l7_only_us_per_decision: round(1e6 / l7OnlyRate, 1),
    full_check_decisions_per_cpu_s: Math.round(fullCpuRate),
  };
}

/**
 * One size in a process of its own, so that nothing an earlier size left in the heap (nor the
 * collection work it causes) lands in this size's timings: in one process the 100k figures
 * after the 10k size varied two- to threefold between runs. Its lines go to stderr as they come.
 */
function benchSizeAlone(endpoints: number, policies: number): SizeResult {
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      '--size',
      String(endpoints),
      String(policies),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 << 20 },
  );
  if (r.status !== 0)
    throw new Error(`the ${endpoints}-endpoint size failed (exit ${String(r.status ?? r.signal)})`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as SizeResult;
}

export function runEngineBench(quick: boolean, log: (s: string) => void): Record<string, unknown> {
  const sizes: Record<string, SizeResult> = {};
  log('10k endpoints / 1k policies (a process of its own)');
  sizes['10k'] = benchSizeAlone(10_000, 1_000);
  if (!quick) {
    log('100k endpoints / 10k policies (a process of its own)');
    sizes['100k'] = benchSizeAlone(100_000, 10_000);
  }
  const rows: [string, Exclude<keyof SizeResult, 'loadavg'>, string, (v: number) => boolean][] = [
    ['compile (ms)', 'compile_ms', '< 5000 at 100k', (v) => v < 5000],
    ['compile (CPU ms)', 'compile_cpu_ms', '< 5000 at 100k', (v) => v < 5000],
    ['heap (MB)', 'heap_mb', '< 2048 at 100k', (v) => v < 2048],
    ['label change (ms)', 'incremental_label_ms', '< 5', (v) => v < 5],
    ['policy change (ms)', 'incremental_policy_ms', '< 5', (v) => v < 5],
    ['kernel decisions/s', 'kernel_decisions_per_s', '> 500000', (v) => v > 500_000],
    ['kernel per CPU s', 'kernel_decisions_per_cpu_s', '> 500000', (v) => v > 500_000],
    ['kernel steady /CPU s', 'kernel_steady_decisions_per_cpu_s', '> 500000', (v) => v > 500_000],
    ['  … by handle', 'kernel_steady_by_handle_per_cpu_s', '> 500000', (v) => v > 500_000],
    ['full checks/s (L7)', 'l7_decisions_per_s', '—', () => true],
    ['full checks /CPU s', 'full_check_decisions_per_cpu_s', '—', () => true],
    ['L7-only µs/decision', 'l7_only_us_per_decision', '< 100', (v) => v < 100],
  ];
  log('');
  log(`${'figure'.padEnd(22)}${'10k/1k'.padStart(12)}${'100k/10k'.padStart(12)}   target`);
  for (const [label, key, target, ok] of rows) {
    const a = sizes['10k']?.[key] ?? 0;
    const b = sizes['100k']?.[key];
    const judged = b ?? a;
    log(
      `${label.padEnd(22)}${String(a).padStart(12)}${(b === undefined ? '—' : String(b)).padStart(12)}   ${target} ${ok(judged) ? 'PASS' : 'MISS'}`,
    );
  }
  return { sizes };
}

// `node --import tsx bench/engine.ts --size ENDPOINTS POLICIES`: one size, its lines on stderr,
// its result as the last line of stdout (what benchSizeAlone runs).
if (
  process.argv[2] === '--size' &&
  process.argv[1] &&
  pathToFileURL(process.argv[1]).href === import.meta.url
) {
  const r = benchSize(Number(process.argv[3]), Number(process.argv[4]), (l) =>
    process.stderr.write(`${l}\n`),
  );
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
