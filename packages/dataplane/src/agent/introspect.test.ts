// Introspection against a real agent: a real API server, real nftables in a node namespace and
// real TCP between pods. `agent status` lists the local endpoints and the applied revision;
// `describe endpoint` shows the active policies in evaluation order and the chains with the
// kernel's counters, which grow with real traffic; a rule removed by hand shows as drift; the
// admin socket is root-only and read-only, and refuses hostile references.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { adminGet } from './admin-client.js';
import { handleAdminRequest, startAdminSocket } from './admin-socket.js';
import type { AdminSocket } from './admin-socket.js';
import type { EndpointReport, StatusReport } from './introspect.js';
import { TestCluster, until } from './test-cluster.js';
import { main } from '../../../cli/src/main.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

function capture() {
  let out = '';
  let err = '';
  return {
    io: {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      readStdin: () => Promise.resolve(''),
    },
    out: () => out,
    err: () => err,
  };
}

describe('agent introspection: status and describe endpoint', { skip, timeout: 60_000 }, () => {
  const c = new TestCluster('i');
  let a: TestPod;
  let b: TestPod;
  let sock: AdminSocket;
  const sockPath = () => join(c.dir, 'admin.sock');

  before(async () => {
    await c.start();
    a = await c.addPod(1, 'a', { app: 'a' });
    b = await c.addPod(2, 'b', { app: 'b' });
    await Promise.all([a.start(['t80', 't81']), b.start(['t80', 't81'])]);
    await c.create('/api/v1/projectcalico.org/Tier', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'security' },
      spec: { order: 100 },
    });
    await c.create('/api/v1/projectcalico.org/GlobalNetworkPolicy', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'security.pass-all' },
      spec: {
        tier: 'security',
        order: 10,
        selector: 'all()',
        ingress: [{ action: 'Pass' }],
        egress: [{ action: 'Pass' }],
      },
    });
    await c.create('/api/v1/projectcalico.org/NetworkPolicy/demo', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'NetworkPolicy',
      metadata: { name: 'b-web', namespace: 'demo' },
      spec: {
        order: 5,
        selector: "app == 'b'",
        types: ['Ingress'],
        ingress: [
          {
            action: 'Allow',
            protocol: 'TCP',
            source: { selector: "app == 'a'" },
            destination: { ports: [80] },
          },
        ],
      },
    });
    const rv = await c.create('/api/v1/networking.k8s.io/NetworkPolicy/demo', {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'b-k8s', namespace: 'demo' },
      spec: { podSelector: { matchLabels: { app: 'b' } }, policyTypes: ['Ingress'] },
    });
    const agent = c.startAgent();
    await c.applied(rv);
    sock = await startAdminSocket(agent.view(), sockPath());
  });

  after(async () => {
    await sock?.close();
    await c.destroy();
  });

  test('the admin socket is a root-only socket file', () => {
    const st = statSync(sockPath());
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, 0);
  });

  test('status lists the local endpoints, revisions and sync times', async () => {
    const s = (await adminGet(sockPath(), '/v1/status')) as StatusReport;
    assert.equal(s.node, c.nodeName);
    assert.equal(s.table, c.table);
    assert.equal(s.connected, true);
    assert.equal(s.appliedRevision, c.agent?.status().appliedRevision);
    assert.ok(s.lastSync && s.lastApply && s.ruleCount > 0);
    assert.deepEqual(
      s.endpoints.map((e) => [e.ref, e.kind, e.iface, e.addresses]),
      [
        ['demo/a', 'workload', a.hostIface, [a.ip]],
        ['demo/b', 'workload', b.hostIface, [b.ip]],
      ],
    );
    const eb = s.endpoints.find((e) => e.ref === 'demo/b');
    assert.equal(eb?.ingressPolicies, 3);
  });

  test('describe shows the policies in evaluation order and counters that grow with real traffic', async () => {
    const d0 = (await adminGet(sockPath(), '/v1/endpoints/demo%2Fb')) as EndpointReport;
    // Tier security (order 100) before default; in default Calico order 5 before the Kubernetes
    // policy (order 1000 as Calico treats it).
    assert.deepEqual(
      d0.policies.ingress.map((p) => [p.tier, p.name, p.kind, p.apiVersion]),
      [
        ['security', 'security.pass-all', 'GlobalNetworkPolicy', 'projectcalico.org/v3'],
        ['default', 'demo/b-web', 'NetworkPolicy', 'projectcalico.org/v3'],
        ['default', 'demo/knp.default.b-k8s', 'NetworkPolicy', 'networking.k8s.io/v1'],
      ],
    );
    assert.equal(d0.policies.ingress[0]?.order, 10);
    assert.equal(d0.policies.ingress[1]?.order, 5);
    assert.match(d0.policies.ingress[2]?.name ?? '', /b-k8s/);
    const roles = d0.chains.map((ch) => ch.role);
    assert.deepEqual(roles.slice(0, 1), ['endpoint ingress']);
    assert.ok(roles.includes('tier security (ingress)'), roles.join('; '));
    assert.ok(roles.includes('tier default (ingress)'), roles.join('; '));
    assert.ok(d0.chains.every((ch) => ch.rules.every((r) => !r.drift)));
    const allowRule = (d: EndpointReport) => {
      const t = d.chains.find((ch) => ch.role === 'tier default (ingress)');
      const r = t?.rules.find((x) => x.rule.includes('demo/b-web/rule 0'));
      assert.ok(r, 'the allow rule of demo/b-web is in the default tier chain');
      return r;
    };
    const denyRule = (d: EndpointReport) =>
      d.chains
        .find((ch) => ch.role === 'tier default (ingress)')
        ?.rules.find((x) => x.rule.includes('default deny of tier default'));
    const p0 = allowRule(d0).packets ?? 0;
    const q0 = denyRule(d0)?.packets ?? 0;
    for (let i = 0; i < 3; i++) assert.equal((await a.tcp(b.ip, 80)).ok, true);
    assert.equal((await a.tcp(b.ip, 81, 300)).ok, false);
    const d1 = (await adminGet(sockPath(), '/v1/endpoints/demo%2Fb')) as EndpointReport;
    assert.ok(
      (allowRule(d1).packets ?? 0) >= p0 + 3,
      `allow counter ${p0} → ${allowRule(d1).packets}`,
    );
    assert.ok((allowRule(d1).bytes ?? 0) > (allowRule(d0).bytes ?? 0));
    assert.ok((denyRule(d1)?.packets ?? 0) > q0, 'the denied attempt hit the tier default deny');
  });

  test('a rule deleted by hand shows as drift', async () => {
    const d = (await adminGet(sockPath(), '/v1/endpoints/demo%2Fb')) as EndpointReport;
    const chain = d.chains.find((ch) => ch.role === 'tier default (ingress)');
    assert.ok(chain);
    const listing = c.node.nft(['-a', 'list', 'chain', 'inet', c.table, chain.name]);
    const handle = /demo\/b-web\/rule 0" # handle (\d+)/.exec(listing)?.[1];
    assert.ok(handle, listing);
    c.node.nft(['delete', 'rule', 'inet', c.table, chain.name, 'handle', handle]);
    const after = (await adminGet(sockPath(), '/v1/endpoints/demo%2Fb')) as EndpointReport;
    assert.ok(
      after.chains.find((ch) => ch.name === chain.name)?.rules.some((r) => r.drift),
      'drift is visible',
    );
    // Repair (what the periodic resync does) and the drift disappears.
    await c.agent?.['driver'].resync();
    await until('no drift', async () => {
      const r = (await adminGet(sockPath(), '/v1/endpoints/demo%2Fb')) as EndpointReport;
      return r.chains.every((ch) => ch.rules.every((x) => !x.drift));
    });
  });

  test('the CLI prints status and describe endpoint as table, json and yaml', async () => {
    const s = capture();
    assert.equal(await main(['agent', 'status', '--admin-socket', sockPath()], s.io), 0, s.err());
    assert.match(s.out(), /demo\/a\s+workload/);
    assert.match(s.out(), /API:\s+connected/);
    const j = capture();
    assert.equal(
      await main(
        ['describe', 'endpoint', 'demo/b', '--admin-socket', sockPath(), '-o', 'json'],
        j.io,
      ),
      0,
      j.err(),
    );
    assert.equal((JSON.parse(j.out()) as EndpointReport).endpoint.ref, 'demo/b');
    const t = capture();
    assert.equal(
      await main(['agent', 'describe', 'demo/b', '--admin-socket', sockPath()], t.io),
      0,
      t.err(),
    );
    assert.match(t.out(), /Ingress policies \(evaluation order\):/);
    assert.match(t.out(), /1\s+security\s+10\s+security\.pass-all\s+GlobalNetworkPolicy/);
    assert.match(t.out(), /PACKETS\s+BYTES\s+RULE/);
    const y = capture();
    assert.equal(
      await main(['agent', 'status', '--admin-socket', sockPath(), '-o', 'yaml'], y.io),
      0,
    );
    assert.match(y.out(), /^node: /m);
    const missing = capture();
    assert.equal(
      await main(['agent', 'describe', 'demo/nope', '--admin-socket', sockPath()], missing.io),
      1,
    );
    assert.match(missing.err(), /no local endpoint "demo\/nope"/);
    const noAgent = capture();
    assert.equal(
      await main(['agent', 'status', '--admin-socket', join(c.dir, 'absent.sock')], noAgent.io),
      2,
    );
    assert.match(noAgent.err(), /is palisade agent running/);
  });

  test('a HostEndpoint of this node from the API is programmed and described', async () => {
    const o = c.node.addOutside();
    await o.host.start(['t8080']);
    await o.outside.start([]);
    const rv = await c.create('/api/v1/projectcalico.org/HostEndpoint', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'HostEndpoint',
      metadata: { name: 'edge', labels: { role: 'edge' } },
      spec: { node: c.nodeName, interfaceName: o.iface, expectedIPs: [o.host.ip] },
    });
    await c.create('/api/v1/projectcalico.org/HostEndpoint', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'HostEndpoint',
      metadata: { name: 'elsewhere' },
      spec: { node: 'another-node', interfaceName: o.iface },
    });
    await c.applied(rv);
    const s = (await adminGet(sockPath(), '/v1/status')) as StatusReport;
    assert.deepEqual(
      s.endpoints.filter((e) => e.kind === 'host').map((e) => [e.ref, e.iface]),
      [['edge', o.iface]],
      'only this node’s host endpoint',
    );
    await until(
      'host endpoint denies',
      async () => !(await o.outside.tcp(o.host.ip, 8080, 300)).ok,
    );
    const d = (await adminGet(sockPath(), '/v1/endpoints/edge')) as EndpointReport;
    assert.equal(d.endpoint.kind, 'host');
    const deny = d.chains[0]?.rules.find((r) => r.rule.includes('default deny'));
    assert.ok(deny && (deny.packets ?? 0) > 0, 'the denied SYNs are counted');
  });

  test('the admin routes are read-only and refuse hostile references', async () => {
    const view = c.agent!.view();
    assert.equal((await handleAdminRequest(view, 'POST', '/v1/status')).status, 405);
    assert.equal((await handleAdminRequest(view, 'DELETE', '/v1/endpoints/demo%2Fb')).status, 405);
    for (const bad of [
      '/v1/endpoints/%ZZ',
      '/v1/endpoints/a%00b',
      '/v1/endpoints/' + 'x'.repeat(700),
      '/v1/endpoints/%22%3B',
    ]) {
      const r = await handleAdminRequest(view, 'GET', bad);
      assert.ok(r.status === 400 || r.status === 404, `${bad}: ${r.status}`);
    }
    assert.equal((await handleAdminRequest(view, 'GET', '/v1/../etc')).status, 404);
    // Another agent cannot take over a served socket.
    await assert.rejects(startAdminSocket(view, sockPath()), /served by another process/);
  });
});
