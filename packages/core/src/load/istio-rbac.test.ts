import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from './load.js';

function diags(text: string): string[] {
  return loadText(text, 'r.yaml').diagnostics.map(
    (d) => `${d.line}:${d.column} ${d.code} ${d.message}${d.hint ? ` | ${d.hint}` : ''}`,
  );
}

const VALID = `apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: products-viewer, namespace: default}
spec:
  rules:
  - services: ["products.default.svc.cluster.local"]
    methods: ["GET", "HEAD"]
    paths: ["/books/*", "*/review"]
    constraints:
    - key: "destination.labels[version]"
      values: ["v1", "v2"]
    - key: destination.port
      values: ["9080"]
    - key: "request.headers[X-Team]"
      values: ["blue*"]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: test-binding-products, namespace: default}
spec:
  subjects:
  - user: alice@yahoo.com
  - user: "*"
  - group: admins
  - properties:
      source.namespace: abc
      source.ip: 10.0.0.0/8
      source.principal: cluster.local/ns/abc/sa/x
      request.auth.claims[iss]: https://idp
  roleRef: {kind: ServiceRole, name: products-viewer}
  mode: PERMISSIVE
---
apiVersion: rbac.istio.io/v1alpha1
kind: ClusterRbacConfig
metadata: {name: default, namespace: istio-system}
spec:
  mode: ON_WITH_INCLUSION
  inclusion: {namespaces: [default], services: [a.b.svc.cluster.local]}
  enforcementMode: ENFORCED
---
apiVersion: rbac.istio.io/v1alpha1
kind: RbacConfig
metadata: {name: default, namespace: istio-system}
spec: {mode: ON_WITH_EXCLUSION, exclusion: {}}
`;

test('istio rbac v1alpha1: the documented ServiceRole, ServiceRoleBinding, ClusterRbacConfig and RbacConfig load', () => {
  const r = loadText(VALID, 'r.yaml');
  assert.deepEqual(r.diagnostics, []);
  assert.deepEqual(
    r.resources.map((x) => `${x.kind}/${x.metadata.namespace ?? ''}/${x.metadata.name}`),
    [
      'ServiceRole/default/products-viewer',
      'ServiceRoleBinding/default/test-binding-products',
      // A cluster-scoped kind: the namespace of the upstream example is dropped, not kept.
      'ClusterRbacConfig//default',
      'RbacConfig/istio-system/default',
    ],
  );
});

test('istio rbac v1alpha1: a misspelt field is an unknown field at its key, with the near name', () => {
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: r}
spec:
  rules:
  - services: ["*"]
    method: [GET]
`);
  assert.equal(d.length, 1);
  assert.match(d[0] ?? '', /^7:5 POLICY_ERR_UNKNOWN_FIELD .*"method".*did you mean "methods"\?/);
});

test('istio rbac v1alpha1: an unknown constraint key is refused with the nearest supported key', () => {
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: r}
spec:
  rules:
  - services: ["*"]
    constraints:
    - key: "destination.label[version]"
      values: [v1]
    - key: version
      values: [v1]
`);
  assert.equal(d.length, 2, d.join('\n'));
  assert.match(
    d[0] ?? '',
    /^8:12 POLICY_ERR_UNSUPPORTED .*destination\.label\[version\].*did you mean "destination\.labels\[NAME\]"/,
  );
  assert.match(
    d[1] ?? '',
    /^10:12 POLICY_ERR_UNSUPPORTED .*"version".*supported keys: destination\.ip/,
  );
});

test('istio rbac v1alpha1: an unknown property key is refused (custom Mixer properties never match)', () => {
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: b}
spec:
  subjects:
  - properties: {source.namepsace: abc, service: reviews}
  roleRef: {kind: ServiceRole, name: r}
`);
  assert.equal(d.length, 2, d.join('\n'));
  assert.ok(d.every((x) => x.includes('POLICY_ERR_UNSUPPORTED')));
  assert.ok(d.some((x) => x.includes('did you mean "source.namespace"?')));
});

test('istio rbac validation: a ServiceRole needs rules, each rule a service, each constraint values', () => {
  assert.match(
    diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: r}
spec: {rules: []}
`).join('\n'),
    /POLICY_ERR_MISSING_FIELD a ServiceRole needs at least 1 rule/,
  );
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: r}
spec:
  rules:
  - services: []
    constraints: [{key: destination.port, values: []}, {key: destination.port, values: ["http"]}]
  - methods: [GET]
`).join('\n');
  assert.match(d, /needs at least 1 service/);
  assert.match(d, /needs at least 1 value/);
  assert.match(d, /"http" is not a port number/);
  assert.match(d, /spec\.rules\[1\] needs the field "services"/);
});

test('istio rbac validation: a binding needs subjects with user, group or properties and a ServiceRole roleRef', () => {
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: b}
spec:
  subjects: [{}, {user: ""}]
  roleRef: {kind: ClusterRole, name: r}
`).join('\n');
  assert.match(d, /subjects\[0\] needs at least 1 of user, group or properties/);
  assert.match(d, /subjects\[1\] needs at least 1 of user, group or properties/);
  assert.match(d, /roleRef\.kind is string "ClusterRole"; it must be one of "ServiceRole"/);
  assert.match(
    diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: b}
spec: {subjects: []}
`).join('\n'),
    /needs the field "roleRef"[\s\S]*needs at least 1 subject/,
  );
});

test('istio rbac validation: the config must be named default and name its inclusion or exclusion', () => {
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ClusterRbacConfig
metadata: {name: istio-rbac-config}
spec: {mode: ON_WITH_INCLUSION}
---
apiVersion: rbac.istio.io/v1alpha1
kind: RbacConfig
metadata: {name: default}
spec: {mode: ON_WITH_EXCLUSION}
---
apiVersion: rbac.istio.io/v1alpha1
kind: RbacConfig
metadata: {name: default, namespace: other}
spec: {mode: ON_WTIH_INCLUSION}
`);
  assert.equal(d.length, 4, d.join('\n'));
  assert.match(
    d[0] ?? '',
    /^3:18 POLICY_ERR_INVALID_VALUE ClusterRbacConfig must be named "default"/,
  );
  assert.match(d[1] ?? '', /ON_WITH_INCLUSION needs inclusion/);
  assert.match(d[2] ?? '', /ON_WITH_EXCLUSION needs exclusion/);
  assert.match(d[3] ?? '', /^14:14 POLICY_ERR_INVALID_VALUE .*did you mean "ON_WITH_INCLUSION"\?/);
});

test('istio rbac v1alpha1: undocumented fields are refused as unsupported, never ignored', () => {
  const d = diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: r}
spec:
  rules:
  - services: ["*"]
    notPaths: [/admin]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: b}
spec:
  subjects: [{user: "*", notNames: [x]}]
  roleRef: {kind: ServiceRole, name: r}
`);
  assert.equal(d.length, 2, d.join('\n'));
  assert.match(d[0] ?? '', /^7:5 POLICY_ERR_UNSUPPORTED .*"notPaths" is not supported/);
  assert.match(d[1] ?? '', /^13:26 POLICY_ERR_UNSUPPORTED .*"notNames" is not supported/);
});

test('istio rbac v1alpha1: a bad source.ip property value is reported', () => {
  assert.match(
    diags(`apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: b}
spec:
  subjects: [{properties: {source.ip: 10.0.0.300}}]
  roleRef: {kind: ServiceRole, name: r}
`).join('\n'),
    /POLICY_ERR_INVALID_VALUE .*10\.0\.0\.300" is not an IP address or CIDR/,
  );
});
