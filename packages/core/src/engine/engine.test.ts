import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compile } from './engine.js';
import type { Resource } from '../model/resources.js';
import type { Probe } from './types.js';

function pod(
  ns: string,
  name: string,
  labels: Record<string, string>,
  ip: string,
  sa = 'default',
  ports: { name: string; containerPort: number }[] = [],
): Resource {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels },
    spec: { serviceAccountName: sa, containers: [{ name: 'c', ports }] },
    status: { podIP: ip },
  };
}

function verdict(rs: Resource[], probe: Probe) {
  const r = compile(rs).check(probe);
  if (!r.ok) throw new Error(r.message);
  return r.result;
}

test('kubernetes: a workload no policy selects is allowed', () => {
  const rs = [pod('x', 'a', { app: 'a' }, '10.0.0.1'), pod('x', 'b', { app: 'b' }, '10.0.0.2')];
  const r = verdict(rs, { from: 'x/a', to: 'x/b', port: 80 });
  assert.equal(r.verdict, 'allow');
  assert.equal(r.kernel.ingress.provenance.kind, 'no-policy');
});

test('kubernetes: a policy selecting the pod with no ingress rules isolates it', () => {
  const rs: Resource[] = [
    pod('x', 'a', { app: 'a' }, '10.0.0.1'),
    pod('x', 'b', { app: 'b' }, '10.0.0.2'),
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'deny', namespace: 'x' },
      spec: { podSelector: {} },
    },
  ];
  const r = verdict(rs, { from: 'x/a', to: 'x/b', port: 80 });
  assert.equal(r.verdict, 'deny');
  assert.equal(r.kernel.ingress.provenance.kind, 'tier-default');
  assert.equal(r.kernel.ingress.provenance.tier, 'default');
  assert.equal(r.kernel.egress.verdict, 'allow');
});

test('kubernetes: ingress named port resolves on the destination pod', () => {
  const rs: Resource[] = [
    pod('x', 'a', { app: 'a' }, '10.0.0.1'),
    pod('x', 'b', { app: 'b' }, '10.0.0.2', 'default', [{ name: 'web', containerPort: 8080 }]),
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'web', namespace: 'x' },
      spec: { podSelector: { matchLabels: { app: 'b' } }, ingress: [{ ports: [{ port: 'web' }] }] },
    },
  ];
  assert.equal(verdict(rs, { from: 'x/a', to: 'x/b', port: 8080 }).verdict, 'allow');
  assert.equal(verdict(rs, { from: 'x/a', to: 'x/b', port: 80 }).verdict, 'deny');
  assert.equal(
    verdict(rs, { from: 'x/a', to: 'x/b', port: 8080, protocol: 'UDP' }).verdict,
    'deny',
  );
});

test('kubernetes: a pod talking to itself is always allowed', () => {
  const rs: Resource[] = [
    pod('x', 'a', { app: 'a' }, '10.0.0.1'),
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'deny', namespace: 'x' },
      spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
    },
  ];
  assert.equal(verdict(rs, { from: 'x/a', to: 'x/a', port: 80 }).verdict, 'allow');
});

test('kubernetes: ipBlock except carves addresses out of the allowed range', () => {
  const rs: Resource[] = [
    pod('x', 'a', { app: 'a' }, '10.0.0.1'),
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'eg', namespace: 'x' },
      spec: {
        podSelector: {},
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '192.0.2.0/24', except: ['192.0.2.128/25'] } }] }],
      },
    },
  ];
  assert.equal(verdict(rs, { from: 'x/a', to: '192.0.2.5', port: 443 }).verdict, 'allow');
  assert.equal(verdict(rs, { from: 'x/a', to: '192.0.2.200', port: 443 }).verdict, 'deny');
});

test('legacy DefaultDeny namespace annotation isolates ingress of every pod', () => {
  const rs: Resource[] = [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: 'x',
        annotations: {
          'net.beta.kubernetes.io/network-policy': '{"ingress":{"isolation":"DefaultDeny"}}',
        },
      },
    },
    pod('x', 'a', { app: 'a' }, '10.0.0.1'),
    pod('x', 'b', { app: 'b' }, '10.0.0.2'),
    {
      apiVersion: 'extensions/v1beta1',
      kind: 'NetworkPolicy',
      metadata: { name: 'to-b', namespace: 'x' },
      spec: {
        podSelector: { matchLabels: { app: 'b' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'a' } } }] }],
      },
    },
  ];
  assert.equal(verdict(rs, { from: 'x/a', to: 'x/b', port: 80 }).verdict, 'allow');
  assert.equal(verdict(rs, { from: 'x/b', to: 'x/a', port: 80 }).verdict, 'deny');
});

test('istio: ALLOW policy with a method rule allows GET and refuses POST at L7', () => {
  const rs: Resource[] = [
    pod('x', 'a', { app: 'a' }, '10.0.0.1', 'sa-a'),
    pod('x', 'b', { app: 'b' }, '10.0.0.2', 'sa-b'),
    {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'get-only', namespace: 'x' },
      spec: {
        selector: { matchLabels: { app: 'b' } },
        action: 'ALLOW',
        rules: [
          {
            from: [{ source: { principals: ['cluster.local/ns/x/sa/sa-a'] } }],
            to: [{ operation: { methods: ['GET'] } }],
          },
        ],
      },
    },
  ];
  assert.equal(
    verdict(rs, { from: 'x/a', to: 'x/b', port: 80, method: 'GET', path: '/' }).verdict,
    'allow',
  );
  const post = verdict(rs, { from: 'x/a', to: 'x/b', port: 80, method: 'POST', path: '/' });
  assert.equal(post.verdict, 'deny');
  assert.equal(post.kernel.ingress.verdict, 'allow');
  assert.equal(post.l7.provenance.kind, 'istio-no-allow-match');
});

test('a stolen certificate presented from another pod is refused at L7', () => {
  const rs: Resource[] = [
    pod('x', 'attacker', { app: 'evil' }, '10.0.0.9', 'evil'),
    pod('x', 'b', { app: 'b' }, '10.0.0.2', 'sa-b'),
  ];
  const r = verdict(rs, {
    from: 'x/attacker',
    to: 'x/b',
    port: 80,
    principal: 'spiffe://cluster.local/ns/x/sa/sa-b',
  });
  assert.equal(r.verdict, 'deny');
  assert.equal(r.l7.provenance.kind, 'identity-mismatch');
});

test('a Calico and a Kubernetes NetworkPolicy of the same namespace and name are two policies (Calico keeps Kubernetes policies apart as knp.default.*)', () => {
  const k8s: Resource = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'same', namespace: 'x' },
    spec: { podSelector: { matchLabels: { app: 'b' } }, policyTypes: ['Ingress'] },
  };
  const calico: Resource = {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: 'same', namespace: 'x' },
    spec: {
      selector: "app == 'b'",
      types: ['Ingress'],
      ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [80] } }],
    },
  };
  const rs = [pod('x', 'a', { app: 'a' }, '10.0.0.1'), pod('x', 'b', { app: 'b' }, '10.0.0.2')];
  for (const order of [
    [k8s, calico],
    [calico, k8s],
  ]) {
    const e = compile([...rs, ...order]);
    // Both select b in the default tier: the Kubernetes policy (order 1000) has no rule, the
    // Calico one (order nil, so after it) allows port 80; port 81 ends in the tier's default deny.
    assert.equal(e.kernelAllows('x/a', 'x/b', 6, 80), true);
    assert.equal(e.kernelAllows('x/a', 'x/b', 6, 81), false, 'the Kubernetes policy isolates b');
    e.remove('NetworkPolicy', 'x', 'same', 'networking.k8s.io/v1');
    assert.equal(e.kernelAllows('x/a', 'x/b', 6, 80), true, 'the Calico policy remains');
    assert.equal(e.kernelAllows('x/a', 'x/b', 6, 81), false, 'the Calico policy still selects b');
    e.remove('NetworkPolicy', 'x', 'same', 'projectcalico.org/v3');
    assert.equal(e.kernelAllows('x/a', 'x/b', 6, 81), true, 'no policy selects b any more');
  }
});
