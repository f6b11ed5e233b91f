// The aggregator: observations fold into one record per flow and interval, what does not fit or
// cannot be sent is counted and reported with the next batch (nothing dropped silently), and the
// records it ships pass the server's own validation (the wire contract of controlplane/flows).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateFlowBatch } from '@palisade/controlplane/flows';
import { FlowAggregator } from './aggregator.js';
import type { FlowObservation, WireBatch } from './observation.js';
import { l7Observation } from './l7.js';

const T0 = Date.parse('2026-03-01T12:00:00Z');

function ob(over: Partial<FlowObservation> = {}): FlowObservation {
  return {
    timeMs: T0,
    point: 'kernel',
    direction: 'ingress',
    srcIp: '10.0.0.1',
    srcPort: 40000,
    dstIp: '10.0.0.2',
    dstPort: 80,
    protocol: 'TCP',
    verdict: 'deny',
    provenance: { kind: 'tier-default', tier: 'security', reason: 'default deny of tier security' },
    packets: 1,
    bytes: 60,
    ...over,
  };
}

const resolve = (ip: string) =>
  ip === '10.0.0.1'
    ? {
        namespace: 'shop',
        name: 'web',
        labels: { app: 'web' },
        identity: 'spiffe://cluster.local/ns/shop/sa/web',
      }
    : ip === '10.0.0.2'
      ? { namespace: 'db', name: 'pg', labels: { app: 'pg' } }
      : undefined;

test('observations of one flow in one interval fold into one record with summed counts and the window', async () => {
  const sent: WireBatch[] = [];
  const a = new FlowAggregator({
    send: (b) => Promise.resolve(void sent.push(b)),
    resolve,
    now: () => T0,
  });
  a.observe(ob());
  a.observe(ob({ timeMs: T0 + 3000, srcPort: 40001 }));
  a.observe(
    ob({
      timeMs: T0 + 1000,
      verdict: 'allow',
      provenance: { kind: 'rule', tier: 'app', policy: 'db/allow', rule: 0 },
    }),
  );
  await a.flush();
  assert.equal(sent.length, 1);
  const recs = sent[0]?.records ?? [];
  assert.equal(recs.length, 2);
  const deny = recs.find((r) => r.verdict === 'deny');
  assert.deepEqual(deny, {
    start: new Date(T0).toISOString(),
    end: new Date(T0 + 3000).toISOString(),
    // Two source ports: the record names none.
    source: {
      ip: '10.0.0.1',
      namespace: 'shop',
      name: 'web',
      labels: { app: 'web' },
      identity: 'spiffe://cluster.local/ns/shop/sa/web',
    },
    destination: { ip: '10.0.0.2', port: 80, namespace: 'db', name: 'pg', labels: { app: 'pg' } },
    protocol: 'TCP',
    verdict: 'deny',
    point: 'kernel',
    direction: 'ingress',
    provenance: { kind: 'tier-default', tier: 'security', reason: 'default deny of tier security' },
    packets: 2,
    bytes: 120,
    count: 2,
  });
  assert.equal(recs.find((r) => r.verdict === 'allow')?.source.port, 40000);
  assert.deepEqual(validateFlowBatch(sent[0], T0 + 10_000), []);
});

test('beyond maxKeys new flows are shed and the count rides with the next batch', async () => {
  const sent: WireBatch[] = [];
  const a = new FlowAggregator({ send: (b) => Promise.resolve(void sent.push(b)), maxKeys: 3 });
  for (let i = 0; i < 10; i++) a.observe(ob({ dstPort: 1000 + i }));
  a.observe(ob({ dstPort: 1000 })); // an existing flow still folds
  await a.flush();
  assert.equal(sent[0]?.records.length, 3);
  assert.equal(sent[0]?.records[0]?.count, 2);
  assert.deepEqual(sent[0]?.shed, [{ point: 'kernel', reason: 'buffer-full', count: 7 }]);
  await a.flush();
  assert.equal(sent.length, 1, 'nothing left to report');
});

test('a failed send keeps the batch and its shed counts; the oldest batch beyond maxPending is counted as shed', async () => {
  let up = false;
  const sent: WireBatch[] = [];
  const a = new FlowAggregator({
    maxPending: 2,
    send: (b) => {
      if (!up) return Promise.reject(new Error('server down'));
      sent.push(b);
      return Promise.resolve();
    },
  });
  for (let i = 0; i < 3; i++) {
    a.observe(ob({ dstPort: 2000 + i }));
    a.observe(ob({ dstPort: 2000 + i }));
    await a.flush();
  }
  assert.equal(a.counters.sendFailures, 3);
  up = true;
  await a.flush();
  assert.deepEqual(
    sent.map((b) => b.records.map((r) => r.destination.port)),
    [[2001], [2002]],
  );
  assert.deepEqual(sent[0]?.shed, [{ point: 'kernel', reason: 'send-failed', count: 2 }]);
  assert.equal(sent[1]?.shed, undefined);
  assert.match(
    a.metricsText(),
    /palisade_node_flows_shed_total\{point="kernel",reason="send-failed"\} 2/,
  );
});

test("the sidecar's access records become L7 observations without query strings, and pass the server's validation", async () => {
  const o = l7Observation(
    {
      time: new Date(T0).toISOString(),
      requestId: 'r1',
      side: 'inbound',
      stage: 'request',
      source: { ip: '10.0.0.1', identity: 'spiffe://cluster.local/ns/shop/sa/web' },
      destination: { endpoint: 'db/pg', port: 8080 },
      method: 'DELETE',
      path: '/orders/7?token=secret',
      verdict: 'deny',
      status: 403,
      provenance: {
        kind: 'rule',
        tier: 'app',
        policy: 'db/no-delete',
        rule: 1,
        reason: 'rule 1 denied',
      },
      policyVersion: 3,
      latencyMs: 0.2,
    },
    { localIp: '10.0.0.2' },
  );
  assert.ok(o);
  assert.equal(o.path, '/orders/7');
  assert.equal(o.srcIdentity, 'spiffe://cluster.local/ns/shop/sa/web');
  const sent: WireBatch[] = [];
  const a = new FlowAggregator({ send: (b) => Promise.resolve(void sent.push(b)), resolve });
  a.observe(o);
  await a.flush();
  assert.equal(sent[0]?.records[0]?.method, 'DELETE');
  assert.equal(sent[0]?.records[0]?.point, 'l7');
  assert.deepEqual(validateFlowBatch(sent[0], T0 + 1000), []);
});
