// IPv4 addresses as 32-bit unsigned numbers, for the address pool. Owns: strict parsing (no
// leading zeros, no shorthand) and formatting. Must never: accept anything it cannot round-trip.

export interface Ipv4Cidr {
  /** Network address, host bits clear. */
  readonly network: number;
  readonly prefix: number;
}

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses dotted-quad text; undefined for anything else (IPv6, leading zeros, out of range). */
export function parseIpv4(s: string): number | undefined {
  const m = DOTTED.exec(s);
  if (!m) return undefined;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i] ?? '';
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    v = v * 256 + n;
  }
  return v;
}

export function formatIpv4(v: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(v / 2 ** s) % 256).join('.');
}

/** Size of the block a prefix describes. */
export function blockSize(prefix: number): number {
  return 2 ** (32 - prefix);
}

export type CidrParse =
  { readonly ok: true; readonly cidr: Ipv4Cidr } | { readonly ok: false; readonly reason: string };

/** Parses `a.b.c.d/n` and requires the host bits to be clear (a pool, not an address). */
export function parseIpv4Cidr(s: string): CidrParse {
  const slash = s.indexOf('/');
  if (slash < 0) return { ok: false, reason: 'expected a CIDR such as 10.244.0.0/16' };
  const addrText = s.slice(0, slash);
  const prefixText = s.slice(slash + 1);
  if (addrText.includes(':')) return { ok: false, reason: 'IPv6 pools are not supported yet' };
  const addr = parseIpv4(addrText);
  if (addr === undefined)
    return { ok: false, reason: `${JSON.stringify(addrText)} is not an IPv4 address` };
  if (!/^\d{1,2}$/.test(prefixText) || Number(prefixText) > 32)
    return { ok: false, reason: `prefix ${JSON.stringify(prefixText)} is not 0..32` };
  const prefix = Number(prefixText);
  const size = blockSize(prefix);
  if (addr % size !== 0)
    return {
      ok: false,
      reason: `host bits are set; the network is ${formatIpv4(addr - (addr % size))}/${prefix}`,
    };
  return { ok: true, cidr: { network: addr, prefix } };
}

export function cidrHas(c: Ipv4Cidr, v: number): boolean {
  return v >= c.network && v < c.network + blockSize(c.prefix);
}

export function formatCidr(c: Ipv4Cidr): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}
