import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseSpiffeId, parseWorkloadId, workloadSpiffeId } from './spiffe-id.js';

function refused(id: string, pattern: RegExp): void {
  const r = parseSpiffeId(id);
  assert.equal(r.ok, false, `${id} should be refused`);
  if (!r.ok) {
    assert.equal(r.code, 'PKI_ERR_BAD_SPIFFE_ID');
    assert.match(r.message, pattern, id);
  }
}

test('SPIFFE-ID §2: a valid ID parses into trust domain and path', () => {
  const r = parseSpiffeId('spiffe://cluster.local/ns/default/sa/reviews');
  assert.ok(r.ok);
  assert.equal(r.id.trustDomain, 'cluster.local');
  assert.equal(r.id.path, '/ns/default/sa/reviews');
  assert.deepEqual(r.id.segments, ['ns', 'default', 'sa', 'reviews']);
  const td = parseSpiffeId('spiffe://example.org');
  assert.ok(td.ok);
  assert.equal(td.id.path, '');
});

test('SPIFFE-ID §2: the scheme must be spiffe, with no query or fragment', () => {
  refused('https://cluster.local/ns/a/sa/b', /start with spiffe:\/\//);
  refused('spiffe:/cluster.local/ns/a', /start with spiffe:\/\//);
  refused('SPIFFE://cluster.local/ns/a', /lowercase/);
  refused('spiffe://cluster.local/ns/a?x=1', /query/);
  refused('spiffe://cluster.local/ns/a#frag', /fragment/);
  refused('', /start with/);
});

test('SPIFFE-ID §2.1: the trust domain is non-empty, lowercase [a-z0-9._-], without userinfo, port or percent-encoding', () => {
  refused('spiffe:///ns/a/sa/b', /empty/);
  refused('spiffe://', /empty/);
  refused('spiffe://user@cluster.local/ns/a', /userinfo/);
  refused('spiffe://cluster.local:8443/ns/a', /port/);
  refused('spiffe://cluster%2elocal/ns/a', /percent/);
  refused('spiffe://Cluster.Local/ns/a', /lowercase/);
  refused('spiffe://clus ter/ns/a', /only letters/);
  refused('spiffe://[::1]/ns/a', /IPv6/);
  assert.ok(parseSpiffeId('spiffe://a_b-c.9/x').ok);
  assert.ok(parseSpiffeId('spiffe://10.0.0.1/x').ok, 'dotted quads are trust domain names too');
});

test('SPIFFE-ID §2.2: path segments are not empty, not . or .., use [a-zA-Z0-9._-], no percent-encoding, no trailing /', () => {
  refused('spiffe://td/ns//sa/b', /empty/);
  refused('spiffe://td/ns/./sa', /relative/);
  refused('spiffe://td/ns/../sa', /relative/);
  refused('spiffe://td/ns/a%20b', /percent/);
  refused('spiffe://td/ns/a/', /end with \//);
  refused('spiffe://td/', /lone \//);
  refused('spiffe://td/ns/a+b', /only letters/);
  refused('spiffe://td/ns/ä', /only letters/);
  assert.ok(parseSpiffeId('spiffe://td/Mixed.Case_seg-1/...x').ok);
});

test('SPIFFE-ID §2.3: IDs up to 2048 bytes, trust domains up to 255 bytes', () => {
  const td = 'a'.repeat(255);
  assert.ok(parseSpiffeId(`spiffe://${td}/x`).ok);
  refused(`spiffe://${'a'.repeat(256)}/x`, /255/);
  const base = 'spiffe://td/';
  assert.ok(parseSpiffeId(base + 'p'.repeat(2048 - base.length)).ok);
  refused(base + 'p'.repeat(2049 - base.length), /2048/);
});

test('workload identity: spiffe://TD/ns/N/sa/S and nothing else', () => {
  const w = parseWorkloadId('spiffe://cluster.local/ns/prod/sa/api');
  assert.ok(w.ok);
  assert.equal(w.identity.namespace, 'prod');
  assert.equal(w.identity.serviceAccount, 'api');
  for (const bad of [
    'spiffe://cluster.local/ns/prod',
    'spiffe://cluster.local/ns/prod/sa/api/extra',
    'spiffe://cluster.local/sa/api/ns/prod',
    'spiffe://cluster.local',
  ]) {
    const r = parseWorkloadId(bad);
    assert.equal(r.ok, false, bad);
  }
});

test('workloadSpiffeId builds valid IDs and refuses segments that would change the path', () => {
  const r = workloadSpiffeId('cluster.local', 'default', 'reviews');
  assert.ok(r.ok);
  assert.equal(r.id.uri, 'spiffe://cluster.local/ns/default/sa/reviews');
  for (const [ns, sa] of [
    ['a/sa/admin', 'x'],
    ['..', 'x'],
    ['a', ''],
    ['a', 'b?c'],
  ] as const)
    assert.equal(workloadSpiffeId('cluster.local', ns, sa).ok, false, `${ns} ${sa}`);
  assert.equal(workloadSpiffeId('Bad', 'a', 'b').ok, false);
});

test('parseSpiffeId never throws, and what it accepts re-parses to the same ID', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.string().map((s) => `spiffe://${s}`),
      ),
      (s) => {
        const r = parseSpiffeId(s);
        if (r.ok) {
          const again = parseSpiffeId(r.id.uri);
          assert.ok(again.ok);
          assert.deepEqual(again.id, r.id);
          assert.equal(`spiffe://${r.id.trustDomain}${r.id.path}`, s);
        }
      },
    ),
    { numRuns: 2000 },
  );
  for (const v of [undefined, null, 42, {}, ['spiffe://td/x']])
    assert.equal(parseSpiffeId(v).ok, false);
});
