// Reads the node's interfaces and their addresses (`ip -j address show`, optionally in a network
// namespace) for host endpoints given by `expectedIPs`. Every line of output is checked before it
// is believed; anything malformed makes the whole read fail (the caller keeps what it had).
// Owns: the one `ip` read of the agent. Must never: change an interface.

import { spawn } from 'node:child_process';
import type { HostInterface } from '../calc/host-endpoints.js';

export type HostInterfaceReader = () => Promise<readonly HostInterface[]>;

const IFNAME = /^[^\s/]{1,15}$/;

/** Parses `ip -j address show` output; throws on anything that is not its shape. */
export function parseIpAddressJson(text: string): HostInterface[] {
  const v: unknown = JSON.parse(text);
  if (!Array.isArray(v)) throw new Error('ip address output is not a list');
  const out: HostInterface[] = [];
  for (const link of v as unknown[]) {
    if (typeof link !== 'object' || link === null) throw new Error('ip address: bad link entry');
    const l = link as { ifname?: unknown; addr_info?: unknown };
    if (typeof l.ifname !== 'string' || !IFNAME.test(l.ifname))
      throw new Error('ip address: bad interface name');
    const addresses: string[] = [];
    for (const a of Array.isArray(l.addr_info) ? (l.addr_info as unknown[]) : []) {
      const local = (a as { local?: unknown } | null)?.local;
      if (typeof local === 'string') addresses.push(local);
    }
    out.push({ name: l.ifname, addresses });
  }
  return out;
}

/** The reader the agent uses by default: `ip` in the agent's network namespace. */
export function ipHostInterfaces(netns?: string, timeoutMs = 5_000): HostInterfaceReader {
  return () =>
    new Promise((resolve, reject) => {
      const args = [...(netns !== undefined ? ['-n', netns] : []), '-j', 'address', 'show'];
      const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => {
        if (code !== 0) {
          reject(new Error(`ip address show: ${stderr.trim() || `exit ${code ?? '?'}`}`));
          return;
        }
        try {
          resolve(parseIpAddressJson(stdout));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
}
