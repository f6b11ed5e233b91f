import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadText } from '../load/load.js';
import type { Resource } from '../model/resources.js';
import { compile, Engine } from './engine.js';
import { rbacStringMatch } from './istio-rbac.js';
import type { Probe } from './types.js';

const WORLD = `
apiVersion: v1
kind: Pod
metadata: {name: productpage, namespace: shop, labels: {app: productpage}}
spec: {serviceAccountName: productpage, containers: [{name: c}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews, namespace: shop, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews, containers: [{name: c}]}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: other, labels: {app: sleep}}
spec: {serviceAccountName: sleep, containers: [{name: c}]}
status: {podIP: 10.2.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: shop}
spec: {selector: {app: productpage}, ports: [{port: 9080}]}
`;

const RBAC = `
apiVersion: rbac.istio.io/v1alpha1
kind: ClusterRbacConfig
metadata: {name: default}
spec: {mode: 'ON'}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: a-unrelated, namespace: shop}
spec:
  rules: [{services: [ratings.shop.svc.cluster.local]}]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: reviews-reader, namespace: shop}
spec:
  rules:
  - {services: [reviews.shop.svc.cluster.local], methods: [POST]}
  - {services: [reviews.shop.svc.cluster.local], methods: [GET], paths: ['/reviews/*']}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: productpage-reads, namespace: shop}
spec:
  subjects: [{user: cluster.local/ns/shop/sa/productpage}]
  roleRef: {kind: ServiceRole, name: reviews-reader}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: trial, namespace: shop}
spec:
  subjects: [{properties: {source.namespace: other}}]
  roleRef: {kind: ServiceRole, name: reviews-reader}
  mode: PERMISSIVE
`;

function load(text: string): Resource[] {
  const r = loadText(text, 't.yaml');
  assert.deepEqual(r.diagnostics, []);
  return r.resources;
}

const GET_REVIEWS: Probe = {
  from: 'shop/productpage',
  to: 'shop/reviews',
  port: 9080,
  method: 'GET',
  path: '/reviews/1',
};

function l7(e: Engine, p: Probe) {
  const r = e.check(p);
  assert.ok(r.ok);
  return r.result.l7;
}

test('legacy rbac provenance names the ServiceRole, its rule index and the ServiceRoleBinding', () => {
  const e = compile(load(WORLD + '---' + RBAC));
  const v = l7(e, GET_REVIEWS);
  assert.equal(v.verdict, 'allow');
  assert.equal(v.provenance.kind, 'istio-rbac-allow');
  assert.equal(v.provenance.policy, 'shop/reviews-reader');
  assert.equal(v.provenance.rule, 1);
  assert.equal(v.provenance.binding, 'shop/productpage-reads');
  assert.match(
    v.provenance.reason,
    /ServiceRole shop\/reviews-reader rule 1 .*ServiceRoleBinding shop\/productpage-reads/,
  );
  assert.ok(
    v.trace.some((t) =>
      t.includes(
        'ServiceRole shop/reviews-reader: rule 1 matched; ServiceRoleBinding shop/productpage-reads',
      ),
    ),
    v.trace.join('\n'),
  );
});

test('legacy rbac: a PERMISSIVE binding is traced with its would-be verdict and does not allow', () => {
  const e = compile(load(WORLD + '---' + RBAC));
  const v = l7(e, { ...GET_REVIEWS, from: 'other/sleep' });
  assert.equal(v.verdict, 'deny');
  assert.equal(v.provenance.kind, 'istio-rbac-deny');
  assert.ok(
    v.trace.some((t) =>
      t.includes('permissive bindings would allow (ServiceRoleBinding shop/trial)'),
    ),
    v.trace.join('\n'),
  );
});

test('legacy rbac: a global PERMISSIVE config allows and says what it would have done', () => {
  const text =
    WORLD +
    '---' +
    RBAC.replace("spec: {mode: 'ON'}", "spec: {mode: 'ON', enforcementMode: PERMISSIVE}");
  const e = compile(load(text));
  const v = l7(e, { ...GET_REVIEWS, method: 'DELETE' });
  assert.equal(v.verdict, 'allow');
  assert.match(v.provenance.reason, /PERMISSIVE \(not enforced\); it would deny/);
});

test('legacy rbac is incremental: removing the config, a binding or the Service changes the verdict at once', () => {
  const e = compile(load(WORLD + '---' + RBAC));
  assert.equal(l7(e, GET_REVIEWS).verdict, 'allow');
  e.remove('ServiceRoleBinding', 'shop', 'productpage-reads', 'rbac.istio.io/v1alpha1');
  assert.equal(l7(e, GET_REVIEWS).verdict, 'deny');
  e.remove('ClusterRbacConfig', undefined, 'default', 'rbac.istio.io/v1alpha1');
  assert.equal(l7(e, GET_REVIEWS).verdict, 'allow');
  for (const r of load(RBAC)) e.upsert(r);
  assert.equal(l7(e, GET_REVIEWS).verdict, 'allow');
  e.remove('Service', 'shop', 'reviews', 'v1');
  // No service instance: the request takes Istio's passthrough chain, which has no RBAC filter.
  assert.equal(l7(e, { ...GET_REVIEWS, method: 'DELETE' }).verdict, 'allow');
});

test('legacy rbac verdicts do not depend on the order resources arrive in', () => {
  const all = load(WORLD + '---' + RBAC);
  const probes: Probe[] = [
    GET_REVIEWS,
    { ...GET_REVIEWS, method: 'POST', path: '/x' },
    { ...GET_REVIEWS, method: 'PUT' },
    { ...GET_REVIEWS, from: 'other/sleep' },
    { ...GET_REVIEWS, principal: null },
    { from: 'other/sleep', to: 'shop/productpage', port: 9080, method: 'GET', path: '/' },
  ];
  const want = probes.map((p) => JSON.stringify(compile(all).check(p)));
  fc.assert(
    fc.property(fc.shuffledSubarray(all, { minLength: all.length }), (order) => {
      const e = new Engine();
      for (const r of order) e.upsert(r);
      assert.deepEqual(
        probes.map((p) => JSON.stringify(e.check(p))),
        want,
      );
    }),
    { numRuns: 30 },
  );
});

test('rbac string match: "*" matches anything (even empty), prefix* and *suffix, otherwise exact', () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), (a, b) => {
      assert.equal(rbacStringMatch('*', a), true);
      if (a.includes('*')) return;
      assert.equal(rbacStringMatch(`${a}*`, a + b), true);
      assert.equal(rbacStringMatch(`*${a}`, b + a), true);
      assert.equal(rbacStringMatch(a, b), a === b);
    }),
  );
  assert.equal(rbacStringMatch('*/review', '/books/review'), true);
  assert.equal(rbacStringMatch('/books/*', '/books'), false);
});

test('legacy rbac: a source.namespace value is literal apart from "*" (regex characters do not widen it)', () => {
  const text =
    WORLD +
    '---' +
    RBAC.replace('source.namespace: other', "source.namespace: 'o.her'").replace(
      '  mode: PERMISSIVE\n',
      '',
    );
  const e = compile(load(text));
  assert.equal(l7(e, { ...GET_REVIEWS, from: 'other/sleep' }).verdict, 'deny');
});
