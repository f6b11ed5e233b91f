// The live demo's machine-level setup: the temp directory, the node namespace, the control plane,
// the agent process, and each pod (network namespace through the real CNI plugin, its service,
// its sidecar). Everything is recorded in the cleanup registry the moment it exists.
// Owns: creation order and the names (`pd<pid>-…`, `palisade_demo_<pid>`). Must never: touch the
// host's interfaces or tables (the node is a namespace; the agent's table lives inside it).

import { execFile, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import type { RunningServer } from '@palisade/controlplane';
import { DemoApi } from './api.js';
import { LineChild } from './child.js';
import type { CleanupRegistry } from './cleanup.js';
import { demoPrefix, TABLE_PREFIX } from './cleanup.js';
import { SIDECAR_UID } from './sidecars.js';

export const NODE = 'demo-node';
export const POD_PORT = 9080;
// The service listens on the pod's loopback at the pod port; the interception rules send
// connections to the pod port to the sidecar, which forwards the allowed requests over loopback.
const APP_PORT = POD_PORT;
const BIN = fileURLToPath(new URL('../../bin/palisade.js', import.meta.url));
const APP = fileURLToPath(new URL('./pod-app.mjs', import.meta.url));
export const EXAMPLES = fileURLToPath(new URL('../../../../examples/demo/', import.meta.url));

export function readExample(rel: string): string {
  return readFileSync(join(EXAMPLES, rel), 'utf8');
}

/** The short-lived processes `run` started that have not exited yet (CNI plugin runs, …). */
const running = new Set<ChildProcess>();

/**
 * Waits (at most `ms`) for every process `run` started to exit, then kills what is left and
 * waits for it: after this nothing the demo started can still write into its work directory.
 */
export async function settleRunningProcesses(ms = 10_000): Promise<void> {
  const exited = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((r) => c.once('exit', () => r()));
  const all = () => Promise.all([...running].map(exited));
  await Promise.race([all(), new Promise((r) => setTimeout(r, ms).unref())]);
  for (const c of running) c.kill('SIGKILL');
  await Promise.race([all(), new Promise((r) => setTimeout(r, 2_000).unref())]);
}

function run(
  cmd: string,
  args: readonly string[],
  input?: string,
  env?: NodeJS.ProcessEnv,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const c: ChildProcess = execFile(
      cmd,
      args,
      { timeout: 60_000, maxBuffer: 16 * 1024 * 1024, ...(env ? { env } : {}) },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(
              `${cmd} ${args.slice(0, 4).join(' ')}: ${(stdout || stderr || err.message).trim().slice(0, 600)}`,
            ),
          );
        else resolve(stdout);
      },
    );
    running.add(c);
    c.once('exit', () => running.delete(c));
    if (input !== undefined) c.stdin?.end(input);
  });
}

export interface PodSpec {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly serviceAccount: string;
}

/** The pods of examples/demo/workloads.yaml. */
export function demoPods(): PodSpec[] {
  const out: PodSpec[] = [];
  for (const d of parseAllDocuments(readExample('workloads.yaml'))) {
    const o = d.toJS() as {
      kind?: string;
      metadata?: { name: string; namespace?: string; labels?: Record<string, string> };
      spec?: { serviceAccountName?: string };
    };
    if (o.kind !== 'Pod' || !o.metadata) continue;
    out.push({
      namespace: o.metadata.namespace ?? 'default',
      name: o.metadata.name,
      labels: o.metadata.labels ?? {},
      serviceAccount: o.spec?.serviceAccountName ?? 'default',
    });
  }
  return out;
}

export class Pod {
  ip = '';
  hostVeth = '';
  app: LineChild | undefined;

  constructor(
    readonly spec: PodSpec,
    readonly netns: string,
  ) {}

  get ref(): string {
    return `${this.spec.namespace}/${this.spec.name}`;
  }

  get identity(): string {
    return `spiffe://cluster.local/ns/${this.spec.namespace}/sa/${this.spec.serviceAccount}`;
  }

  /** Asks the pod's service to make a call; see pod-app.mjs for the operations. */
  async ask(req: Record<string, unknown>, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    if (!this.app) return { ok: false, error: 'no service running' };
    return this.app.request(req, timeoutMs);
  }
}

export class Topology {
  readonly prefix = demoPrefix();
  readonly nodeNs = `${demoPrefix()}-node`;
  readonly table = `${TABLE_PREFIX}${process.pid}`;
  readonly dir: string;
  server: RunningServer | undefined;
  admin: DemoApi | undefined;
  nodeApi: DemoApi | undefined;
  nodeToken = '';
  ca = '';
  agent: LineChild | undefined;
  agentRevision = -1;
  /** The agent's Prometheus endpoint (its flow counters per policy and point). */
  agentMetrics: string | undefined;
  /** The revision the agent's interception rules in the pods follow. */
  interceptRevision = -1;
  /** The last policy view version the agent sent each L7 point (`namespace/name`). */
  readonly viewsSent = new Map<string, number>();
  readonly pods: Pod[] = [];

  constructor(
    readonly cleanup: CleanupRegistry,
    readonly say: (line: string) => void,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `palisade-demo-${process.pid}-`));
    const dir = this.dir;
    // The sidecars run under their own uid and must reach their sockets below (not list them).
    chmodSync(dir, 0o711);
    cleanup.add(`directory ${dir}`, () => removeTree(dir));
  }

  get caFile(): string {
    return join(this.dir, 'server', 'ca.pem');
  }

  get adminTokenFile(): string {
    return join(this.dir, 'server', 'admin.token');
  }

  async createNode(): Promise<void> {
    const ns = this.nodeNs;
    await run('ip', ['netns', 'add', ns]);
    this.cleanup.add(`network namespace ${ns}`, () =>
      run('ip', ['netns', 'del', ns]).then(() => undefined),
    );
    await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    // The node routes between its pods (the node's own configuration, not the plugin's).
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  }

  async startServer(): Promise<void> {
    const { runServer } = await import('@palisade/controlplane');
    const { consoleRoute } = await import('@palisade/console');
    const dataDir = join(this.dir, 'server');
    const opts = (listen: string) => ({
      listen,
      dataDir,
      insecurePlaintext: false,
      rateLimit: false as const,
      // The web console, showing the flows the node ships (flows.ts).
      staticRoute: consoleRoute,
      log: () => undefined,
      say: () => undefined,
    });
    try {
      this.server = await runServer(opts('127.0.0.1:9443'));
    } catch {
      // 9443 is taken (another server, another demo): any free port.
      this.server = await runServer(opts('127.0.0.1:0'));
    }
    const server = this.server;
    this.cleanup.add(`control plane ${server.url}`, () => server.stop());
    this.ca = readFileSync(this.caFile, 'utf8');
    this.admin = new DemoApi(
      server.url,
      readFileSync(this.adminTokenFile, 'utf8').trim(),
      this.ca,
      'admin',
    );
    const t = (await this.admin.must('POST', '/api/v1/tokens', { node: NODE })) as {
      token: string;
    };
    this.nodeToken = t.token;
    writeFileSync(join(this.dir, 'node.token'), `${t.token}\n`, { mode: 0o600 });
    this.nodeApi = new DemoApi(server.url, t.token, this.ca, `node ${NODE}`);
  }

  /** The store's current revision (after a write: the revision that includes it). */
  async revision(): Promise<number> {
    const r = await (this.admin as DemoApi).call('GET', '/readyz');
    return Number((r.body as { revision?: number }).revision ?? -1);
  }

  /** The agent's policy-sync and SVID socket of one pod. */
  endpointSocket(p: Pod): string {
    return join(this.dir, 'endpoints', p.spec.namespace, p.spec.name, 'agent.sock');
  }

  get agentSocket(): string {
    return join(this.dir, 'agent.sock');
  }

  /** Starts `palisade agent` as its own process; resolves once it has applied rules. */
  async startAgent(): Promise<void> {
    const server = this.server as RunningServer;
    const child = new LineChild('palisade agent', process.execPath, [
      BIN,
      'agent',
      '--node',
      NODE,
      '--server',
      server.url,
      '--token-file',
      join(this.dir, 'node.token'),
      '--ca-file',
      this.caFile,
      '--table',
      this.table,
      '--netns',
      this.nodeNs,
      '--socket',
      this.agentSocket,
      '--endpoint-sockets',
      join(this.dir, 'endpoints'),
      // The demo's own files: nothing of a run outlives it or meets another run's.
      '--admin-socket',
      join(this.dir, 'agent-admin.sock'),
      '--endpoint-record',
      join(this.dir, 'endpoints.json'),
      // Flow records (kernel traces and the sidecars' L7 decisions) shipped every 2 s, so the
      // story's traffic is in the console moments after it happened.
      '--flow-interval',
      '2',
      '--metrics',
      '127.0.0.1:0',
      '--sidecar-uid',
      String(SIDECAR_UID),
    ]);
    this.agent = child;
    this.agentRevision = -1;
    this.interceptRevision = -1;
    this.viewsSent.clear();
    if (process.env['PALISADE_DEMO_AGENT_LOG'] === '1')
      void child.exited.then((c) => this.say(`agent exited ${c}: ${child.stderrTail}`));
    child.onText((line) => {
      if (process.env['PALISADE_DEMO_AGENT_LOG'] === '1') this.say(`agent: ${line}`);
      const mu = /^metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)$/.exec(line);
      if (mu?.[1]) this.agentMetrics = mu[1];
      const m = /^applied revision (\d+)/.exec(line);
      if (m) this.agentRevision = Math.max(this.agentRevision, Number(m[1]));
      const i = /^interception reconciled \(revision (\d+)/.exec(line);
      if (i) this.interceptRevision = Math.max(this.interceptRevision, Number(i[1]));
      const v = /^policy views of revision \d+ sent to \d+ L7 point\(s\): (.*)$/.exec(line);
      for (const sent of v?.[1]?.split(', ') ?? []) {
        const at = /^(\S+)@(\d+)/.exec(sent);
        if (at?.[1] && at[2])
          this.viewsSent.set(at[1], Math.max(this.viewsSent.get(at[1]) ?? -1, Number(at[2])));
      }
    });
    if (!this.#agentCleanupRecorded) {
      this.#agentCleanupRecorded = true;
      // The table outlives the agent by design; removing it is the demo's uninstall.
      const { nodeNs, table } = this;
      this.cleanup.add(`nftables table inet ${table} (in ${nodeNs})`, async () => {
        await run('ip', ['netns', 'exec', nodeNs, 'nft', 'delete', 'table', 'inet', table]).catch(
          (e: Error) => {
            if (!/No such file|does not exist|Cannot open network namespace/i.test(e.message))
              throw e;
          },
        );
      });
    }
    this.cleanup.add(`agent process ${child.pid ?? '?'}`, () => child.stop());
    await this.until(
      'the agent applies its first ruleset',
      () => this.agentRevision >= 0,
      30_000,
      child,
    );
  }

  #agentCleanupRecorded = false;

  async until(
    what: string,
    cond: () => boolean,
    timeoutMs: number,
    child?: LineChild,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (child && !child.running)
        throw new Error(
          `${child.name} exited while waiting for: ${what}${child.stderrTail ? `: ${child.stderrTail}` : ''}`,
        );
      if (Date.now() > deadline)
        throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Waits until the agent has applied revision `rv` (or later) in the kernel, and its
   * interception rules in the pods follow it.
   */
  async kernelAt(rv: number, timeoutMs = 15_000): Promise<void> {
    await this.until(
      `the agent applies revision ${rv}`,
      () => this.agentRevision >= rv,
      timeoutMs,
      this.agent,
    );
    // Then the pods' tables (one nft transaction per pod, after the node's).
    await this.until(
      `the agent's interception follows revision ${rv}`,
      () => this.interceptRevision >= rv,
      timeoutMs,
      this.agent,
    );
  }

  /** A pod: its namespace, then the CNI plugin's ADD (veth, address, registration through the agent). */
  async addPod(spec: PodSpec): Promise<Pod> {
    const short = spec.name.replace(/[^a-z0-9-]/g, '').slice(0, 40);
    const netns = `${this.prefix}-${short}`;
    const pod = new Pod(spec, netns);
    await run('ip', ['netns', 'add', netns]);
    this.cleanup.add(`network namespace ${netns}`, () =>
      run('ip', ['netns', 'del', netns]).then(() => undefined),
    );
    await run('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
    const containerId = `${this.prefix}-${spec.namespace}-${short}`;
    const env = (command: 'ADD'): NodeJS.ProcessEnv => ({
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/run/netns/${netns}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
      CNI_ARGS: `K8S_POD_NAMESPACE=${spec.namespace};K8S_POD_NAME=${spec.name}`,
      PALISADE_CNI_HOST_NETNS: this.nodeNs,
    });
    const conf = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'palisade-demo',
      type: 'palisade',
      ipam: { subnet: '10.244.0.0/24', dataDir: join(this.dir, 'ipam') },
      agentSocket: this.agentSocket,
    });
    const out = await run(process.execPath, [BIN, 'cni'], conf, env('ADD'));
    const result = JSON.parse(out) as {
      ips?: { address: string }[];
      interfaces?: { name: string; sandbox?: string }[];
    };
    pod.ip = (result.ips?.[0]?.address ?? '').split('/')[0] ?? '';
    pod.hostVeth = result.interfaces?.find((i) => i.sandbox === undefined)?.name ?? '';
    if (!pod.ip)
      throw new Error(`the CNI plugin gave ${spec.name} no address: ${out.slice(0, 300)}`);
    const { nodeNs } = this;
    const veth = pod.hostVeth;
    // No CNI DEL at the end: the endpoint, the address and the store go with the work
    // directory; the veth goes first (explicitly), then its namespace.
    if (veth)
      this.cleanup.add(`veth ${veth} (in ${nodeNs})`, () =>
        run('ip', ['-n', nodeNs, 'link', 'del', veth]).then(
          () => undefined,
          () => undefined, // gone with its namespace
        ),
      );
    // The orchestrator's part: record the address in the pod's status, as a kubelet does.
    const api = this.admin as DemoApi;
    const path = `/api/v1/core/Pod/${spec.namespace}/${spec.name}`;
    const current = (await api.must('GET', path)) as Record<string, unknown>;
    await api.must('PUT', path, {
      ...current,
      status: { podIP: pod.ip, podIPs: [{ ip: pod.ip }] },
    });
    this.pods.push(pod);
    return pod;
  }

  /** The pod's service (pod-app.mjs) in its namespace, calling peers by address and port. */
  async startApp(pod: Pod, role: string, peers: Readonly<Record<string, string>>): Promise<void> {
    const cfg = { name: pod.spec.name, role, appPort: APP_PORT, peers };
    const child = new LineChild(`service of ${pod.ref}`, 'ip', [
      'netns',
      'exec',
      pod.netns,
      process.execPath,
      APP,
      JSON.stringify(cfg),
    ]);
    pod.app = child;
    this.cleanup.add(`service process of ${pod.ref}`, () => child.stop(), 'processes');
    await child.waitFor((m) => m.ready === true, 20_000, 'ready line');
  }

  get appPort(): number {
    return APP_PORT;
  }

  pod(name: string): Pod {
    const p = this.pods.find((x) => x.spec.name === name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }
}

/** Whether this process may create namespaces and nftables tables (root, with ip and nft). */
export function liveRequirements(): string[] {
  const missing: string[] = [];
  if (process.platform !== 'linux') missing.push('Linux (network namespaces and nftables)');
  if (process.getuid?.() !== 0)
    missing.push('root (to create network namespaces, veths and an nftables table)');
  for (const [cmd, args] of [
    ['ip', ['-V']],
    ['nft', ['--version']],
  ] as const) {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' });
    } catch {
      missing.push(`the \`${cmd}\` command`);
    }
  }
  return missing;
}

/**
 * Removes the work directory, and again if a plugin run still in flight when the demo was
 * stopped writes into it meanwhile (its IPAM state, the agent's record): done only once the
 * tree has stayed gone for a moment. Bounded well under the cleanup's step limit.
 */
async function removeTree(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 25; attempt++) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
    } catch {
      // A writer raced the removal (ENOTEMPTY): go round again.
    }
    await new Promise((r) => setTimeout(r, 150));
    if (!existsSync(dir)) return;
  }
  throw new Error(`${dir} keeps being written to`);
}
