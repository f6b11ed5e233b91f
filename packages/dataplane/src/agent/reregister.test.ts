// Re-registration after an outage, against a real API server, real nftables and real TCP: a pod
// attached through the CNI path while the API is down is recorded locally, programmed under the
// last known policy, and written to the API when it returns; an endpoint deleted from the API
// while still attached is re-asserted; a CNI DEL during an outage is replayed; a pod of this node
// without an endpoint is reported (and not programmed: its traffic drops).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniEndpointService } from '../agent-socket/server.js';
import type { RegisterRequest } from '../agent-socket/protocol.js';
import { canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { AgentPodSource, ApiEndpointRegistry } from './api-registry.js';
import { LocalEndpointRecord } from './local-record.js';
import { TestCluster, until } from './test-cluster.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

describe('endpoints re-asserted after an API outage', { skip, timeout: 90_000 }, () => {
  const c = new TestCluster('r');
  let a: TestPod;
  let p3: TestPod;
  let service: CniEndpointService;
  let registry: ApiEndpointRegistry;
  const recordPath = () => join(c.dir, 'state', 'endpoints.json');
  const wepName = () => `${c.nodeName.replace(/-/g, '--')}-k8s-c-eth0`;
  const wepUrl = () => `/api/v1/projectcalico.org/WorkloadEndpoint/demo/${wepName()}`;
  let req: RegisterRequest;

  before(async () => {
    await c.start();
    a = await c.addPod(1, 'a', { app: 'a' });
    p3 = c.node.addPod(3); // attached later, through the CNI path
    await Promise.all([a.start(['t80']), p3.start(['t80'])]);
    await c.create('/api/v1/core/Pod/demo', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'c', namespace: 'demo', labels: { app: 'c' } },
      spec: { nodeName: c.nodeName, containers: [{ name: 'c' }] },
    });
    // Ingress to c only from nowhere: c is closed to a, c's own egress is open.
    const rv = await c.create('/api/v1/projectcalico.org/NetworkPolicy/demo', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'NetworkPolicy',
      metadata: { name: 'c-closed', namespace: 'demo' },
      spec: { selector: "app == 'c'", types: ['Ingress'] },
    });
    const agent = c.startAgent();
    registry = new ApiEndpointRegistry(agent, { record: new LocalEndpointRecord(recordPath()) });
    service = new CniEndpointService({
      node: c.nodeName,
      pods: new AgentPodSource(agent),
      registry,
    });
    await c.applied(rv);
    const uid = agent.pod('demo', 'c')?.metadata.uid;
    req = {
      network: 'palisade',
      containerId: 'ctr-c',
      ifname: 'eth0',
      hostIfname: p3.hostIface,
      netns: `/var/run/netns/${p3.ns}`,
      namespace: 'demo',
      pod: 'c',
      ...(uid ? { podUid: uid } : {}),
      ips: [`${p3.ip}/32`],
      mac: '02:00:00:00:00:03',
      labels: {},
    };
  });

  after(() => c.destroy());

  const stopServer = async () => {
    await c.server?.stop();
    c.server = undefined;
    await until('agent sees the API gone', () => c.agent?.status().connected === false);
  };
  const startServer = async () => {
    c.server = await c.startServer(`127.0.0.1:${c.port}`);
    await until('agent reconnects', () => c.agent?.status().connected === true, 15_000);
  };

  test('a CNI ADD while the API is down is recorded, programmed under the last policy, and written when the API returns', async () => {
    assert.equal((await p3.tcp(a.ip, 80, 300)).ok, false, 'unattached interface: dropped');
    await stopServer();
    await service.register(req);
    assert.equal(statSync(recordPath()).mode & 0o777, 0o600);
    await until('c programmed', async () => (await p3.tcp(a.ip, 80, 300)).ok, 10_000);
    assert.equal((await a.tcp(p3.ip, 80, 300)).ok, false, 'c-closed applies to the new pod');
    await startServer();
    await until('c in the API', async () => (await c.admin.call('GET', wepUrl())).status === 200);
    const got = await c.admin.call('GET', wepUrl());
    const w = got.body as {
      spec: { interfaceName: string };
      metadata: { annotations: Record<string, string> };
    };
    assert.equal(w.spec.interfaceName, p3.hostIface);
    assert.equal(w.metadata.annotations['palisade.dev/container-id'], 'ctr-c');
    assert.ok(c.lines.some((l) => /re-asserted endpoint demo\//.test(l)));
    assert.equal((await p3.tcp(a.ip, 80, 300)).ok, true, 'still programmed');
  });

  test('an endpoint deleted from the API while still attached is re-asserted from the local record', async () => {
    const del = await c.admin.call('DELETE', wepUrl());
    assert.equal(del.status, 200);
    await until('re-asserted', async () => (await c.admin.call('GET', wepUrl())).status === 200);
    assert.equal((await p3.tcp(a.ip, 80, 300)).ok, true, 'programmed throughout');
    assert.equal((await a.tcp(p3.ip, 80, 300)).ok, false);
  });

  test('a CNI DEL while the API is down unprograms at once and is replayed when the API returns', async () => {
    await stopServer();
    assert.equal(await service.deregister('ctr-c', 'eth0'), true);
    await until('c unprogrammed', async () => !(await p3.tcp(a.ip, 80, 300)).ok, 10_000);
    assert.equal(await service.get('ctr-c', 'eth0'), undefined);
    await startServer();
    await until(
      'c gone from the API',
      async () => (await c.admin.call('GET', wepUrl())).status === 404,
    );
    const rec = new LocalEndpointRecord(recordPath());
    assert.deepEqual([rec.list().length, rec.listTombstones().length], [0, 0]);
  });

  test('a pod of this node without a WorkloadEndpoint is reported and not programmed (fail closed)', async () => {
    await c.create('/api/v1/core/Pod/demo', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'lonely', namespace: 'demo', labels: { app: 'x' } },
      spec: { nodeName: c.nodeName, containers: [{ name: 'c' }] },
    });
    await until('reported', () => c.agent?.podsWithoutEndpoint().includes('demo/lonely') === true);
    assert.ok(!c.agent?.podsWithoutEndpoint().includes('demo/a'));
    assert.ok(
      !c.agent
        ?.view()
        .locals()
        .some((l) => l.ref === 'demo/lonely'),
    );
  });

  test('a record file that does not validate is not trusted: the agent starts with an empty record and says so', () => {
    const bad = join(c.dir, 'bad.json');
    for (const text of [
      '{',
      '{"version":2,"endpoints":[],"tombstones":[]}',
      '{"version":1,"endpoints":[{"containerId":1}],"tombstones":[]}',
    ]) {
      writeFileSync(bad, text);
      const r = new LocalEndpointRecord(bad);
      assert.equal(r.list().length, 0);
      assert.match(r.loadProblem ?? '', /starting with an empty record/);
    }
  });
});
