// The kernel side of an attachment: a veth pair between the node and the pod, the pod's /32
// address, a default route via a link-local gateway and static neighbour entries both ways.
// Owns: the `Netlink` port the plugin calls and its implementation with the `ip` command (run
// directly for the node side, under `nsenter --net=PATH` for the pod side, so CNI_NETNS may be
// any namespace file: /run/netns/NAME, /proc/PID/ns/net or another bind mount). Must never:
// touch an interface it did not name (every node-side name is `pl` + a hash of the attachment),
// or leave half an attachment behind when `attach` fails.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { CniError } from './cni-error.js';

/** The pod's next hop: link-local, so it never collides with a pool and needs no address on the node. */
export const POD_GATEWAY = '169.254.1.1';
/** Every node-side veth answers for the gateway with this address (as Calico does). */
export const NODE_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
export const HOST_VETH_PREFIX = 'pl';

function digest(containerId: string, ifname: string): Buffer {
  return createHash('sha256').update(`${containerId}\0${ifname}`).digest();
}

/** `pl` + 13 hex digits of the attachment's hash: 15 bytes, the kernel's limit. */
export function hostVethName(containerId: string, ifname: string): string {
  return HOST_VETH_PREFIX + digest(containerId, ifname).toString('hex').slice(0, 13);
}

/** A stable, locally administered unicast MAC for the pod side, so re-ADDs reproduce it. */
export function podMacFor(containerId: string, ifname: string): string {
  const d = digest(containerId, ifname);
  const bytes = [...d.subarray(16, 22)];
  bytes[0] = ((bytes[0] ?? 0) & 0xfe) | 0x02;
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export interface PodLink {
  /** CNI_NETNS: a path to the pod's network namespace. */
  readonly netns: string;
  readonly podIfname: string;
  readonly hostIfname: string;
  /** Dotted IPv4; configured as a /32. */
  readonly address: string;
  readonly podMac: string;
  readonly mtu: number | undefined;
}

export interface PodLinkRef {
  readonly netns: string | undefined;
  readonly podIfname: string;
  readonly hostIfname: string;
}

/** What the plugin needs from the kernel. */
export interface Netlink {
  /** Wires the pod; on failure removes whatever it created, then throws a CniError. */
  attach(link: PodLink): Promise<void>;
  /** Removes the attachment's interfaces; succeeds when they, or the namespace, are already gone. */
  detach(link: PodLinkRef): Promise<void>;
  /** Every way the attachment differs from what `attach` made; empty when it is intact. */
  inspect(link: PodLink): Promise<readonly string[]>;
}

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface IpNetlinkOptions {
  /**
   * A named network namespace (`ip netns`) that plays the node: the node side of every veth
   * lives there. Tests use it so they never touch the machine's own interfaces. Default: the
   * namespace this process runs in.
   */
  readonly hostNetns?: string;
  readonly ipCommand?: string;
  readonly nsenterCommand?: string;
  /** Per command. */
  readonly timeoutMs?: number;
}

const NOT_FOUND = /Cannot find device|does not exist|No such device/;

interface LinkJson {
  readonly ifname?: string;
  readonly flags?: readonly string[];
  readonly address?: string;
  readonly addr_info?: readonly {
    readonly family?: string;
    readonly local?: string;
    readonly prefixlen?: number;
  }[];
}

interface RouteJson {
  readonly dst?: string;
  readonly gateway?: string;
  readonly dev?: string;
}

function parseJsonList<T>(text: string): readonly T[] {
  try {
    const v: unknown = JSON.parse(text === '' ? '[]' : text);
    return Array.isArray(v) ? (v as T[]) : [];
  } catch {
    return [];
  }
}

/** `Netlink` with iproute2. */
export class IpNetlink implements Netlink {
  private readonly hostNetns: string | undefined;
  private readonly ip: string;
  private readonly nsenter: string;
  private readonly timeoutMs: number;

  constructor(options: IpNetlinkOptions = {}) {
    this.hostNetns = options.hostNetns;
    this.ip = options.ipCommand ?? 'ip';
    this.nsenter = options.nsenterCommand ?? 'nsenter';
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  private run(cmd: string, args: readonly string[], input?: string): Promise<RunResult> {
    return new Promise((resolve) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: this.timeoutMs });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (e) => resolve({ code: -1, stdout, stderr: `${stderr}${e.message}` }));
      child.on('close', (code, signal) =>
        resolve({
          code: code ?? -1,
          stdout,
          stderr: signal ? `${stderr}killed by ${signal}` : stderr,
        }),
      );
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? '');
    });
  }

  private host(args: readonly string[], input?: string): Promise<RunResult> {
    return this.run(this.ip, [...(this.hostNetns ? ['-n', this.hostNetns] : []), ...args], input);
  }

  private pod(netns: string, args: readonly string[], input?: string): Promise<RunResult> {
    return this.run(this.nsenter, [`--net=${netns}`, '--', this.ip, ...args], input);
  }

  private netlinkError(what: string, r: RunResult): CniError {
    return new CniError('CNI_ERR_NETLINK', `${what}: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  private async deleteHostVeth(name: string): Promise<void> {
    const r = await this.host(['link', 'del', 'dev', name]);
    if (r.code !== 0 && !NOT_FOUND.test(r.stderr)) throw this.netlinkError(`deleting ${name}`, r);
  }

  async attach(link: PodLink): Promise<void> {
    if (!existsSync(link.netns))
      throw new CniError('CNI_ERR_NETNS_MISSING', `network namespace ${link.netns} does not exist`);
    // A veth of this name can only be left over from an earlier ADD of the same attachment that
    // was interrupted: the name is a hash of (container id, ifname).
    await this.deleteHostVeth(link.hostIfname);
    const mtu = link.mtu === undefined ? [] : ['mtu', String(link.mtu)];
    const peerNs = this.hostNetns ?? String(process.pid);
    const podBatch = [
      [
        'link',
        'add',
        link.podIfname,
        'address',
        link.podMac,
        ...mtu,
        'type',
        'veth',
        'peer',
        'name',
        link.hostIfname,
        'address',
        NODE_VETH_MAC,
        ...mtu,
        'netns',
        peerNs,
      ],
      ['link', 'set', 'lo', 'up'],
      ['link', 'set', link.podIfname, 'up'],
      ['addr', 'add', `${link.address}/32`, 'dev', link.podIfname],
      ['route', 'add', `${POD_GATEWAY}/32`, 'dev', link.podIfname, 'scope', 'link'],
      ['route', 'add', 'default', 'via', POD_GATEWAY, 'dev', link.podIfname],
      [
        'neigh',
        'replace',
        POD_GATEWAY,
        'lladdr',
        NODE_VETH_MAC,
        'dev',
        link.podIfname,
        'nud',
        'permanent',
      ],
    ];
    const hostBatch = [
      ['link', 'set', link.hostIfname, 'up'],
      ['route', 'replace', `${link.address}/32`, 'dev', link.hostIfname, 'scope', 'link'],
      [
        'neigh',
        'replace',
        link.address,
        'lladdr',
        link.podMac,
        'dev',
        link.hostIfname,
        'nud',
        'permanent',
      ],
    ];
    const batch = (lines: readonly (readonly string[])[]): string =>
      lines.map((l) => l.join(' ')).join('\n') + '\n';
    const p = await this.pod(link.netns, ['-batch', '-'], batch(podBatch));
    if (p.code !== 0) {
      await this.deleteHostVeth(link.hostIfname).catch(() => undefined);
      if (/Command failed -:1\b/.test(p.stderr) && /File exists/.test(p.stderr))
        throw new CniError(
          'CNI_ERR_NETLINK',
          `an interface named ${link.podIfname} already exists in ${link.netns} (spec: ADD must fail then)`,
        );
      throw this.netlinkError(`configuring ${link.podIfname} in ${link.netns}`, p);
    }
    const h = await this.host(['-batch', '-'], batch(hostBatch));
    if (h.code !== 0) {
      await this.deleteHostVeth(link.hostIfname).catch(() => undefined);
      throw this.netlinkError(`configuring ${link.hostIfname} on the node`, h);
    }
  }

  async detach(link: PodLinkRef): Promise<void> {
    await this.deleteHostVeth(link.hostIfname);
    // Deleting one end of a veth deletes both; the pod side only survives if something renamed
    // or re-created it, so look once more when the namespace still exists. Best effort: the
    // namespace may be going away under us, or not be a namespace at all, and DEL must not fail
    // for what is already gone.
    if (link.netns !== undefined && existsSync(link.netns))
      await this.pod(link.netns, ['link', 'del', 'dev', link.podIfname]);
  }

  async inspect(link: PodLink): Promise<readonly string[]> {
    const problems: string[] = [];
    const hostLink = this.host(['-j', 'link', 'show', 'dev', link.hostIfname]);
    const hostRoute = this.host(['-j', 'route', 'show', 'exact', `${link.address}/32`]);
    if (!existsSync(link.netns)) {
      problems.push(`network namespace ${link.netns} does not exist`);
    } else {
      const [addr, routes] = await Promise.all([
        this.pod(link.netns, ['-j', 'addr', 'show', 'dev', link.podIfname]),
        this.pod(link.netns, ['-j', 'route', 'show', 'default']),
      ]);
      const podIf = addr.code === 0 ? parseJsonList<LinkJson>(addr.stdout)[0] : undefined;
      if (!podIf) {
        problems.push(`interface ${link.podIfname} is missing in ${link.netns}`);
      } else {
        if (!(podIf.flags ?? []).includes('UP'))
          problems.push(`interface ${link.podIfname} is down`);
        const has = (podIf.addr_info ?? []).some(
          (a) => a.family === 'inet' && a.local === link.address && a.prefixlen === 32,
        );
        if (!has) problems.push(`address ${link.address}/32 is missing on ${link.podIfname}`);
        const def = parseJsonList<RouteJson>(routes.stdout).some((r) => r.dev === link.podIfname);
        if (!def)
          problems.push(`the default route via ${link.podIfname} is missing in ${link.netns}`);
      }
    }
    const [hl, hr] = await Promise.all([hostLink, hostRoute]);
    const nodeIf = hl.code === 0 ? parseJsonList<LinkJson>(hl.stdout)[0] : undefined;
    if (!nodeIf) problems.push(`node-side interface ${link.hostIfname} is missing`);
    else if (!(nodeIf.flags ?? []).includes('UP'))
      problems.push(`node-side interface ${link.hostIfname} is down`);
    const routed = parseJsonList<RouteJson>(hr.stdout).some((r) => r.dev === link.hostIfname);
    if (!routed)
      problems.push(`the node has no route to ${link.address}/32 via ${link.hostIfname}`);
    return problems;
  }
}
