// `Engine.decideL7Egress` (the source L7 point's per-request egress verdict) must be exactly
// `check(probe).l7.egress`: on random clusters with Calico and Kubernetes egress rules at L7
// (http methods and paths, selectors, nets, ports, tiers with Pass, profiles), on clusters edited
// step by step (its caches follow every change), and on every probe of the conformance corpus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Engine } from './engine.js';
import { compile } from './engine.js';
import type { Probe } from './types.js';
import type { Resource } from '../model/resources.js';
import { loadText } from '../load/load.js';
import { corpusProbes, followEdits, pod, TWO_PODS } from './l7-decide-support.test.js';

function agreeWith(e: Engine, reference: Engine, p: Probe): void {
  const full = reference.check(p, false);
  const eg = e.decideL7Egress(p, false);
  assert.equal(eg.ok, full.ok, JSON.stringify(p));
  if (!full.ok || !eg.ok) {
    if (!full.ok && !eg.ok) assert.equal(eg.code, full.code, JSON.stringify(p));
    return;
  }
  assert.deepEqual(eg.result, full.result.l7.egress, JSON.stringify(p));
  const explained = e.decideL7Egress(p, true);
  assert.ok(explained.ok);
  assert.equal(explained.result?.verdict, eg.result?.verdict);
  assert.deepEqual(explained.result?.provenance, eg.result?.provenance);
}

const agree = (e: Engine, p: Probe): void => agreeWith(e, e, p);

const NS = ['a', 'b'];
const APPS = ['web', 'api', 'db'];
const METHODS = ['GET', 'POST', 'DELETE'];
const PATHS = ['/', '/api/x', '/admin', '/api/y?q=1', '/apix'];

interface World {
  readonly resources: Resource[];
  readonly pods: readonly { id: string; ip: string }[];
}

const httpArb = fc.option(
  fc.record({
    methods: fc.option(fc.subarray(METHODS, { minLength: 1 }), { nil: undefined }),
    paths: fc.option(
      fc.array(
        fc.oneof(
          fc.constantFrom('/api', '/admin', '/').map((prefix) => ({ prefix })),
          fc.constantFrom('/admin', '/api/x', '/').map((exact) => ({ exact })),
        ),
        { minLength: 1, maxLength: 2 },
      ),
      { nil: undefined },
    ),
  }),
  { nil: undefined },
);

const egressRuleArb = fc.record({
  action: fc.constantFrom('Allow', 'Deny', 'Pass', 'Log'),
  http: httpArb,
  dstApp: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
  dstNet: fc.option(fc.constantFrom('10.0.0.0/29', '192.0.2.0/24'), { nil: undefined }),
  port: fc.option(fc.constantFrom(80, 8080), { nil: undefined }),
  notMethod: fc.boolean(),
});

const worldArb: fc.Arbitrary<World> = fc
  .record({
    pods: fc.array(
      fc.record({ ns: fc.constantFrom(...NS), app: fc.constantFrom(...APPS), l7: fc.boolean() }),
      { minLength: 2, maxLength: 5 },
    ),
    calico: fc.array(
      fc.record({
        ns: fc.constantFrom(...NS),
        global: fc.boolean(),
        tier: fc.constantFrom('default', 'security'),
        order: fc.option(fc.nat(20), { nil: undefined }),
        app: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
        rules: fc.array(egressRuleArb, { maxLength: 3 }),
      }),
      { maxLength: 4 },
    ),
    k8s: fc.array(
      fc.record({
        ns: fc.constantFrom(...NS),
        app: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
        toApp: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
        port: fc.option(fc.constantFrom(80, 8080), { nil: undefined }),
      }),
      { maxLength: 2 },
    ),
    profileEgressDeny: fc.boolean(),
  })
  .map((w) => {
    const resources: Resource[] = [];
    for (const ns of NS)
      resources.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    resources.push({
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'security' },
      spec: { order: 100 },
    });
    if (w.profileEgressDeny)
      resources.push({
        apiVersion: 'projectcalico.org/v3',
        kind: 'Profile',
        metadata: { name: 'kns.b' },
        spec: { egress: [{ action: 'Deny', http: { methods: ['DELETE'] } }, { action: 'Allow' }] },
      });
    const pods = w.pods.map((p, i) => {
      const made = pod(i, p.ns, p.app, p.l7, 'sa');
      resources.push(made.resource);
      return { id: made.id, ip: made.ip };
    });
    w.calico.forEach((c, i) => {
      const tiered = c.tier === 'security';
      const name = tiered ? `security.np${i}` : `np${i}`;
      resources.push({
        apiVersion: 'projectcalico.org/v3',
        kind: c.global ? 'GlobalNetworkPolicy' : 'NetworkPolicy',
        metadata: { name, ...(c.global ? {} : { namespace: c.ns }) },
        spec: {
          ...(tiered ? { tier: 'security' } : {}),
          ...(c.order !== undefined ? { order: c.order } : {}),
          selector: c.app ? `app == '${c.app}'` : 'all()',
          types: ['Egress'],
          egress: c.rules.map((r) => ({
            action: r.action,
            protocol: 'TCP',
            ...(r.http
              ? {
                  http: {
                    ...(r.http.methods ? { methods: r.http.methods } : {}),
                    ...(r.http.paths ? { paths: r.http.paths } : {}),
                  },
                }
              : {}),
            ...(r.dstApp || r.dstNet || r.port
              ? {
                  destination: {
                    ...(r.dstApp ? { selector: `app == '${r.dstApp}'` } : {}),
                    ...(r.dstNet ? { nets: [r.dstNet] } : {}),
                    ...(r.port ? { ports: [r.port] } : {}),
                  },
                }
              : {}),
          })),
        },
      });
    });
    w.k8s.forEach((k, i) => {
      resources.push({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: `k${i}`, namespace: k.ns },
        spec: {
          podSelector: k.app ? { matchLabels: { app: k.app } } : {},
          policyTypes: ['Egress'],
          egress: [
            {
              ...(k.toApp ? { to: [{ podSelector: { matchLabels: { app: k.toApp } } }] } : {}),
              ...(k.port ? { ports: [{ protocol: 'TCP', port: k.port }] } : {}),
            },
          ],
        },
      });
    });
    return { resources, pods };
  });

function probesOf(w: World, pick: number[]): Probe[] {
  const out: Probe[] = [];
  const pods = w.pods;
  for (let i = 0; i + 1 < pick.length; i += 2) {
    const a = pods[(pick[i] ?? 0) % pods.length];
    const b = pods[(pick[i + 1] ?? 0) % pods.length];
    if (!a || !b) continue;
    const k = (pick[i] ?? 0) + (pick[i + 1] ?? 0);
    const to = k % 9 === 0 ? `192.0.2.${1 + (k % 20)}` : k % 6 === 0 ? b.ip : b.id;
    const http = k % 4 !== 3;
    out.push({
      from: k % 7 === 0 ? a.ip : a.id,
      to,
      port: k % 3 === 0 ? 80 : 8080,
      ...(k % 11 === 0 ? { protocol: 'UDP' } : {}),
      ...(http
        ? { method: METHODS[k % METHODS.length] as string, path: PATHS[k % PATHS.length] as string }
        : {}),
    });
  }
  out.push({ from: pods[0]?.id ?? 'x', to: pods[0]?.id ?? 'x', port: 8080, method: 'GET' });
  out.push({ from: 'nope/none', to: pods[0]?.id ?? 'x', port: 8080 });
  out.push({ from: pods[0]?.id ?? 'x', to: 'nope/none', port: 8080 });
  out.push({ from: pods[0]?.id ?? 'x', to: '192.0.2.1', port: 80, protocol: 'BOGUS' });
  return out;
}

test('decideL7Egress equals check(...).l7.egress: random clusters with egress rules at L7', () => {
  let judged = 0;
  fc.assert(
    fc.property(worldArb, fc.array(fc.nat(60), { minLength: 8, maxLength: 30 }), (w, pick) => {
      const e = compile(w.resources);
      for (const p of probesOf(w, pick)) {
        agree(e, p);
        const r = e.decideL7Egress(p);
        if (r.ok && r.result) judged++;
      }
    }),
    { numRuns: 200 },
  );
  // The property is not vacuous: many probes had a source L7 point judging them.
  assert.ok(judged > 200, `only ${judged} probes reached a source L7 point`);
});

test('decideL7Egress follows every change: an edited engine agrees with a from-scratch check', () => {
  fc.assert(
    fc.property(
      worldArb,
      worldArb,
      fc.array(fc.nat(60), { minLength: 6, maxLength: 12 }),
      (w1, w2, pick) =>
        followEdits(
          w1.resources,
          w2.resources,
          probesOf(w1, pick).slice(0, 4),
          (e, p) => void e.decideL7Egress(p),
          agreeWith,
          (r) => r.kind === 'Namespace',
        ),
    ),
    { numRuns: 25 },
  );
});

test('decideL7Egress equals check(...).l7.egress on every probe of the conformance corpus', () => {
  let withEgress = 0;
  for (const { engine: e, probes } of corpusProbes())
    for (const probe of probes) {
      agree(e, probe);
      // The reverse direction too: the corpus's destinations as sources.
      agree(e, { ...probe, from: probe.to, to: probe.from });
      const r = e.decideL7Egress(probe);
      if (r.ok && r.result) withEgress++;
    }
  assert.ok(withEgress > 20, `only ${withEgress} corpus probes have a source L7 point`);
});

test('decideL7Egress judges the source only: a destination L7 denial does not enter it', () => {
  const text = `${TWO_PODS}---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-get, namespace: x}
spec:
  selector: app == 'a'
  types: [Egress]
  egress:
  - action: Allow
    http: {methods: [GET]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-ingress, namespace: x}
spec: {selector: app == 'b', types: [Ingress]}
`;
  const e = compile(loadText(text, 't.yaml').resources);
  const get = e.decideL7Egress({ from: 'x/a', to: 'x/b', port: 80, method: 'GET', path: '/' });
  assert.ok(get.ok);
  assert.equal(get.result?.verdict, 'allow');
  assert.equal(get.result?.provenance.direction, 'egress');
  const post = e.decideL7Egress({ from: 'x/a', to: 'x/b', port: 80, method: 'POST', path: '/' });
  assert.ok(post.ok);
  assert.equal(post.result?.verdict, 'deny');
  assert.equal(post.result?.provenance.kind, 'tier-default');
  assert.equal(post.result?.provenance.direction, 'egress');
  // No source L7 point, no verdict: b has no egress policy yet an L7 point, a plain IP has none.
  const none = e.decideL7Egress({ from: '192.0.2.7', to: 'x/b', port: 80, method: 'GET' });
  assert.ok(none.ok);
  assert.equal(none.result, undefined);
});
