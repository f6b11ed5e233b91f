// Address and CIDR text for kernel sets: canonical, sorted and non-overlapping, because nftables
// interval sets refuse overlapping elements and drift detection compares text.
// Owns: formatting the engine's numeric addresses. Must never: parse user input (the core does).

import { formatIp as formatCoreIp } from '@palisade/core';
import type { Cidr, IpAddr } from './types.js';

/** Canonical text (RFC 5952 for IPv6) of a numeric address, by the core's one formatter. */
export function formatAddr(family: 4 | 6, value: bigint): string {
  return formatCoreIp({ family, value });
}

export function formatIp(ip: IpAddr): string {
  return formatAddr(ip.family, ip.value);
}

interface Span {
  readonly base: bigint;
  readonly prefix: number;
}

/** Sorted, without duplicates and without CIDRs contained in another of the list. */
function normalise(spans: Span[], bits: number): string[] {
  spans.sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : a.prefix - b.prefix));
  const out: string[] = [];
  let coverEnd = -1n;
  for (const s of spans) {
    const end = s.base + (1n << BigInt(bits - s.prefix)) - 1n;
    if (s.base <= coverEnd) continue; // contained in the previous (CIDRs nest or are disjoint)
    coverEnd = end;
    const addr = formatAddr(bits === 32 ? 4 : 6, s.base);
    out.push(s.prefix === bits ? addr : `${addr}/${s.prefix}`);
  }
  return out;
}

/** Addresses and CIDRs split per family, normalised. */
export function addressElements(
  ips: readonly IpAddr[],
  cidrs: readonly Cidr[],
): { v4: string[]; v6: string[] } {
  const v4: Span[] = [];
  const v6: Span[] = [];
  for (const ip of ips)
    (ip.family === 4 ? v4 : v6).push({ base: ip.value, prefix: ip.family === 4 ? 32 : 128 });
  for (const c of cidrs) (c.family === 4 ? v4 : v6).push({ base: c.base, prefix: c.prefix });
  return { v4: normalise(v4, 32), v6: normalise(v6, 128) };
}

export function cidrText(c: Cidr): string {
  const bits = c.family === 4 ? 32 : 128;
  const a = formatAddr(c.family, c.base);
  return c.prefix === bits ? a : `${a}/${c.prefix}`;
}
