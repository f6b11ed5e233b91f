// Address and CIDR text for kernel sets: canonical, sorted and non-overlapping, because nftables
// interval sets refuse overlapping elements and drift detection compares text.
// Owns: formatting the engine's numeric addresses. Must never: parse user input (the core does).

import type { Cidr, IpAddr } from './types.js';

export function formatAddr(family: 4 | 6, value: bigint): string {
  if (family === 4) {
    const v = Number(value);
    return [24, 16, 8, 0].map((s) => (v >>> s) & 255).join('.');
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
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
