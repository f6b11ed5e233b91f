// Contract tests of the nftables driver against the real kernel, inside network namespaces this
// file creates: real TCP/UDP traffic between pods decides every assertion.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Resource } from '@palisade/core';
import { Calculation } from '../calc/calculation.js';
import { canUseNetns, TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { NftDriver, readTable } from './driver.js';
import { render } from './render.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

function pod(name: string, ip: string, labels: Record<string, string>): Resource {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'demo', labels },
    spec: { containers: [{ name: 'c', ports: [{ name: 'web', containerPort: 80 }] }] },
    status: { podIP: ip },
  };
}

function allowFrom(selector: string): Resource {
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: 'b-ingress', namespace: 'demo' },
    spec: {
      selector: "app == 'b'",
      types: ['Ingress'],
      ingress: [
        { action: 'Allow', protocol: 'TCP', source: { selector }, destination: { ports: ['web'] } },
      ],
    },
  };
}

describe('nftables driver in a network namespace', { skip, timeout: 60_000 }, () => {
  let node: TestNode;
  let a: TestPod;
  let b: TestPod;
  let c: TestPod;
  let calc: Calculation;
  let driver: NftDriver;
  const table = `palisade_t${process.pid % 100000}`;

  const state = () => render(calc.desired(), { table, workloadInterfacePrefix: node.ifacePrefix });

  before(async () => {
    node = new TestNode('d');
    a = node.addPod(1);
    b = node.addPod(2);
    c = node.addPod(3);
    await Promise.all([a, b, c].map((p) => p.start(['t80', 't81', 'u53'])));
    // A table Palisade does not own, in the same namespace: it must survive everything.
    node.nft(['add', 'table', 'inet', 'foreign']);
    node.nft([
      'add',
      'chain',
      'inet',
      'foreign',
      'keep',
      '{ type filter hook forward priority 10; policy accept; }',
    ]);
    node.nft(['add', 'rule', 'inet', 'foreign', 'keep', 'counter', 'comment', '"not ours"']);
    calc = new Calculation({ verifySharedSets: true });
    calc.upsert({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
    calc.upsert(pod('a', a.ip, { app: 'a' }));
    calc.upsert(pod('b', b.ip, { app: 'b' }));
    calc.upsert(pod('c', c.ip, { app: 'c' }));
    calc.upsert(allowFrom("app == 'a'"));
    calc.setLocalEndpoints([
      { ref: 'demo/a', iface: a.hostIface },
      { ref: 'demo/b', iface: b.hostIface },
      { ref: 'demo/c', iface: c.hostIface },
    ]);
    driver = new NftDriver({ table, netns: node.ns });
    const r = await driver.apply(state());
    assert.equal(r.kind, 'full');
  });

  after(() => node?.destroy());

  const foreign = () =>
    node.nft(['list', 'table', 'inet', 'foreign']).replace(/packets \d+ bytes \d+/g, '');

  test('allowed connections succeed and everything else to a selected pod is dropped', async () => {
    assert.equal((await a.tcp(b.ip, 80)).ok, true, 'a → b:80 is allowed');
    assert.equal((await c.tcp(b.ip, 80)).ok, false, 'c → b:80 is not');
    assert.equal((await a.tcp(b.ip, 81)).ok, false, 'a → b:81 is not (named port web is 80)');
    assert.equal((await a.udp(b.ip, 53)).ok, false, 'UDP to b is not');
    // a and c are selected by no policy: everything reaches them.
    assert.equal((await b.tcp(c.ip, 81)).ok, true);
    assert.equal((await c.udp(a.ip, 53)).ok, true);
  });

  test('a membership change is applied as set elements only', async () => {
    const before = foreign();
    calc.upsert(pod('c', c.ip, { app: 'a' }));
    const r = await driver.apply(state());
    assert.equal(r.kind, 'elements');
    assert.equal((await c.tcp(b.ip, 80)).ok, true, 'c now carries app=a');
    calc.upsert(pod('c', c.ip, { app: 'c' }));
    assert.equal((await driver.apply(state())).kind, 'elements');
    assert.equal((await c.tcp(b.ip, 80)).ok, false);
    assert.equal((await driver.apply(state())).kind, 'unchanged');
    assert.equal(foreign(), before, 'the foreign table is untouched');
  });

  test('a rule deleted by hand comes back on resync', async () => {
    const listing = node.nft(['-a', 'list', 'table', 'inet', table]);
    const line = listing
      .split('\n')
      .find((l) => l.includes('b-ingress/rule 0') && l.includes('accept'));
    assert.ok(line, 'the allow rule is in the table with its provenance');
    const handle = /# handle (\d+)/.exec(line)?.[1];
    const chain = [...listing.matchAll(/chain (\S+) \{[^}]*?b-ingress\/rule 0/g)][0]?.[1];
    assert.ok(handle && chain);
    node.nft(['delete', 'rule', 'inet', table, chain, 'handle', handle]);
    assert.equal((await a.tcp(b.ip, 80)).ok, false, 'tampering took effect');
    const r = await driver.resync();
    assert.deepEqual(r, { drift: true, repaired: true });
    assert.equal((await a.tcp(b.ip, 80)).ok, true, 'repaired');
    assert.deepEqual(await driver.resync(), { drift: false, repaired: false });
  });

  test('an address added to a set by hand is removed on resync', async () => {
    await driver.settled();
    assert.deepEqual(await driver.resync(), { drift: false, repaired: false });
    const listing = node.nft(['list', 'table', 'inet', table]);
    const set = /set (s_\w+_v4) \{[^}]*comment "selector app == 'a'"/.exec(listing)?.[1];
    assert.ok(set, 'the selector set is in the table');
    node.nft(['add', 'element', 'inet', table, set, `{ ${c.ip} }`]);
    assert.equal((await c.tcp(b.ip, 80)).ok, true, 'tampering let c in');
    assert.deepEqual(await driver.resync(), { drift: true, repaired: true });
    assert.equal((await c.tcp(b.ip, 80)).ok, false, 'repaired');
    await driver.settled();
    assert.deepEqual(await driver.resync(), { drift: false, repaired: false });
  });

  test('a delta transaction ends in exactly the table a full apply makes', async () => {
    const other = `${table}f`;
    const full = new NftDriver({ table: other, netns: node.ns, delta: false });
    const norm = (t: string, name: string) =>
      readTable(node.nft(['-j', 'list', 'table', 'inet', t]).replaceAll(`"${name}"`, '"T"'));
    const steps: (() => void)[] = [
      () => calc.upsert(allowFrom("app in {'a', 'c'}")),
      () =>
        calc.upsert({
          apiVersion: 'projectcalico.org/v3',
          kind: 'GlobalNetworkPolicy',
          metadata: { name: 'extra' },
          spec: {
            selector: 'all()',
            types: ['Egress'],
            egress: [
              { action: 'Deny', protocol: 'UDP', destination: { ports: [54] } },
              { action: 'Pass' },
            ],
          },
        }),
      () => calc.upsert(pod('c', c.ip, { app: 'b' })),
      () => calc.remove('GlobalNetworkPolicy', undefined, 'extra', 'projectcalico.org/v3'),
      () => calc.upsert(pod('c', c.ip, { app: 'c' })),
      () => calc.upsert(allowFrom("app == 'a'")),
    ];
    const kinds: string[] = [];
    for (const step of steps) {
      step();
      const rendered = state();
      kinds.push((await driver.apply(rendered)).kind);
      await full.apply(
        render(calc.desired(), { table: other, workloadInterfacePrefix: node.ifacePrefix }),
      );
      await driver.settled();
      assert.deepEqual(norm(table, table), norm(other, other));
    }
    assert.ok(kinds.includes('delta'), kinds.join(','));
    assert.equal((await a.tcp(b.ip, 80)).ok, true);
    assert.equal((await c.tcp(b.ip, 80)).ok, false);
    assert.deepEqual(await driver.resync(), { drift: false, repaired: false });
    await full.removeTable();
  });

  test('a selector set of single addresses is a hash set; one that gains a prefix becomes an interval set', async () => {
    const before = foreign();
    /** The v4 set of the selector `app == 'a'`, as nft lists it (declaration part). */
    const selectorSet = () => {
      const m = /set s_\w+_v4 \{[^}]*?comment "selector app == 'a'"/.exec(
        node.nft(['list', 'table', 'inet', table]),
      );
      assert.ok(m, 'the selector set is in the table');
      return m[0];
    };
    assert.doesNotMatch(selectorSet(), /flags interval/, 'pods only: a plain hash set');
    const [o1, o2, o3, o4] = c.ip.split('.').map(Number);
    const net = {
      apiVersion: 'projectcalico.org/v3',
      kind: 'NetworkSet',
      metadata: { name: 'c-net', namespace: 'demo', labels: { app: 'a' } },
      spec: { nets: [`${o1}.${o2}.${o3}.${(o4 ?? 0) & ~1}/31`] },
    } as const;
    calc.upsert(net);
    assert.equal((await driver.apply(state())).kind, 'full', 'a new declaration: full replacement');
    assert.match(selectorSet(), /flags interval/, 'a prefix member: an interval set');
    assert.equal((await c.tcp(b.ip, 80)).ok, true, 'c is inside the network set');
    calc.remove('NetworkSet', 'demo', 'c-net', 'projectcalico.org/v3');
    assert.equal((await driver.apply(state())).kind, 'full');
    assert.doesNotMatch(selectorSet(), /flags interval/);
    assert.equal((await c.tcp(b.ip, 80)).ok, false);
    assert.equal((await a.tcp(b.ip, 80)).ok, true);
    assert.deepEqual(await driver.resync(), { drift: false, repaired: false });
    assert.equal(foreign(), before, 'the foreign table is untouched');
  });

  test('an established stream survives a re-apply and an agent restart; new disallowed connections are refused', async () => {
    const before = foreign();
    const stream = await a.open(b.ip, 80);
    assert.ok(stream !== undefined, 'a opened a stream to b');
    assert.equal((await a.ping(stream)).ok, true);
    // The policy no longer allows a: a full re-apply of the table.
    calc.upsert(allowFrom("app == 'nobody'"));
    const r = await driver.apply(state());
    assert.equal(r.kind, 'delta', 'a rule change is a chain delta in one batch');
    assert.equal((await a.ping(stream)).ok, true, 'the established stream is still up');
    await driver.settled();
    await new NftDriver({ table, netns: node.ns, delta: false }).apply(state());
    assert.equal((await a.ping(stream)).ok, true, 'and after a full replacement of the table');
    assert.equal((await a.tcp(b.ip, 80)).ok, false, 'a new connection is refused');
    // The agent is killed (the rules stay) and restarts: a new driver reconciles.
    assert.ok(node.nft(['list', 'table', 'inet', table]).includes('b-ingress'));
    const restarted = new NftDriver({ table, netns: node.ns });
    const rr = await restarted.resync(state());
    assert.equal(rr.repaired, true);
    assert.equal((await a.ping(stream)).ok, true, 'still up after the restart');
    assert.equal((await a.tcp(b.ip, 80)).ok, false);
    assert.equal((await c.tcp(b.ip, 80)).ok, false);
    assert.equal(foreign(), before, 'the foreign table is untouched');
    await restarted.removeTable();
    assert.equal(foreign(), before, 'removing our table leaves the foreign one');
    assert.equal((await c.tcp(b.ip, 80)).ok, true, 'without our table nothing is enforced');
  });
});
