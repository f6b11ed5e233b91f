// Kernel flow records end to end in real network namespaces: real policies rendered into a real
// nftables table, real TCP connections between pods, the trace table and `nft monitor trace`,
// the aggregator, the shipper over HTTPS with a node token, and the server's flow store. An
// allowed connection is recorded with the policy rule that allowed it, a refused one with the
// tier default that refused it; the trace table is removed on stop and the enforcement table
// is left untouched.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadText } from '@palisade/core';
import type { RunningServer } from '@palisade/controlplane';
import { runServer } from '@palisade/controlplane';
import type { FlowRecord } from '@palisade/controlplane/flows';
import { Calculation } from '../calc/calculation.js';
import { NftDriver } from '../nft/driver.js';
import { render } from '../nft/render.js';
import { canUseNetns, TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { FlowAggregator } from './aggregator.js';
import { KernelFlowSource } from './kernel-source.js';
import { flowShipper } from './shipper.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

function world(web: string, pg: string, other: string): string {
  const pod = (ns: string, name: string, app: string, ip: string) => `
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${ns}, labels: {app: ${app}}}
spec: {containers: [{name: c}]}
status: {podIP: ${ip}}
---`;
  return `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: db}
---
${pod('shop', 'web', 'web', web)}
${pod('shop', 'other', 'other', other)}
${pod('db', 'pg', 'pg', pg)}
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: db}
spec:
  selector: app == 'pg'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web', namespaceSelector: all()}
      destination: {ports: [5432]}
`;
}

describe('kernel flow records from real connections', { skip, timeout: 120_000 }, () => {
  let node: TestNode;
  let pods: TestPod[];
  let server: RunningServer;
  let dir: string;
  const table = `palisade_f${process.pid % 100000}`;

  before(async () => {
    node = new TestNode('f');
    pods = [node.addPod(1), node.addPod(2), node.addPod(3)];
    await Promise.all(pods.map((p) => p.start(['t5432'])));
    dir = mkdtempSync(join(tmpdir(), `palisade-kflows-${process.pid}-`));
    server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: dir,
      store: 'memory:',
      insecurePlaintext: false,
      rateLimit: false,
      log: () => undefined,
      say: () => undefined,
    });
  });
  after(async () => {
    await server?.stop();
    node?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('an allowed connection names the allowing rule, a refused one the tier default that refused it', async () => {
    const [web, pg, other] = pods as [TestPod, TestPod, TestPod];
    const loaded = loadText(world(web.ip, pg.ip, other.ip), 'world.yaml');
    assert.deepEqual(
      loaded.diagnostics.filter((d) => d.severity === 'error'),
      [],
    );
    const calc = new Calculation();
    for (const r of loaded.resources) calc.upsert(r);
    calc.setLocalEndpoints([
      { ref: 'shop/web', iface: web.hostIface },
      { ref: 'db/pg', iface: pg.hostIface },
      { ref: 'shop/other', iface: other.hostIface },
    ]);
    await new NftDriver({ table, netns: node.ns }).apply(
      render(calc.desired(), { table, workloadInterfacePrefix: node.ifacePrefix }),
    );
    const admin = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    const tok = await server.api.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      token: admin,
      body: { node: 'node-f' },
    });
    const names = new Map([
      [web.ip, { namespace: 'shop', name: 'web' }],
      [pg.ip, { namespace: 'db', name: 'pg' }],
      [other.ip, { namespace: 'shop', name: 'other' }],
    ]);
    const agg = new FlowAggregator({
      send: flowShipper({
        server: server.url,
        token: (tok.json() as { token: string }).token,
        ca: readFileSync(join(dir, 'ca.pem'), 'utf8'),
      }),
      resolve: (ip) => names.get(ip),
    });
    const source = new KernelFlowSource({
      table,
      netns: node.ns,
      onObservation: (o) => agg.observe(o),
      onShed: (reason, n) => agg.shed('kernel', reason, n),
    });
    await source.start();
    try {
      // The monitor subscribes asynchronously: connect until both outcomes have been traced.
      const deadline = Date.now() + 30_000;
      let allowedSeen = false;
      let refusedSeen = false;
      while (!(allowedSeen && refusedSeen) && Date.now() < deadline) {
        const [ok, refused] = await Promise.all([
          web.tcp(pg.ip, 5432, 1000),
          other.tcp(pg.ip, 5432, 1000),
        ]);
        assert.equal(ok.ok, true, 'web → pg:5432 is allowed by db/allow-web');
        assert.equal(refused.ok, false, 'other → pg:5432 is refused');
        await new Promise((r) => setTimeout(r, 200));
        await agg.flush();
        const r = await server.api.inject({
          method: 'GET',
          url: '/api/v1/flows?endpoint=db/pg&limit=1000',
          token: admin,
        });
        const recs = (r.json() as { records: FlowRecord[] }).records;
        allowedSeen = recs.some((x) => x.verdict === 'allow' && x.direction === 'ingress');
        refusedSeen = recs.some((x) => x.verdict === 'deny' && x.direction === 'ingress');
      }
      const r = await server.api.inject({
        method: 'GET',
        url: '/api/v1/flows?endpoint=db/pg&limit=1000',
        token: admin,
      });
      const recs = (r.json() as { records: FlowRecord[] }).records;
      const allowed = recs.find((x) => x.verdict === 'allow' && x.direction === 'ingress');
      const refused = recs.find((x) => x.verdict === 'deny' && x.direction === 'ingress');
      assert.ok(allowed && refused, JSON.stringify(recs, null, 1).slice(0, 3000));
      assert.deepEqual(
        [
          allowed.source.name,
          allowed.destination.name,
          allowed.destination.port,
          allowed.protocol,
          allowed.point,
          allowed.node,
        ],
        ['web', 'pg', 5432, 'TCP', 'kernel', 'node-f'],
      );
      assert.equal(allowed.provenance.kind, 'rule');
      assert.equal(allowed.provenance.policy, 'db/allow-web');
      assert.equal(allowed.provenance.rule, 0);
      assert.equal(allowed.provenance.tier, 'default');
      assert.deepEqual(
        [refused.source.name, refused.destination.name, refused.destination.port],
        ['other', 'pg', 5432],
      );
      assert.equal(refused.provenance.kind, 'tier-default');
      assert.equal(refused.provenance.tier, 'default');
      // The senders' egress: no policy selects them, their namespace's profile allows (as Calico).
      const egress = recs.find((x) => x.direction === 'egress' && x.source.name === 'other');
      assert.equal(egress?.provenance.kind, 'profile');
      assert.equal(egress?.provenance.profile, 'kns.shop');
      assert.ok(refused.packets >= 1 && refused.bytes >= 40);
      // Nothing was over the trace rate.
      const stats = (
        await server.api.inject({ method: 'GET', url: '/api/v1/flows/stats', token: admin })
      ).json() as { shedTotal: number };
      assert.equal(stats.shedTotal, 0);
    } finally {
      await source.stop();
      await agg.stop();
    }
    const tables = node.nft(['list', 'tables']);
    assert.doesNotMatch(tables, new RegExp(`${table}_trace`));
    assert.match(tables, new RegExp(`inet ${table}\\b`));
  });

  test('connections over the trace rate are counted as shed, not lost silently', async () => {
    const [web, pg] = pods as [TestPod, TestPod, TestPod];
    const shed: number[] = [];
    const source = new KernelFlowSource({
      table,
      netns: node.ns,
      ratePerSecond: 1,
      onObservation: () => undefined,
      onShed: (reason, n) => {
        if (reason === 'kernel-untraced') shed.push(n);
      },
    });
    await source.start();
    try {
      await Promise.all(Array.from({ length: 20 }, () => web.tcp(pg.ip, 5432, 1000)));
      await source.readCounters();
    } finally {
      await source.stop();
    }
    const total = shed.reduce((a, b) => a + b, 0);
    assert.ok(total >= 10, `untraced ${total}`);
  });
});
