// `npm run bench -- dataplane [--quick]`: the kernel dataplane at scale — 100 local endpoints with
// 1k and 10k active policies: calculation and render time, ruleset size, one full nft
// transaction, an element-only update, and policy-to-kernel latency (calc + render + apply).
// Runs inside a network namespace it creates (root needed); never touches the host's rules.
// Throughput figures (gbps_*, cps_*) need traffic generators and are reported as null here.

import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import type { Resource } from '@palisade/core';
import { Calculation, NftDriver, render } from '@palisade/dataplane';

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

function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] ?? 0;
}

const round = (x: number) => Math.round(x * 10) / 10;

async function size(
  policies: number,
  samples: number,
  ns: string,
  log: (s: string) => void,
): Promise<Record<string, number>> {
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
  const driver = new NftDriver({ table, netns: ns, timeoutMs: 600_000 });
  t = performance.now();
  await driver.apply(rendered);
  const applyMs = performance.now() - t;
  t = performance.now();
  await driver.settled();
  const readBackMs = performance.now() - t;
  // Membership only: a remote pod changes role.
  calc.upsert({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'remote-0', namespace: 'bench', labels: { role: 'peer-1' } },
    spec: { nodeName: 'elsewhere', containers: [{ name: 'c' }] },
    status: { podIP: '10.201.0.1' },
  });
  t = performance.now();
  const el = await driver.apply(render(calc.desired(), { table }));
  const elementMs = performance.now() - t;
  t = performance.now();
  assert((await driver.resync()).drift === false, 'no drift after our own updates');
  const resyncMs = performance.now() - t;
  // A policy edit reaches the kernel: calculation, render and one transaction.
  const lat: number[] = [];
  for (let k = 0; k < samples; k++) {
    await driver.settled();
    t = performance.now();
    calc.upsert(policy(k, 1000 + k));
    await driver.apply(render(calc.desired(), { table }));
    lat.push(performance.now() - t);
  }
  const out = {
    policies,
    local_endpoints: LOCAL,
    sets: desired.sets.length * 2,
    rules,
    script_kb: Math.round(rendered.script.length / 1024),
    calc_ms: round(calcMs),
    render_ms: round(renderMs),
    apply_ms: round(applyMs),
    read_back_ms: round(readBackMs),
    resync_ms: round(resyncMs),
    element_update_ms: round(elementMs),
    policy_to_kernel_p99_ms: round(p99(lat)),
  };
  if (el.kind !== 'elements') throw new Error(`expected an element update, got ${el.kind}`);
  log(
    `${String(policies).padStart(6)} policies: ${out.rules} rules, ${out.sets} sets, ${out.script_kb} KiB; calc ${out.calc_ms} ms, render ${out.render_ms} ms, apply ${out.apply_ms} ms, read-back ${out.read_back_ms} ms, resync ${out.resync_ms} ms, element update ${out.element_update_ms} ms, policy→kernel p99 ${out.policy_to_kernel_p99_ms} ms`,
  );
  await driver.removeTable();
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
  try {
    log(`100 local endpoints, ${REMOTE} remote, ${PEER_SELECTORS} distinct peer selectors`);
    const small = await size(1000, quick ? 5 : 20, ns, log);
    const large = quick ? undefined : await size(10_000, 5, ns, log);
    return {
      apply_ms_1k: small['apply_ms'],
      apply_ms_10k: large?.['apply_ms'] ?? null,
      policy_to_kernel_p99_ms: (large ?? small)['policy_to_kernel_p99_ms'],
      gbps_none: null,
      gbps_palisade_10k: null,
      gbps_iptables_10k: null,
      cps_none: null,
      cps_palisade_10k: null,
      cps_iptables_10k: null,
      detail: { '1k': small, ...(large ? { '10k': large } : {}) },
    };
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}
