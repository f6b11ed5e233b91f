// STYLE 10: the incremental engine must end in the same state whatever order its inputs come in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compile, Engine } from './engine.js';
import type { Resource } from '../model/resources.js';

const NS = ['a', 'b'];
const APPS = ['web', 'db', 'api'];

function world(seed: number): Resource[] {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const out: Resource[] = [];
  for (const ns of NS) {
    out.push({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: ns, labels: { team: pick(['x', 'y']) } },
    });
  }
  let ip = 1;
  for (const ns of NS) {
    for (let i = 0; i < 3; i++) {
      out.push({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `p${i}`, namespace: ns, labels: { app: pick(APPS) } },
        spec: {
          serviceAccountName: pick(['s1', 's2']),
          containers: [{ name: 'c', ports: [{ name: 'http', containerPort: pick([80, 8080]) }] }],
        },
        status: { podIP: `10.1.0.${ip++}` },
      });
    }
  }
  for (let i = 0; i < 4; i++) {
    const ns = pick(NS);
    out.push({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: `np${i}`, namespace: ns },
      spec: {
        podSelector: rnd() < 0.3 ? {} : { matchLabels: { app: pick(APPS) } },
        ...(rnd() < 0.5 ? { policyTypes: ['Ingress', 'Egress'] as const } : {}),
        ingress:
          rnd() < 0.3
            ? []
            : [
                {
                  from: [
                    {
                      podSelector: { matchLabels: { app: pick(APPS) } },
                      ...(rnd() < 0.5
                        ? { namespaceSelector: { matchLabels: { team: pick(['x', 'y']) } } }
                        : {}),
                    },
                  ],
                  ports: [{ port: pick([80, 'http']) }],
                },
              ],
        egress: rnd() < 0.5 ? [] : [{ to: [{ ipBlock: { cidr: '10.1.0.0/29' } }] }],
      },
    });
  }
  for (let i = 0; i < 2; i++) {
    out.push({
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: `gnp${i}` },
      spec: {
        order: Math.floor(rnd() * 3),
        selector: pick([
          `app == '${pick(APPS)}'`,
          'has(app)',
          `app == '${pick(APPS)}' && has(app)`,
        ]),
        ingress: [
          {
            action: pick(['Allow', 'Deny', 'Pass'] as const),
            protocol: 'TCP',
            source: { namespaceSelector: `team == '${pick(['x', 'y'])}'` },
            destination: { ports: [pick([80, 8080])] },
          },
        ],
      },
    });
  }
  out.push({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'az', namespace: pick(NS) },
    spec: {
      action: pick(['ALLOW', 'DENY'] as const),
      rules: [{ to: [{ operation: { methods: ['POST'] } }] }],
    },
  });
  return out;
}

function snapshot(e: Engine): string[] {
  const eps = e.workloadEndpoints();
  const out: string[] = [];
  for (const a of eps) {
    for (const b of eps) {
      for (const port of [80, 8080]) {
        const r = e.check({ from: a, to: b, port, method: 'POST', path: '/' }, false);
        out.push(
          `${a}>${b}:${port}=${r.ok ? `${r.result.verdict}/${r.result.kernel.ingress.provenance.kind}/${r.result.l7.verdict}` : r.code}`,
        );
      }
    }
  }
  return out;
}

test('incremental engine: reversed, shuffled and churned input orders end in the from-scratch state', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 2 ** 31 - 1 }),
      fc.integer({ min: 0, max: 1000 }),
      (seed, shuffleSeed) => {
        const rs = world(seed);
        const expected = snapshot(compile(rs));

        assert.deepEqual(snapshot(compile([...rs].reverse())), expected, 'reversed');

        // Shuffled, with every resource first added in a stale form, queried, then replaced.
        const e = new Engine();
        const order = rs
          .map((r, i) => ({ r, k: (i * 7919 + shuffleSeed) % 101 }))
          .sort((x, y) => x.k - y.k);
        for (const { r } of order) {
          if (r.kind === 'Pod') {
            e.upsert({ ...r, metadata: { ...r.metadata, labels: { app: 'stale' } } });
            snapshot(e);
          }
          e.upsert(r);
        }
        assert.deepEqual(snapshot(e), expected, 'shuffled with stale labels');

        // Remove everything then add back: empty in between must not leave residue.
        for (const r of rs) e.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
        assert.deepEqual(e.workloadEndpoints(), []);
        for (const r of rs) e.upsert(r);
        assert.deepEqual(snapshot(e), expected, 'removed and re-added');
      },
    ),
    { numRuns: 25 },
  );
});

test('incremental engine: a namespace annotation change reaches replicas that share active policies', () => {
  const ns = (annotated: boolean): Resource => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: 'a',
      ...(annotated
        ? {
            annotations: {
              'net.beta.kubernetes.io/network-policy': '{"ingress":{"isolation":"DefaultDeny"}}',
            },
          }
        : {}),
    },
  });
  const pods: Resource[] = ['p1', 'p2'].map((name, i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'a', labels: { app: 'x' } },
    spec: { containers: [] },
    status: { podIP: `10.0.0.${i + 1}` },
  }));
  const e = compile([ns(false), ...pods]);
  assert.equal(e.kernelAllows('a/p1', 'a/p2', 'TCP', 80), true);
  e.upsert(ns(true));
  const expected = compile([ns(true), ...pods]).kernelAllows('a/p1', 'a/p2', 'TCP', 80);
  assert.equal(expected, false);
  assert.equal(e.kernelAllows('a/p1', 'a/p2', 'TCP', 80), expected);
  e.upsert(ns(false));
  assert.equal(e.kernelAllows('a/p1', 'a/p2', 'TCP', 80), true);
});
