// The agent end to end: a real API server on loopback (SQLite store in a temp data dir), a node
// network namespace with two pod namespaces, real nftables and real TCP. Policy written through
// the API reaches the kernel; with the server down the rules stay (fail static); a change made
// while the agent was cut off is picked up when the server returns; only the agent's table moves.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runServer } from '@palisade/controlplane';
import type { RunningServer } from '@palisade/controlplane';
import { canUseNetns, TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { Agent } from './agent.js';
import { ApiClient } from './api-client.js';
import { AgentPodSource, ApiEndpointRegistry } from './api-registry.js';
import { CniEndpointService } from '../agent-socket/server.js';
import type { RegisterRequest } from '../agent-socket/protocol.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';
const NODE = `node${process.pid}`;

async function until(what: string, f: () => boolean | Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('palisade agent: API to kernel', { skip, timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-agent-${process.pid}-`));
  const storeUrl = `sqlite:${join(dir, 'store.db')}`;
  const table = `palisade_a${process.pid % 100000}`;
  let server: RunningServer | undefined;
  let port = 0;
  let admin: ApiClient;
  let node: TestNode;
  let a: TestPod;
  let b: TestPod;
  let agent: Agent | undefined;
  const lines: string[] = [];

  const start = async (listen: string) =>
    runServer({
      listen,
      dataDir: dir,
      store: storeUrl,
      insecurePlaintext: true,
      rateLimit: false,
      log: () => undefined,
      say: () => undefined,
    });

  const create = async (c: ApiClient, path: string, body: unknown): Promise<number> => {
    const r = await c.call('POST', path, body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return Number((r.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion);
  };
  const applied = (rv: number) =>
    until(`revision ${rv} applied`, () => Number(agent?.status().appliedRevision ?? -1) >= rv);
  const denyB = {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: 'b-closed', namespace: 'demo' },
    spec: { selector: "app == 'b'", types: ['Ingress'] },
  };
  const nftList = () => node.nft(['-s', 'list', 'ruleset']); // without counters

  before(async () => {
    server = await start('127.0.0.1:0');
    port = Number(new URL(server.url).port);
    admin = new ApiClient({
      server: server.url,
      token: readFileSync(join(dir, 'admin.token'), 'utf8').trim(),
    });
    node = new TestNode('g');
    a = node.addPod(1);
    b = node.addPod(2);
    await Promise.all([a, b].map((p) => p.start(['t80'])));
    // A table the agent does not own, in the same namespace.
    node.nft(['add', 'table', 'inet', 'foreign']);
    node.nft(['add', 'chain', 'inet', 'foreign', 'keep']);
    node.nft(['add', 'rule', 'inet', 'foreign', 'keep', 'counter', 'comment', '"not ours"']);

    await create(admin, '/api/v1/core/Namespace', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'demo' },
    });
    for (const [name, p] of [
      ['a', a],
      ['b', b],
    ] as const) {
      await create(admin, '/api/v1/core/Pod/demo', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: 'demo', labels: { app: name } },
        spec: { nodeName: NODE, containers: [{ name: 'c', ports: [{ containerPort: 80 }] }] },
        status: { podIP: p.ip },
      });
      await create(admin, '/api/v1/projectcalico.org/WorkloadEndpoint/demo', {
        apiVersion: 'projectcalico.org/v3',
        kind: 'WorkloadEndpoint',
        metadata: { name: `${NODE}-k8s-${name}-eth0`, namespace: 'demo', labels: { app: name } },
        spec: {
          node: NODE,
          orchestrator: 'k8s',
          pod: name,
          endpoint: 'eth0',
          interfaceName: p.hostIface,
          ipNetworks: [`${p.ip}/32`],
        },
      });
    }
    const tok = await admin.call('POST', '/api/v1/tokens', { node: NODE });
    assert.equal(tok.status, 201, JSON.stringify(tok.body));
    agent = new Agent({
      server: server.url,
      token: (tok.body as { token: string }).token,
      node: NODE,
      table,
      netns: node.ns,
      workloadInterfacePrefix: node.ifacePrefix,
      backoffMinMs: 50,
      backoffMaxMs: 300,
      resyncMs: 0,
      say: (l) => lines.push(l),
    });
    agent.start();
  });

  after(async () => {
    await agent?.stop().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    node?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a policy written through the API denies pod A to pod B, and removing it allows again', async () => {
    await until('first apply', () => (agent?.status().applies ?? 0) > 0);
    assert.equal(agent?.status().localEndpoints, 2);
    assert.equal((await a.tcp(b.ip, 80)).ok, true, 'no policy yet: allowed');

    const t0 = performance.now();
    const rv = await create(admin, '/api/v1/projectcalico.org/NetworkPolicy/demo', denyB);
    await applied(rv);
    const toKernel = performance.now() - t0;
    await until('A to B denied', async () => !(await a.tcp(b.ip, 80, 300)).ok, 5_000);
    const toDenied = performance.now() - t0;
    console.log(
      `policy write → kernel ${toKernel.toFixed(1)} ms; → traffic denied ${toDenied.toFixed(1)} ms`,
    );

    const del = await admin.call('DELETE', '/api/v1/projectcalico.org/NetworkPolicy/demo/b-closed');
    assert.equal(del.status, 200, JSON.stringify(del.body));
    await until('A to B allowed again', async () => (await a.tcp(b.ip, 80, 300)).ok, 5_000);
    assert.ok(lines.some((l) => l.startsWith('applied revision')));
  });

  test('an L7-only change (an AuthorizationPolicy) still advances the applied revision, with the kernel unchanged', async () => {
    const before = nftList();
    const rv = await create(admin, '/api/v1/security.istio.io/AuthorizationPolicy/demo', {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'b-l7-only', namespace: 'demo' },
      spec: { selector: { matchLabels: { app: 'b' } }, action: 'ALLOW', rules: [{}] },
    });
    await applied(rv);
    assert.equal(nftList(), before, 'an L7 policy changes nothing in the kernel');
    const del = await admin.call(
      'DELETE',
      '/api/v1/security.istio.io/AuthorizationPolicy/demo/b-l7-only',
    );
    assert.equal(del.status, 200, JSON.stringify(del.body));
    const gone = Number(
      (del.body as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion ?? NaN,
    );
    if (Number.isFinite(gone)) await applied(gone);
  });

  test('with the server stopped the rules stay (fail static); a change made meanwhile is picked up', async () => {
    const rv = await create(admin, '/api/v1/projectcalico.org/NetworkPolicy/demo', denyB);
    await applied(rv);
    assert.equal((await a.tcp(b.ip, 80, 300)).ok, false);
    const before = nftList();

    await server?.stop();
    server = undefined;
    await until('agent sees the API gone', () => agent?.status().connected === false);
    await new Promise((r) => setTimeout(r, 500)); // several retries
    assert.equal(nftList(), before, 'nothing in the kernel moved');
    assert.equal((await a.tcp(b.ip, 80, 300)).ok, false, 'still denied while the API is down');
    assert.ok((agent?.status().errors.length ?? 0) > 0, 'the outage is reported');

    // Meanwhile (another server on another port, same data): the policy is removed.
    const side = await start('127.0.0.1:0');
    const sideAdmin = new ApiClient({
      server: side.url,
      token: readFileSync(join(dir, 'admin.token'), 'utf8').trim(),
    });
    const gone = await sideAdmin.call(
      'DELETE',
      '/api/v1/projectcalico.org/NetworkPolicy/demo/b-closed',
    );
    assert.equal(gone.status, 200, JSON.stringify(gone.body));
    const goneRv = Number(
      (gone.body as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion ?? 0,
    );
    await side.stop();
    assert.equal((await a.tcp(b.ip, 80, 300)).ok, false, 'the agent has not seen it yet');

    server = await start(`127.0.0.1:${port}`);
    await until('agent reconnects', () => agent?.status().connected === true, 15_000);
    if (goneRv > 0) await applied(goneRv);
    await until(
      'A to B allowed after the return',
      async () => (await a.tcp(b.ip, 80, 300)).ok,
      5_000,
    );
  });

  test('history compacted while the agent was away: 410, a fresh list, and the change applies', async () => {
    assert.ok(server);
    assert.equal((await a.tcp(b.ip, 80, 300)).ok, true);
    const resumed = lines.filter((l) => l.startsWith('watch resumed')).length;
    assert.ok(resumed > 0, 'the previous outage ended by resuming from the last revision');
    await server.stop();
    server = undefined;
    await until('agent sees the API gone', () => agent?.status().connected === false);
    const side = await start('127.0.0.1:0');
    const sideAdmin = new ApiClient({
      server: side.url,
      token: readFileSync(join(dir, 'admin.token'), 'utf8').trim(),
    });
    const rv = await create(sideAdmin, '/api/v1/projectcalico.org/NetworkPolicy/demo', denyB);
    await side.store.compact(rv);
    await side.stop();
    server = await start(`127.0.0.1:${port}`);
    await applied(rv);
    assert.ok(lines.some((l) => /is gone; listing again/.test(l)));
    await until(
      'A to B denied after the relist',
      async () => !(await a.tcp(b.ip, 80, 300)).ok,
      5_000,
    );
    const del = await admin.call('DELETE', '/api/v1/projectcalico.org/NetworkPolicy/demo/b-closed');
    assert.equal(del.status, 200);
    await until('A to B allowed', async () => (await a.tcp(b.ip, 80, 300)).ok, 5_000);
  });

  test('the agent touches only its own table', () => {
    const tables = node.nft(['list', 'tables']);
    assert.match(tables, new RegExp(`table inet ${table}\\b`));
    assert.match(tables, /table inet foreign/);
    assert.match(node.nft(['list', 'table', 'inet', 'foreign']), /comment "not ours"/);
  });

  test('a CNI registration becomes a WorkloadEndpoint in the API, written with the node token', async () => {
    assert.ok(agent && server);
    await create(admin, '/api/v1/core/Pod/demo', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'c', namespace: 'demo', labels: { app: 'c' } },
      spec: { nodeName: NODE, containers: [{ name: 'c' }] },
    });
    await until('pod c mirrored', () => agent?.pod('demo', 'c') !== undefined);
    const service = new CniEndpointService({
      node: NODE,
      pods: new AgentPodSource(agent),
      registry: new ApiEndpointRegistry(agent),
    });
    const req: RegisterRequest = {
      network: 'palisade',
      containerId: 'ctr-c',
      ifname: 'eth0',
      hostIfname: `${node.ifacePrefix}9`,
      netns: '/var/run/netns/x',
      namespace: 'demo',
      pod: 'c',
      podUid: agent.pod('demo', 'c')?.metadata.uid ?? '',
      ips: [`${node.subnet}.50/32`],
      mac: '02:00:00:00:00:09',
      labels: {},
    };
    const before = agent.status().localEndpoints;
    await service.register(req);
    const name = `${NODE.replace(/-/g, '--')}-k8s-c-eth0`;
    const got = await admin.call('GET', `/api/v1/projectcalico.org/WorkloadEndpoint/demo/${name}`);
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.equal(
      (got.body as { metadata: { labels: Record<string, string> } }).metadata.labels.app,
      'c',
    );
    await until('c programmed', () => agent?.status().localEndpoints === before + 1);
    assert.equal((await service.get('ctr-c', 'eth0'))?.hostIfname, `${node.ifacePrefix}9`);

    // Another attachment may not take c's address.
    await assert.rejects(
      service.register({
        ...req,
        containerId: 'ctr-other',
        pod: 'c',
        podUid: agent.pod('demo', 'c')?.metadata.uid ?? '',
        ifname: 'eth1',
      }),
      /registered to container ctr-c/,
    );
    // A pod of another node is refused before anything is written.
    await create(admin, '/api/v1/core/Pod/demo', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'elsewhere', namespace: 'demo' },
      spec: { nodeName: 'some-other-node', containers: [{ name: 'c' }] },
    });
    await until('pod mirrored', () => agent?.pod('demo', 'elsewhere') !== undefined);
    const { podUid: _uid, ...noUid } = req;
    void _uid;
    await assert.rejects(
      service.register({ ...noUid, pod: 'elsewhere', containerId: 'ctr-e' }),
      /not to this node/,
    );

    assert.equal(await service.deregister('ctr-c', 'eth0'), true);
    const after = await admin.call(
      'GET',
      `/api/v1/projectcalico.org/WorkloadEndpoint/demo/${name}`,
    );
    assert.equal(after.status, 404);
    await until('c unprogrammed', () => agent?.status().localEndpoints === before);
    assert.equal(await service.deregister('ctr-c', 'eth0'), false);
  });
});
