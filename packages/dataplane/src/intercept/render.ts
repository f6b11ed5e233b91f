// Transparent interception inside a pod's network namespace, as nftables text (pure). Inbound TCP
// to the application's ports is redirected to the sidecar port that serves that application port
// (one listener per port, so the original port is known exactly); outbound TCP from the pod to a
// destination the endpoint may call is redirected to a loopback port the outbound proxy keeps
// for exactly that destination (Node cannot read SO_ORIGINAL_DST, so the local port IS the
// original destination). The sidecar's own sockets run under a dedicated uid and are never
// redirected (`meta skuid`); loopback traffic is never redirected.
// Owns: the rules and their validation. Must never: render a rule naming a table other than its
// own, or accept a specification that could loop the sidecar's traffic or shadow its ports.

import { isIP } from 'node:net';
import { validTableName } from '../nft/render.js';
import type { Rendered } from '../nft/render.js';
import { DataplaneError } from '../errors.js';

export const DEFAULT_INTERCEPT_TABLE = 'palisade_intercept';

/** An application port and the sidecar port (in the same namespace) that serves it. */
export interface InboundRedirect {
  readonly appPort: number;
  readonly sidecarPort: number;
}

/** A destination the endpoint may call and the loopback port the outbound proxy keeps for it. */
export interface OutboundRedirect {
  readonly ip: string;
  readonly port: number;
  readonly sidecarPort: number;
}

export interface InterceptionSpec {
  /** The owned table in family inet (default `palisade_intercept`). */
  readonly table?: string;
  readonly inbound: readonly InboundRedirect[];
  readonly outbound: readonly OutboundRedirect[];
  /** The uid the sidecar runs under: its sockets are never redirected. Must not be 0. */
  readonly sidecarUid: number;
  /**
   * Outbound TCP to any other destination: `pass` leaves it to the kernel policy (L4 only,
   * plaintext), `reject` answers a TCP reset so nothing leaves the pod un-proxied.
   */
  readonly otherOutbound: 'pass' | 'reject';
  /** Destination ports that are neither redirected nor rejected (e.g. 53 for DNS over TCP). */
  readonly passOutboundPorts?: readonly number[];
}

function bad(message: string): never {
  throw new DataplaneError('DATAPLANE_ERR_INTERCEPT_SPEC', message);
}

function port(n: unknown, what: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535)
    bad(`${what} must be an integer port 1-65535, got ${JSON.stringify(n)}`);
  return n;
}

/** The address in the form nft prints (IPv6 compressed, lower case), or why it is refused. */
function destinationAddress(ip: unknown): { family: 4 | 6; text: string } {
  if (typeof ip !== 'string') bad(`destination address must be a string`);
  const fam = isIP(ip);
  if (fam === 0) bad(`destination ${JSON.stringify(ip)} is not an IP address`);
  // new URL canonicalises IPv6 (RFC 5952 form, as nft prints it).
  const text = fam === 6 ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
  if (fam === 4 && (text.startsWith('127.') || text === '0.0.0.0'))
    bad(`destination ${text} is loopback or unspecified (loopback is never redirected)`);
  if (fam === 6 && (text === '::1' || text === '::' || text.startsWith('::ffff:')))
    bad(`destination ${text} is loopback, unspecified or IPv4-mapped`);
  return { family: fam === 6 ? 6 : 4, text };
}

/** Validates a specification; throws `DATAPLANE_ERR_INTERCEPT_SPEC` with the first problem. */
export function validateInterception(spec: InterceptionSpec): void {
  const table = spec.table ?? DEFAULT_INTERCEPT_TABLE;
  if (!validTableName(table)) bad(`invalid table name ${JSON.stringify(table)}`);
  if (!Number.isInteger(spec.sidecarUid) || spec.sidecarUid < 1 || spec.sidecarUid > 0xfffffffe)
    bad(`sidecarUid must be a non-root uid (1-4294967294), got ${JSON.stringify(spec.sidecarUid)}`);
  if (spec.otherOutbound !== 'pass' && spec.otherOutbound !== 'reject')
    bad(`otherOutbound must be "pass" or "reject"`);
  const appPorts = new Set<number>();
  const sidecarPorts = new Set<number>();
  const claim = (p: number, what: string): void => {
    if (sidecarPorts.has(p)) bad(`sidecar port ${p} is used twice (${what})`);
    sidecarPorts.add(p);
  };
  for (const r of spec.inbound) {
    const a = port(r.appPort, 'inbound appPort');
    if (appPorts.has(a)) bad(`application port ${a} is listed twice`);
    appPorts.add(a);
    claim(port(r.sidecarPort, 'inbound sidecarPort'), `inbound for ${a}`);
  }
  const dests = new Set<string>();
  for (const r of spec.outbound) {
    const d = destinationAddress(r.ip);
    const key = `${d.text} . ${port(r.port, 'outbound port')}`;
    if (dests.has(key)) bad(`outbound destination ${d.text}:${r.port} is listed twice`);
    dests.add(key);
    claim(port(r.sidecarPort, 'outbound sidecarPort'), `outbound for ${d.text}:${r.port}`);
  }
  for (const p of sidecarPorts)
    if (appPorts.has(p))
      bad(`port ${p} is both an application port and a sidecar port (the redirect would loop)`);
  for (const p of spec.passOutboundPorts ?? []) port(p, 'passOutboundPorts entry');
}

function elements(entries: readonly string[]): string {
  return entries.length === 0 ? '' : `\t\telements = { ${entries.join(', ')} }`;
}

const byNumber = (a: number, b: number): number => a - b;

/**
 * The owned table for a specification (validated first). Everything, map contents included, is
 * in `script`: the table is small and is always replaced in one transaction.
 */
export function renderInterception(spec: InterceptionSpec): Rendered {
  validateInterception(spec);
  const table = spec.table ?? DEFAULT_INTERCEPT_TABLE;
  const inbound = [...spec.inbound]
    .sort((a, b) => a.appPort - b.appPort)
    .map((r) => `${r.appPort} : ${r.sidecarPort}`);
  const out4: string[] = [];
  const out6: string[] = [];
  for (const r of [...spec.outbound].sort(
    (a, b) => a.sidecarPort - b.sidecarPort || a.port - b.port,
  )) {
    const d = destinationAddress(r.ip);
    (d.family === 4 ? out4 : out6).push(`${d.text} . ${r.port} : ${r.sidecarPort}`);
  }
  const pass = [...new Set(spec.passOutboundPorts ?? [])].sort(byNumber);
  const lines: string[] = [
    `table inet ${table} {`,
    `\tmap inbound_ports {`,
    `\t\ttype inet_service : inet_service`,
    `\t\tcomment "application port : sidecar port"`,
    elements(inbound),
    `\t}`,
    `\tmap outbound4 {`,
    `\t\ttype ipv4_addr . inet_service : inet_service`,
    `\t\tcomment "destination . port : outbound proxy port"`,
    elements(out4),
    `\t}`,
    `\tmap outbound6 {`,
    `\t\ttype ipv6_addr . inet_service : inet_service`,
    `\t\tcomment "destination . port : outbound proxy port"`,
    elements(out6),
    `\t}`,
    // Before the kernel's usual dstnat (-100), so nothing else rewrites these first.
    `\tchain prerouting {`,
    `\t\ttype nat hook prerouting priority -110; policy accept;`,
    `\t\tiifname "lo" return`,
    `\t\tmeta l4proto tcp redirect to : tcp dport map @inbound_ports`,
    `\t}`,
    `\tchain output {`,
    `\t\ttype nat hook output priority -110; policy accept;`,
    `\t\tmeta l4proto != tcp return`,
    `\t\toifname "lo" counter return comment "loopback"`,
    `\t\tmeta skuid ${spec.sidecarUid} counter return comment "the sidecar's own connections"`,
    ...(pass.length > 0 ? [`\t\ttcp dport { ${pass.join(', ')} } counter return`] : []),
    `\t\tmeta nfproto ipv4 meta l4proto tcp redirect to : ip daddr . tcp dport map @outbound4`,
    `\t\tmeta nfproto ipv6 meta l4proto tcp redirect to : ip6 daddr . tcp dport map @outbound6`,
    ...(spec.otherOutbound === 'reject'
      ? [`\t\tmeta l4proto tcp counter reject with tcp reset comment "not a known destination"`]
      : []),
    `\t}`,
    `}`,
  ];
  const script = lines.filter((l) => l !== '').join('\n') + '\n';
  return { table, skeleton: script, elements: new Map(), script };
}

/**
 * Loopback ports for outbound destinations, assigned in a stable order (destination address,
 * then port) from `firstPort`, skipping `reserved`. The agent and the outbound proxy must use the
 * same assignment; both get it from this function or from the same rendered list.
 */
export function assignOutboundPorts(
  destinations: readonly { readonly ip: string; readonly port: number }[],
  firstPort: number,
  reserved: readonly number[] = [],
): OutboundRedirect[] {
  const taken = new Set(reserved);
  const seen = new Set<string>();
  const sorted = destinations
    .map((d) => ({ ip: destinationAddress(d.ip).text, port: port(d.port, 'destination port') }))
    .filter((d) => {
      const k = `${d.ip} ${d.port}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    })
    .sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port));
  const out: OutboundRedirect[] = [];
  let next = port(firstPort, 'firstPort');
  for (const d of sorted) {
    while (taken.has(next)) next++;
    out.push({ ...d, sidecarPort: port(next, 'assigned outbound port') });
    next++;
  }
  return out;
}
