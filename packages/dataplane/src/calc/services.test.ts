// Kubernetes Service references in the kernel: the calculation turns `destination.services` into
// an `address . protocol . port` set of the service's endpoints and `source.services` into an
// address set (Calico's EntityRule `services`: "only traffic that originates from or terminates
// at endpoints within the selected service(s) will be matched, and only to/from each endpoint's
// port"); an EndpointSlice change moves set elements only. Then real TCP in network namespaces
// must equal the engine.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { NftDriver } from '../nft/driver.js';
import { render } from '../nft/render.js';
import { canUseNetns, TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { Calculation } from './calculation.js';

const pods = (ips: readonly string[]) =>
  ['web', 'db', 'other']
    .map(
      (name, i) => `
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: demo, labels: {app: ${name}}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: ${ips[i] ?? ''}}`,
    )
    .join('\n---\n');

const POLICIES = `
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {selector: {app: db}, ports: [{port: 8000, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-svc, namespace: demo}
spec: {selector: {app: web}, ports: [{port: 9000}]}
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
metadata: {name: in-from-web, namespace: demo}
spec:
  selector: app in {'db', 'other'}
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, source: {services: {name: web-svc}}}]
`;

const slice = (addrs: readonly string[], port: number) => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-x, namespace: demo, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [${addrs.map((a) => `{addresses: [${a}]}`).join(', ')}]
ports: [{port: ${port}}]
`;

function load(text: string): Resource[] {
  const r = loadText(text, 'svc.yaml');
  assert.deepEqual(
    r.diagnostics.filter((d) => d.severity === 'error').map((d) => d.message),
    [],
  );
  return r.resources;
}

test('Calico services in the calculation: a destination service becomes an address . protocol . port set, a source service an address set; a slice change moves elements, not rules', () => {
  const calc = new Calculation({ verifySharedSets: true });
  for (const r of load(`${POLICIES}\n---\n${pods(['10.9.0.1', '10.9.0.2', '10.9.0.3'])}`))
    calc.upsert(r);
  calc.setLocalEndpoints([
    { ref: 'demo/web', iface: 'w0' },
    { ref: 'demo/db', iface: 'w1' },
  ]);
  const before = calc.desired();
  const q = before.sets.find((s) => s.describe === 'service demo/db (endpoint ports)');
  assert.deepEqual(q && { kind: q.kind, v4: q.v4 }, {
    kind: 'named-port',
    v4: ['10.9.0.2 . 6 . 80'],
  });
  const v = before.sets.find((s) => s.describe === 'service demo/web-svc');
  assert.deepEqual(v && { kind: v.kind, v4: v.v4 }, { kind: 'address', v4: ['10.9.0.1'] });
  assert.deepEqual(calc.notes(), []);
  const r0 = render(before, { table: 't' });
  for (const x of load(slice(['10.9.0.3', '192.0.2.7'], 81))) calc.upsert(x);
  const after = calc.desired();
  assert.deepEqual(after.sets.find((s) => s.name === q?.name)?.v4, [
    '10.9.0.3 . 6 . 81',
    '192.0.2.7 . 6 . 81',
  ]);
  assert.equal(render(after, { table: 't' }).skeleton, r0.skeleton, 'same rules and sets');
});

const skip = canUseNetns() ? false : 'needs root and network namespaces';

describe(
  'Calico services in network namespaces: real TCP equals the engine',
  { skip, timeout: 90_000 },
  () => {
    let node: TestNode;
    let web: TestPod;
    let db: TestPod;
    let other: TestPod;
    const table = `palisade_v${process.pid % 100000}`;
    let driver: NftDriver;

    before(async () => {
      node = new TestNode('v');
      web = node.addPod(1);
      db = node.addPod(2);
      other = node.addPod(3);
      await Promise.all([
        web.start(['t80']),
        db.start(['t80', 't81']),
        other.start(['t80', 't81']),
      ]);
      driver = new NftDriver({ table, netns: node.ns });
    });

    after(() => node?.destroy());

    async function check(resources: Resource[]): Promise<void> {
      const calc = new Calculation({ verifySharedSets: true });
      for (const r of resources) calc.upsert(r);
      calc.setLocalEndpoints([
        { ref: 'demo/web', iface: web.hostIface },
        { ref: 'demo/db', iface: db.hostIface },
        { ref: 'demo/other', iface: other.hostIface },
      ]);
      await driver.apply(
        render(calc.desired(), { table, workloadInterfacePrefix: node.ifacePrefix }),
      );
      const cases: [string, TestPod, TestPod, string, number][] = [
        ['web', web, db, 'demo/db', 80],
        ['web', web, db, 'demo/db', 81],
        ['web', web, other, 'demo/other', 80],
        ['web', web, other, 'demo/other', 81],
        ['other', other, db, 'demo/db', 80],
        ['db', db, other, 'demo/other', 80],
      ];
      const problems: string[] = [];
      for (const [fromName, from, to, toRef, port] of cases) {
        const want = calc.engine.kernelAllows(`demo/${fromName}`, toRef, 'TCP', port);
        const got = (await from.tcp(to.ip, port, 400)).ok;
        if (got !== want)
          problems.push(`${fromName} -> ${toRef}:${port}: kernel ${got}, engine ${want}`);
      }
      assert.deepEqual(problems, []);
    }

    test('Calico services: the Service selector with its named target port, then EndpointSlices replacing it', async () => {
      const base = `${POLICIES}\n---\n${pods([web.ip, db.ip, other.ip])}`;
      await check(load(base));
      assert.equal((await web.tcp(db.ip, 80)).ok, true, 'db:http is an endpoint port of db');
      assert.equal((await web.tcp(db.ip, 81, 400)).ok, false);
      await check(load(`${base}\n---\n${slice([other.ip], 81)}`));
      assert.equal((await web.tcp(other.ip, 81)).ok, true, 'the slice names other:81');
      assert.equal((await web.tcp(db.ip, 80, 400)).ok, false, 'the selector no longer counts');
    });
  },
);
