// The precompiled kernel programs must decide exactly as the rule walk: same verdict, same
// provenance (kind, tier, policy, rule, profile), same staged verdicts and L7 hand-off, for random
// clusters and probes and for every probe of the policy conformance corpus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compile, Engine } from './engine.js';
import type { CalicoRule, EntityRule, Resource } from '../model/resources.js';
import { loadText } from '../load/load.js';
import { loadPolicyCorpus } from '../../../../conformance/policy-corpus.js';

type Rnd = () => number;

function prng(seed: number): Rnd {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

const NS = ['a', 'b', 'c'];
const APPS = ['web', 'db', 'api'];
const SAS = ['s1', 's2'];
// A numeric port, a named port's value, a range, a port no rule names, a fail-safe port, UDP, ICMP.
const PROBES: readonly (readonly [string, number])[] = [
  ['TCP', 80],
  ['TCP', 8080],
  ['TCP', 9050],
  ['TCP', 443],
  ['TCP', 22],
  ['UDP', 53],
  ['ICMP', 0],
];

function world(seed: number): { resources: Resource[]; refs: string[] } {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const maybe = (p: number) => rnd() < p;
  const out: Resource[] = [];
  const refs: string[] = [];
  for (const ns of NS) {
    out.push({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: ns,
        labels: { team: pick(['x', 'y']) },
        ...(maybe(0.15)
          ? {
              annotations: {
                'net.beta.kubernetes.io/network-policy': '{"ingress":{"isolation":"DefaultDeny"}}',
              },
            }
          : {}),
      },
    });
    for (const sa of SAS)
      out.push({
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name: sa, namespace: ns, labels: { role: pick(['reader', 'writer']) } },
      });
  }
  let ip = 1;
  const pods = 4 + Math.floor(rnd() * 5);
  for (let i = 0; i < pods; i++) {
    const ns = pick(NS);
    const name = `p${i}`;
    const v6 = maybe(0.2);
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: ns,
        labels: { app: pick(APPS), ...(maybe(0.3) ? { pci: 'true' } : {}) },
        ...(maybe(0.2) ? { annotations: { 'palisade.dev/l7': 'false' } } : {}),
      },
      spec: {
        serviceAccountName: pick(SAS),
        containers: [
          {
            name: 'c',
            ports: [
              { name: 'http', containerPort: pick([80, 8080]) },
              ...(maybe(0.5) ? [{ name: 'dns', containerPort: 53, protocol: 'UDP' as const }] : []),
            ],
          },
        ],
      },
      status: v6
        ? { podIPs: [{ ip: `fd00::${ip}` }, { ip: `10.1.0.${ip}` }] }
        : { podIP: `10.1.0.${ip}` },
    });
    ip++;
    refs.push(`${ns}/${name}`);
  }
  out.push({
    apiVersion: 'projectcalico.org/v3',
    kind: 'HostEndpoint',
    metadata: { name: 'h1', labels: { role: 'node', app: pick(APPS) } },
    spec: {
      node: 'n1',
      expectedIPs: ['10.9.0.1'],
      ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
      ...(maybe(0.5) ? { profiles: ['prof'] } : {}),
    },
  });
  refs.push('h1', '10.1.0.250', '203.0.113.7', '198.51.100.3', 'fd00::99');
  out.push(
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkSet',
      metadata: { name: 'partners', labels: { role: 'partner' } },
      spec: { nets: ['203.0.113.0/24'] },
    },
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'NetworkSet',
      metadata: { name: 'ext', namespace: pick(NS), labels: { app: pick(APPS) } },
      spec: { nets: ['198.51.100.0/24', '10.1.0.0/30'] },
    },
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Profile',
      metadata: { name: 'prof' },
      spec: {
        labelsToApply: { prof: 'yes' },
        ingress: [{ action: pick(['Allow', 'Deny', 'Pass'] as const), protocol: 'TCP' }],
        egress: [{ action: 'Allow' }],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'svc', namespace: pick(NS) },
      spec: {
        selector: { app: pick(APPS) },
        ports: [{ port: 80, targetPort: pick([80, 'http']) }],
      },
    },
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'sec' },
      spec: { order: 10, defaultAction: pick(['Deny', 'Pass'] as const) },
    },
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'plat' },
      spec: { order: 20, defaultAction: pick(['Deny', 'Pass'] as const) },
    },
  );

  const selector = () =>
    pick([
      `app == '${pick(APPS)}'`,
      'has(pci)',
      `app == '${pick(APPS)}' || has(pci)`,
      "role == 'partner'",
      'all()',
      `app != '${pick(APPS)}'`,
      "prof == 'yes'",
    ]);
  const ports = () =>
    pick<(number | string)[]>([
      [80],
      [8080, '9000:9100'],
      ['http'],
      ['dns'],
      ['70:90', 'http'],
      [443],
    ]);
  const entity = (): EntityRule => {
    // Often a bare shared selector, so that many rules test the same peer predicate.
    if (maybe(0.4)) return { selector: pick(["app == 'web'", 'has(pci)', "role == 'partner'"]) };
    const e: Record<string, unknown> = {};
    if (maybe(0.5)) e['selector'] = selector();
    if (maybe(0.15)) e['notSelector'] = selector();
    if (maybe(0.2)) e['namespaceSelector'] = pick(['all()', 'global()', "team == 'x'"]);
    if (maybe(0.15))
      e['serviceAccounts'] = pick([{ names: [pick(SAS)] }, { selector: "role == 'reader'" }, {}]);
    if (maybe(0.2)) e['nets'] = [pick(['10.1.0.0/29', '203.0.113.0/24', 'fd00::/64', '0.0.0.0/0'])];
    if (maybe(0.1)) e['notNets'] = [pick(['10.1.0.0/30', '198.51.100.0/24'])];
    if (maybe(0.35)) e['ports'] = ports();
    if (maybe(0.1)) e['notPorts'] = ports();
    if (maybe(0.05)) e['services'] = { name: 'svc' };
    return e;
  };
  const rule = (): CalicoRule => {
    const r: Record<string, unknown> = {
      action: pick(['Allow', 'Allow', 'Deny', 'Pass', 'Log'] as const),
    };
    if (maybe(0.5)) r['protocol'] = pick(['TCP', 'UDP', 'ICMP', 6]);
    else if (maybe(0.1)) r['notProtocol'] = pick(['TCP', 'UDP']);
    if (maybe(0.05)) r['icmp'] = pick([{ type: 8 }, {}]);
    if (maybe(0.05)) r['notICMP'] = { type: 8 };
    if (maybe(0.1)) r['ipVersion'] = pick([4, 6]);
    if (maybe(0.6)) r['source'] = entity();
    if (maybe(0.5)) r['destination'] = entity();
    if (maybe(0.15)) r['http'] = { methods: ['GET'] };
    return r as unknown as CalicoRule;
  };
  const rules = () => Array.from({ length: Math.floor(rnd() * 4) }, rule);

  const policies = 3 + Math.floor(rnd() * 7);
  for (let i = 0; i < policies; i++) {
    const kind = rnd();
    if (kind < 0.3) {
      const ns = pick(NS);
      out.push({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: `k${i}`, namespace: ns },
        spec: {
          podSelector: maybe(0.3) ? {} : { matchLabels: { app: pick(APPS) } },
          ...(maybe(0.5) ? { policyTypes: ['Ingress', 'Egress'] as const } : {}),
          ingress: maybe(0.2)
            ? []
            : [
                {
                  from: [
                    pick([
                      { podSelector: { matchLabels: { app: pick(APPS) } } },
                      { namespaceSelector: { matchLabels: { team: pick(['x', 'y']) } } },
                      {
                        namespaceSelector: {},
                        podSelector: {
                          matchExpressions: [{ key: 'pci', operator: 'Exists' as const }],
                        },
                      },
                      { ipBlock: { cidr: '10.1.0.0/24', except: ['10.1.0.0/30'] } },
                    ]),
                  ],
                  ...(maybe(0.7)
                    ? {
                        ports: [
                          pick([
                            { port: 80 },
                            { port: 'http' },
                            { port: 8000, endPort: 9000 },
                            { protocol: 'UDP' as const },
                          ]),
                        ],
                      }
                    : {}),
                },
              ],
          egress: maybe(0.5)
            ? []
            : [{ to: [{ ipBlock: { cidr: '10.1.0.0/29' } }], ports: [{ port: 'http' }] }],
        },
      });
      continue;
    }
    const global = kind < 0.65;
    const staged = maybe(0.1);
    const spec = {
      tier: pick(['default', 'sec', 'plat', 'missing']),
      ...(maybe(0.8) ? { order: Math.floor(rnd() * 4) } : {}),
      selector: selector(),
      ...(global && maybe(0.3)
        ? { namespaceSelector: pick(["team == 'x'", 'global()', 'all()']) }
        : {}),
      ...(maybe(0.1) ? { serviceAccountSelector: "role == 'writer'" } : {}),
      ...(maybe(0.5)
        ? { types: pick([['Ingress'], ['Egress'], ['Ingress', 'Egress']] as const) }
        : {}),
      ...(global && maybe(0.1) ? { preDNAT: true } : {}),
      ingress: rules(),
      egress: rules(),
    };
    const kindName = global
      ? staged
        ? 'StagedGlobalNetworkPolicy'
        : 'GlobalNetworkPolicy'
      : staged
        ? 'StagedNetworkPolicy'
        : 'NetworkPolicy';
    out.push({
      apiVersion: 'projectcalico.org/v3',
      kind: kindName,
      metadata: global ? { name: `g${i}` } : { name: `n${i}`, namespace: pick(NS) },
      spec,
    });
  }
  return { resources: out, refs };
}

function sameKernel(e: Engine, from: string, to: string, protocol: string, port: number): void {
  const fast = e.kernelVerdicts(from, to, protocol, port, 'program');
  const walk = e.kernelVerdicts(from, to, protocol, port, 'walk');
  const where = `${from} -> ${to} ${protocol}/${port}`;
  assert.deepEqual(fast, walk, where);
  const allows = walk?.egress.verdict === 'allow' && walk.ingress.verdict === 'allow';
  assert.equal(e.kernelAllows(from, to, protocol, port), walk ? allows : false, where);
  // `check` without a trace takes the programs; with a trace, the walk.
  const quick = e.check({ from, to, protocol, port }, false, true);
  const full = e.check({ from, to, protocol, port }, true, true);
  if (quick.ok && full.ok) {
    const strip = (v: typeof quick.result.kernel.egress) => ({ ...v, trace: [] });
    assert.deepEqual(strip(quick.result.kernel.egress), strip(full.result.kernel.egress), where);
    assert.deepEqual(strip(quick.result.kernel.ingress), strip(full.result.kernel.ingress), where);
  } else assert.equal(quick.ok, full.ok, where);
}

test('kernel programs decide as the rule walk: verdict and provenance, random clusters and probes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
      const { resources, refs } = world(seed);
      const e = compile(resources);
      for (const a of refs)
        for (const b of refs)
          for (const [protocol, port] of PROBES) sameKernel(e, a, b, protocol, port);
    }),
    { numRuns: 20 },
  );
});

test('kernel programs follow every change: a cluster edited step by step agrees with the walk', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
      const { resources, refs } = world(seed);
      const e = new Engine();
      const probe = () => {
        for (const a of refs.slice(0, 5))
          for (const b of refs) for (const port of [80, 8080]) sameKernel(e, a, b, 'TCP', port);
      };
      // Feed in halves with decisions between, then remove a third and decide again.
      const half = Math.floor(resources.length / 2);
      for (const r of resources.slice(half)) e.upsert(r);
      probe();
      for (const r of resources.slice(0, half)) e.upsert(r);
      probe();
      for (const r of resources.filter((_, i) => i % 3 === 0))
        e.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
      probe();
      // The result must equal a fresh compile of what is left.
      const left = resources.filter((_, i) => i % 3 !== 0);
      const fresh = compile(left);
      for (const a of refs)
        for (const b of refs)
          assert.equal(
            e.kernelAllows(a, b, 'TCP', 80),
            fresh.kernelAllows(a, b, 'TCP', 80),
            `${a} -> ${b}`,
          );
    }),
    { numRuns: 10 },
  );
});

test('kernel programs decide as the rule walk on every probe of the policy conformance corpus', () => {
  let probes = 0;
  for (const c of loadPolicyCorpus()) {
    const loaded = loadText(c.resources, c.file);
    const e = compile(loaded.resources);
    for (const p of c.probes) {
      if (p.icmp !== undefined) continue;
      sameKernel(e, p.from, p.to, String(p.protocol ?? 'TCP'), p.port ?? 0);
      probes++;
    }
  }
  assert.ok(probes > 200, `${probes} probes`);
});

test('a kernel program leaves out what the bucket excludes and shares selectors between rules', () => {
  const pod = (name: string, app: string, ip: string): Resource => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'a', labels: { app } },
    spec: { containers: [] },
    status: { podIP: ip },
  });
  const gnp = (name: string, order: number, rules: CalicoRule[]): Resource => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'GlobalNetworkPolicy',
    metadata: { name },
    spec: { order, selector: "app == 'db'", ingress: rules },
  });
  const fromWeb: CalicoRule = {
    action: 'Allow',
    protocol: 'TCP',
    source: { selector: "app == 'web'" },
  };
  const e = compile([
    pod('db', 'db', '10.0.0.1'),
    pod('web', 'web', '10.0.0.2'),
    pod('x', 'x', '10.0.0.3'),
    gnp('p1', 1, [
      { action: 'Allow', protocol: 'UDP' },
      { ...fromWeb, destination: { ports: [5432] } },
    ]),
    gnp('p2', 2, [fromWeb, { action: 'Deny', source: { selector: "app == 'x'" } }]),
    gnp('p3', 3, [fromWeb]),
  ]);
  const prog = e.kernelProgram('a/db', 'ingress', 'TCP', 5432);
  assert.ok(prog);
  const steps = (p: typeof prog | undefined) =>
    p?.segments.flatMap((seg) =>
      seg.steps.map((st) => `${st.policy?.name ?? ''}#${st.rule?.index ?? '-'}`),
    );
  // p1's UDP rule is out of the bucket; p3's rule repeats p1's decisive predicate and is dead.
  assert.deepEqual(steps(prog), ['p1#1', 'p2#1']);
  assert.equal(prog.segments.length, 1);
  assert.equal(prog.segments[0]?.end?.kind, 'tier-default');
  // p2's first rule tests the same predicate as p1's second: one predicate object.
  assert.equal(e.kernelAllows('a/web', 'a/db', 'TCP', 5432), true);
  assert.equal(e.kernelAllows('a/x', 'a/db', 'TCP', 5432), false);
  // On another port p1's second rule is out too, and p2's first rule decides for web.
  const other = e.kernelProgram('a/db', 'ingress', 'TCP', 80);
  assert.deepEqual(steps(other), ['p2#0', 'p2#1']);
  const [first] = other?.segments[0]?.steps ?? [];
  assert.equal(first?.predicate, prog.segments[0]?.steps[0]?.predicate);
});

test('a Pass before a decisive selector does not hide that selector from later tiers', () => {
  const pod = (name: string, labels: Record<string, string>, ip: string): Resource => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'a', labels },
    spec: { containers: [] },
    status: { podIP: ip },
  });
  const tier = (name: string, order: number, defaultAction: 'Deny' | 'Pass'): Resource => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'Tier',
    metadata: { name },
    spec: { order, defaultAction },
  });
  const gnp = (name: string, t: string, rules: CalicoRule[]): Resource => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'GlobalNetworkPolicy',
    metadata: { name },
    spec: { tier: t, selector: "app == 'db'", ingress: rules },
  });
  const e = compile([
    pod('db', { app: 'db' }, '10.0.0.1'),
    pod('web', { app: 'web', pci: 'true' }, '10.0.0.2'),
    tier('t1', 1, 'Pass'),
    tier('t2', 2, 'Pass'),
    gnp('first', 't1', [
      { action: 'Pass', source: { selector: 'has(pci)' } },
      { action: 'Allow', source: { selector: "app == 'web'" } },
    ]),
    gnp('second', 't2', [{ action: 'Deny', source: { selector: "app == 'web'" } }]),
  ]);
  const walk = e.kernelVerdicts('a/web', 'a/db', 'TCP', 80, 'walk');
  assert.equal(walk?.ingress.provenance.policy, 'second');
  assert.deepEqual(e.kernelVerdicts('a/web', 'a/db', 'TCP', 80), walk);
  assert.equal(e.kernelAllows('a/web', 'a/db', 'TCP', 80), false);
});

test('a selector tested with other conditions stays live for later rules', () => {
  const pod = (name: string, app: string, ip: string): Resource => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'a', labels: { app } },
    spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { podIP: ip },
  });
  const e = compile([
    pod('db', 'db', '10.0.0.1'),
    pod('web', 'web', '10.0.0.2'),
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'p' },
      spec: {
        selector: "app == 'db'",
        ingress: [
          // Same peer selector, plus an address the web pod does not have: no match.
          { action: 'Allow', source: { selector: "app == 'web'", nets: ['10.0.0.99/32'] } },
          // Same peer selector, plus a named port that is not the probed one: no match.
          {
            action: 'Allow',
            source: { selector: "app == 'web'" },
            destination: { ports: ['http'] },
          },
          { action: 'Deny', source: { selector: "app == 'web'" } },
        ],
      },
    },
  ]);
  for (const port of [80, 8080]) {
    const walk = e.kernelVerdicts('a/web', 'a/db', 'TCP', port, 'walk');
    assert.deepEqual(e.kernelVerdicts('a/web', 'a/db', 'TCP', port), walk, `port ${port}`);
  }
  assert.equal(e.kernelVerdicts('a/web', 'a/db', 'TCP', 80)?.ingress.provenance.rule, 2);
  assert.equal(e.kernelVerdicts('a/web', 'a/db', 'TCP', 8080)?.ingress.provenance.rule, 1);
});

test('numbered peers stay exact across renumbering: label churn with a tiny number budget agrees with the walk', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
      const { resources, refs } = world(seed);
      // Slack 0: a new numbering as soon as numbers exceed twice the endpoints.
      const e = new Engine({ peerNumberSlack: 0 });
      for (const r of resources) e.upsert(r);
      const pods = resources.filter((r) => r.kind === 'Pod');
      for (let round = 0; round < 6; round++) {
        for (const a of refs)
          for (const b of refs) {
            const walk = e.kernelVerdicts(a, b, 'TCP', 80, 'walk');
            const allows = walk?.egress.verdict === 'allow' && walk.ingress.verdict === 'allow';
            assert.equal(e.kernelAllows(a, b, 'TCP', 80), walk ? allows : false, `${a} -> ${b}`);
            assert.equal(e.kernelAllows(a, b, 'TCP', 80), walk ? allows : false, `${a} -> ${b}`);
          }
        // Every other pod changes its labels: new endpoint objects, new peers, new numbers,
        // beside peers kept from before.
        for (const p of pods.filter((_, i) => i % 2 === round % 2)) {
          const labels = { ...(p.metadata.labels ?? {}) };
          if (labels['pci'] === undefined) labels['pci'] = 'true';
          else delete labels['pci'];
          labels['app'] = ['web', 'db', 'api'][(round + p.metadata.name.length) % 3] as string;
          e.upsert({ ...p, metadata: { ...p.metadata, labels } });
        }
      }
    }),
    { numRuns: 10 },
  );
});
