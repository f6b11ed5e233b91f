// The policy graph: the pairs the engine allows over a resource set, with the deciding rule;
// pairs no policy restricts are counted, not listed; the shortcut that judges one pair per class
// of alike endpoints gives exactly what judging every pair gives; the bounds hold.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compile, loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { policyGraph } from './policy-graph.js';

function load(yaml: string): Resource[] {
  const r = loadText(yaml, 'test.yaml');
  assert.deepEqual(
    r.diagnostics.filter((d) => d.severity === 'error'),
    [],
  );
  return [...r.resources];
}

const SHOP = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: db}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.9.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, labels: {app: other}}
spec: {containers: [{name: c}]}
status: {podIP: 10.9.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: db, labels: {app: pg}}
spec: {containers: [{name: c, ports: [{name: sql, containerPort: 5432}]}]}
status: {podIP: 10.9.0.4}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.db-guard}
spec:
  tier: security
  order: 10
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Pass
      source: {selector: app == 'web'}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: db}
spec:
  order: 50
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web', namespaceSelector: all()}
      destination: {ports: [5432]}
`;

test('a pair the policy allows is an edge with the rule that decided; unrestricted pairs are only counted', async () => {
  const g = await policyGraph(load(SHOP));
  assert.equal(g.edges.length, 1);
  const e = g.edges[0]!;
  assert.deepEqual(e.source, { namespace: 'shop', name: 'web' });
  assert.deepEqual(e.destination, { namespace: 'db', name: 'pg' });
  assert.deepEqual(e.ports, ['TCP/5432']);
  assert.equal(e.decision.direction, 'ingress');
  assert.equal(e.decision.policy, 'db/allow-web');
  assert.equal(e.decision.rule, 0);
  // web→other, other→web, pg→web, pg→other: no policy selects either side.
  assert.equal(g.unrestricted, 4);
  assert.equal(g.pairs, 1);
  assert.deepEqual(g.endpoints.map((x) => [x.name, x.openIngress]).sort(), [
    ['other', true],
    ['pg', false],
    ['web', true],
  ]);
  const scoped = await policyGraph(load(SHOP), { namespace: 'shop' });
  assert.equal(scoped.edges.length, 1, 'a pair with one end in the namespace stays');
  assert.deepEqual(scoped.endpoints.map((x) => x.name).sort(), ['other', 'web']);
});

/** A model with many alike pods: classes of endpoints must decide as the endpoints do. */
function crowd(extra = ''): string {
  const docs: string[] = [];
  for (const ns of ['a', 'b', 'c'])
    docs.push(
      `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${ns}, labels: {team: ${ns === 'c' ? 'x' : 'y'}}}`,
    );
  let ip = 10;
  for (const ns of ['a', 'b', 'c'])
    for (let i = 0; i < 6; i++) {
      const app = ['front', 'api', 'db'][i % 3];
      const port = app === 'db' ? 5432 : 8080;
      docs.push(
        `apiVersion: v1\nkind: Pod\nmetadata: {name: p${i}, namespace: ${ns}, labels: {app: ${app}}}\nspec: {serviceAccountName: ${i % 3 === 1 ? 'sa1' : 'sa2'}, containers: [{name: c, ports: [{containerPort: ${port}}]}]}\nstatus: {podIP: 10.1.0.${ip++}}`,
      );
    }
  docs.push(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-in}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'api', namespaceSelector: team == 'y'}
      destination: {ports: [5432]}`);
  docs.push(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api-in, namespace: b}
spec:
  selector: app == 'api'
  types: [Ingress, Egress]
  ingress:
    - action: Allow
      source: {serviceAccounts: {names: [sa1]}}
  egress:
    - action: Allow
      destination: {selector: app == 'db'}`);
  docs.push(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: front, namespace: c}
spec:
  podSelector: {matchLabels: {app: front}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: api}}}]
      ports: [{port: 8080}]`);
  if (extra) docs.push(extra);
  return docs.join('\n---\n');
}

test('judging one pair per class of alike endpoints gives exactly the edges of judging every pair, and every edge is one the engine allows', async () => {
  const fast = await policyGraph(load(crowd()));
  // An unrelated network set makes the computation go endpoint by endpoint.
  const slow = await policyGraph(
    load(
      crowd(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: far, labels: {zone: far}}
spec: {nets: [192.0.2.0/24]}`),
    ),
  );
  assert.ok(fast.classes < slow.classes, `${fast.classes} classes vs ${slow.classes}`);
  assert.equal(slow.classes, 18);
  assert.ok(fast.edges.length > 10, `${fast.edges.length} edges`);
  assert.deepEqual(fast.edges, slow.edges);
  assert.equal(fast.unrestricted, slow.unrestricted);
  const e = compile(load(crowd()));
  // Complete: every pair of distinct endpoints the engine allows on the destination's port, where
  // a policy selects the source's egress or the destination's ingress, is an edge.
  const selected = (id: string, dir: 'ingress' | 'egress') =>
    e.activeTiers(id)?.[dir].some((t) => t.policies.length > 0) ?? false;
  const listed = new Set(
    fast.edges.map(
      (x) =>
        `${x.source.namespace}/${x.source.name}>${x.destination.namespace}/${x.destination.name}`,
    ),
  );
  let expected = 0;
  for (const a of e.workloadEndpoints())
    for (const b of e.workloadEndpoints()) {
      if (a === b || (!selected(a, 'egress') && !selected(b, 'ingress'))) continue;
      const port = b.endsWith('p2') || b.endsWith('p5') ? 5432 : 8080;
      if (!e.kernelAllows(a, b, 'TCP', port)) continue;
      expected++;
      assert.ok(listed.has(`${a}>${b}`), `${a} → ${b} is allowed but not an edge`);
    }
  assert.equal(fast.edges.length, expected);
  for (const x of fast.edges)
    for (const p of x.ports) {
      const [proto, port] = p.split('/');
      assert.ok(
        e.kernelAllows(
          `${x.source.namespace}/${x.source.name}`,
          `${x.destination.namespace}/${x.destination.name}`,
          proto!,
          Number(port),
        ),
      );
    }
});

test('the edge and decision bounds are kept and say so', async () => {
  const g = await policyGraph(load(crowd()), { maxEdges: 3 });
  assert.equal(g.edges.length, 3);
  assert.equal(g.truncated, true);
  assert.ok(g.pairs > 3);
  const c = await policyGraph(load(crowd()), { maxChecks: 2 });
  assert.equal(c.truncated, true);
  assert.ok(c.checks <= 2);
});
