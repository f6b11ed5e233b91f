// Kubernetes Service references in Calico rules (`source.services`, `destination.services`).
// Each test names the rule of Calico's reference it checks (the EntityRule `services` field:
// "only traffic that originates from or terminates at endpoints within the selected service(s)
// will be matched, and only to/from each endpoint's port"; Felix's service index: the endpoints
// of the Service's EndpointSlices, each with each numbered slice port).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '../load/load.js';
import { compile } from './engine.js';
import type { Engine } from './engine.js';

const BASE = `
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: demo, labels: {app: db}}
spec: {containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: demo, labels: {app: other}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {selector: {app: db}, ports: [{port: 80, targetPort: pg}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-out, namespace: demo}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, protocol: TCP, destination: {services: {name: db}}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-in, namespace: demo}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, source: {services: {name: web-svc}}}]
`;

const SLICE = (name: string, svc: string, addrs: string[], ports: string) => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}, namespace: demo, labels: {kubernetes.io/service-name: ${svc}}}
addressType: IPv4
endpoints: [${addrs.map((a) => `{addresses: [${a}], conditions: {ready: false}}`).join(', ')}]
ports: ${ports}
`;

const WEB_SVC = `
apiVersion: v1
kind: Service
metadata: {name: web-svc, namespace: demo}
spec: {selector: {app: web}, ports: [{port: 8080}]}
`;

function engine(...docs: string[]): Engine {
  const { resources, diagnostics } = loadText([BASE, ...docs].join('\n---\n'), 's.yaml');
  assert.deepEqual(
    diagnostics.filter((d) => d.severity === 'error').map((d) => d.message),
    [],
  );
  return compile(resources);
}

const allows = (e: Engine, from: string, to: string, port: number, protocol = 'TCP') =>
  e.kernelAllows(from, to, protocol, port);

test('Calico services: without EndpointSlices the Service selector gives the endpoints and its target ports, named ones resolved on the pod', () => {
  const e = engine(WEB_SVC);
  assert.equal(allows(e, 'demo/web', 'demo/db', 5432), true, 'targetPort pg = 5432 on db');
  assert.equal(
    allows(e, 'demo/web', 'demo/db', 80),
    false,
    'the service port is not an endpoint port',
  );
  assert.equal(allows(e, 'demo/web', 'demo/other', 5432), false, 'not an endpoint');
  assert.equal(e.serviceMembersOf('demo', 'db').from, 'selector');
});

test('Calico services: a destination service matches the addresses and ports of its EndpointSlices (ready or not), which win over the selector', () => {
  const e = engine(
    WEB_SVC,
    SLICE('db-1', 'db', ['10.0.0.3', '192.0.2.9'], '[{port: 6000}, {name: nonum}]'),
  );
  assert.equal(e.serviceMembersOf('demo', 'db').from, 'EndpointSlice');
  assert.equal(allows(e, 'demo/web', 'demo/other', 6000), true, 'a slice endpoint, slice port');
  assert.equal(allows(e, 'demo/web', '192.0.2.9', 6000), true, 'addresses outside the cluster too');
  assert.equal(allows(e, 'demo/web', 'demo/other', 6001), false);
  assert.equal(allows(e, 'demo/web', 'demo/db', 5432), false, 'the selector no longer counts');
  assert.equal(
    allows(e, 'demo/web', 'demo/other', 6000, 'UDP'),
    false,
    'slice ports are TCP by default',
  );
});

test('Calico services: a source service matches its endpoint addresses on any port', () => {
  const e = engine(WEB_SVC);
  assert.equal(allows(e, 'demo/web', 'demo/db', 5432), true);
  const r = e.check({ from: 'demo/other', to: 'demo/db', port: 5432 });
  assert.ok(r.ok);
  assert.equal(r.result.kernel.ingress.verdict, 'deny', 'other is not an endpoint of web-svc');
  // Only source addresses count: web-svc's port 8080 plays no part in an ingress source match.
  const w = e.check({ from: 'demo/web', to: 'demo/db', port: 5432 });
  assert.ok(w.ok);
  assert.equal(w.result.kernel.ingress.verdict, 'allow');
  assert.equal(w.result.kernel.ingress.provenance.policy, 'demo/db-in');
});

test('Calico services: legacy v1 Endpoints stand in when a Service has no EndpointSlice; a Service with no endpoints at all matches nothing', () => {
  const ep = `
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: demo}
subsets: [{addresses: [{ip: 10.0.0.3}], notReadyAddresses: [{ip: 192.0.2.10}], ports: [{port: 7000, protocol: UDP}]}]
`;
  const e = engine(WEB_SVC, ep);
  assert.equal(e.serviceMembersOf('demo', 'db').from, 'Endpoints');
  const udpRule = `
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-udp, namespace: demo}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, protocol: UDP, destination: {services: {name: db}}}]
`;
  const u = engine(WEB_SVC, ep, udpRule);
  assert.equal(allows(u, 'demo/web', 'demo/other', 7000, 'UDP'), true);
  assert.equal(allows(u, 'demo/web', '192.0.2.10', 7000, 'UDP'), true);
  assert.equal(allows(u, 'demo/web', 'demo/other', 7000, 'TCP'), false);
  const noSelector = `
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: demo}
spec: {ports: [{port: 80}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-ext, namespace: demo}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, destination: {services: {name: ext}}}, {action: Allow, destination: {services: {name: missing}}}]
`;
  const n = engine(noSelector);
  assert.equal(n.serviceMembersOf('demo', 'ext').from, 'none');
  for (const to of ['demo/other', 'demo/db', '192.0.2.9'])
    assert.equal(allows(n, 'demo/web', to, 80), false, to);
});

test('Calico services follow EndpointSlice changes incrementally: the verdicts equal a from-scratch compile', () => {
  const live = engine(WEB_SVC);
  const slice = loadText(SLICE('db-1', 'db', ['10.0.0.3'], '[{port: 6000}]'), 'x.yaml').resources;
  assert.equal(allows(live, 'demo/web', 'demo/db', 5432), true);
  for (const r of slice) live.upsert(r);
  assert.equal(allows(live, 'demo/web', 'demo/db', 5432), false);
  assert.equal(allows(live, 'demo/web', 'demo/other', 6000), true);
  live.remove('EndpointSlice', 'demo', 'db-1', 'discovery.k8s.io/v1');
  assert.equal(allows(live, 'demo/web', 'demo/db', 5432), true);
  assert.equal(allows(live, 'demo/web', 'demo/other', 6000), false);
  // A pod relabelled out of the selector leaves the derived endpoints.
  live.upsert(
    loadText(
      `apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: demo, labels: {app: gone}}\nspec: {containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}\nstatus: {podIP: 10.0.0.2}\n`,
      'p.yaml',
    ).resources[0]!,
  );
  assert.equal(allows(live, 'demo/web', 'demo/db', 5432), false);
});

test('Calico EntityRule services: the validator refuses selectors, namespace selectors, service accounts and nets beside services, ports with a destination service, services on the wrong side, and a global policy service without namespace', () => {
  const rule = (policy: 'NetworkPolicy' | 'GlobalNetworkPolicy', body: string) =>
    `apiVersion: projectcalico.org/v3\nkind: ${policy}\nmetadata: {name: p${policy === 'NetworkPolicy' ? ', namespace: demo' : ''}}\nspec:\n  selector: all()\n${body}\n`;
  const messages = (text: string) => loadText(text, 'v.yaml').diagnostics.map((d) => d.message);
  const bad: [string, RegExp][] = [
    [
      rule(
        'NetworkPolicy',
        '  egress: [{action: Allow, destination: {services: {name: a}, selector: "x == \'y\'"}}]',
      ),
      /cannot specify selector and services/,
    ],
    [
      rule(
        'NetworkPolicy',
        '  egress: [{action: Allow, destination: {services: {name: a}, namespaceSelector: all()}}]',
      ),
      /cannot specify namespaceSelector and services/,
    ],
    [
      rule(
        'NetworkPolicy',
        '  egress: [{action: Allow, destination: {services: {name: a}, nets: [10.0.0.0/8]}}]',
      ),
      /cannot specify nets and services/,
    ],
    [
      rule(
        'NetworkPolicy',
        '  ingress: [{action: Allow, source: {services: {name: a}, serviceAccounts: {names: [x]}}}]',
      ),
      /cannot specify serviceAccounts and services/,
    ],
    [
      rule(
        'NetworkPolicy',
        '  egress: [{action: Allow, protocol: TCP, destination: {services: {name: a}, ports: [80]}}]',
      ),
      /cannot specify ports with a destination service/,
    ],
    [
      rule('NetworkPolicy', '  egress: [{action: Allow, source: {services: {name: a}}}]'),
      /not allowed in the source of an egress rule/,
    ],
    [
      rule('NetworkPolicy', '  ingress: [{action: Allow, destination: {services: {name: a}}}]'),
      /not allowed in the destination of an ingress rule/,
    ],
    [
      rule(
        'GlobalNetworkPolicy',
        '  egress: [{action: Allow, destination: {services: {name: a}}}]',
      ),
      /needs a namespace in a global policy/,
    ],
  ];
  for (const [text, want] of bad)
    assert.ok(
      messages(text).some((m) => want.test(m)),
      `${want}: ${messages(text).join('; ')}`,
    );
  assert.deepEqual(
    messages(
      rule(
        'GlobalNetworkPolicy',
        '  ingress: [{action: Allow, protocol: TCP, source: {services: {name: a, namespace: demo}}, destination: {ports: [80]}}]',
      ),
    ),
    [],
    'a source service with destination ports on an ingress rule is fine',
  );
});

test('EndpointSlice and Endpoints load with their Kubernetes shape; hostile values are diagnosed', () => {
  const ok = loadText(SLICE('s', 'db', ['10.0.0.3'], '[{port: 80, protocol: UDP}]'), 'e.yaml');
  assert.deepEqual(ok.diagnostics, []);
  const bad = loadText(
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: demo}\naddressType: IPv4\nendpoints: [{addresses: ["::1", "not-an-ip"]}]\nports: [{port: 70000}]\n`,
    'e.yaml',
  );
  assert.equal(bad.diagnostics.filter((d) => d.severity === 'error').length, 3);
  const noType = loadText(
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: demo}\nendpoints: []\n`,
    'e.yaml',
  );
  assert.ok(noType.diagnostics.some((d) => /needs addressType/.test(d.message)));
  const eps = loadText(
    `apiVersion: v1\nkind: Endpoints\nmetadata: {name: s, namespace: demo}\nsubsets: [{addresses: [{ip: nope}]}]\n`,
    'e.yaml',
  );
  assert.equal(eps.diagnostics.length, 1);
});
