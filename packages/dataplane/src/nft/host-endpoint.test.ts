// Host endpoints in the kernel, with real traffic: the node's own interface is a host endpoint;
// fail-safe ports stay open, policy opens more, everything else in and out is denied, and each
// outcome equals the engine's verdict.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Resource } from '@palisade/core';
import { Calculation } from '../calc/calculation.js';
import { canUseNetns, TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { NftDriver } from './driver.js';
import { render } from './render.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

describe('host endpoint enforcement in a network namespace', { skip, timeout: 60_000 }, () => {
  let node: TestNode;
  let outside: TestPod;
  let host: TestPod;
  let calc: Calculation;
  const table = `palisade_h${process.pid % 100000}`;

  before(async () => {
    node = new TestNode('h');
    const o = node.addOutside();
    outside = o.outside;
    host = o.host;
    await Promise.all([outside.start(['t80']), host.start(['t22', 't8080', 't8081', 'u9999'])]);
    calc = new Calculation({ verifySharedSets: true });
    const resources = [
      {
        apiVersion: 'projectcalico.org/v3',
        kind: 'HostEndpoint',
        metadata: { name: 'node-ext', labels: { role: 'node' } },
        spec: { node: 'n1', interfaceName: o.iface, expectedIPs: [host.ip] },
      },
      {
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: 'node-web' },
        spec: {
          selector: "role == 'node'",
          types: ['Ingress'],
          ingress: [
            {
              action: 'Allow',
              protocol: 'TCP',
              source: { nets: [`${outside.ip}/32`] },
              destination: { ports: [8080] },
            },
          ],
        },
      },
    ] as Resource[];
    for (const r of resources) calc.upsert(r);
    calc.setLocalEndpoints([{ ref: 'node-ext', iface: o.iface }]);
    await new NftDriver({ table, netns: node.ns }).apply(render(calc.desired(), { table }));
  });

  after(() => node?.destroy());

  test('fail-safe and allowed ports are open inbound, the rest of the host endpoint is closed', async () => {
    const cases: [string, () => Promise<{ ok: boolean }>, boolean][] = [
      ['SSH 22 (fail-safe)', () => outside.tcp(host.ip, 22), true],
      ['TCP 8080 (policy)', () => outside.tcp(host.ip, 8080), true],
      ['TCP 8081', () => outside.tcp(host.ip, 8081), false],
      ['UDP 9999', () => outside.udp(host.ip, 9999), false],
    ];
    for (const [name, attempt, want] of cases) {
      assert.equal((await attempt()).ok, want, name);
      const port = Number(/\d+/.exec(name)?.[0]);
      const proto = name.startsWith('UDP') ? 'UDP' : 'TCP';
      assert.equal(
        calc.engine.kernelAllows(outside.ip, 'node-ext', proto, port),
        want,
        `engine: ${name}`,
      );
    }
  });

  test('outbound from the host endpoint is denied when no policy selects it for egress', async () => {
    assert.equal((await host.tcp(outside.ip, 80)).ok, false);
    assert.equal(calc.engine.kernelAllows('node-ext', outside.ip, 'TCP', 80), false);
  });
});
