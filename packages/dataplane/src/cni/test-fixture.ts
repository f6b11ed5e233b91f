// Test support for the CNI tests that use real network namespaces: a "node" namespace that plays
// the host (the node side of every veth lives there, so the machine's own interfaces are never
// touched), pod namespaces, a real agent socket in a temp dir, and ways to run the plugin in
// process or as the real `palisade cni` process. Everything is named with the pid and removed by
// `cleanup()`. Not a test file itself; imported only by tests.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pod } from '@palisade/core';
import { InMemoryEndpointRegistry } from '../agent-socket/endpoint-registry.js';
import { InMemoryPodTable } from '../agent-socket/pod-source.js';
import { CniEndpointService, startAgentSocket } from '../agent-socket/server.js';
import type { AgentSocket } from '../agent-socket/server.js';
import { defaultPluginDeps } from './command.js';
import { runCniPlugin } from './plugin.js';
import type { PluginOutput } from './plugin.js';

export const NODE_NAME = 'node-test';
const REPO = new URL('../../../../', import.meta.url).pathname;
export const PALISADE_BIN = join(REPO, 'packages/cli/bin/palisade.js');
const WORKER = new URL('./test-worker.ts', import.meta.url).pathname;

/** Whether this machine lets the tests create network namespaces. */
export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = `plprobe${process.pid}`;
  const r = spawnSync('ip', ['netns', 'add', probe]);
  if (r.status !== 0) return false;
  spawnSync('ip', ['netns', 'del', probe]);
  return true;
}

export function sh(
  cmd: string,
  args: readonly string[],
): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function must(cmd: string, args: readonly string[]): string {
  const r = sh(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

export function pod(
  namespace: string,
  name: string,
  extra: Partial<Pod['spec']> = {},
  labels: Record<string, string> = {},
): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace, name, labels },
    spec: { nodeName: NODE_NAME, ...extra },
  };
}

export interface Invocation {
  readonly command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION';
  readonly containerId: string;
  readonly netns?: string;
  readonly ifname?: string;
  readonly args?: string;
  /** Overrides of the network configuration. */
  readonly conf?: Record<string, unknown>;
}

export interface ProcessOutput extends PluginOutput {
  readonly ms: number;
}

export class NetnsFixture {
  readonly id = `${process.pid}${Math.floor(Math.random() * 1000)}`;
  readonly nodeNs = `plnode${this.id}`;
  readonly dir = mkdtempSync(join(tmpdir(), `palisade-cni-${process.pid}-`));
  readonly dataDir = join(this.dir, 'data');
  readonly socketPath = join(this.dir, 'agent.sock');
  readonly pods = new InMemoryPodTable();
  readonly registry = new InMemoryEndpointRegistry();
  private readonly podNamespaces = new Set<string>();
  private agent: AgentSocket | undefined;

  constructor(readonly subnet: string) {}

  async start(): Promise<void> {
    must('ip', ['netns', 'add', this.nodeNs]);
    must('ip', ['-n', this.nodeNs, 'link', 'set', 'lo', 'up']);
    // Forwarding between pods is switched on inside the node namespace only.
    must('ip', ['netns', 'exec', this.nodeNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    this.agent = await startAgentSocket({
      socketPath: this.socketPath,
      service: new CniEndpointService({
        node: NODE_NAME,
        pods: this.pods,
        registry: this.registry,
      }),
    });
  }

  /** A fresh pod namespace; returns its name (the netns path is `/run/netns/<name>`). */
  addPodNs(suffix: string): string {
    const name = `plpod${this.id}${suffix}`;
    must('ip', ['netns', 'add', name]);
    this.podNamespaces.add(name);
    return name;
  }

  delPodNs(name: string): void {
    sh('ip', ['netns', 'del', name]);
    this.podNamespaces.delete(name);
  }

  conf(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      cniVersion: '1.0.0',
      name: 'palisade',
      type: 'palisade',
      ipam: { subnet: this.subnet, dataDir: this.dataDir },
      agentSocket: this.socketPath,
      ...overrides,
    };
  }

  env(inv: Invocation): Record<string, string> {
    return {
      CNI_COMMAND: inv.command,
      CNI_CONTAINERID: inv.containerId,
      ...(inv.netns !== undefined ? { CNI_NETNS: inv.netns } : {}),
      CNI_IFNAME: inv.ifname ?? 'eth0',
      CNI_ARGS: inv.args ?? '',
      CNI_PATH: '/opt/cni/bin',
      PALISADE_CNI_HOST_NETNS: this.nodeNs,
    };
  }

  /** The plugin with its real ports, in this process. */
  run(inv: Invocation): Promise<PluginOutput> {
    const env = this.env(inv);
    return runCniPlugin(env, JSON.stringify(this.conf(inv.conf)), defaultPluginDeps(env));
  }

  /** The plugin as the runtime runs it: the `palisade` executable, config on stdin. */
  exec(inv: Invocation, argv: readonly string[] = ['cni']): Promise<ProcessOutput> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [PALISADE_BIN, ...argv], {
        env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...this.env(inv) },
        stdio: ['pipe', 'pipe', 'pipe'],
        timeout: 50_000,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) =>
        resolve({ exitCode: code ?? -1, stdout, stderr, ms: Date.now() - started }),
      );
      child.stdin.end(JSON.stringify(this.conf(inv.conf)));
    });
  }

  /**
   * Starts one plugin process per invocation, waits until every one has loaded, then releases
   * them at once; resolves with each one's output and how long its invocation took after the
   * release.
   */
  async execTogether(
    invs: readonly Invocation[],
  ): Promise<{ outputs: ProcessOutput[]; startupMs: number }> {
    const started = Date.now();
    const workers = invs.map((inv) => {
      const child = spawn(process.execPath, ['--import', 'tsx', WORKER], {
        cwd: REPO,
        env: {
          PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
          ...this.env(inv),
          PALISADE_CNI_CONF: JSON.stringify(this.conf(inv.conf)),
        },
        stdio: ['pipe', 'pipe', 'pipe'],
        timeout: 55_000,
      });
      let text = '';
      let markReady: () => void = () => undefined;
      const ready = new Promise<void>((r) => (markReady = r));
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        text += d;
        if (text.includes('ready')) markReady();
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (text += d));
      const done = new Promise<string>((resolve, reject) => {
        child.on('error', reject);
        child.on('close', () => {
          markReady(); // a worker that died before "ready" must not hold the others back
          resolve(text);
        });
      });
      return { child, ready, done };
    });
    await Promise.all(workers.map((w) => w.ready));
    const startupMs = Date.now() - started;
    const released = Date.now();
    for (const w of workers) w.child.stdin.end('go\n');
    const outputs = await Promise.all(
      workers.map(async (w): Promise<ProcessOutput> => {
        const text = await w.done;
        const ms = Date.now() - released;
        const json = text.split('\n').find((l) => l.startsWith('{'));
        if (json === undefined) return { exitCode: -1, stdout: '', stderr: text, ms };
        return { ...(JSON.parse(json) as PluginOutput), ms };
      }),
    );
    return { outputs, startupMs };
  }

  nodeLinks(): string[] {
    const out = must('ip', ['-n', this.nodeNs, '-j', 'link', 'show']);
    return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname);
  }

  async cleanup(): Promise<void> {
    await this.agent?.close();
    for (const ns of this.podNamespaces) sh('ip', ['netns', 'del', ns]);
    sh('ip', ['netns', 'del', this.nodeNs]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
