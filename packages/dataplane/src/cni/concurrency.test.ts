// Spec §3 "Lifecycle & Ordering": plugins must handle being executed concurrently across
// different containers and lock shared resources (the IPAM database). Twenty plugin
// processes are started, wait at a barrier until all have loaded, then ADD twenty pods at once.
// Timeout: 20 Node processes start at once (tsx start-up dominates); on a loaded 2-core machine
// that alone took 40 s, so the bound is generous.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SqliteIpam } from './ipam.js';
import { hostVethName } from './netlink.js';
import { canUseNetns, NetnsFixture, pod } from './test-fixture.js';
import type { CniResult } from './config.js';

const skip = canUseNetns() ? false : 'needs root and ip netns';
const PODS = 20;

describe('concurrent plugin runs', { skip, timeout: 150_000 }, () => {
  const fx = new NetnsFixture('10.251.0.0/24');
  const names: string[] = [];

  before(async () => {
    await fx.start();
    for (let i = 0; i < PODS; i++) {
      fx.pods.upsert(pod('load', `p${i}`));
      names.push(fx.addPodNs(`c${i}`));
    }
  });

  after(() => fx.cleanup());

  test('spec §3: 20 concurrent ADDs from separate processes get 20 distinct addresses, all wired', async (t) => {
    const { outputs: runs, startupMs } = await fx.execTogether(
      names.map((ns, i) => ({
        command: 'ADD' as const,
        containerId: `ctr-${i}`,
        netns: `/run/netns/${ns}`,
        args: `K8S_POD_NAMESPACE=load;K8S_POD_NAME=p${i}`,
      })),
    );
    t.diagnostic(
      `20 plugin processes: start-up ${startupMs} ms wall (all in parallel); then 20 simultaneous ADDs done in ${Math.max(...runs.map((r) => r.ms))} ms`,
    );
    for (const r of runs) assert.equal(r.exitCode, 0, r.stdout + r.stderr);
    const addresses = runs.map((r) => (JSON.parse(r.stdout) as CniResult).ips[0]?.address);
    assert.equal(new Set(addresses).size, PODS, `duplicates in ${addresses.join(' ')}`);
    const links = new Set(fx.nodeLinks());
    for (let i = 0; i < PODS; i++) assert.ok(links.has(hostVethName(`ctr-${i}`, 'eth0')));
    const ipam = SqliteIpam.open(fx.dataDir);
    assert.equal(ipam.list('palisade').length, PODS);
    ipam.close();
    assert.equal((await fx.registry.list()).length, PODS);
  });

  test('concurrent DELs release every address and remove every veth', async () => {
    const runs = await Promise.all(
      names.map((ns, i) =>
        fx.run({
          command: 'DEL',
          containerId: `ctr-${i}`,
          netns: `/run/netns/${ns}`,
          args: `K8S_POD_NAMESPACE=load;K8S_POD_NAME=p${i}`,
        }),
      ),
    );
    for (const r of runs) assert.equal(r.exitCode, 0, r.stdout);
    assert.deepEqual(
      fx.nodeLinks().filter((l) => l.startsWith('pl')),
      [],
    );
    const ipam = SqliteIpam.open(fx.dataDir);
    assert.equal(ipam.list('palisade').length, 0);
    ipam.close();
    assert.equal((await fx.registry.list()).length, 0);
  });
});
