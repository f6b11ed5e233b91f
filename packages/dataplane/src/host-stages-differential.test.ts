// The engine's host endpoint stages agree with the agent's rendering, with real traffic: a node
// namespace plays the host, an "outside" namespace sits on a host interface (the host endpoint)
// and a pod hangs off the node. For each case (fixed ones naming the Calico rule they exercise —
// docs.tigera.io, "Host endpoints" → "Apply on forwarded traffic", "Pre-DNAT policy", "Summary of
// host endpoint policies", the HostEndpoint resource — then seeded random ones), the resources go
// through the core loader, are programmed as the agent does (normal calculation + host stages,
// one nft transaction), and every probe — outside to the host and through it to the pod, the pod
// out through it, the host out, the pod to its own host — is tried for real and must equal
// `Engine.check` on the same resources. PALISADE_SEED=N reproduces the random cases.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compile, loadText } from '@palisade/core';
import type { Probe, Resource } from '@palisade/core';
import { Calculation } from './calc/calculation.js';
import { HostModes, withHostModes } from './calc/host-modes.js';
import { NftDriver } from './nft/driver.js';
import { render } from './nft/render.js';
import { canUseNetns, inNs, TestNode } from './testing/netns.js';
import type { PodResult, TestPod } from './testing/netns.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';
const SEED = Number(process.env['PALISADE_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
const RANDOM_CASES = 3;

const HOST_PORTS = ['t22', 't80', 't8080', 't8082', 't7777', 'u9999'];
const POD_PORTS = ['t80', 't81', 'u53'];
const OUTSIDE_PORTS = ['t80', 't443'];

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case {
  readonly name: string;
  /** GlobalNetworkPolicy specs (the selector defaults to the host endpoint's labels). */
  readonly policies: readonly Record<string, unknown>[];
  readonly star?: boolean;
}

const allow = (protocol: string, port: number, side: 'destination' | 'source' = 'destination') => ({
  action: 'Allow',
  protocol,
  [side]: { ports: [port] },
});
const deny = (protocol: string, port: number, side: 'destination' | 'source' = 'destination') => ({
  action: 'Deny',
  protocol,
  [side]: { ports: [port] },
});

const FIXED: readonly Case[] = [
  {
    name: 'Calico "Host endpoints": normal policy for the host, default deny, fail-safe ports',
    policies: [{ types: ['Ingress'], ingress: [allow('TCP', 8080)] }],
  },
  {
    name: 'Calico "Apply on forwarded traffic": applyOnForward ingress and egress',
    policies: [
      {
        applyOnForward: true,
        types: ['Ingress', 'Egress'],
        ingress: [allow('TCP', 80), allow('UDP', 53)],
        egress: [allow('TCP', 443)],
      },
    ],
  },
  {
    name: 'Calico "Pre-DNAT policy": Deny before DNAT, Allow skips normal policy, no default deny',
    policies: [
      {
        preDNAT: true,
        applyOnForward: true,
        ingress: [deny('TCP', 81), allow('TCP', 8082)],
      },
      { types: ['Ingress'], ingress: [allow('TCP', 8080)] },
    ],
  },
  {
    name: 'Calico "Summary of host endpoint policies": untracked Allow both ways, untracked TCP without its reply, untracked Deny',
    policies: [
      {
        doNotTrack: true,
        applyOnForward: true,
        ingress: [allow('UDP', 9999), allow('TCP', 7777), deny('TCP', 80)],
        egress: [allow('UDP', 9999, 'source')],
      },
      // Normal egress lets anything out: the untracked TCP reply still has no connection.
      { types: ['Ingress', 'Egress'], ingress: [allow('TCP', 80)], egress: [{ action: 'Allow' }] },
    ],
  },
  {
    name: 'Calico "Summary of host endpoint policies": untracked egress Deny cuts the replies of tracked connections',
    policies: [
      {
        doNotTrack: true,
        applyOnForward: true,
        types: ['Egress'],
        egress: [deny('TCP', 8080, 'source')],
      },
      { types: ['Ingress'], ingress: [allow('TCP', 8080), allow('TCP', 80)] },
    ],
  },
  {
    name: 'Calico "Summary of host endpoint policies": an untracked Allow skips pre-DNAT policy too',
    policies: [
      {
        doNotTrack: true,
        applyOnForward: true,
        ingress: [allow('TCP', 8082)],
        egress: [allow('TCP', 8082, 'source')],
      },
      { preDNAT: true, applyOnForward: true, ingress: [deny('TCP', 8082), allow('TCP', 8080)] },
    ],
  },
  {
    name: 'Calico "Summary of host endpoint policies": a reply let in untracked is no established packet for the workload behind',
    policies: [
      {
        doNotTrack: true,
        applyOnForward: true,
        types: ['Ingress'],
        ingress: [{ action: 'Allow' }],
      },
      { selector: "app == 'web'", types: ['Ingress'], ingress: [allow('TCP', 80)] },
    ],
  },
  {
    name: "Calico HostEndpoint interfaceName '*': forward policy inferred for the node's pod, untracked policy ignored",
    star: true,
    policies: [
      { applyOnForward: true, types: ['Ingress'], ingress: [allow('TCP', 80), allow('TCP', 8080)] },
      { doNotTrack: true, applyOnForward: true, types: ['Ingress'], ingress: [{ action: 'Deny' }] },
    ],
  },
];

function randomCase(r: () => number, i: number): Case {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const ports: [string, number][] = [
    ['TCP', 80],
    ['TCP', 81],
    ['TCP', 8080],
    ['TCP', 7777],
    ['UDP', 9999],
    ['UDP', 53],
    ['TCP', 443],
  ];
  const policies: Record<string, unknown>[] = [];
  const n = 1 + Math.floor(r() * 3);
  for (let k = 0; k < n; k++) {
    const mode = pick(['normal', 'forward', 'preDNAT', 'untracked'] as const);
    const rules = (dir: 'ingress' | 'egress') =>
      Array.from({ length: 1 + Math.floor(r() * 3) }, () => {
        const [protocol, port] = pick(ports);
        const action = pick(['Allow', 'Allow', 'Deny', 'Pass'] as const);
        const side = dir === 'egress' && r() < 0.5 ? 'source' : 'destination';
        return r() < 0.15 ? { action } : { action, protocol, [side]: { ports: [port] } };
      });
    const types =
      mode === 'preDNAT' ? ['Ingress'] : pick([['Ingress'], ['Egress'], ['Ingress', 'Egress']]);
    policies.push({
      order: Math.floor(r() * 4) * 10,
      ...(mode === 'forward' ? { applyOnForward: true } : {}),
      ...(mode === 'preDNAT' ? { preDNAT: true, applyOnForward: true } : {}),
      ...(mode === 'untracked' ? { doNotTrack: true, applyOnForward: true } : {}),
      types,
      ...(types.includes('Ingress') ? { ingress: rules('ingress') } : {}),
      ...(types.includes('Egress') ? { egress: rules('egress') } : {}),
    });
  }
  return { name: `random case ${i} (seed ${SEED})`, policies, star: r() < 0.3 };
}

describe(
  `host endpoint stages: engine against the kernel (seed ${SEED})`,
  { skip, timeout: 240_000 },
  () => {
    let node: TestNode;
    let outside: TestPod;
    let host: TestPod;
    let pod: TestPod;
    let iface = '';
    let driver: NftDriver;
    const table = `palisade_d${process.pid % 100000}`;

    before(async () => {
      node = new TestNode('d');
      pod = node.addPod(1);
      const o = node.addOutside();
      outside = o.outside;
      host = o.host;
      iface = o.iface;
      inNs(outside.ns, ['ip', 'route', 'add', `${node.subnet}.0/24`, 'via', host.ip]);
      await Promise.all([
        outside.start(OUTSIDE_PORTS),
        host.start(HOST_PORTS),
        pod.start(POD_PORTS),
      ]);
      driver = new NftDriver({ table, netns: node.ns });
    });

    after(() => node?.destroy());

    function resources(c: Case): Resource[] {
      const docs = [
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } },
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'web', namespace: 'demo', labels: { app: 'web' } },
          spec: { nodeName: 'n1', containers: [{ name: 'c' }] },
          status: { podIP: pod.ip },
        },
        {
          apiVersion: 'projectcalico.org/v3',
          kind: 'HostEndpoint',
          metadata: { name: 'ext', labels: { role: 'edge' } },
          spec: { node: 'n1', interfaceName: c.star ? '*' : iface, expectedIPs: [host.ip] },
        },
        ...c.policies.map((spec, i) => ({
          apiVersion: 'projectcalico.org/v3',
          kind: 'GlobalNetworkPolicy',
          metadata: { name: `p${i}` },
          spec: { selector: "role == 'edge'", ...spec },
        })),
      ];
      const { resources: rs, diagnostics } = loadText(
        JSON.stringify({ kind: 'List', apiVersion: 'v1', items: docs }),
        'case.json',
      );
      assert.deepEqual(
        diagnostics.filter((d) => d.severity === 'error').map((d) => d.message),
        [],
        c.name,
      );
      return rs;
    }

    async function program(rs: Resource[], star: boolean): Promise<void> {
      const calc = new Calculation({ verifySharedSets: true });
      const modes = new HostModes({ verifySharedSets: true });
      for (const r of rs) {
        if (HostModes.acceptsNormal(r)) calc.upsert(r);
        modes.upsert(r);
      }
      const heps = [{ ref: 'ext', iface: star ? '*' : iface }];
      calc.setLocalEndpoints([{ ref: 'demo/web', iface: pod.hostIface }, ...heps]);
      modes.setLocalHostEndpoints(heps);
      await driver.apply(
        render(withHostModes(calc.desired(), modes.desired()), {
          table,
          workloadInterfacePrefix: node.ifacePrefix,
        }),
      );
    }

    type Attempt = { probe: Probe; run: () => Promise<PodResult> };
    const attempts = (star: boolean): Attempt[] => {
      // With the all-interfaces endpoint the engine infers the way through it itself.
      const viaIn = star ? {} : { viaIn: 'ext' };
      const viaOut = star ? {} : { viaOut: 'ext' };
      const out: Attempt[] = [];
      for (const spec of HOST_PORTS) {
        const port = Number(spec.slice(1));
        const udp = spec.startsWith('u');
        out.push({
          probe: { from: outside.ip, to: 'ext', protocol: udp ? 'UDP' : 'TCP', port },
          run: () => (udp ? outside.udp(host.ip, port, 400) : outside.tcp(host.ip, port, 400)),
        });
      }
      for (const spec of POD_PORTS) {
        const port = Number(spec.slice(1));
        const udp = spec.startsWith('u');
        out.push({
          probe: {
            from: outside.ip,
            to: 'demo/web',
            protocol: udp ? 'UDP' : 'TCP',
            port,
            ...viaIn,
          },
          run: () => (udp ? outside.udp(pod.ip, port, 400) : outside.tcp(pod.ip, port, 400)),
        });
      }
      for (const port of [80, 443]) {
        out.push({
          probe: { from: 'demo/web', to: outside.ip, protocol: 'TCP', port, ...viaOut },
          run: () => pod.tcp(outside.ip, port, 400),
        });
        out.push({
          probe: { from: 'ext', to: outside.ip, protocol: 'TCP', port },
          run: () => host.tcp(outside.ip, port, 400),
        });
      }
      out.push({
        probe: { from: 'demo/web', to: 'ext', protocol: 'TCP', port: 8080 },
        run: () => pod.tcp(host.ip, 8080, 400),
      });
      return out;
    };

    async function compare(c: Case): Promise<void> {
      const rs = resources(c);
      await program(rs, c.star === true);
      const engine = compile(rs);
      const problems: string[] = [];
      for (const a of attempts(c.star === true)) {
        const want = engine.check(a.probe);
        assert.ok(want.ok, want.ok ? '' : want.message);
        const kernel = want.result.kernel;
        const engineSays =
          kernel.egress.verdict === 'allow' &&
          kernel.ingress.verdict === 'allow' &&
          (kernel.forward ?? []).every((f) => f.verdict === 'allow') &&
          (kernel.reply?.verdict ?? 'allow') === 'allow';
        const got = (await a.run()).ok;
        if (got !== engineSays)
          problems.push(
            `${a.probe.from} -> ${a.probe.to} ${String(a.probe.protocol)} ${a.probe.port ?? ''}: kernel ${got ? 'allows' : 'denies'}, engine ${engineSays ? 'allows' : 'denies'} (${[kernel.egress, kernel.ingress, ...(kernel.forward ?? []), ...(kernel.reply ? [kernel.reply] : [])].map((v) => `${v.verdict}: ${v.provenance.reason}`).join(' | ')})`,
          );
      }
      assert.deepEqual(problems, [], `${c.name}\n${JSON.stringify(c.policies)}`);
    }

    for (const c of FIXED) test(c.name, () => compare(c));

    test(`random host endpoint policies agree (seed ${SEED})`, async () => {
      const r = rng(SEED);
      for (let i = 0; i < RANDOM_CASES; i++) await compare(randomCase(r, i));
    });
  },
);
