// Test support for policy sync (not part of the public surface): a real API server on loopback
// (SQLite file in a temp dir, with its CA), the bookinfo resources applied through the API with
// chosen pods registered as WorkloadEndpoints of this test's node, and a real agent with its
// policy sync and per-endpoint sockets that can be stopped and started again.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runServer } from '@palisade/controlplane';
import type { RunningServer } from '@palisade/controlplane';
import type { Resource } from '@palisade/core';
import { Agent } from '../agent/agent.js';
import type { AgentOptions } from '../agent/agent.js';
import { ApiClient } from '../agent/api-client.js';
import { AgentFlows } from '../agent/flows-runtime.js';
import type { WireBatch } from '../flows/observation.js';
import { PolicySync } from '../agent/policysync.js';
import { EndpointSockets } from '../agent-socket/endpoint-sockets.js';
import { InterceptionManager } from '../agent/interception.js';
import type { InterceptionManagerOptions } from '../agent/interception.js';
import { bookinfo } from './test-fixtures.js';

export async function until(
  what: string,
  f: () => boolean | Promise<boolean>,
  ms = 15_000,
): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface PodPlacement {
  /** `default/<pod>` of bookinfo. */
  readonly pod: string;
  readonly ip: string;
  /** The host side of its veth (any name on loopback runs). */
  readonly iface: string;
  /** Its network namespace (`ip netns` name), recorded as the CNI plugin would. */
  readonly netns?: string;
}

export class SyncWorld {
  server: RunningServer | undefined;
  admin!: ApiClient;
  nodeToken = '';
  agent: Agent | undefined;
  sync: PolicySync | undefined;
  sockets: EndpointSockets | undefined;
  intercept: InterceptionManager | undefined;
  readonly lines: string[] = [];

  constructor(
    readonly dir: string,
    readonly node: string,
    readonly socketDir: string,
  ) {}

  async startServer(): Promise<void> {
    this.server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: this.dir,
      store: `sqlite:${join(this.dir, 'store.db')}`,
      insecurePlaintext: true,
      rateLimit: false,
      log: () => undefined,
      say: () => undefined,
    });
    this.admin = new ApiClient({
      server: this.server.url,
      token: readFileSync(join(this.dir, 'admin.token'), 'utf8').trim(),
    });
    const tok = await this.admin.call('POST', '/api/v1/tokens', { node: this.node });
    if (tok.status !== 201) throw new Error(`node token: ${JSON.stringify(tok.body)}`);
    this.nodeToken = (tok.body as { token: string }).token;
  }

  /** Applies resources through the API in one transaction; resolves with the new revision. */
  async apply(items: readonly unknown[]): Promise<number> {
    const r = await this.admin.call('POST', '/api/v1/apply', {
      apiVersion: 'v1',
      kind: 'List',
      items,
    });
    if (r.status !== 200) throw new Error(`apply: ${r.status} ${JSON.stringify(r.body)}`);
    return Number((r.body as { resourceVersion: string }).resourceVersion);
  }

  /** Bookinfo with the placed pods on this node, each with a WorkloadEndpoint. */
  async applyBookinfo(placed: readonly PodPlacement[]): Promise<number> {
    const ips = Object.fromEntries(placed.map((p) => [p.pod, p.ip]));
    const res: Resource[] = bookinfo(ips).map((r) =>
      r.kind === 'Pod' && ips[`${r.metadata.namespace ?? 'default'}/${r.metadata.name}`]
        ? { ...r, spec: { ...r.spec, nodeName: this.node } }
        : r,
    );
    const weps = placed.map((p) => {
      const name = p.pod.split('/')[1] ?? '';
      const pod = res.find((r) => r.kind === 'Pod' && r.metadata.name === name);
      if (!pod || pod.kind !== 'Pod') throw new Error(`no bookinfo pod ${p.pod}`);
      return {
        apiVersion: 'projectcalico.org/v3',
        kind: 'WorkloadEndpoint',
        metadata: {
          name: `${this.node}-k8s-${name}-eth0`,
          namespace: 'default',
          labels: pod.metadata.labels ?? {},
          ...(p.netns ? { annotations: { 'palisade.dev/netns': `/run/netns/${p.netns}` } } : {}),
        },
        spec: {
          node: this.node,
          orchestrator: 'k8s',
          pod: name,
          endpoint: 'eth0',
          interfaceName: p.iface,
          ipNetworks: [`${p.ip}/32`],
          serviceAccountName: pod.spec.serviceAccountName ?? 'default',
          ports: (pod.spec.containers ?? []).flatMap((c) =>
            (c.ports ?? []).map((x) => ({
              name: x.name ?? 'http',
              port: x.containerPort,
              protocol: 'TCP',
            })),
          ),
        },
      };
    });
    const wire = res.map((r) => {
      const copy: Record<string, unknown> = { ...r };
      delete copy['source'];
      return copy;
    });
    return this.apply([...wire, ...weps]);
  }

  /** The ratings policy with the given methods (GET only in bookinfo). */
  ratingsPolicy(methods: readonly string[]): unknown {
    return {
      apiVersion: 'projectcalico.org/v3',
      kind: 'NetworkPolicy',
      metadata: { name: 'ratings-readers-get-only', namespace: 'default' },
      spec: {
        order: 500,
        selector: "app == 'ratings'",
        types: ['Ingress'],
        ingress: [
          {
            action: 'Allow',
            protocol: 'TCP',
            source: { serviceAccounts: { selector: "ratings-reader == 'true'" } },
            destination: { ports: ['http'] },
            http: { methods, paths: [{ prefix: '/ratings' }] },
          },
          { action: 'Deny' },
        ],
      },
    };
  }

  /** With `startAgent(…, undefined, {flows: true})`: the agent's flow runtime and the batches it shipped. */
  flows: AgentFlows | undefined;
  readonly flowBatches: WireBatch[] = [];

  /** With `intercept`, the agent installs interception for sidecars running as `sidecarUid`. */
  async startAgent(
    extra: Partial<AgentOptions> = {},
    intercept?: InterceptionManagerOptions,
    opts: { readonly flows?: boolean } = {},
  ): Promise<void> {
    if (!this.server) throw new Error('no server');
    this.agent = new Agent({
      server: this.server.url,
      token: this.nodeToken,
      node: this.node,
      backoffMinMs: 50,
      backoffMaxMs: 300,
      resyncMs: 0,
      say: (l) => this.lines.push(l),
      ...extra,
    });
    this.sync = new PolicySync(this.agent, { bundleRefreshMs: 300 });
    const flows = opts.flows
      ? new AgentFlows(this.agent, {
          server: this.server.url,
          token: this.nodeToken,
          kernel: false,
          intervalMs: 200,
          send: (b) => Promise.resolve(void this.flowBatches.push(b)),
        })
      : undefined;
    this.flows = flows;
    await flows?.start();
    this.intercept = intercept
      ? new InterceptionManager(this.agent, { say: (l) => this.lines.push(l), ...intercept })
      : undefined;
    const uid = this.intercept?.sidecarUid;
    this.sockets = new EndpointSockets({
      source: this.sync,
      ...(this.intercept && uid !== undefined
        ? { intercept: this.intercept, owner: { uid, gid: uid } }
        : {}),
      dir: this.socketDir,
      heartbeatMs: 1_000,
      ...(flows ? { flows: (ep: string, body: string) => flows.report(ep, body) } : {}),
      say: (l) => this.lines.push(l),
    });
    this.agent.start();
    await this.sockets.start();
  }

  async stopAgent(): Promise<void> {
    await this.flows?.stop();
    this.flows = undefined;
    await this.intercept?.close();
    this.intercept = undefined;
    this.sync?.close();
    await this.sockets?.close();
    await this.agent?.stop();
    this.agent = undefined;
    this.sync = undefined;
    this.sockets = undefined;
  }

  async stop(): Promise<void> {
    await this.stopAgent().catch(() => undefined);
    await this.server?.stop().catch(() => undefined);
  }
}
