// The L7 report a sidecar hands to its agent: an access record becomes a record naming only the
// peer (no query string, no header values), the agent fills in the endpoint's own side, the
// resulting flow records pass the server's own validation even when the engine's provenance
// kind or reason text is one the store does not take, and hostile reports are refused whole.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateFlowBatch } from '@palisade/controlplane/flows';
import type { AccessRecord } from '../sidecar/access-log.js';
import { FlowAggregator } from './aggregator.js';
import {
  observationOf,
  reportRecordOf,
  storableProvenance,
  validateL7Report,
} from './l7-report.js';
import type { WireBatch } from './observation.js';

const NOW = Date.parse('2026-03-01T12:00:00Z');

function access(over: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: new Date(NOW - 1000).toISOString(),
    requestId: 'r1',
    side: 'inbound',
    stage: 'request',
    source: { ip: '10.1.0.5', identity: 'spiffe://cluster.local/ns/shop/sa/web' },
    destination: { endpoint: 'db/pg', port: 9080 },
    method: 'POST',
    path: '/ratings/0?token=s3cret#frag',
    verdict: 'deny',
    status: 403,
    provenance: {
      kind: 'rule',
      tier: 'default',
      policy: 'db/ratings-readers-get-only',
      rule: 0,
      reason: 'rule 0 of db/ratings-readers-get-only — denied',
    },
    staged: [{ policy: 'db/lockdown', tier: 'default', verdict: 'deny' }],
    policyVersion: 7,
    latencyMs: 0.2,
    ...over,
  };
}

test('an inbound 403 becomes a record of the peer with its identity, method, bare path, policy and staged verdicts', () => {
  const r = reportRecordOf(access());
  assert.ok(r);
  assert.deepEqual(r.peer, { ip: '10.1.0.5', identity: 'spiffe://cluster.local/ns/shop/sa/web' });
  assert.equal(r.direction, 'ingress');
  assert.equal(r.port, 9080);
  assert.equal(r.method, 'POST');
  assert.equal(r.path, '/ratings/0');
  assert.equal(r.verdict, 'deny');
  assert.equal(r.provenance.policy, 'db/ratings-readers-get-only');
  // The reason's dash is not ASCII: replaced, so the store takes it.
  assert.match(r.provenance.reason ?? '', /^rule 0 of db\/ratings-readers-get-only \? denied$/);
  assert.deepEqual(r.staged, [{ policy: 'db/lockdown', tier: 'default', verdict: 'deny' }]);
  assert.doesNotMatch(JSON.stringify(r), /s3cret/);
});

test('an outbound record names the destination address as the peer; one without an address is not described', () => {
  const out = reportRecordOf(
    access({
      side: 'outbound',
      destination: { endpoint: '10.1.0.9', port: 9080 },
      verdict: 'allow',
    }),
  );
  assert.equal(out?.direction, 'egress');
  assert.equal(out?.peer.ip, '10.1.0.9');
  assert.equal(out?.peer.identity, undefined);
  assert.equal(
    reportRecordOf(access({ side: 'outbound', destination: { endpoint: '-', port: 0 } })),
    undefined,
  );
  assert.equal(reportRecordOf(access({ time: 'yesterday' })), undefined);
});

test("the agent fills in the endpoint's own side and the records pass the server's validation", async () => {
  const sent: WireBatch[] = [];
  const agg = new FlowAggregator({
    send: (b) => Promise.resolve(void sent.push(b)),
    resolve: (ip) =>
      ip === '10.1.0.7' ? { namespace: 'db', name: 'pg', labels: { app: 'pg' } } : undefined,
  });
  const records = [
    reportRecordOf(access()),
    reportRecordOf(
      access({
        verdict: 'error',
        provenance: { kind: 'istio-rbac-deny', reason: 'no ServiceRoleBinding — ✗' },
      }),
    ),
    reportRecordOf(
      access({
        side: 'outbound',
        destination: { endpoint: 'web/api', port: 80 },
        verdict: 'allow',
        provenance: { kind: 'something-new' as 'rule', reason: '' },
      }),
    ),
  ];
  const v = validateL7Report({ records }, NOW);
  assert.ok(v.ok, JSON.stringify(v));
  for (const r of v.report.records) {
    const ob = observationOf(r, '10.1.0.7', (ep) => (ep === 'web/api' ? '10.1.0.9' : undefined));
    assert.ok(ob);
    agg.observe(ob);
  }
  const unknownPeer = reportRecordOf(
    access({ side: 'outbound', destination: { endpoint: 'x/gone', port: 80 } }),
  );
  assert.ok(unknownPeer);
  assert.equal(
    observationOf(unknownPeer, '10.1.0.7', () => undefined),
    undefined,
  );
  await agg.flush();
  const batch = sent[0];
  assert.ok(batch);
  assert.deepEqual(validateFlowBatch(batch, NOW), []);
  const inbound = batch.records.find((r) => r.direction === 'ingress' && r.verdict === 'deny');
  assert.equal(inbound?.destination.name, 'pg');
  assert.equal(inbound?.destination.ip, '10.1.0.7');
  assert.equal(inbound?.source.ip, '10.1.0.5');
  const egress = batch.records.find((r) => r.direction === 'egress');
  assert.equal(egress?.source.name, 'pg');
  assert.equal(egress?.destination.ip, '10.1.0.9');
  assert.equal(egress?.provenance.kind, 'unmanaged');
  assert.match(egress?.provenance.reason ?? '', /^something-new:/);
  const rbac = batch.records.find((r) => r.provenance.reason?.includes('ServiceRoleBinding'));
  assert.equal(rbac?.provenance.kind, 'istio-rbac-deny');
});

test('provenance texts are bounded, printable and never empty', () => {
  const p = storableProvenance({
    kind: 'rule',
    policy: 'x'.repeat(400),
    tier: '',
    rule: -1,
    reason: '\u0000\u2014'.repeat(600),
  });
  assert.equal(p.policy?.length, 253);
  assert.equal(p.tier, undefined);
  assert.equal(p.rule, undefined);
  assert.equal(p.reason?.length, 512);
  assert.match(p.reason ?? '', /^\?+$/);
});

test('hostile reports are refused whole with the problems named', () => {
  const good = reportRecordOf(access());
  const bad: [string, unknown, RegExp][] = [
    ['not an object', [good], /JSON object/],
    ['unknown top-level field', { records: [], node: 'other' }, /node: unknown field/],
    ['too many records', { records: Array.from({ length: 2001 }, () => good) }, /at most 2000/],
    [
      'a record with an unknown field',
      { records: [{ ...good, source: { ip: '1.2.3.4' } }] },
      /source: unknown field/,
    ],
    [
      'a peer that is not an address',
      { records: [{ ...good, peer: { ip: 'evil.example' } }] },
      /peer\.ip/,
    ],
    [
      'a forged identity',
      { records: [{ ...good, peer: { ip: '10.0.0.1', identity: 'root' } }] },
      /identity/,
    ],
    ['a time in the future', { records: [{ ...good, time: NOW + 3600_000 }] }, /time/],
    ['a time long past', { records: [{ ...good, time: NOW - 48 * 3600_000 }] }, /time/],
    ['a port out of range', { records: [{ ...good, port: 70000 }] }, /port/],
    ['a path with its query', { records: [{ ...good, path: '/a?token=x' }] }, /path/],
    ['a path that is not printable', { records: [{ ...good, path: '/a\u0000b' }] }, /path/],
    ['a long path', { records: [{ ...good, path: `/${'a'.repeat(3000)}` }] }, /path/],
    ['a lower-case method', { records: [{ ...good, method: 'get' }] }, /method/],
    ['a verdict of its own', { records: [{ ...good, verdict: 'maybe' }] }, /verdict/],
    ['a provenance without kind', { records: [{ ...good, provenance: {} }] }, /provenance/],
    [
      'a provenance field of its own',
      { records: [{ ...good, provenance: { kind: 'rule', node: 'x' } }] },
      /provenance\.node/,
    ],
    ['staged of the wrong shape', { records: [{ ...good, staged: [{ policy: 1 }] }] }, /staged/],
    [
      'a shed reason of its own',
      { records: [], shed: [{ reason: 'kernel-untraced', count: 1 }] },
      /shed/,
    ],
    ['a negative shed count', { records: [], shed: [{ reason: 'parse', count: -5 }] }, /shed/],
  ];
  for (const [what, body, problem] of bad) {
    const v = validateL7Report(body, NOW);
    assert.equal(v.ok, false, what);
    if (!v.ok) assert.match(v.problems.join('; '), problem, what);
  }
  const ok = validateL7Report(
    { records: [good], shed: [{ reason: 'buffer-full', count: 3 }] },
    NOW,
  );
  assert.ok(ok.ok);
  assert.deepEqual(ok.report.shed, [{ reason: 'buffer-full', count: 3 }]);
});
