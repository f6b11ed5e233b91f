import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadMany, loadText } from './load.js';

function codes(text: string) {
  return loadText(text, 'f.yaml').diagnostics.map((d) => `${d.line}:${d.column} ${d.code}`);
}

const EVERY_KIND = `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pci}
spec:
  tier: security
  order: 10
  selector: has(pci)
  namespaceSelector: all()
  types: [Ingress, Egress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: has(pci), nets: [10.0.0.0/8], notNets: ["10.9.0.0/16"]}
      destination: {ports: [443, "8000:8080", http]}
      http: {methods: [GET], paths: [{exact: /a}, {prefix: /b}]}
    - action: Allow
      protocol: ICMP
      icmp: {type: 8, code: 0}
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {serviceAccounts: {names: [a], selector: "team == 'x'"}}}]
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: sg}
spec: {stagedAction: Set, selector: all(), ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: sn, namespace: x}
spec: {selector: all(), egress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: sk, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: gns, labels: {role: db}}
spec: {nets: [192.0.2.0/24, "2001:db8::/32"]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: ns1, namespace: x}
spec: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: node}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [192.0.2.10], profiles: [p1], ports: [{name: ssh, protocol: TCP, port: 22}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-pod-eth0, namespace: x, labels: {app: web}}
spec: {node: node1, orchestrator: k8s, pod: pod, endpoint: eth0, ipNetworks: [10.1.0.5/32], profiles: [kns.x], interfaceName: cali0}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: p1}
spec: {labelsToApply: {team: a}, ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [a]}]}
  ingress: [{from: [{podSelector: {}}, {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 80}, {protocol: UDP, port: dns}, {port: 1000, endPort: 2000}]}]
  egress: [{}]
---
apiVersion: extensions/v1beta1
kind: NetworkPolicy
metadata: {name: legacy, namespace: x}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}, annotations: {net.beta.kubernetes.io/network-policy: '{"ingress":{"isolation":"DefaultDeny"}}'}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: x, labels: {ratings-reader: "true"}}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: x}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: az, namespace: x}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/x/sa/a], notNamespaces: [y]}}], to: [{operation: {methods: [GET], paths: ["/api/*"], ports: ["80"]}}], when: [{key: "request.headers[x-a]", values: ["1"]}]}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: pa, namespace: x}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {"8080": {mode: PERMISSIVE}}}
`;

test('loader: a realistic example of every accepted kind loads without a diagnostic', () => {
  const r = loadText(EVERY_KIND, 'all.yaml');
  assert.deepEqual(r.diagnostics, []);
  assert.equal(r.resources.length, 18);
  assert.equal(new Set(r.resources.map((x) => `${x.apiVersion}/${x.kind}`)).size, 18);
});

test('loader: namespaced kinds default to namespace "default"; global kinds keep none', () => {
  const r = loadText(
    'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: g}\n',
    'f',
  );
  assert.equal(r.resources[0]?.metadata.namespace, 'default');
  assert.equal(r.resources[1]?.metadata.namespace, undefined);
});

test('loader: an unknown field is reported at its key with the nearest known field', () => {
  const r = loadText(
    'apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  selectr: all()\n',
    'f.yaml',
  );
  assert.equal(r.diagnostics.length, 1);
  const d = r.diagnostics[0];
  assert.equal(d?.code, 'POLICY_ERR_UNKNOWN_FIELD');
  assert.equal(d?.line, 5);
  assert.equal(d?.column, 3);
  assert.match(d?.hint ?? '', /did you mean "selector"/);
});

test('loader: an unknown kind suggests the nearest kind; a known kind with the wrong apiVersion names the right one', () => {
  assert.match(
    loadText(
      'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolcy\nmetadata: {name: a}\n',
      'f',
    ).diagnostics[0]?.hint ?? '',
    /GlobalNetworkPolicy/,
  );
  const wrong = loadText(
    'apiVersion: networking.k8s.io/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\n',
    'f',
  ).diagnostics[0];
  assert.equal(wrong?.code, 'POLICY_ERR_UNKNOWN_KIND');
  assert.match(wrong?.hint ?? '', /projectcalico\.org\/v3/);
});

test('loader: every problem of every document is reported at once, in line order', () => {
  const text = [
    'apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  order: first\n  ingress: [{action: Alow}]',
    'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 70000}, {port: 80, endPort: 70}]}]',
  ].join('\n---\n');
  const got = codes(text);
  assert.deepEqual(got, [
    '5:10 POLICY_ERR_INVALID_TYPE',
    '6:22 POLICY_ERR_INVALID_VALUE',
    '13:29 POLICY_ERR_INVALID_VALUE',
    '13:57 POLICY_ERR_INVALID_VALUE',
  ]);
});

test('loader: an invalid selector is reported at the offending character inside the string', () => {
  const r = loadText(
    'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec:\n  selector: "app == \'x\' &&& b"\n',
    'f',
  );
  const d = r.diagnostics[0];
  assert.equal(d?.code, 'POLICY_ERR_INVALID_SELECTOR');
  assert.equal(d?.line, 5);
  assert.ok((d?.column ?? 0) > 13, `column ${d?.column}`);
});

test('calico validation: ports need a protocol that has ports', () => {
  assert.deepEqual(
    codes(
      'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec:\n  ingress: [{action: Allow, destination: {ports: [80]}}]\n',
    ),
    ['5:43 POLICY_ERR_INVALID_VALUE'],
  );
});

test('calico validation: a global policy must not have a namespace', () => {
  assert.deepEqual(
    codes(
      'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a, namespace: x}\n',
    ),
    ['3:21 POLICY_ERR_INVALID_VALUE'],
  );
});

test('calico validation: rules of a direction that types leaves out are refused at their key (both directions)', () => {
  const doc = (types: string, rules: string): string =>
    `apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: a}\nspec:\n  types: [${types}]\n  ${rules}\n`;
  assert.deepEqual(codes(doc('Egress', 'ingress: [{action: Allow}]')), [
    '6:3 POLICY_ERR_INVALID_VALUE',
  ]);
  assert.deepEqual(codes(doc('Ingress', 'egress: [{action: Allow}]')), [
    '6:3 POLICY_ERR_INVALID_VALUE',
  ]);
  assert.deepEqual(codes(doc('Ingress', 'ingress: [{action: Allow}]')), []);
  assert.deepEqual(codes(doc('Ingress', 'egress: []')), []);
});

test('kubernetes validation: ipBlock except must lie inside the cidr', () => {
  const got = codes(
    'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]\n',
  );
  assert.deepEqual(got, ['6:60 POLICY_ERR_INVALID_VALUE']);
});

test('istio validation: CUSTOM authorization is refused as unsupported', () => {
  const r = loadText(
    'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: CUSTOM, provider: {name: ext}}\n',
    'f',
  );
  assert.equal(r.diagnostics[0]?.code, 'POLICY_ERR_UNSUPPORTED');
});

test('kubernetes core objects: unknown upstream fields are tolerated, misspellings of used fields are not', () => {
  const pod =
    'apiVersion: v1\nkind: Pod\nmetadata: {name: p, ownerReferences: [], managedFields: []}\nspec:\n  volumes: []\n  dnsPolicy: ClusterFirst\n  serviceAcountName: x\n  containers: [{name: c, env: [], ports: [{containerPort: 80}]}]\nstatus: {conditions: [], podIP: 10.0.0.1}\n';
  assert.deepEqual(codes(pod), ['7:3 POLICY_ERR_UNKNOWN_FIELD']);
});

test('loader: Kubernetes List and *List items are flattened, JSON is accepted', () => {
  const r = loadText(
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } },
        {
          apiVersion: 'networking.k8s.io/v1',
          kind: 'NetworkPolicyList',
          items: [
            {
              apiVersion: 'networking.k8s.io/v1',
              kind: 'NetworkPolicy',
              metadata: { name: 'n', namespace: 'a' },
              spec: { podSelector: {} },
            },
          ],
        },
      ],
    }),
    'f.json',
  );
  assert.deepEqual(r.diagnostics, []);
  assert.deepEqual(
    r.resources.map((x) => x.kind),
    ['Namespace', 'NetworkPolicy'],
  );
});

test('loader: JSON syntax errors are reported with a position', () => {
  const r = loadText('{"apiVersion": "v1", "kind": "Pod"', 'f.json');
  assert.equal(r.diagnostics[0]?.code, 'POLICY_ERR_YAML_SYNTAX');
  assert.equal(r.diagnostics[0]?.line, 1);
});

test('loader: the same resource twice, in one file or across files, is a duplicate', () => {
  const one = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n';
  assert.deepEqual(codes(`${one}---\n${one}`), ['5:1 POLICY_ERR_DUPLICATE']);
  const r = loadMany([
    { name: 'a', text: one },
    { name: 'b', text: one },
  ]);
  assert.equal(r.diagnostics.length, 1);
  assert.equal(r.diagnostics[0]?.file, 'b');
  // Kubernetes and Calico NetworkPolicy of one name are different resources.
  const both = loadText(
    'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\n',
    'f',
  );
  assert.deepEqual(both.diagnostics, []);
});

test('hostile input: arbitrary text never makes the loader throw', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), (t) => {
      loadText(t, 'f');
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.jsonValue({ maxDepth: 5 }),
      fc.constantFrom(
        'v1/Pod',
        'projectcalico.org/v3/NetworkPolicy',
        'networking.k8s.io/v1/NetworkPolicy',
        'security.istio.io/v1/AuthorizationPolicy',
        'projectcalico.org/v3/GlobalNetworkPolicy',
      ),
      (spec, id) => {
        const kind = id.slice(id.lastIndexOf('/') + 1);
        const apiVersion = id.slice(0, id.lastIndexOf('/'));
        loadText(JSON.stringify({ apiVersion, kind, metadata: { name: 'a' }, spec }), 'f');
        loadText(
          JSON.stringify({
            apiVersion,
            kind,
            metadata: spec,
            spec: { ingress: [spec], egress: spec },
          }),
          'f',
        );
      },
    ),
    { numRuns: 2000 },
  );
});

test('hostile input: a 100 MB text is refused before parsing, quickly', () => {
  const big = 'a'.repeat(100 * 1024 * 1024);
  const t0 = performance.now();
  const r = loadText(big, 'big.yaml');
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(r.diagnostics[0]?.code, 'POLICY_ERR_LIMIT_EXCEEDED');
});

test('hostile input: deep nesting is refused with a limit error', () => {
  const deep = 'a: '.concat('['.repeat(500), ']'.repeat(500));
  const r = loadText(deep, 'deep.yaml');
  assert.equal(r.diagnostics[0]?.code, 'POLICY_ERR_LIMIT_EXCEEDED');
});

test('hostile input: a YAML alias bomb is refused quickly with bounded memory', () => {
  const lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 9; i++)
    lines.push(
      `a${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(',')}]`,
    );
  const before = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const r = loadText(lines.join('\n'), 'bomb.yaml');
  assert.ok(performance.now() - t0 < 1000);
  assert.ok(process.memoryUsage().heapUsed - before < 200 * 1024 * 1024);
  assert.equal(r.diagnostics[0]?.code, 'POLICY_ERR_LIMIT_EXCEEDED');
});

test('loader: more documents than the limit are refused with one error', () => {
  const one = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n';
  const r = loadText(
    Array.from({ length: 5 }, (_, i) => one.replace('name: a', `name: a${i}`)).join('---\n'),
    'f',
    { maxDocuments: 3 },
  );
  assert.deepEqual(
    r.diagnostics.map((d) => d.code),
    ['POLICY_ERR_LIMIT_EXCEEDED'],
  );
});

test('Calico GlobalNetworkPolicy validation: preDNAT and doNotTrack need applyOnForward, exclude each other, and preDNAT has neither egress rules nor the Egress type', () => {
  const gnp = (spec: string) =>
    `apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {selector: all(), ${spec}}\n`;
  const messages = (text: string) => loadText(text, 'f.yaml').diagnostics.map((d) => d.message);
  assert.deepEqual(
    messages(gnp('preDNAT: true, applyOnForward: true, ingress: [{action: Deny}]')),
    [],
  );
  assert.deepEqual(
    messages(gnp('doNotTrack: true, applyOnForward: true, egress: [{action: Deny}]')),
    [],
  );
  assert.ok(
    messages(gnp('doNotTrack: true, ingress: [{action: Deny}]')).some((m) =>
      /need applyOnForward/.test(m),
    ),
  );
  assert.ok(
    messages(gnp('preDNAT: true, doNotTrack: true, applyOnForward: true')).some((m) =>
      /cannot both/.test(m),
    ),
  );
  assert.ok(
    messages(gnp('preDNAT: true, applyOnForward: true, egress: [{action: Deny}]')).some((m) =>
      /egress rules/.test(m),
    ),
  );
  assert.ok(
    messages(gnp('preDNAT: true, applyOnForward: true, types: [Egress]')).some((m) =>
      /'Egress' type/.test(m),
    ),
  );
});

test('Calico NetworkPolicy (namespaced) has no doNotTrack, preDNAT or applyOnForward: they are unknown fields there', () => {
  for (const field of ['doNotTrack', 'preDNAT', 'applyOnForward']) {
    const text = `apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {selector: all(), ${field}: true}\n`;
    assert.deepEqual(
      loadText(text, 'f.yaml').diagnostics.map((d) => d.code),
      ['POLICY_ERR_UNKNOWN_FIELD'],
      field,
    );
  }
  const staged = `apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: p}\nspec: {selector: all(), applyOnForward: true, preDNAT: true, ingress: [{action: Deny}]}\n`;
  assert.deepEqual(loadText(staged, 'f.yaml').diagnostics, []);
});
