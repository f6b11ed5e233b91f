import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from './main.js';
import { rbacChainAllows } from '../../dataplane/src/authz/rbac-reference.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const BOOKINFO = join(ROOT, 'examples/bookinfo');

async function run(argv: string[]) {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    readStdin: () => Promise.resolve(''),
  });
  return { code, out, err };
}

const PODS: Record<string, { ip: string; sa: string }> = {
  'default/istio-ingress': { ip: '10.244.0.10', sa: 'istio-ingress' },
  'default/productpage-v1': { ip: '10.244.0.11', sa: 'bookinfo-productpage' },
  'default/details-v1': { ip: '10.244.0.12', sa: 'bookinfo-details' },
  'default/reviews-v1': { ip: '10.244.0.13', sa: 'bookinfo-reviews-v1' },
  'default/reviews-v2': { ip: '10.244.0.14', sa: 'bookinfo-reviews' },
  'default/reviews-v3': { ip: '10.244.0.15', sa: 'bookinfo-reviews' },
  'default/ratings-v1': { ip: '10.244.0.16', sa: 'bookinfo-ratings' },
  'default/sleep': { ip: '10.244.0.17', sa: 'sleep' },
};
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

interface Probe {
  from: string;
  to: string;
  protocol: 'TCP';
  port: number;
  method: string;
  path: string;
  principal: string | null;
}

/** The inbound L7 verdict `palisade check` reports: the destination's L7 rules and Istio layer. */
function inbound(line: string): 'allow' | 'deny' {
  const r = JSON.parse(line) as {
    l7: { ingress?: { verdict: string }; istio?: { verdict: string } };
  };
  return r.l7.ingress?.verdict === 'allow' && r.l7.istio?.verdict === 'allow' ? 'allow' : 'deny';
}

test('export envoy-rbac: for every bookinfo pod, an independent RBAC evaluator of the export agrees with palisade check on generated requests', async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-export-${process.pid}-`));
  try {
    const sources: { ip: string; principal: string | null }[] = [];
    for (const p of Object.values(PODS)) {
      sources.push({ ip: p.ip, principal: id(p.sa) }, { ip: p.ip, principal: null });
      // A certificate stolen from reviews, presented from this pod's address.
      sources.push({ ip: p.ip, principal: id('bookinfo-reviews') });
    }
    for (const ip of ['10.244.0.18', '10.244.7.1', '192.0.2.7', '2001:db8::5'])
      sources.push({ ip, principal: null }, { ip, principal: id('sleep') });
    const methods = ['GET', 'POST', 'DELETE'];
    const paths = [
      '/',
      '/ratings',
      '/ratings/1',
      '/ratingsx',
      '/ratings?x=1',
      '/details/0',
      '/productpage',
      '/reviews/0?a=b',
    ];
    const probes: Probe[] = [];
    for (const to of Object.keys(PODS))
      for (const s of sources)
        for (const method of methods)
          for (const path of paths)
            probes.push({
              from: s.ip,
              to,
              protocol: 'TCP',
              port: 9080,
              method,
              path,
              principal: s.principal,
            });
    const file = join(dir, 'probes.jsonl');
    writeFileSync(file, probes.map((p) => JSON.stringify(p)).join('\n'));
    const checked = await run(['check', '-f', BOOKINFO, '--probes', file, '-o', 'json']);
    const lines = checked.out.trim().split('\n');
    assert.equal(lines.length, probes.length, checked.err);
    const filters = new Map<string, unknown[]>();
    for (const to of Object.keys(PODS)) {
      const r = await run(['export', 'envoy-rbac', '--endpoint', to, '-f', BOOKINFO, '-o', 'json']);
      assert.equal(r.code, 0, r.err);
      filters.set(to, (JSON.parse(r.out) as { http_filters: unknown[] }).http_filters);
    }
    let allowed = 0;
    const disagreements: string[] = [];
    for (const [i, p] of probes.entries()) {
      const expected = inbound(lines[i] ?? '');
      const got = rbacChainAllows(filters.get(p.to) ?? [], {
        sourceIp: p.from,
        principal: p.principal,
        destinationPort: p.port,
        method: p.method,
        path: p.path,
        headers: {},
      })
        ? 'allow'
        : 'deny';
      if (expected === 'allow') allowed++;
      if (got !== expected)
        disagreements.push(`${JSON.stringify(p)}: check ${expected}, RBAC ${got}`);
    }
    assert.deepEqual(disagreements.slice(0, 10), []);
    // The sample is not trivial: both outcomes occur.
    assert.ok(
      allowed > 20 && allowed < probes.length - 100,
      `${allowed} of ${probes.length} allowed`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('export envoy-rbac: ratings is readable with GET on /ratings* by the ratings-reader identities only, each bound to its own address', async () => {
  const r = await run([
    'export',
    'envoy-rbac',
    '--endpoint',
    'default/ratings-v1',
    '-f',
    BOOKINFO,
    '-o',
    'json',
  ]);
  assert.equal(r.code, 0, r.err);
  const text = r.out;
  assert.match(text, /"exact": "spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-reviews"/);
  assert.doesNotMatch(text, /bookinfo-reviews-v1"/);
  assert.match(text, /"address_prefix": "10.244.0.14"/);
  assert.match(text, /"prefix": "\/ratings"/);
});

test('export envoy-rbac refuses a construct it cannot express, naming it, and prints nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-export-${process.pid}-`));
  try {
    cpSync(BOOKINFO, dir, { recursive: true });
    writeFileSync(
      join(dir, 'hosts.yaml'),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-host, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  rules:
  - to:
    - operation: {hosts: ["ratings.example"]}
`,
    );
    const r = await run(['export', 'envoy-rbac', '--endpoint', 'default/ratings-v1', '-f', dir]);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.match(
      r.err,
      /EXPORT_ERR_UNSUPPORTED: .*AuthorizationPolicy default\/by-host rule 0: to.operation.hosts/,
    );
    const none = await run(['export', 'envoy-rbac', '--endpoint', 'default/nope', '-f', BOOKINFO]);
    assert.equal(none.code, 2);
    assert.match(none.err, /EXPORT_ERR_INPUT/);
    const fmt = await run(['export', 'istio', '--endpoint', 'default/ratings-v1', '-f', BOOKINFO]);
    assert.equal(fmt.code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('export envoy-rbac refuses legacy Istio RBAC (its services, constraints and properties are not partitioned) rather than print filters that could allow more', async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-export-${process.pid}-`));
  try {
    cpSync(BOOKINFO, dir, { recursive: true });
    writeFileSync(
      join(dir, 'legacy.yaml'),
      `apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: ratings-get, namespace: default}
spec:
  rules: [{services: ["*"], methods: [GET], constraints: [{key: destination.port, values: ["9080"]}]}]
`,
    );
    const r = await run(['export', 'envoy-rbac', '--endpoint', 'default/ratings-v1', '-f', dir]);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.match(
      r.err,
      /EXPORT_ERR_UNSUPPORTED: .*ServiceRole default\/ratings-get: legacy Istio RBAC/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
