import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '../load/load.js';
import { compile } from './engine.js';
import type { Probe } from './types.js';

const BASE = `
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {zone: trusted}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {zone: dmz}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: app, labels: {ratings-reader: "true"}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {serviceAccountName: reader, containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: app, labels: {app: plain}}
spec: {serviceAccountName: default, containers: [{name: c}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec: {serviceAccountName: default, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: other, labels: {app: client}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.1}
`;

function judge(policies: string, probe: Probe) {
  const r = loadText(BASE + '---\n' + policies, 't.yaml');
  assert.deepEqual(
    r.diagnostics.filter((d) => d.severity === 'error'),
    [],
  );
  const out = compile(r.resources).check(probe);
  if (!out.ok) throw new Error(out.message);
  return out.result;
}

const TIERS = `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200, defaultAction: Pass}
`;

test('calico tiers: a Deny in an earlier tier cannot be overridden by a later tier', () => {
  const r = judge(
    `${TIERS}---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block-dmz}
spec: {tier: security, selector: all(), ingress: [{action: Deny, source: {namespaceSelector: "zone == 'dmz'"}}, {action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all, namespace: app}
spec: {ingress: [{action: Allow}]}
`,
    { from: 'other/outsider', to: 'app/server', port: 8080 },
  );
  assert.equal(r.verdict, 'deny');
  assert.equal(r.kernel.ingress.provenance.tier, 'security');
  assert.equal(r.kernel.ingress.provenance.policy, 'security.block-dmz');
});

test('calico tiers: Pass skips to the next tier; a tier with default action Pass hands on', () => {
  const r = judge(
    `${TIERS}---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass}
spec: {tier: security, ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform.nothing}
spec: {tier: platform, ingress: [{action: Deny, source: {selector: "app == 'nobody'"}}]}
`,
    { from: 'app/client', to: 'app/server', port: 8080 },
  );
  assert.equal(r.verdict, 'allow');
  assert.equal(r.kernel.ingress.provenance.kind, 'profile');
});

test('calico tiers: a tier that selects the endpoint and decides nothing denies by default', () => {
  const r = judge(
    `${TIERS}---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.only-client}
spec: {tier: security, selector: "app == 'server'", ingress: [{action: Allow, source: {selector: "app == 'nobody'"}}]}
`,
    { from: 'app/client', to: 'app/server', port: 8080 },
  );
  assert.equal(r.kernel.ingress.provenance.kind, 'tier-default');
  assert.equal(r.kernel.ingress.provenance.tier, 'security');
});

test('calico order: lower order first, then name; a staged policy never changes the verdict', () => {
  const r = judge(
    `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-allow, namespace: app}
spec: {order: 10, ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-deny, namespace: app}
spec: {order: 10, ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: would-allow, namespace: app}
spec: {order: 1, ingress: [{action: Allow}]}
`,
    { from: 'app/client', to: 'app/server', port: 8080 },
  );
  assert.equal(r.verdict, 'deny');
  assert.equal(r.kernel.ingress.provenance.policy, 'app/a-deny');
  assert.deepEqual(
    r.kernel.ingress.staged?.map((s) => [s.policy, s.verdict]),
    [['app/would-allow', 'allow']],
  );
});

test('calico rule selectors in a namespaced policy only match endpoints of its namespace', () => {
  const pol = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: from-clients, namespace: app}
spec: {selector: "app == 'server'", ingress: [{action: Allow, source: {selector: "app == 'client'"}}]}
`;
  assert.equal(judge(pol, { from: 'app/client', to: 'app/server', port: 8080 }).verdict, 'allow');
  assert.equal(
    judge(pol, { from: 'other/outsider', to: 'app/server', port: 8080 }).verdict,
    'deny',
  );
});

test('calico serviceAccounts: kernel matches the network identity, L7 the presented certificate too', () => {
  const pol = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: readers, namespace: app}
spec:
  selector: "app == 'server'"
  ingress:
    - action: Allow
      protocol: TCP
      source: {serviceAccounts: {selector: "ratings-reader == 'true'"}}
      http: {methods: [GET], paths: [{prefix: /ratings}]}
`;
  const ok = judge(pol, {
    from: 'app/client',
    to: 'app/server',
    port: 8080,
    method: 'GET',
    path: '/ratings/1',
  });
  assert.equal(ok.verdict, 'allow');
  assert.equal(ok.kernel.ingress.deferredToL7, true);
  const post = judge(pol, {
    from: 'app/client',
    to: 'app/server',
    port: 8080,
    method: 'POST',
    path: '/ratings/1',
  });
  assert.equal(post.kernel.ingress.verdict, 'allow');
  assert.equal(post.l7.verdict, 'deny');
  const wrongSa = judge(pol, {
    from: 'app/plain',
    to: 'app/server',
    port: 8080,
    method: 'GET',
    path: '/ratings/1',
  });
  assert.equal(wrongSa.kernel.ingress.verdict, 'deny');
  const stolen = judge(pol, {
    from: 'app/plain',
    to: 'app/server',
    port: 8080,
    method: 'GET',
    path: '/ratings/1',
    principal: 'spiffe://cluster.local/ns/app/sa/reader',
  });
  assert.equal(stolen.verdict, 'deny');
  assert.equal(stolen.kernel.ingress.verdict, 'deny');
  assert.equal(stolen.l7.provenance.kind, 'identity-mismatch');
  const plaintext = judge(pol, {
    from: 'app/client',
    to: 'app/server',
    port: 8080,
    method: 'GET',
    path: '/ratings/1',
    principal: null,
  });
  assert.equal(plaintext.l7.verdict, 'deny');
});

test('calico http rule: without an L7 point at the destination the kernel does not match it (fail closed)', () => {
  const pol = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: http-only, namespace: app}
spec: {ingress: [{action: Allow, http: {methods: [GET]}}]}
`;
  const noSidecar = BASE.replace(
    'metadata: {name: server, namespace: app, labels: {app: server}}',
    "metadata: {name: server, namespace: app, labels: {app: server}, annotations: {sidecar.istio.io/inject: 'false'}}",
  );
  const r = loadText(noSidecar + '---\n' + pol, 't.yaml');
  const out = compile(r.resources).check({
    from: 'app/client',
    to: 'app/server',
    port: 8080,
    method: 'GET',
  });
  assert.ok(out.ok);
  if (out.ok) assert.equal(out.result.kernel.ingress.verdict, 'deny');
});

test('calico named port and global network set matched by selector', () => {
  const r = judge(
    `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: partners, namespace: app}
spec:
  selector: "app == 'server'"
  ingress: [{action: Allow, protocol: TCP, source: {selector: "role == 'partner'", namespaceSelector: global()}, destination: {ports: [http]}}]
`,
    { from: '203.0.113.7', to: 'app/server', port: 8080 },
  );
  assert.equal(r.kernel.ingress.verdict, 'allow');
  const other = judge(
    `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: partners, namespace: app}
spec:
  selector: "app == 'server'"
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [http]}}]
`,
    { from: '203.0.113.7', to: 'app/server', port: 80 },
  );
  assert.equal(other.kernel.ingress.verdict, 'deny');
});

test('host endpoints: unselected is denied, fail-safe SSH stays open', () => {
  const hep = `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: node}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.10]}
`;
  assert.equal(judge(hep, { from: 'app/client', to: 'node1-eth0', port: 80 }).verdict, 'deny');
  const ssh = judge(hep, { from: 'app/client', to: '192.0.2.10', port: 22 });
  assert.equal(ssh.kernel.ingress.provenance.kind, 'failsafe');
  assert.equal(ssh.verdict, 'allow');
});
