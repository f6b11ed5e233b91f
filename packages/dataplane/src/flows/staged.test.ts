// Staged verdicts of kernel flow records (DESIGN §4.8: staged policies never change a verdict;
// their would-be verdict is reported beside the real one), asked of a real compiled engine: each
// staged kind at the side the record was judged, nothing for endpoints no staged policy selects,
// once per distinct tuple per interval, within a budget whose overflow is counted, and the
// records still pass the server's validation.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compile, loadText } from '@palisade/core';
import { validateFlowBatch } from '@palisade/controlplane/flows';
import { FlowAggregator } from './aggregator.js';
import type { FlowObservation, WireBatch } from './observation.js';
import { engineStagedLookup } from './staged.js';
import type { StagedEngine } from './staged.js';

const WORLD = `
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
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: db, labels: {app: pg}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: db, labels: {app: cache}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.3}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lockdown, namespace: db}
spec:
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web', namespaceSelector: all()}
      destination: {ports: [5432]}
    - action: Deny
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: egress-audit}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Deny
      protocol: UDP
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: cache-only-db, namespace: db}
spec:
  podSelector: {matchLabels: {app: cache}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {}}]
`;

function engine() {
  const loaded = loadText(WORLD, 'world.yaml');
  assert.deepEqual(
    loaded.diagnostics.filter((d) => d.severity === 'error'),
    [],
  );
  return compile(loaded.resources);
}

function ob(over: Partial<FlowObservation>): FlowObservation {
  return {
    timeMs: Date.now(),
    point: 'kernel',
    direction: 'ingress',
    srcIp: '10.1.0.1',
    srcPort: 40000,
    dstIp: '10.1.0.2',
    dstPort: 5432,
    protocol: 'TCP',
    verdict: 'allow',
    provenance: { kind: 'no-policy' },
    packets: 1,
    bytes: 60,
    ...over,
  };
}

test('a kernel tuple gets the would-be verdict of each staged kind at the side it was judged', () => {
  const look = engineStagedLookup(() => engine());
  // StagedNetworkPolicy at pg's ingress: rule 0 allows web on 5432, rule 1 denies the rest.
  assert.deepEqual(look(ob({})), [
    { policy: 'db/lockdown', tier: 'default', verdict: 'allow', rule: 0 },
  ]);
  assert.deepEqual(look(ob({ dstPort: 80 })), [
    { policy: 'db/lockdown', tier: 'default', verdict: 'deny', rule: 1 },
  ]);
  // StagedGlobalNetworkPolicy at web's egress: only the egress record carries it.
  assert.deepEqual(look(ob({ direction: 'egress', protocol: 'UDP', dstPort: 53 })), [
    { policy: 'egress-audit', tier: 'default', verdict: 'deny', rule: 0 },
  ]);
  // No rule matches TCP; enforced, the policy would leave web's egress to the tier's default.
  assert.deepEqual(look(ob({ direction: 'egress' })), [
    { policy: 'egress-audit', tier: 'default', verdict: 'deny' },
  ]);
  // StagedKubernetesNetworkPolicy at cache's ingress: from its own namespace only.
  const k = look(ob({ dstIp: '10.1.0.3', srcIp: '10.1.0.2', dstPort: 6379 }));
  assert.equal(k?.length, 1);
  assert.match(k?.[0]?.policy ?? '', /cache-only-db/);
  assert.equal(k?.[0]?.verdict, 'allow');
  const outside = look(ob({ dstIp: '10.1.0.3', dstPort: 6379 }));
  assert.notEqual(outside?.[0]?.verdict, 'allow', JSON.stringify(outside));
  // No staged policy selects pg for egress, nor an outside address.
  assert.equal(look(ob({ direction: 'egress', srcIp: '10.1.0.2', dstIp: '10.1.0.1' })), undefined);
  assert.equal(look(ob({ dstIp: '203.0.113.9' })), undefined);
  // Hostile tuples: an address nobody has, a protocol number, no direction.
  assert.equal(look(ob({ srcIp: 'not-an-ip', dstIp: 'x' })), undefined);
  assert.deepEqual(look(ob({ protocol: '132', dstPort: 5432 }))?.[0]?.verdict, 'deny');
  const noDirection: { -readonly [K in keyof FlowObservation]?: FlowObservation[K] } = ob({});
  delete noDirection.direction;
  assert.equal(look(noDirection as FlowObservation), undefined);
});

test('the aggregator asks once per distinct tuple per interval, counts what is over the budget, and the records validate', async () => {
  const e = engine();
  const asked: string[] = [];
  const counting: StagedEngine = {
    activeTiers: (ref) => e.activeTiers(ref),
    check: (probe, explain, kernelOnly) => {
      asked.push(`${probe.from}>${probe.to}:${probe.port ?? ''}`);
      return e.check(probe, explain, kernelOnly);
    },
  };
  const sent: WireBatch[] = [];
  const logs: unknown[] = [];
  const agg = new FlowAggregator({
    send: (b) => Promise.resolve(void sent.push(b)),
    staged: engineStagedLookup(() => counting),
    maxStagedLookups: 2,
    log: (l) => logs.push(l),
  });
  // 100 packets of one tuple, in two records (two source ports, allowed and refused ones).
  for (let i = 0; i < 50; i++) agg.observe(ob({ srcPort: 40000 + i }));
  for (let i = 0; i < 50; i++)
    agg.observe(ob({ verdict: 'deny', provenance: { kind: 'tier-default', tier: 'default' } }));
  agg.observe(ob({ dstPort: 80 }));
  // A third tuple is over the budget of 2; an L7 record keeps what its point reported.
  agg.observe(ob({ dstPort: 81 }));
  agg.observe(
    ob({
      point: 'l7',
      dstPort: 82,
      method: 'GET',
      path: '/',
      staged: [{ policy: 'db/other', tier: 'default', verdict: 'pass' }],
    }),
  );
  await agg.flush();
  assert.deepEqual(asked, ['10.1.0.1>10.1.0.2:5432', '10.1.0.1>10.1.0.2:80']);
  const recs = sent.flatMap((b) => b.records);
  assert.equal(recs.length, 5);
  const at = (port: number) => recs.filter((r) => r.destination.port === port);
  for (const r of at(5432)) assert.equal(r.staged?.[0]?.verdict, 'allow');
  assert.equal(at(80)[0]?.staged?.[0]?.verdict, 'deny');
  assert.equal(at(81)[0]?.staged, undefined);
  assert.deepEqual(at(82)[0]?.staged, [{ policy: 'db/other', tier: 'default', verdict: 'pass' }]);
  assert.equal(agg.counters.stagedLookups, 2);
  assert.equal(agg.counters.stagedSkipped, 1);
  assert.match(agg.metricsText(), /palisade_node_flow_staged_skipped_total 1/);
  assert.equal(logs.length, 1);
  for (const b of sent) assert.deepEqual(validateFlowBatch(b, Date.now()), []);
  // The next interval asks again (the engine may have changed meanwhile).
  agg.observe(ob({}));
  await agg.flush();
  assert.equal(asked.length, 3);
});

test('a lookup that throws costs the records their staged verdicts, never the records', async () => {
  const sent: WireBatch[] = [];
  const agg = new FlowAggregator({
    send: (b) => Promise.resolve(void sent.push(b)),
    staged: () => {
      throw new Error('engine in the middle of an update');
    },
  });
  agg.observe(ob({}));
  await agg.flush();
  assert.equal(sent[0]?.records.length, 1);
  assert.equal(sent[0]?.records[0]?.staged, undefined);
  assert.equal(agg.counters.stagedSkipped, 1);
});
