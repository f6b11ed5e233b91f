// The agent's read of the node's interfaces: `ip -j address show` output is believed only when it
// has the expected shape, and the real command in a namespace reports what is there.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { canUseNetns, inNs, TestNode } from '../testing/netns.js';
import { ipHostInterfaces, parseIpAddressJson } from './host-interfaces.js';

test('ip address output: names and local addresses are taken, anything malformed fails the whole read', () => {
  assert.deepEqual(
    parseIpAddressJson(
      JSON.stringify([
        { ifname: 'lo', addr_info: [{ local: '127.0.0.1' }, { local: '::1' }] },
        { ifname: 'eth0', addr_info: [{ local: '10.0.0.5', prefixlen: 24 }, {}, null] },
        { ifname: 'eth1' },
      ]),
    ),
    [
      { name: 'lo', addresses: ['127.0.0.1', '::1'] },
      { name: 'eth0', addresses: ['10.0.0.5'] },
      { name: 'eth1', addresses: [] },
    ],
  );
  for (const bad of [
    '{}',
    'not json',
    '[1]',
    '[{"ifname": 5}]',
    '[{"ifname": "a/b"}]',
    '[{"ifname": "much-too-long-interface"}]',
    '[{"ifname": "a b"}]',
  ])
    assert.throws(() => parseIpAddressJson(bad), bad);
});

const skip = canUseNetns() ? false : 'needs root and network namespaces';
let node: TestNode | undefined;
before(() => {
  if (!skip) node = new TestNode('q');
});
after(() => node?.destroy());

test(
  'ip address show in a network namespace lists its interfaces and addresses',
  { skip, timeout: 30_000 },
  async () => {
    assert.ok(node);
    inNs(node.ns, ['ip', 'link', 'add', 'plq0', 'type', 'veth', 'peer', 'name', 'plq1']);
    inNs(node.ns, ['ip', 'addr', 'add', '192.0.2.77/32', 'dev', 'plq0']);
    const list = await ipHostInterfaces(node.ns)();
    assert.deepEqual(list.find((i) => i.name === 'plq0')?.addresses, ['192.0.2.77']);
    assert.ok(list.some((i) => i.name === 'lo'));
    await assert.rejects(ipHostInterfaces(`pl-no-such-ns-${process.pid}`)());
  },
);
