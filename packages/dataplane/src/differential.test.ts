// The kernel agrees with the engine (issue 5 part 6): random endpoints (network namespaces),
// random Calico and Kubernetes policies loaded through the core, rendered and applied with the
// real nft; then every ordered pod pair tries real TCP connects and UDP request/responses, and
// each outcome must equal the engine's kernel verdict. Seeded: PALISADE_SEED=N reproduces a run.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { Calculation } from './calc/calculation.js';
import { NftDriver } from './nft/driver.js';
import { render } from './nft/render.js';
import { canUseNetns, TestNode } from './testing/netns.js';
import type { TestPod } from './testing/netns.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';
const SEED = Number(process.env['PALISADE_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
const PODS = 7;
const ROUNDS = 3;
const PROBES: readonly { protocol: 'TCP' | 'UDP'; port: number }[] = [
  { protocol: 'TCP', port: 80 },
  { protocol: 'TCP', port: 81 },
  { protocol: 'UDP', port: 53 },
  { protocol: 'UDP', port: 54 },
];

/** mulberry32: small, seedable, good enough for test generation. */
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

class Gen {
  constructor(readonly r: () => number) {}
  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
}

const NAMESPACES = ['red', 'blue'];
const APPS = ['a', 'b', 'c'];

interface PodSpec {
  readonly ns: string;
  readonly name: string;
  readonly ip: string;
  readonly labels: Record<string, string>;
  readonly sa: string;
  readonly namedPorts: boolean;
}

function world(
  g: Gen,
  pods: readonly TestPod[],
  subnet: string,
): { specs: PodSpec[]; docs: unknown[] } {
  const docs: unknown[] = [];
  for (const ns of NAMESPACES) {
    docs.push({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: ns, labels: { team: g.pick(['x', 'y']) } },
    });
    for (const sa of ['sa1', 'sa2'])
      docs.push({
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name: sa, namespace: ns, labels: { role: g.pick(['r1', 'r2']) } },
      });
  }
  const specs: PodSpec[] = pods.map((p, i) => {
    const labels: Record<string, string> = { app: g.pick(APPS) };
    if (g.chance(0.5)) labels['tier'] = g.pick(['x', 'y']);
    return {
      ns: g.pick(NAMESPACES),
      name: `p${i + 1}`,
      ip: p.ip,
      labels,
      sa: g.pick(['sa1', 'sa2']),
      namedPorts: g.chance(0.7),
    };
  });
  for (const s of specs) {
    docs.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: s.name, namespace: s.ns, labels: s.labels },
      spec: {
        serviceAccountName: s.sa,
        containers: [
          {
            name: 'c',
            ports: s.namedPorts
              ? [
                  { name: 'web', containerPort: g.pick([80, 81]), protocol: 'TCP' },
                  { name: 'dns', containerPort: g.pick([53, 54]), protocol: 'UDP' },
                ]
              : [],
          },
        ],
      },
      status: { podIP: s.ip },
    });
  }
  // A network set over part of the test subnet, with a label rules can select.
  docs.push({
    apiVersion: 'projectcalico.org/v3',
    kind: 'GlobalNetworkSet',
    metadata: { name: 'some-pods', labels: { feed: 'f1' } },
    spec: { nets: [`${subnet}.${g.pick([0, 4])}/30`] },
  });
  return { specs, docs };
}

function calicoSelector(g: Gen): string {
  return g.pick([
    "app == 'a'",
    "app == 'b'",
    "app in {'a', 'c'}",
    'has(tier)',
    '!has(tier)',
    "tier != 'x'",
    'all()',
    "app == 'b' && tier == 'y'",
    "feed == 'f1'",
    "projectcalico.org/namespace == 'red'",
    "pcns.team == 'x'",
  ]);
}

function entity(
  g: Gen,
  specs: readonly PodSpec[],
  subnet: string,
  dst: boolean,
  proto: string | undefined,
): Record<string, unknown> {
  const e: Record<string, unknown> = {};
  switch (g.int(8)) {
    case 0:
      e['selector'] = calicoSelector(g);
      break;
    case 1:
      e['notSelector'] = calicoSelector(g);
      break;
    case 2:
      e['namespaceSelector'] = g.pick(["team == 'x'", 'all()', 'global()']);
      if (g.chance(0.5)) e['selector'] = calicoSelector(g);
      break;
    case 3:
      e['serviceAccounts'] = g.chance(0.5)
        ? { names: [g.pick(['sa1', 'sa2'])] }
        : { selector: "role == 'r1'" };
      break;
    case 4:
      e['nets'] = [g.chance(0.5) ? `${g.pick(specs).ip}/32` : `${subnet}.0/29`];
      break;
    case 5:
      e['notNets'] = [`${g.pick(specs).ip}/32`];
      break;
    default:
      break;
  }
  if (dst && proto !== undefined && g.chance(0.6)) {
    const tcp = proto === 'TCP';
    const opts: (number | string)[] = tcp ? [80, 81, 'web', '80:81'] : [53, 54, 'dns', '53:54'];
    if (g.chance(0.2)) e['notPorts'] = [g.pick(opts)];
    else e['ports'] = [g.pick(opts), ...(g.chance(0.3) ? [g.pick(opts)] : [])];
  }
  return e;
}

function calicoRule(
  g: Gen,
  specs: readonly PodSpec[],
  subnet: string,
  tiered: boolean,
): Record<string, unknown> {
  const action = g.pick(tiered ? ['Allow', 'Deny', 'Pass', 'Allow'] : ['Allow', 'Deny', 'Allow']);
  const protocol = g.pick(['TCP', 'UDP', undefined, 'TCP']);
  const rule: Record<string, unknown> = { action };
  if (protocol) rule['protocol'] = protocol;
  else if (g.chance(0.2)) rule['notProtocol'] = 'UDP';
  const src = entity(g, specs, subnet, false, protocol);
  const dst = entity(g, specs, subnet, true, protocol);
  if (Object.keys(src).length > 0) rule['source'] = src;
  if (Object.keys(dst).length > 0) rule['destination'] = dst;
  if (action === 'Allow' && protocol === 'TCP' && g.chance(0.1))
    rule['http'] = { methods: ['GET'] };
  return rule;
}

function k8sSelector(g: Gen): Record<string, unknown> {
  switch (g.int(4)) {
    case 0:
      return {};
    case 1:
      return { matchLabels: { app: g.pick(APPS) } };
    case 2:
      return { matchExpressions: [{ key: 'tier', operator: g.pick(['Exists', 'DoesNotExist']) }] };
    default:
      return {
        matchExpressions: [
          { key: 'app', operator: g.pick(['In', 'NotIn']), values: [g.pick(APPS)] },
        ],
      };
  }
}

function k8sPeer(g: Gen, specs: readonly PodSpec[], subnet: string): Record<string, unknown> {
  switch (g.int(4)) {
    case 0:
      return { podSelector: k8sSelector(g) };
    case 1:
      return { namespaceSelector: { matchLabels: { team: g.pick(['x', 'y']) } } };
    case 2:
      return { namespaceSelector: {}, podSelector: k8sSelector(g) };
    default:
      return { ipBlock: { cidr: `${subnet}.0/28`, except: [`${g.pick(specs).ip}/32`] } };
  }
}

function k8sPorts(g: Gen): unknown[] | undefined {
  if (g.chance(0.3)) return undefined;
  return [
    g.pick<Record<string, unknown>>([
      { port: 80 },
      { protocol: 'UDP', port: 53 },
      { port: 'web' },
      { protocol: 'UDP', port: 'dns' },
      { port: 80, endPort: 81 },
    ]),
  ];
}

function policies(g: Gen, specs: readonly PodSpec[], subnet: string): unknown[] {
  const docs: unknown[] = [
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'security' },
      spec: { order: 100, defaultAction: g.pick(['Deny', 'Pass']) },
    },
  ];
  const n = 3 + g.int(6);
  for (let i = 0; i < n; i++) {
    const kind = g.int(3);
    if (kind === 0) {
      const ns = g.pick(NAMESPACES);
      const types = g.pick([['Ingress'], ['Egress'], ['Ingress', 'Egress']]);
      const spec: Record<string, unknown> = { podSelector: k8sSelector(g), policyTypes: types };
      if (types.includes('Ingress'))
        spec['ingress'] = Array.from({ length: g.int(3) }, () => {
          const r: Record<string, unknown> = {};
          if (g.chance(0.8))
            r['from'] = [
              k8sPeer(g, specs, subnet),
              ...(g.chance(0.3) ? [k8sPeer(g, specs, subnet)] : []),
            ];
          const ports = k8sPorts(g);
          if (ports) r['ports'] = ports;
          return r;
        });
      if (types.includes('Egress'))
        spec['egress'] = Array.from({ length: g.int(3) }, () => {
          const r: Record<string, unknown> = {};
          if (g.chance(0.8)) r['to'] = [k8sPeer(g, specs, subnet)];
          const ports = k8sPorts(g);
          if (ports) r['ports'] = ports;
          return r;
        });
      docs.push({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: `k${i}`, namespace: ns },
        spec,
      });
      continue;
    }
    const tiered = g.chance(0.5);
    const global = kind === 2;
    const name = tiered ? `security.c${i}` : `c${i}`;
    const spec: Record<string, unknown> = {
      selector: calicoSelector(g),
      types: g.pick([['Ingress'], ['Egress'], ['Ingress', 'Egress']]),
    };
    if (tiered) spec['tier'] = 'security';
    if (g.chance(0.7)) spec['order'] = g.pick([10, 20, 30]);
    const types = spec['types'] as string[];
    if (types.includes('Ingress'))
      spec['ingress'] = Array.from({ length: 1 + g.int(3) }, () =>
        calicoRule(g, specs, subnet, tiered),
      );
    if (types.includes('Egress'))
      spec['egress'] = Array.from({ length: 1 + g.int(3) }, () =>
        calicoRule(g, specs, subnet, tiered),
      );
    docs.push({
      apiVersion: 'projectcalico.org/v3',
      kind: global ? 'GlobalNetworkPolicy' : 'NetworkPolicy',
      metadata: global ? { name } : { name, namespace: g.pick(NAMESPACES) },
      spec,
    });
  }
  return docs;
}

function load(docs: readonly unknown[]): Resource[] {
  const text = docs.map((d) => JSON.stringify(d)).join('\n---\n');
  const r = loadText(text, 'generated.yaml');
  const errors = r.diagnostics.filter((d) => d.severity === 'error');
  assert.deepEqual(errors, [], `the generator made invalid resources (seed ${SEED})`);
  return r.resources;
}

describe(
  `kernel enforcement agrees with the engine (seed ${SEED})`,
  { skip, timeout: 120_000 },
  () => {
    let node: TestNode;
    let pods: TestPod[] = [];
    const table = `palisade_d${process.pid % 100000}`;

    before(async () => {
      node = new TestNode('x');
      pods = Array.from({ length: PODS }, (_, i) => node.addPod(i + 1));
      await Promise.all(pods.map((p) => p.start(['t80', 't81', 'u53', 'u54'])));
    });
    after(() => node?.destroy());

    test('real TCP connects and UDP exchanges succeed exactly where the engine allows', async (t) => {
      const g = new Gen(rng(SEED));
      const driver = new NftDriver({ table, netns: node.ns });
      const { specs, docs } = world(g, pods, node.subnet);
      const mismatches: string[] = [];
      let allowed = 0;
      let denied = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const resources = load([...docs, ...policies(g, specs, node.subnet)]);
        const calc = new Calculation({ verifySharedSets: true });
        for (const r of resources) calc.upsert(r);
        calc.setLocalEndpoints(
          specs.map((s, i) => ({ ref: `${s.ns}/${s.name}`, iface: pods[i]?.hostIface ?? '' })),
        );
        // Round 2 splits every tier of two or more policies into part chains (as a large tier
        // is split), so the part chains meet real traffic too.
        await driver.apply(
          render(calc.desired(), {
            table,
            workloadInterfacePrefix: node.ifacePrefix,
            ...(round === 1 ? { tierPartPolicies: 1 } : {}),
          }),
        );
        const attempts: Promise<void>[] = [];
        for (let i = 0; i < specs.length; i++) {
          for (let j = 0; j < specs.length; j++) {
            if (i === j) continue;
            const from = specs[i] as PodSpec;
            const to = specs[j] as PodSpec;
            const src = pods[i] as TestPod;
            for (const p of PROBES) {
              const want = calc.engine.kernelAllows(
                `${from.ns}/${from.name}`,
                `${to.ns}/${to.name}`,
                p.protocol,
                p.port,
              );
              attempts.push(
                (p.protocol === 'TCP'
                  ? src.tcp(to.ip, p.port, 1000)
                  : src.udp(to.ip, p.port, 1000)
                ).then((got) => {
                  if (want) allowed++;
                  else denied++;
                  if (got.ok === want) return;
                  const c = calc.engine.check(
                    {
                      from: `${from.ns}/${from.name}`,
                      to: `${to.ns}/${to.name}`,
                      protocol: p.protocol,
                      port: p.port,
                    },
                    false,
                    true,
                  );
                  const prov = c.ok
                    ? `egress: ${c.result.kernel.egress.provenance.reason}; ingress: ${c.result.kernel.ingress.provenance.reason}`
                    : c.message;
                  mismatches.push(
                    `round ${round}: ${from.ns}/${from.name} → ${to.ns}/${to.name} ${p.protocol}/${p.port}: engine ${want ? 'allows' : 'denies'}, kernel ${got.ok ? 'allowed' : `refused (${got.why ?? ''})`} — ${prov}`,
                  );
                }),
              );
            }
          }
        }
        await Promise.all(attempts);
        if (mismatches.length > 0) {
          const listing = node.nft(['list', 'table', 'inet', table]);
          const policyText = resources
            .filter((r) => /Policy|Tier|NetworkSet/.test(r.kind))
            .map((r) =>
              JSON.stringify({
                kind: r.kind,
                metadata: r.metadata,
                spec: (r as { spec?: unknown }).spec,
              }),
            )
            .join('\n');
          assert.fail(
            `seed ${SEED}: ${mismatches.length} mismatches\n${mismatches.slice(0, 20).join('\n')}\n--- policies\n${policyText}\n--- table\n${listing.slice(0, 20000)}`,
          );
        }
      }
      // The generator must exercise both outcomes, or the test proves nothing.
      assert.ok(allowed > 0 && denied > 0, `seed ${SEED}: allowed ${allowed}, denied ${denied}`);
      t.diagnostic(`seed ${SEED}: ${allowed} allowed and ${denied} denied attempts agreed`);
    });
  },
);
