// Random flow records for the store's tests and its second-writer worker: small pools of
// endpoints, policies and labels so that records collide into the same rollup groups, windows
// that straddle bucket boundaries, and addresses without an endpoint name.

import type { FlowRecordInput } from './flow-record.js';

/** A deterministic generator (xorshift). */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

export const POOL = {
  namespaces: ['shop', 'db', 'ops'],
  names: ['web', 'pg', 'cache', 'job'],
  policies: ['db/allow-web', 'shop/allow-all', 'ops/deny-x'],
  tiers: ['security', 'default'],
  nodes: ['node-0', 'node-1', 'node-2'],
} as const;

export function randomEndpoint(r: () => number): FlowRecordInput['source'] {
  const i = Math.floor(r() * 6);
  if (i === 5) return { ip: `192.0.2.${1 + Math.floor(r() * 3)}` };
  const ns = pick(r, POOL.namespaces);
  const name = pick(r, POOL.names);
  return {
    // Two addresses for one endpoint now and then (dual-stack, a restarted pod).
    ip: `10.0.${POOL.namespaces.indexOf(ns)}.${POOL.names.indexOf(name) + (r() < 0.1 ? 100 : 0)}`,
    namespace: ns,
    name,
    ...(r() < 0.8 ? { labels: { app: name, ...(r() < 0.2 ? { v: String(i) } : {}) } } : {}),
    ...(r() < 0.5 ? { port: Math.floor(r() * 65536) } : {}),
  };
}

/** One random record whose window ends within `spreadMs` (default 10 minutes) before `now`. */
export function randomRecord(r: () => number, now: number, spreadMs = 600_000): FlowRecordInput {
  // Ends on a minute or an hour boundary now and then, to test the bucket edges.
  const edge = r();
  const endMs =
    edge < 0.1
      ? Math.floor((now - r() * spreadMs) / 60_000) * 60_000
      : edge < 0.15
        ? Math.floor((now - r() * spreadMs) / 3_600_000) * 3_600_000
        : now - Math.floor(r() * spreadMs);
  const spanMs = r() < 0.05 ? Math.floor(r() * 300_000) : Math.floor(r() * 10_000);
  const deny = r() < 0.4;
  const kind = pick(r, ['rule', 'rule', 'tier-default', 'no-policy'] as const);
  return {
    start: new Date(endMs - spanMs).toISOString(),
    end: new Date(endMs).toISOString(),
    source: randomEndpoint(r),
    destination: randomEndpoint(r),
    protocol: r() < 0.9 ? 'TCP' : 'UDP',
    verdict: deny ? 'deny' : 'allow',
    point: r() < 0.3 ? 'l7' : 'kernel',
    direction: 'ingress',
    provenance:
      kind === 'rule'
        ? { kind, tier: pick(r, POOL.tiers), policy: pick(r, POOL.policies), rule: 0 }
        : kind === 'tier-default'
          ? { kind, tier: pick(r, POOL.tiers) }
          : { kind },
    packets: 1,
    bytes: 60,
    count: 1 + Math.floor(r() * 5),
  };
}

export function randomBatch(
  r: () => number,
  now: number,
  n: number,
  spreadMs?: number,
): FlowRecordInput[] {
  return Array.from({ length: n }, () => randomRecord(r, now, spreadMs));
}
