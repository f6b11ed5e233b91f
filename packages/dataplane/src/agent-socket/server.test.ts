import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pod } from '@palisade/core';
import { AgentCallError, UnixSocketAgentClient } from '../cni/agent-client.js';
import { InMemoryEndpointRegistry } from './endpoint-registry.js';
import { InMemoryPodTable } from './pod-source.js';
import {
  CniEndpointService,
  handleAgentRequest,
  startAgentSocket,
  workloadEndpointName,
} from './server.js';
import type { AgentSocket } from './server.js';
import type { RegisterRequest } from './protocol.js';

const dir = mkdtempSync(join(tmpdir(), `palisade-agent-sock-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

const pods: Pod[] = [
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      namespace: 'shop',
      name: 'web-1',
      uid: 'uid-1',
      labels: { app: 'web', tier: 'front' },
    },
    spec: {
      nodeName: 'n1',
      serviceAccountName: 'web',
      initContainers: [{ name: 'init', ports: [{ name: 'metrics', containerPort: 9090 }] }],
      containers: [
        {
          name: 'app',
          ports: [
            { name: 'http', containerPort: 8080 },
            { containerPort: 22 },
            { name: 'dns', containerPort: 53, protocol: 'UDP' },
          ],
        },
      ],
    },
  },
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: 'shop', name: 'far' },
    spec: { nodeName: 'n2' },
  },
];

function req(over: Partial<RegisterRequest> = {}): RegisterRequest {
  return {
    network: 'palisade',
    containerId: 'c1',
    ifname: 'eth0',
    hostIfname: 'pl0123456789abc',
    netns: '/run/netns/x',
    namespace: 'shop',
    pod: 'web-1',
    ips: ['10.244.0.5/32'],
    mac: '02:00:00:00:00:01',
    labels: {},
    ...over,
  };
}

function codeOf(e: unknown): string {
  return e instanceof AgentCallError ? e.code : String(e);
}

describe('agent CNI socket', () => {
  let socket: AgentSocket;
  let client: UnixSocketAgentClient;
  let registry: InMemoryEndpointRegistry;
  const path = join(dir, 'run', 'agent.sock');

  before(async () => {
    registry = new InMemoryEndpointRegistry();
    socket = await startAgentSocket({
      socketPath: path,
      service: new CniEndpointService({ node: 'n1', pods: new InMemoryPodTable(pods), registry }),
    });
    client = new UnixSocketAgentClient(path);
  });
  after(() => socket.close());

  test('the socket is private: mode 0600, in a directory it created 0700', () => {
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.ok(statSync(path).isSocket());
    assert.equal(statSync(join(dir, 'run')).mode & 0o777, 0o700);
  });

  test("register looks the pod up: labels, service account and every container's named ports", async () => {
    const ep = await client.register(
      req({ podUid: 'uid-1', labels: { app: 'spoofed', extra: 'x' } }),
    );
    const wep = ep.workloadEndpoint;
    assert.equal(ep.source, 'pod');
    assert.equal(wep.metadata.name, workloadEndpointName('n1', 'web-1', 'eth0'));
    assert.equal(wep.metadata.name, 'n1-k8s-web--1-eth0', "Calico's naming doubles dashes");
    assert.equal(wep.metadata.labels?.['app'], 'web', 'the pod wins over CNI_ARGS');
    assert.equal(wep.metadata.labels?.['extra'], 'x', 'CNI_ARGS fill in what the pod does not say');
    assert.equal(wep.metadata.labels?.['projectcalico.org/namespace'], 'shop');
    assert.equal(wep.spec.serviceAccountName, 'web');
    assert.deepEqual(wep.spec.profiles, ['kns.shop', 'ksa.shop.web']);
    assert.deepEqual(wep.spec.ports, [
      { name: 'metrics', protocol: 'TCP', port: 9090 },
      { name: 'http', protocol: 'TCP', port: 8080 },
      { name: 'dns', protocol: 'UDP', port: 53 },
    ]);
    assert.deepEqual(await client.get('c1', 'eth0'), ep);
  });

  test('an unknown pod with labels or a service account in CNI_ARGS registers from the arguments alone', async () => {
    const ep = await client.register(
      req({
        containerId: 'c2',
        pod: 'standalone',
        ips: ['10.244.0.6/32'],
        labels: { app: 'batch' },
        serviceAccount: 'runner',
      }),
    );
    assert.equal(ep.source, 'cni-args');
    assert.equal(ep.workloadEndpoint.metadata.labels?.['app'], 'batch');
    assert.equal(ep.workloadEndpoint.spec.serviceAccountName, 'runner');
  });

  test('an unknown pod without labels is refused as "try again" (the orchestrator view may lag)', async () => {
    const e = await client
      .register(req({ containerId: 'c3', pod: 'ghost', ips: ['10.244.0.7/32'] }))
      .catch((x: unknown) => x);
    assert.equal(codeOf(e), 'CNI_ERR_POD_UNKNOWN');
    assert.equal((e as AgentCallError).mayHaveApplied, false);
  });

  test('a pod scheduled to another node, or of another UID, is refused', async () => {
    const far = await client
      .register(req({ containerId: 'c4', pod: 'far', ips: ['10.244.0.8/32'] }))
      .catch((x: unknown) => x);
    assert.equal(codeOf(far), 'CNI_ERR_REGISTRATION');
    assert.match((far as Error).message, /scheduled to node n2, not to this node n1/);
    const uid = await client
      .register(req({ containerId: 'c5', podUid: 'uid-old', ips: ['10.244.0.9/32'] }))
      .catch((x: unknown) => x);
    assert.equal(codeOf(uid), 'CNI_ERR_POD_UNKNOWN');
    assert.equal(await client.get('c4', 'eth0'), undefined);
  });

  test('an address registered to another attachment is refused; the same attachment may re-register', async () => {
    const e = await client
      .register(req({ containerId: 'c6', ips: ['10.244.0.5/32'] }))
      .catch((x: unknown) => x);
    assert.equal(codeOf(e), 'CNI_ERR_REGISTRATION');
    assert.match((e as Error).message, /10\.244\.0\.5 is registered to container c1 \(eth0\)/);
    await client.register(req());
    assert.equal((await registry.list()).filter((x) => x.containerId === 'c1').length, 1);
  });

  test('deregister is idempotent', async () => {
    await client.deregister('c2', 'eth0');
    await client.deregister('c2', 'eth0');
    assert.equal(await client.get('c2', 'eth0'), undefined);
  });

  test('hostile requests are refused with CNI_ERR_BAD_REQUEST and every problem named', async () => {
    const service = new CniEndpointService({
      node: 'n1',
      pods: new InMemoryPodTable(pods),
      registry: new InMemoryEndpointRegistry(),
    });
    const bad = async (
      method: string,
      url: string,
      body?: string,
    ): Promise<{ status: number; code: string; message: string }> => {
      const r = await handleAgentRequest(service, method, url, body);
      const e = (r.body as { error: { code: string; message: string } }).error;
      return { status: r.status, code: e.code, message: e.message };
    };
    assert.equal((await bad('POST', '/v1/cni/endpoints', '{')).code, 'CNI_ERR_BAD_REQUEST');
    assert.equal(
      (await bad('POST', '/v1/cni/endpoints', '[]')).message,
      'the body must be a JSON object',
    );
    const many = await bad(
      'POST',
      '/v1/cni/endpoints',
      JSON.stringify({
        ...req(),
        pod: 'Bad Pod',
        ips: ['10.0.0.1'],
        mac: 'x',
        surprise: 1,
        labels: { 'bad key!': 'v' },
      }),
    );
    assert.equal(many.status, 400);
    for (const re of [
      /unknown field surprise/,
      /pod must be a Kubernetes pod name/,
      /ips must be a list/,
      /mac must be/,
      /"bad key!" is not a valid label/,
    ])
      assert.match(many.message, re);
    assert.equal((await bad('PUT', '/v1/cni/endpoints', '{}')).status, 400);
    assert.equal((await bad('GET', '/v1/cni/endpoints/c1/eth0/extra')).status, 400);
    assert.equal((await bad('GET', '/v1/cni/endpoints/%E0%A4%A/eth0')).code, 'CNI_ERR_BAD_REQUEST');
    assert.equal((await bad('DELETE', '/v1/cni/endpoints/-x/eth0')).status, 400);
    assert.equal((await bad('GET', '/nothing')).status, 404);
  });

  test('a body over 64 KiB is refused with CNI_ERR_BAD_REQUEST without being buffered', async () => {
    const reply = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = request(
        { socketPath: path, method: 'POST', path: '/v1/cni/endpoints', agent: false },
        (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      r.on('error', reject);
      r.write('x'.repeat(100 * 1024));
      // The rest may not be wanted any more: the server answers once the limit is passed.
      r.end();
    });
    assert.equal(reply.status, 400);
    assert.match(reply.body, /CNI_ERR_BAD_REQUEST.*larger than 65536 bytes/);
  });

  test('the client reports an absent socket as try-again (CNI 11) that certainly did not apply', async () => {
    const e = await new UnixSocketAgentClient(join(dir, 'absent.sock'))
      .register(req())
      .catch((x: unknown) => x);
    assert.equal(codeOf(e), 'CNI_ERR_AGENT_UNAVAILABLE');
    assert.equal((e as AgentCallError).mayHaveApplied, false);
  });

  test('a client timeout after the request was sent counts as "may have applied"', async () => {
    const slow = join(dir, 'slow.sock');
    const server = createServer(() => undefined); // accepts, never answers
    await new Promise<void>((r) => server.listen(slow, r));
    const e = await new UnixSocketAgentClient(slow, { timeoutMs: 200 })
      .register(req())
      .catch((x: unknown) => x);
    server.close();
    assert.equal(codeOf(e), 'CNI_ERR_AGENT_UNAVAILABLE');
    assert.equal((e as AgentCallError).mayHaveApplied, true);
  });

  test('start refuses a path that is not a socket, and a socket another process serves; it replaces a stale one', async () => {
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    const service = new CniEndpointService({
      node: 'n1',
      pods: new InMemoryPodTable(),
      registry: new InMemoryEndpointRegistry(),
    });
    await assert.rejects(startAgentSocket({ socketPath: file, service }), /is not a socket/);
    await assert.rejects(
      startAgentSocket({ socketPath: path, service }),
      /served by another process/,
    );
    const stale = join(dir, 'stale.sock');
    // A crashed agent: killed with SIGKILL, its socket file stays and nobody listens on it.
    const crashed = spawn(
      process.execPath,
      [
        '-e',
        `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`,
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    await new Promise((r) => crashed.stdout.once('data', r));
    crashed.kill('SIGKILL');
    await new Promise((r) => crashed.once('close', r));
    assert.ok(statSync(stale).isSocket());
    const again = await startAgentSocket({ socketPath: stale, service, mode: 0o660 });
    assert.equal(statSync(stale).mode & 0o777, 0o660);
    await again.close();
  });
});
