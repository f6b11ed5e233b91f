// `Engine.decideL7` (the destination L7 point's per-request verdict) must agree with the full
// `check`: the same ingress, Istio, mTLS and principal parts, and the verdict of those parts,
// on random clusters with every L7 feature, on clusters edited step by step (its caches follow
// every change), and on every probe of the policy conformance corpus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Engine } from './engine.js';
import { compile } from './engine.js';
import type { L7Verdict, Probe } from './types.js';
import type { Resource } from '../model/resources.js';
import { loadText } from '../load/load.js';
import { corpusProbes, followEdits, pod, TWO_PODS } from './l7-decide-support.test.js';

/**
 * What the destination decides, out of an L7 verdict: everything but the trace and the source's
 * egress part; when that egress part denied, the overall verdict and provenance are the source's,
 * so those are left out too.
 */
function destinationPart(l7: L7Verdict, egressDenied: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = { ...l7 };
  delete out.trace;
  delete out.egress;
  if (egressDenied) {
    delete out.verdict;
    delete out.provenance;
  }
  return out;
}

function agree(e: Engine, p: Probe): void {
  const full = e.check(p, false);
  const l7 = e.decideL7(p, false);
  assert.equal(l7.ok, full.ok, JSON.stringify(p));
  if (!full.ok || !l7.ok) {
    if (!full.ok && !l7.ok) assert.equal(l7.code, full.code);
    return;
  }
  assert.equal(l7.result.egress, undefined, 'decideL7 computes no source egress verdict');
  const egressDenied = full.result.l7.egress?.verdict === 'deny';
  assert.deepEqual(
    destinationPart(l7.result, egressDenied),
    destinationPart(full.result.l7, egressDenied),
    JSON.stringify(p),
  );
  // With explain, the same verdict.
  const explained = e.decideL7(p, true);
  assert.ok(explained.ok);
  assert.equal(explained.result.verdict, l7.result.verdict);
}

const NS = ['a', 'b'];
const SAS = ['s1', 's2'];
const APPS = ['web', 'api'];
const METHODS = ['GET', 'POST', 'DELETE'];
const PATHS = ['/', '/api/x', '/admin', '/api/y?q=1'];

interface World {
  readonly resources: Resource[];
  readonly pods: readonly { id: string; ip: string; ns: string; sa: string }[];
}

const worldArb: fc.Arbitrary<World> = fc
  .record({
    pods: fc.array(
      fc.record({
        ns: fc.constantFrom(...NS),
        sa: fc.constantFrom(...SAS),
        app: fc.constantFrom(...APPS),
        l7: fc.boolean(),
      }),
      { minLength: 2, maxLength: 5 },
    ),
    authz: fc.array(
      fc.record({
        ns: fc.constantFrom(...NS, 'istio-system'),
        action: fc.constantFrom('ALLOW', 'DENY', 'AUDIT'),
        app: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
        principal: fc.option(fc.constantFrom(...SAS), { nil: undefined }),
        ns2: fc.option(fc.constantFrom(...NS), { nil: undefined }),
        method: fc.option(fc.constantFrom(...METHODS), { nil: undefined }),
        path: fc.option(fc.constantFrom('/api/*', '/admin', '*'), { nil: undefined }),
        port: fc.option(fc.constantFrom('80', '8080'), { nil: undefined }),
      }),
      { maxLength: 3 },
    ),
    peerAuthn: fc.array(
      fc.record({
        ns: fc.constantFrom(...NS, 'istio-system'),
        mode: fc.constantFrom('STRICT', 'PERMISSIVE', 'DISABLE', 'UNSET'),
        app: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
        portMode: fc.option(fc.constantFrom('STRICT', 'DISABLE'), { nil: undefined }),
      }),
      { maxLength: 2 },
    ),
    calico: fc.array(
      fc.record({
        ns: fc.constantFrom(...NS),
        action: fc.constantFrom('Allow', 'Deny'),
        method: fc.option(fc.constantFrom(...METHODS), { nil: undefined }),
        sa: fc.option(fc.constantFrom(...SAS), { nil: undefined }),
      }),
      { maxLength: 3 },
    ),
    rbac: fc.option(
      fc.record({
        mode: fc.constantFrom('ON', 'ON_WITH_INCLUSION', 'OFF'),
        user: fc.constantFrom('*', 'cluster.local/ns/a/sa/s1', 'cluster.local/ns/b/*'),
        method: fc.option(fc.constantFrom(...METHODS), { nil: undefined }),
      }),
      { nil: undefined },
    ),
  })
  .map((w) => {
    const resources: Resource[] = [];
    for (const ns of [...NS, 'istio-system'])
      resources.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const pods = w.pods.map((p, i) => {
      const made = pod(i, p.ns, p.app, p.l7, p.sa);
      resources.push(made.resource);
      return { id: made.id, ip: made.ip, ns: p.ns, sa: p.sa };
    });
    for (const ns of NS)
      for (const app of APPS)
        resources.push({
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: app, namespace: ns },
          spec: { selector: { app }, ports: [{ port: 80, targetPort: 'http' }] },
        });
    w.authz.forEach((a, i) => {
      const from = [
        ...(a.principal
          ? [{ source: { principals: [`cluster.local/ns/a/sa/${a.principal}`] } }]
          : []),
        ...(a.ns2 ? [{ source: { namespaces: [a.ns2] } }] : []),
      ];
      const op = {
        ...(a.method ? { methods: [a.method] } : {}),
        ...(a.path ? { paths: [a.path] } : {}),
        ...(a.port ? { ports: [a.port] } : {}),
      };
      resources.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: `ap${i}`, namespace: a.ns },
        spec: {
          action: a.action,
          ...(a.app ? { selector: { matchLabels: { app: a.app } } } : {}),
          rules: [
            {
              ...(from.length > 0 ? { from } : {}),
              ...(Object.keys(op).length > 0 ? { to: [{ operation: op }] } : {}),
            },
          ],
        },
      });
    });
    w.peerAuthn.forEach((pa, i) => {
      resources.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'PeerAuthentication',
        metadata: { name: `pa${i}`, namespace: pa.ns },
        spec: {
          mtls: { mode: pa.mode },
          ...(pa.app ? { selector: { matchLabels: { app: pa.app } } } : {}),
          ...(pa.app && pa.portMode ? { portLevelMtls: { '8080': { mode: pa.portMode } } } : {}),
        },
      });
    });
    w.calico.forEach((c, i) => {
      resources.push({
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: `np${i}`, namespace: c.ns },
        spec: {
          selector: 'all()',
          ingress: [
            {
              action: c.action,
              protocol: 'TCP',
              ...(c.sa ? { source: { serviceAccounts: { names: [c.sa] } } } : {}),
              ...(c.method ? { http: { methods: [c.method] } } : {}),
            },
          ],
        },
      });
    });
    if (w.rbac) {
      resources.push({
        apiVersion: 'rbac.istio.io/v1alpha1',
        kind: 'ClusterRbacConfig',
        metadata: { name: 'default' },
        spec: {
          mode: w.rbac.mode,
          ...(w.rbac.mode === 'ON_WITH_INCLUSION' ? { inclusion: { namespaces: ['a'] } } : {}),
        },
      });
      for (const ns of NS) {
        resources.push({
          apiVersion: 'rbac.istio.io/v1alpha1',
          kind: 'ServiceRole',
          metadata: { name: 'r', namespace: ns },
          spec: {
            rules: [
              { services: ['web.*'], ...(w.rbac.method ? { methods: [w.rbac.method] } : {}) },
            ],
          },
        });
        resources.push({
          apiVersion: 'rbac.istio.io/v1alpha1',
          kind: 'ServiceRoleBinding',
          metadata: { name: 'b', namespace: ns },
          spec: { subjects: [{ user: w.rbac.user }], roleRef: { kind: 'ServiceRole', name: 'r' } },
        });
      }
    }
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
    const principal =
      k % 5 === 0
        ? null
        : k % 5 === 1
          ? `spiffe://cluster.local/ns/${b.ns}/sa/${b.sa}`
          : k % 5 === 2
            ? 'spiffe://evil.example/ns/a/sa/s1'
            : undefined;
    const http = k % 4 !== 3;
    out.push({
      from: k % 7 === 0 ? a.ip : a.id,
      to: k % 6 === 0 ? b.ip : b.id,
      port: k % 3 === 0 ? 80 : 8080,
      ...(principal !== undefined ? { principal } : {}),
      ...(http
        ? { method: METHODS[k % METHODS.length] as string, path: PATHS[k % PATHS.length] as string }
        : {}),
    });
  }
  // Addresses that are no endpoint, and names that are none.
  out.push({ from: '192.0.2.9', to: pods[0]?.id ?? 'x', port: 8080, method: 'GET', path: '/' });
  out.push({ from: 'nope/none', to: pods[0]?.id ?? 'x', port: 8080 });
  return out;
}

test('decideL7 agrees with the L7 part of check: random clusters with every L7 feature', () => {
  fc.assert(
    fc.property(worldArb, fc.array(fc.nat(50), { minLength: 8, maxLength: 24 }), (w, pick) => {
      const e = compile(w.resources);
      for (const p of probesOf(w, pick)) agree(e, p);
    }),
    { numRuns: 150 },
  );
});

function agreeWith(e: Engine, reference: Engine, p: Probe): void {
  const full = reference.check(p, false);
  const l7 = e.decideL7(p, false);
  assert.equal(l7.ok, full.ok, JSON.stringify(p));
  if (!full.ok || !l7.ok) return;
  const egressDenied = full.result.l7.egress?.verdict === 'deny';
  assert.deepEqual(
    destinationPart(l7.result, egressDenied),
    destinationPart(full.result.l7, egressDenied),
    JSON.stringify(p),
  );
}

test('decideL7 follows every change: an edited engine agrees with a from-scratch check', () => {
  fc.assert(
    fc.property(
      worldArb,
      worldArb,
      fc.array(fc.nat(50), { minLength: 6, maxLength: 10 }),
      (w1, w2, pick) =>
        followEdits(
          w1.resources,
          w2.resources,
          probesOf(w1, pick).slice(0, 3),
          (e, p) => void e.decideL7(p),
          agreeWith,
          (r) => r.kind === 'Namespace' || r.kind === 'Service',
        ),
    ),
    { numRuns: 25 },
  );
});

test('decideL7 agrees with check on every probe of the policy conformance corpus', () => {
  for (const { engine, probes } of corpusProbes()) for (const p of probes) agree(engine, p);
});

test('decideL7 answers for the destination only: a source egress denial does not enter it', () => {
  const text = `${TWO_PODS}---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-egress, namespace: x}
spec: {selector: app == 'a', types: [Egress]}
`;
  const e = compile(loadText(text, 't.yaml').resources);
  const probe: Probe = { from: 'x/a', to: 'x/b', port: 80, method: 'GET', path: '/' };
  const full = e.check(probe);
  assert.ok(full.ok);
  assert.equal(full.result.l7.verdict, 'deny');
  assert.equal(full.result.l7.provenance.direction, 'egress');
  const l7 = e.decideL7(probe);
  assert.ok(l7.ok);
  assert.equal(l7.result.verdict, 'allow');
  assert.equal(l7.result.provenance.direction, 'ingress');
  assert.equal(l7.result.principal, 'spiffe://cluster.local/ns/x/sa/sa');
});
