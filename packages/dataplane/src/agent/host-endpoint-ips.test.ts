// HostEndpoints given only by `expectedIPs`, against a real agent, API server and nftables in a
// node namespace: the agent reads the node's interfaces and programs the host endpoint on the
// interface that carries one of its addresses (Calico HostEndpoint resource: "or by leaving
// interfaceName empty and including one of the interface's IPs in expectedIPs"); while no
// interface carries them, nothing is programmed; an address added later is picked up.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { canUseNetns, inNs } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { TestCluster, until } from './test-cluster.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

describe(
  'agent: host endpoints by expectedIPs in a network namespace',
  { skip, timeout: 60_000 },
  () => {
    const c = new TestCluster('e');
    let outside: TestPod;
    let host: TestPod;
    let iface = '';

    before(async () => {
      await c.start();
      const o = c.node.addOutside();
      outside = o.outside;
      host = o.host;
      iface = o.iface;
      await Promise.all([outside.start([]), host.start(['t22', 't8080', 't8081'])]);
      c.startAgent({ interfacePollMs: 100 });
    });

    after(() => c.destroy());

    const hostRefs = () =>
      (c.agent?.view().locals() ?? [])
        .filter((l) => l.kind === 'host')
        .map((l) => [l.ref, l.iface]);

    test('Calico HostEndpoint expectedIPs: the interface carrying the address is the host endpoint', async () => {
      const rv = await c.create('/api/v1/projectcalico.org/HostEndpoint', {
        apiVersion: 'projectcalico.org/v3',
        kind: 'HostEndpoint',
        metadata: { name: 'by-ip', labels: { role: 'edge' } },
        spec: { node: c.nodeName, expectedIPs: [host.ip] },
      });
      await c.create('/api/v1/projectcalico.org/GlobalNetworkPolicy', {
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: 'edge-8081' },
        spec: {
          selector: "role == 'edge'",
          types: ['Ingress'],
          ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [8081] } }],
        },
      });
      await c.applied(rv);
      await until('programmed on the interface', () => hostRefs().length === 1);
      assert.deepEqual(hostRefs(), [['by-ip', iface]]);
      await until('default deny on 8080', async () => !(await outside.tcp(host.ip, 8080, 300)).ok);
      assert.equal((await outside.tcp(host.ip, 8081)).ok, true, 'policy');
      assert.equal((await outside.tcp(host.ip, 22)).ok, true, 'fail-safe');
    });

    test('Calico HostEndpoint expectedIPs: an address no interface carries programs nothing, until an interface gets it; two host endpoints on one interface: the first by name governs', async () => {
      const later = `192.168.251.${1 + (process.pid % 200)}`;
      const rv = await c.create('/api/v1/projectcalico.org/HostEndpoint', {
        apiVersion: 'projectcalico.org/v3',
        kind: 'HostEndpoint',
        metadata: { name: 'a-later', labels: { role: 'other' } },
        spec: { node: c.nodeName, expectedIPs: [later] },
      });
      await c.applied(rv);
      assert.deepEqual(hostRefs(), [['by-ip', iface]], 'not programmed: no interface has it');
      assert.ok(
        c.lines.some((l) => /host endpoint a-later is not programmed/.test(l)),
        'reported',
      );
      inNs(c.node.ns, ['ip', 'addr', 'add', `${later}/32`, 'dev', iface]);
      // Both now claim the interface: a-later sorts first and governs it (no policy selects it:
      // default deny, 8081 closed too).
      await until('the interface changes hands', () => hostRefs()[0]?.[0] === 'a-later');
      assert.deepEqual(hostRefs(), [['a-later', iface]]);
      await until('8081 now denied', async () => !(await outside.tcp(host.ip, 8081, 300)).ok);
      assert.equal((await outside.tcp(host.ip, 22)).ok, true, 'fail-safe');
    });
  },
);
