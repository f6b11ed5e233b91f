// `npm run bench -- engine-kernel [--quick]`: kernel decisions of the flat form against the object
// form of the same programs, side by side in one process on one generated cluster (10k endpoints /
// 1k policies, and 100k / 10k without --quick). Both engines are compiled and warmed, then timed
// passes alternate (object, flat, object, flat, ...) so that load on the shared machine falls on
// both alike. Figures are per second of this process's CPU time, with /proc/loadavg beside each.

import { readFileSync } from 'node:fs';
import { Engine } from '../packages/core/src/engine/engine.js';
import { generateCluster, generateProbes } from './gen-cluster.js';
import type { Probe } from '../packages/core/src/engine/types.js';

function loadavg(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'n/a';
  }
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
}

function passes(engine: Engine, probes: readonly Probe[], n: number): number {
  let allowed = 0;
  for (let pass = 0; pass < n; pass++)
    for (const p of probes) if (engine.kernelAllows(p.from, p.to, 'TCP', p.port ?? 80)) allowed++;
  return allowed;
}

/** The same passes by endpoint handles (`Engine.endpointHandle`): no name lookups. */
function handlePasses(
  engine: Engine,
  probes: readonly (readonly [number, number, number])[],
  n: number,
): number {
  let allowed = 0;
  for (let pass = 0; pass < n; pass++)
    for (const p of probes) if (engine.kernelAllowsByHandle(p[0], p[1], 6, p[2])) allowed++;
  return allowed;
}

interface Pair {
  readonly object: number[];
  readonly flat: number[];
  readonly flatByHandle: number[];
  readonly compileCpuMs: { readonly object: number; readonly flat: number };
  readonly loads: string[];
}

function benchPair(endpoints: number, policies: number, log: (s: string) => void): Pair {
  const cluster = generateCluster({ endpoints, policies, seed: 42 });
  const probes = generateProbes(cluster, 20_000);
  const build = (form: 'flat' | 'object') => {
    const c0 = process.cpuUsage();
    const e = new Engine({ kernelForm: form });
    for (const r of cluster.resources) e.upsert(r);
    for (const p of cluster.pods) e.activeTiers(p.id);
    return { e, ms: cpuMs(c0) };
  };
  const object = build('object');
  const flat = build('flat');
  log(
    `  compiled both (CPU ms: object ${Math.round(object.ms)}, flat ${Math.round(flat.ms)}); load ${loadavg()}`,
  );
  // Warm: every probe decided twice (programs are built on reuse), then once more in each form.
  for (const e of [object.e, flat.e]) passes(e, probes, 3);
  const byHandle = probes.map((p) => {
    const a = flat.e.endpointHandle(p.from);
    const b = flat.e.endpointHandle(p.to);
    if (a === undefined || b === undefined) throw new Error(`no handle for ${p.from} or ${p.to}`);
    return [a, b, p.port ?? 80] as const;
  });
  handlePasses(flat.e, byHandle, 1);
  const out: Pair = {
    object: [],
    flat: [],
    flatByHandle: [],
    compileCpuMs: { object: Math.round(object.ms), flat: Math.round(flat.ms) },
    loads: [],
  };
  for (let round = 0; round < 3; round++) {
    for (const [name, e] of [
      ['object', object.e],
      ['flat', flat.e],
    ] as const) {
      const c0 = process.cpuUsage();
      const allowed = passes(e, probes, 3);
      const rate = Math.round((3 * probes.length) / (cpuMs(c0) / 1000));
      out[name].push(rate);
      const load = loadavg();
      out.loads.push(load);
      log(
        `  round ${round + 1} ${name.padEnd(6)} ${String(rate).padStart(9)} decisions per CPU s (${allowed} allowed of ${3 * probes.length}); load ${load}`,
      );
    }
    const c0 = process.cpuUsage();
    const allowed = handlePasses(flat.e, byHandle, 3);
    const rate = Math.round((3 * probes.length) / (cpuMs(c0) / 1000));
    out.flatByHandle.push(rate);
    log(
      `  round ${round + 1} handle ${String(rate).padStart(9)} decisions per CPU s (${allowed} allowed of ${3 * probes.length}); load ${loadavg()}`,
    );
  }
  // The two forms must agree; a benchmark of a wrong answer is worthless.
  for (const p of probes)
    if (
      object.e.kernelAllows(p.from, p.to, 'TCP', p.port ?? 80) !==
      flat.e.kernelAllows(p.from, p.to, 'TCP', p.port ?? 80)
    )
      throw new Error(`flat and object forms disagree on ${p.from} -> ${p.to} ${p.port ?? 80}`);
  return out;
}

export function runEngineKernelBench(
  quick: boolean,
  log: (s: string) => void,
): Record<string, unknown> {
  const sizes: Record<string, Pair> = {};
  log('10k endpoints / 1k policies, 20 000 distinct probes cycled');
  sizes['10k'] = benchPair(10_000, 1_000, log);
  if (!quick) {
    log('100k endpoints / 10k policies, 20 000 distinct probes cycled');
    sizes['100k'] = benchPair(100_000, 10_000, log);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  log('');
  for (const [size, p] of Object.entries(sizes))
    log(
      `${size}: object ${median(p.object)}, flat ${median(p.flat)} (${(median(p.flat) / median(p.object)).toFixed(2)}×), flat by handle ${median(p.flatByHandle)} decisions per CPU s (medians of 3); target > 500000: by name ${median(p.flat) > 500_000 ? 'PASS' : 'MISS'}, by handle ${median(p.flatByHandle) > 500_000 ? 'PASS' : 'MISS'}`,
    );
  return {
    sizes: Object.fromEntries(
      Object.entries(sizes).map(([k, p]) => [
        k,
        {
          kernel_steady_object_per_cpu_s: p.object,
          kernel_steady_flat_per_cpu_s: p.flat,
          kernel_steady_flat_by_handle_per_cpu_s: p.flatByHandle,
          compile_cpu_ms: p.compileCpuMs,
          loadavg: p.loads,
        },
      ]),
    ),
  };
}
