// Test support: a "node" network namespace (plays the host, forwards between pods) and pod
// namespaces joined to it by veth pairs, with a helper process in each pod that serves TCP/UDP
// echo and makes connection attempts on request. Names carry the pid; everything is removed by
// `destroy()` (namespaces take their veths with them). Never touches the host's own interfaces
// or rules: every command runs inside a namespace this file created.
// Owns: the test topology. Must never: be imported by product code.

import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HELPER = fileURLToPath(new URL('./pod-helper.mjs', import.meta.url));

function sh(args: string[]): string {
  return execFileSync(args[0] ?? 'true', args.slice(1), {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export function inNs(ns: string, args: string[]): string {
  return sh(['ip', 'netns', 'exec', ns, ...args]);
}

/** Whether this process can create network namespaces (root with ip and nft). */
export function canUseNetns(): boolean {
  try {
    if (process.getuid?.() !== 0) return false;
    sh(['nft', '--version']);
    sh(['ip', '-V']);
    return true;
  } catch {
    return false;
  }
}

export interface PodResult {
  readonly ok: boolean;
  readonly why?: string;
}

export class TestPod {
  private seq = 0;
  private readonly waiting = new Map<number, (r: PodResult) => void>();
  private proc: ChildProcessWithoutNullStreams | undefined;

  constructor(
    readonly ns: string,
    readonly hostIface: string,
    readonly ip: string,
  ) {}

  async start(ports: readonly string[]): Promise<void> {
    const p = spawn('ip', ['netns', 'exec', this.ns, process.execPath, HELPER, ...ports], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc = p;
    const rl = readline.createInterface({ input: p.stdout });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`pod helper in ${this.ns} did not start`)),
        10_000,
      );
      rl.on('line', (line) => {
        const m = JSON.parse(line) as { ready?: boolean; id?: number; ok?: boolean; why?: string };
        if (m.ready) {
          clearTimeout(t);
          resolve();
          return;
        }
        if (m.id === undefined) return;
        const w = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        w?.({ ok: m.ok === true, ...(m.why !== undefined ? { why: m.why } : {}) });
      });
      p.on('exit', () => {
        for (const w of this.waiting.values()) w({ ok: false, why: 'helper exited' });
        this.waiting.clear();
      });
    });
  }

  request(req: Record<string, unknown>): Promise<PodResult> {
    const id = ++this.seq;
    return new Promise((resolve) => {
      if (!this.proc) return resolve({ ok: false, why: 'not started' });
      this.waiting.set(id, resolve);
      this.proc.stdin.write(JSON.stringify({ ...req, id }) + '\n');
    });
  }

  tcp(host: string, port: number, timeout = 800): Promise<PodResult> {
    return this.request({ op: 'tcp', host, port, timeout });
  }

  udp(host: string, port: number, timeout = 800): Promise<PodResult> {
    return this.request({ op: 'udp', host, port, timeout });
  }

  /** Opens a long-lived TCP stream; returns its key for `ping`. */
  async open(host: string, port: number, timeout = 800): Promise<number | undefined> {
    const id = this.seq + 1;
    const r = await this.request({ op: 'open', host, port, timeout });
    return r.ok ? id : undefined;
  }

  ping(stream: number, timeout = 800): Promise<PodResult> {
    return this.request({ op: 'ping', stream, timeout });
  }

  stop(): void {
    this.proc?.stdin.end();
    this.proc?.kill('SIGKILL');
    this.proc = undefined;
  }
}

/** The node namespace and its pods, on a random 10.x.y.0/24 test subnet. */
export class TestNode {
  readonly ns: string;
  readonly subnet: string;
  readonly pods: TestPod[] = [];
  private readonly extraNs: string[] = [];
  private readonly tag: string;

  constructor(tag = 'a') {
    this.tag = `${process.pid % 100000}${tag}`;
    this.ns = `pl${this.tag}n`;
    const a = 100 + Math.floor(Math.random() * 150);
    const b = Math.floor(Math.random() * 250);
    this.subnet = `10.${a}.${b}`;
    sh(['ip', 'netns', 'add', this.ns]);
    inNs(this.ns, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(this.ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  }

  /** Adds pod `i` (1-based): namespace, veth pair, address 10.x.y.(i+1), routes. */
  addPod(i: number): TestPod {
    const podNs = `pl${this.tag}p${i}`;
    const host = `pl${this.tag}h${i}`;
    const ip = `${this.subnet}.${i + 1}`;
    const gw = `${this.subnet}.1`;
    sh(['ip', 'netns', 'add', podNs]);
    inNs(this.ns, [
      'ip',
      'link',
      'add',
      host,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      podNs,
    ]);
    inNs(this.ns, ['ip', 'addr', 'add', `${gw}/32`, 'dev', host]);
    inNs(this.ns, ['ip', 'link', 'set', host, 'up']);
    inNs(this.ns, ['ip', 'route', 'add', `${ip}/32`, 'dev', host]);
    inNs(podNs, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(podNs, ['ip', 'addr', 'add', `${ip}/32`, 'dev', 'eth0']);
    inNs(podNs, ['ip', 'link', 'set', 'eth0', 'up']);
    inNs(podNs, ['ip', 'route', 'add', gw, 'dev', 'eth0', 'scope', 'link']);
    inNs(podNs, ['ip', 'route', 'add', 'default', 'via', gw, 'dev', 'eth0']);
    const pod = new TestPod(podNs, host, ip);
    this.pods.push(pod);
    return pod;
  }

  /**
   * An "outside" namespace on a host interface of the node (a host endpoint): the node side gets
   * 192.168.z.1/24, the outside 192.168.z.2/24. Returns the outside helper and the node helper
   * (servers running in the node namespace itself) and the node's interface name.
   */
  addOutside(): { outside: TestPod; host: TestPod; iface: string } {
    const outNs = `pl${this.tag}o`;
    const iface = `pl${this.tag}x`;
    const z = 1 + Math.floor(Math.random() * 250);
    sh(['ip', 'netns', 'add', outNs]);
    this.extraNs.push(outNs);
    inNs(this.ns, [
      'ip',
      'link',
      'add',
      iface,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      outNs,
    ]);
    inNs(this.ns, ['ip', 'addr', 'add', `192.168.${z}.1/24`, 'dev', iface]);
    inNs(this.ns, ['ip', 'link', 'set', iface, 'up']);
    inNs(outNs, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(outNs, ['ip', 'addr', 'add', `192.168.${z}.2/24`, 'dev', 'eth0']);
    inNs(outNs, ['ip', 'link', 'set', 'eth0', 'up']);
    const outside = new TestPod(outNs, '', `192.168.${z}.2`);
    const host = new TestPod(this.ns, iface, `192.168.${z}.1`);
    this.pods.push(outside, host);
    return { outside, host, iface };
  }

  /** The prefix every host-side veth of this node shares. */
  get ifacePrefix(): string {
    return `pl${this.tag}h`;
  }

  nft(args: string[]): string {
    return inNs(this.ns, ['nft', ...args]);
  }

  destroy(): void {
    for (const p of this.pods) p.stop();
    for (const ns of new Set([...this.pods.map((p) => p.ns), ...this.extraNs])) {
      if (ns === this.ns) continue;
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
    try {
      sh(['ip', 'netns', 'del', this.ns]);
    } catch {
      // already gone
    }
  }
}
