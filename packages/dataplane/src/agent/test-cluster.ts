// Test support: a real API server on loopback (SQLite store in a temp dir), a node namespace with
// pods, and an agent with a node token applying inside the node namespace. Everything is named
// with the pid and removed by `destroy()`. Owns: the end-to-end fixture. Must never: be imported
// by product code.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runServer } from '@palisade/controlplane';
import type { RunningServer } from '@palisade/controlplane';
import { TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { Agent } from './agent.js';
import type { AgentOptions } from './agent.js';
import { ApiClient } from './api-client.js';

export async function until(
  what: string,
  f: () => boolean | Promise<boolean>,
  ms = 10_000,
): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export class TestCluster {
  readonly dir: string;
  readonly storeUrl: string;
  readonly nodeName: string;
  server: RunningServer | undefined;
  port = 0;
  admin!: ApiClient;
  node!: TestNode;
  agent: Agent | undefined;
  nodeToken = '';
  readonly lines: string[] = [];

  constructor(readonly tag: string) {
    this.dir = mkdtempSync(join(tmpdir(), `palisade-${tag}-${process.pid}-`));
    this.storeUrl = `sqlite:${join(this.dir, 'store.db')}`;
    this.nodeName = `node${tag}${process.pid}`;
  }

  get table(): string {
    return `palisade_${this.tag}${process.pid % 100000}`;
  }

  startServer(listen = '127.0.0.1:0'): Promise<RunningServer> {
    return runServer({
      listen,
      dataDir: this.dir,
      store: this.storeUrl,
      insecurePlaintext: true,
      rateLimit: false,
      log: () => undefined,
      say: () => undefined,
    });
  }

  async start(): Promise<void> {
    this.server = await this.startServer();
    this.port = Number(new URL(this.server.url).port);
    this.admin = new ApiClient({
      server: this.server.url,
      token: readFileSync(join(this.dir, 'admin.token'), 'utf8').trim(),
    });
    this.node = new TestNode(this.tag);
    const tok = await this.admin.call('POST', '/api/v1/tokens', { node: this.nodeName });
    assert.equal(tok.status, 201, JSON.stringify(tok.body));
    this.nodeToken = (tok.body as { token: string }).token;
    await this.create('/api/v1/core/Namespace', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'demo' },
    });
  }

  /** A pod namespace with its Pod and WorkloadEndpoint in the API. */
  async addPod(i: number, name: string, labels: Record<string, string>): Promise<TestPod> {
    const p = this.node.addPod(i);
    await this.create('/api/v1/core/Pod/demo', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'demo', labels },
      spec: {
        nodeName: this.nodeName,
        containers: [{ name: 'c', ports: [{ containerPort: 80 }] }],
      },
      status: { podIP: p.ip },
    });
    await this.create('/api/v1/projectcalico.org/WorkloadEndpoint/demo', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'WorkloadEndpoint',
      metadata: { name: `${this.nodeName}-k8s-${name}-eth0`, namespace: 'demo', labels },
      spec: {
        node: this.nodeName,
        orchestrator: 'k8s',
        pod: name,
        endpoint: 'eth0',
        interfaceName: p.hostIface,
        ipNetworks: [`${p.ip}/32`],
      },
    });
    return p;
  }

  startAgent(extra: Partial<AgentOptions> = {}): Agent {
    assert.ok(this.server);
    this.agent = new Agent({
      server: this.server.url,
      token: this.nodeToken,
      node: this.nodeName,
      table: this.table,
      netns: this.node.ns,
      workloadInterfacePrefix: this.node.ifacePrefix,
      backoffMinMs: 50,
      backoffMaxMs: 300,
      resyncMs: 0,
      say: (l) => this.lines.push(l),
      ...extra,
    });
    this.agent.start();
    return this.agent;
  }

  async create(path: string, body: unknown): Promise<number> {
    const r = await this.admin.call('POST', path, body);
    assert.equal(r.status, 201, `${path}: ${JSON.stringify(r.body)}`);
    return Number((r.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion);
  }

  async put(path: string, body: unknown): Promise<number> {
    const r = await this.admin.call('PUT', path, body);
    assert.ok(r.status === 200 || r.status === 201, `${path}: ${JSON.stringify(r.body)}`);
    return Number((r.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion);
  }

  applied(rv: number, ms = 10_000): Promise<void> {
    return until(
      `revision ${rv} applied`,
      () => Number(this.agent?.status().appliedRevision ?? -1) >= rv,
      ms,
    );
  }

  async destroy(): Promise<void> {
    await this.agent?.stop().catch(() => undefined);
    await this.server?.stop().catch(() => undefined);
    this.node?.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
