// The agent's flow records end to end: a real API server (SQLite), a node namespace with pods,
// the agent applying real nftables rules, its flow runtime tracing the kernel's decisions, the
// endpoint sockets taking an L7 report from a real reporter (as a sidecar sends it), and the
// server's flow store. Kernel records name the deciding rule and both endpoints from the agent's
// view, and carry the would-be verdicts of a staged policy from the agent's own engine (shown by
// `palisade flows`); the L7 record gets the endpoint's own side from the agent, not from the sender; a socket
// refuses reports about another endpoint and malformed ones; flow trouble (a server that refuses
// the node, a kernel source that cannot start) changes nothing in enforcement; the agent's
// /metrics counts allowed and refused flows per policy and point.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EndpointSockets } from '../agent-socket/endpoint-sockets.js';
import { endpointSocketPath } from '../agent-socket/protocol.js';
import { L7FlowReporter } from '../flows/l7-reporter.js';
import type { WireBatch } from '../flows/observation.js';
import { canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { AgentFlows } from './flows-runtime.js';
import { startMetricsServer } from './metrics-server.js';
import { PolicySync } from './policysync.js';
import { TestCluster, until } from './test-cluster.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

interface Rec {
  readonly point: string;
  readonly verdict: string;
  readonly direction?: string;
  readonly method?: string;
  readonly path?: string;
  readonly source: { ip: string; name?: string; namespace?: string; identity?: string };
  readonly destination: { ip: string; name?: string; port?: number };
  readonly provenance: { kind: string; policy?: string; tier?: string; rule?: number };
  readonly staged?: { policy: string; tier?: string; verdict: string; rule?: number }[];
  readonly node: string;
}

const CLI = new URL('../../../cli/bin/palisade.js', import.meta.url).pathname;

/** `palisade ARGS` as a process against the test server (exit code, stdout). */
function cli(
  server: string,
  token: string,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { ...process.env, PALISADE_SERVER: server, PALISADE_TOKEN: token },
        timeout: 60_000,
      },
      (e, out, err) => resolve({ code: e ? Number(e.code ?? 1) : 0, out, err }),
    );
  });
}

function post(
  socketPath: string,
  path: string,
  body: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, path, method: 'POST', headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe(
  'the agent ships flow records from the kernel and its L7 points',
  { skip, timeout: 200_000 },
  () => {
    const c = new TestCluster('w');
    let web: TestPod;
    let pg: TestPod;
    let other: TestPod;
    let flows: AgentFlows;
    let sockets: EndpointSockets;
    let sync: PolicySync;
    const say: string[] = [];

    const records = async (q: string): Promise<Rec[]> => {
      const r = await c.admin.call('GET', `/api/v1/flows?limit=1000&${q}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body as { records: Rec[] }).records;
    };

    before(async () => {
      await c.start();
      web = await c.addPod(1, 'web', { app: 'web' });
      pg = await c.addPod(2, 'pg', { app: 'pg' });
      other = await c.addPod(3, 'other', { app: 'other' });
      await Promise.all([web, pg, other].map((p) => p.start(['t80'])));
      const agent = c.startAgent();
      await until('the first apply', () => agent.status().appliedRevision !== undefined, 20_000);
      flows = new AgentFlows(agent, {
        server: c.server?.url ?? '',
        token: c.nodeToken,
        table: c.table,
        netns: c.node.ns,
        intervalMs: 300,
        say: (l) => say.push(l),
      });
      await flows.start();
      // The policy's rules come after the monitor started: nft prints them as unknown handles,
      // which the source resolves from its own listing of the table.
      const rv = await c.create('/api/v1/projectcalico.org/NetworkPolicy/demo', {
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: 'allow-web', namespace: 'demo' },
        spec: {
          selector: "app == 'pg'",
          types: ['Ingress'],
          ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: "app == 'web'" } }],
        },
      });
      await c.applied(rv, 20_000);
      // A staged policy the kernel never enforces: refuse `other`, allow the rest.
      const srv = await c.create('/api/v1/projectcalico.org/StagedNetworkPolicy/demo', {
        apiVersion: 'projectcalico.org/v3',
        kind: 'StagedNetworkPolicy',
        metadata: { name: 'lockdown', namespace: 'demo' },
        spec: {
          selector: "app == 'pg'",
          types: ['Ingress'],
          ingress: [
            { action: 'Deny', source: { selector: "app == 'other'" } },
            { action: 'Allow', protocol: 'TCP' },
          ],
        },
      });
      await c.applied(srv, 20_000);
      sync = new PolicySync(agent);
      sockets = new EndpointSockets({
        source: sync,
        dir: join(c.dir, 'eps'),
        flows: (ep, body) => flows.report(ep, body),
      });
      await sockets.start();
    });
    after(async () => {
      await flows?.stop();
      sync?.close();
      await sockets?.close();
      await c.destroy();
    });

    test('kernel decisions arrive with the deciding rule and both endpoints named', async () => {
      await until(
        'allowed and refused connections to pg recorded',
        async () => {
          // Outcomes are asserted below; here they only make traffic (a slow machine may time out).
          await Promise.all([web.tcp(pg.ip, 80, 1000), other.tcp(pg.ip, 80, 1000)]);
          const got = await records('endpoint=demo/pg&point=kernel');
          return (
            got.some((r) => r.verdict === 'allow' && r.direction === 'ingress') &&
            got.some((r) => r.verdict === 'deny' && r.direction === 'ingress')
          );
        },
        60_000,
      );
      assert.equal((await web.tcp(pg.ip, 80, 5000)).ok, true, 'web → pg is allowed');
      assert.equal((await other.tcp(pg.ip, 80, 1000)).ok, false, 'other → pg is refused');
      const got = await records('endpoint=demo/pg&point=kernel');
      const allow = got.find((r) => r.verdict === 'allow' && r.direction === 'ingress');
      const deny = got.find((r) => r.verdict === 'deny' && r.direction === 'ingress');
      assert.deepEqual(
        [allow?.source.name, allow?.destination.name, allow?.destination.port, allow?.node],
        ['web', 'pg', 80, c.nodeName],
      );
      assert.equal(allow?.provenance.policy, 'demo/allow-web');
      assert.equal(allow?.source.identity, 'spiffe://cluster.local/ns/demo/sa/default');
      assert.equal(deny?.source.name, 'other');
      assert.equal(deny?.provenance.kind, 'tier-default');
    });

    test("kernel records carry the would-be verdicts of staged policies from the agent's engine (DESIGN §4.8), and palisade flows shows them", async () => {
      await until(
        'kernel records with staged verdicts',
        async () => {
          await Promise.all([web.tcp(pg.ip, 80, 1000), other.tcp(pg.ip, 80, 1000)]);
          const got = await records('endpoint=demo/pg&point=kernel');
          return (
            got.some((r) => r.verdict === 'allow' && r.direction === 'ingress' && r.staged) &&
            got.some((r) => r.verdict === 'deny' && r.direction === 'ingress' && r.staged)
          );
        },
        60_000,
      );
      const got = await records('endpoint=demo/pg&point=kernel');
      const allow = got.find((r) => r.verdict === 'allow' && r.direction === 'ingress' && r.staged);
      const deny = got.find((r) => r.verdict === 'deny' && r.direction === 'ingress' && r.staged);
      // The real verdicts are unchanged (the staged policy is not enforced) ...
      assert.equal(allow?.provenance.policy, 'demo/allow-web');
      assert.equal(deny?.provenance.kind, 'tier-default');
      // ... and beside each, what the staged policy would have done with that connection.
      assert.equal(allow?.source.name, 'web');
      assert.deepEqual(allow?.staged, [
        { policy: 'demo/lockdown', tier: 'default', verdict: 'allow', rule: 1 },
      ]);
      assert.equal(deny?.source.name, 'other');
      assert.deepEqual(deny?.staged, [
        { policy: 'demo/lockdown', tier: 'default', verdict: 'deny', rule: 0 },
      ]);
      // The senders' egress: no staged policy selects them there.
      assert.ok(got.filter((r) => r.direction === 'egress').every((r) => r.staged === undefined));
      assert.ok(flows.aggregator.counters.stagedLookups > 0);
      assert.equal(flows.aggregator.counters.stagedSkipped, 0);
      const admin = readFileSync(join(c.dir, 'admin.token'), 'utf8').trim();
      const shown = await cli(c.server?.url ?? '', admin, [
        'flows',
        '--endpoint',
        'demo/pg',
        '--point',
        'kernel',
        '--limit',
        '1000',
      ]);
      assert.equal(shown.code, 0, shown.err);
      const lines = shown.out.split('\n');
      assert.match(lines[0] ?? '', /STAGED$/);
      assert.ok(
        lines.some((l) => /demo\/other .* DENY .*demo\/lockdown=deny$/.test(l)),
        shown.out,
      );
      assert.ok(
        lines.some((l) => /demo\/web .* ALLOW .*demo\/lockdown=allow$/.test(l)),
        shown.out,
      );
    });

    test("an L7 report gets the endpoint's own side from the agent; reports about another endpoint or malformed ones are refused", async () => {
      const pgSock = endpointSocketPath(join(c.dir, 'eps'), 'demo', 'pg');
      await until('the socket of demo/pg', () => sockets.paths().has('demo/pg'), 30_000);
      const reporter = new L7FlowReporter({ socketPath: pgSock, endpoint: 'demo/pg' });
      reporter.record({
        time: new Date().toISOString(),
        requestId: 'x',
        side: 'inbound',
        stage: 'request',
        source: { ip: web.ip, identity: 'spiffe://cluster.local/ns/demo/sa/default' },
        destination: { endpoint: 'demo/pg', port: 80 },
        method: 'DELETE',
        path: '/admin?key=hunter2',
        verdict: 'deny',
        status: 403,
        provenance: {
          kind: 'rule',
          tier: 'default',
          policy: 'demo/l7-guard',
          rule: 1,
          reason: 'r',
        },
        policyVersion: 1,
        latencyMs: 0,
      });
      await reporter.flush();
      assert.equal(reporter.status().sent, 1, JSON.stringify(reporter.status()));
      await until(
        'the L7 record in the store',
        async () => (await records('point=l7&endpoint=demo/pg')).length > 0,
        30_000,
      );
      const [l7] = await records('point=l7&endpoint=demo/pg');
      assert.equal(l7?.destination.ip, pg.ip);
      assert.equal(l7?.destination.name, 'pg');
      assert.equal(l7?.source.name, 'web');
      assert.equal(l7?.method, 'DELETE');
      assert.equal(l7?.path, '/admin');
      assert.equal(l7?.provenance.policy, 'demo/l7-guard');
      assert.doesNotMatch(JSON.stringify(l7), /hunter2/);
      // pg's socket does not speak for web; nonsense is refused and counted.
      const forged = await post(
        pgSock,
        '/v1/flows/endpoints/demo/web',
        JSON.stringify({ records: [] }),
      );
      assert.equal(forged.status, 403, forged.text);
      const junk = await post(
        pgSock,
        '/v1/flows/endpoints/demo/pg',
        '{"records":[{"time":"now"}]}',
      );
      assert.equal(junk.status, 422, junk.text);
      const notJson = await post(pgSock, '/v1/flows/endpoints/demo/pg', 'records');
      assert.equal(notJson.status, 400);
      assert.equal(flows.reportsRefused, 2);
    });

    test('the agent exports allowed and refused flows per policy and point on /metrics', async () => {
      const m = await startMetricsServer('127.0.0.1', 0, () => flows.metricsText());
      try {
        const text = await new Promise<string>((resolve, reject) => {
          request({ host: '127.0.0.1', port: m.port, path: '/metrics' }, (res) => {
            let t = '';
            res.on('data', (d: Buffer) => (t += d.toString()));
            res.on('end', () => resolve(t));
          })
            .on('error', reject)
            .end();
        });
        assert.match(
          text,
          /palisade_agent_flows_total\{point="kernel",verdict="allow",policy="demo\/allow-web"\} [1-9]/,
        );
        assert.match(
          text,
          /palisade_agent_flows_total\{point="kernel",verdict="deny",policy="\(default deny of tier default\)"\} [1-9]/,
        );
        assert.match(
          text,
          /palisade_agent_flows_total\{point="l7",verdict="deny",policy="demo\/l7-guard"\} 1/,
        );
        assert.match(text, /palisade_agent_flow_kernel_tracing 1/);
        // The policy's rules were added after the monitor started: named from a listing.
        assert.match(text, /palisade_agent_flow_rule_listings_total [1-9]/);
        assert.match(text, /palisade_agent_flow_reports_total\{outcome="refused"\} 2/);
      } finally {
        await m.close();
      }
    });

    test('flow trouble never touches enforcement: a refusing server and a kernel source that cannot start', async () => {
      const agent = c.agent;
      assert.ok(agent);
      const failing: WireBatch[] = [];
      const broken = new AgentFlows(agent, {
        server: 'http://127.0.0.1:1',
        token: 'x',
        table: c.table,
        netns: `no-such-netns-${process.pid}`,
        intervalMs: 100,
        retryMs: 60_000,
        send: (b) => {
          failing.push(b);
          return Promise.reject(new Error('the server refuses'));
        },
        say: (l) => say.push(l),
      });
      await broken.start();
      try {
        assert.equal(broken.kernelTracing, false);
        assert.ok(
          say.some((l) => /kernel tracing unavailable/.test(l)),
          say.join('\n'),
        );
        broken.aggregator.observe({
          timeMs: Date.now(),
          point: 'kernel',
          srcIp: web.ip,
          dstIp: pg.ip,
          protocol: 'TCP',
          verdict: 'allow',
          provenance: { kind: 'rule' },
          packets: 1,
          bytes: 60,
        });
        await until('a failed send', () => broken.aggregator.counters.sendFailures > 0, 20_000);
        // Enforcement as before, and the agent's status shows no error from flows.
        assert.equal((await web.tcp(pg.ip, 80, 5000)).ok, true);
        assert.equal((await other.tcp(pg.ip, 80, 1000)).ok, false);
        assert.equal(broken.aggregator.pendingBatches >= 1, true);
        assert.deepEqual(agent.status().errors, []);
      } finally {
        await broken.stop();
      }
    });
  },
);
