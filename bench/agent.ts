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
import type { Resource } from '@palisade/core';
import { runServer } from '@palisade/controlplane';
import { Agent, ApiClient } from '@palisade/dataplane/agent';
import { benchResources } from './dataplane.js';

const NODE = 'bench-node';
const LOCAL = 100;

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? 0;
}
const round = (x: number) => Math.round(x * 10) / 10;

function localWeps(): Resource[] {
  return Array.from(
    { length: LOCAL },
    (_, i) =>
      ({
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
      }) as Resource,
  );
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

async function latency(
  policies: number,
  samples: number,
  ns: string,
  log: (s: string) => void,
): Promise<Record<string, number>> {
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
    agent = new Agent({
      server: server.url,
      token: (tok.body as { token: string }).token,
      node: NODE,
      table: 'palisade_bench',
      netns: ns,
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
          clearTimeout(timer);
          off?.();
          resolve();
        });
      });
    const first = await admin.call('GET', '/api/v1/projectcalico.org/NetworkPolicy/bench/pol-0');
    const rv0 = Number(
      (first.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
    );
    await applied(rv0);
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
      await applied(await write(edited));
      lat.push(performance.now() - t);
    }
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
        } as Resource),
      );
      mem.push(performance.now() - t);
    }
    const kinds = lines
      .filter((l) => l.startsWith('applied revision'))
      .map((l) => /\((\w+),/.exec(l)?.[1]);
    const out = {
      policies,
      rules: status.ruleCount,
      agent_start_to_kernel_ms: round(startMs),
      policy_to_kernel_p50_ms: round(quantile(lat, 0.5)),
      policy_to_kernel_p99_ms: round(quantile(lat, 0.99)),
      membership_to_kernel_p50_ms: round(quantile(mem, 0.5)),
      membership_to_kernel_p99_ms: round(quantile(mem, 0.99)),
      samples: lat.length,
    };
    log(
      `${String(policies).padStart(5)} policies, ${out.rules} rules: start→kernel ${out.agent_start_to_kernel_ms} ms; policy edit→kernel p50 ${out.policy_to_kernel_p50_ms} ms p99 ${out.policy_to_kernel_p99_ms} ms (${lat.length} samples); membership→kernel p50 ${out.membership_to_kernel_p50_ms} ms p99 ${out.membership_to_kernel_p99_ms} ms; apply kinds ${[...new Set(kinds)].join('/')}`,
    );
    if (process.env['BENCH_VERBOSE']) for (const l of lines.slice(-12)) log(`  ${l}`);
    return out;
  } finally {
    await agent?.stop();
    spawnSync('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', 'palisade_bench']);
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
    const s100 = process.env["BENCH_ONLY_1K"] ? {} as Record<string, number> : await latency(100, quick ? 10 : 50, ns, log);
    const s1k = await latency(1000, quick ? 10 : 100, ns, log);
    const traffic = await trafficBench(quick, log);
    return {
      policy_to_kernel_p50_ms_100: s100['policy_to_kernel_p50_ms'],
      policy_to_kernel_p99_ms_100: s100['policy_to_kernel_p99_ms'],
      policy_to_kernel_p50_ms_1k: s1k['policy_to_kernel_p50_ms'],
      policy_to_kernel_p99_ms_1k: s1k['policy_to_kernel_p99_ms'],
      ...traffic,
      detail: { '100': s100, '1k': s1k },
    };
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

// ------------------------------------------------------------------ traffic (filled in below)
async function trafficBench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, number | null>> {
  void quick;
  void spawn;
  log('traffic: not yet measured');
  return {};
}
