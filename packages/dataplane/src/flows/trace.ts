// Kernel flow observations from nftables tracing (pure: text in, observations out). The flow
// source marks the first packet of each new connection with `meta nftrace set 1`; the kernel then
// reports every rule that packet meets, and `nft monitor trace` prints them one line each:
//   trace id 1a2b inet palisade forward_egress packet: iif "h1" ... ip saddr A ip daddr B ...
//   trace id 1a2b inet palisade tin-x-... rule ... drop comment "default deny of tier t" (verdict drop)
// A rule of the owned table with verdict accept or drop decided one direction; its comment is the
// renderer's provenance text (nft/render.ts), which names the tier, the policy and the rule.
// Owns: the line grammar and the comment grammar. Must never: guess a provenance it cannot read
// (an unknown comment becomes kind `unmanaged` with the comment as its reason).

import type { FlowObservation, ObservedProvenance } from './observation.js';

export interface TracePacket {
  readonly srcIp: string;
  readonly dstIp: string;
  readonly protocol: string;
  readonly srcPort?: number;
  readonly dstPort?: number;
  readonly length: number;
}

export type TraceLine =
  | {
      readonly kind: 'packet';
      readonly id: string;
      readonly table: string;
      readonly chain: string;
      readonly packet: TracePacket;
    }
  | {
      readonly kind: 'rule';
      readonly id: string;
      readonly table: string;
      readonly chain: string;
      readonly comment: string | undefined;
      readonly verdict: string;
      /**
       * Set when nft printed `unknown rule handle N`: a rule added after the monitor started is
       * not in its cache (it never refreshes it), so the comment must be looked up by handle.
       */
      readonly handle?: number;
    }
  | { readonly kind: 'other' };

const HEAD_RE =
  /^trace id ([0-9a-f]{1,16}) (?:inet|ip|ip6) ([A-Za-z][A-Za-z0-9_]{0,31}) (\S{1,64}) (packet: |rule |unknown rule |policy |verdict )(.*)$/;
const PROTO: Readonly<Record<string, string>> = {
  tcp: 'TCP',
  udp: 'UDP',
  sctp: 'SCTP',
  icmp: 'ICMP',
  'ipv6-icmp': 'ICMPv6',
  icmpv6: 'ICMPv6',
};

function field(text: string, re: RegExp): string | undefined {
  return re.exec(text)?.[1];
}

function port(text: string, which: 'sport' | 'dport'): number | undefined {
  const v = field(text, new RegExp(`\\b(?:tcp|udp|sctp|udplite|th) ${which} (\\d{1,5})\\b`));
  const n = v === undefined ? undefined : Number(v);
  return n !== undefined && n <= 65535 ? n : undefined;
}

/** One line of `nft monitor trace`. Lines of other shapes are `other` (never an error). */
export function parseTraceLine(line: string): TraceLine {
  if (line.length > 8192) return { kind: 'other' };
  const m = HEAD_RE.exec(line.trimEnd());
  if (!m) return { kind: 'other' };
  const [, id = '', table = '', chain = '', what = '', rest = ''] = m;
  if (what === 'packet: ') {
    const src = field(rest, /\bip6? saddr ([0-9a-fA-F.:]{2,45})\b/);
    const dst = field(rest, /\bip6? daddr ([0-9a-fA-F.:]{2,45})\b/);
    if (src === undefined || dst === undefined) return { kind: 'other' };
    const protoName =
      field(rest, /\bip protocol (\S+)/) ?? field(rest, /\bip6 nexthdr (\S+)/) ?? '';
    const protocol =
      PROTO[protoName] ??
      (/^\d{1,3}$/.test(protoName) ? protoName : protoName.toUpperCase() || '0');
    const len = Number(field(rest, /\bip6? length (\d{1,5})\b/) ?? 0);
    const sp = port(rest, 'sport');
    const dp = port(rest, 'dport');
    return {
      kind: 'packet',
      id,
      table,
      chain,
      packet: {
        srcIp: src,
        dstIp: dst,
        protocol,
        ...(sp !== undefined ? { srcPort: sp } : {}),
        ...(dp !== undefined ? { dstPort: dp } : {}),
        length: Number.isFinite(len) ? len : 0,
      },
    };
  }
  if (what === 'unknown rule ') {
    const u = /^handle (\d{1,10}) \(verdict ([a-z]+)(?: [^)]*)?\)\s*$/.exec(rest);
    if (!u?.[2]) return { kind: 'other' };
    return {
      kind: 'rule',
      id,
      table,
      chain,
      comment: undefined,
      verdict: u[2],
      handle: Number(u[1]),
    };
  }
  if (what === 'rule ') {
    const v = /\(verdict ([a-z]+)(?: [^)]*)?\)\s*$/.exec(rest);
    if (!v?.[1]) return { kind: 'other' };
    const c = /\bcomment "([^"]*)"/.exec(rest);
    return { kind: 'rule', id, table, chain, comment: c?.[1], verdict: v[1] };
  }
  return { kind: 'other' };
}

/** The renderer's comment → provenance (the inverse of nft/render.ts's texts). */
export function provenanceFromComment(comment: string | undefined): ObservedProvenance {
  const c = comment ?? '';
  let m = /^profile (.+)\/rule (\d+)$/.exec(c);
  if (m?.[1]) return { kind: 'profile', profile: m[1], rule: Number(m[2]), reason: c };
  m = /^([^/]*)\/(.+)\/rule (\d+)$/.exec(c);
  if (m?.[2])
    return {
      kind: 'rule',
      ...(m[1] ? { tier: m[1] } : {}),
      policy: m[2],
      rule: Number(m[3]),
      reason: c,
    };
  m = /^default deny of tier (.+)$/.exec(c);
  if (m?.[1]) return { kind: 'tier-default', tier: m[1], reason: c };
  if (
    /^no policy selects /.test(c) ||
    /^tiers of .+ passed$/.test(c) ||
    /^host endpoint .+: default deny$/.test(c)
  )
    return { kind: 'no-policy', reason: c };
  if (/^no rule of the profiles of /.test(c)) return { kind: 'profile-default', reason: c };
  if (/^fail-safe /.test(c)) return { kind: 'failsafe', reason: c };
  if (
    /^source is not an address of |has no IPv[46] address$|^workload interface without a program$|^invalid connection state$/.test(
      c,
    )
  )
    return { kind: 'guard', reason: c };
  return { kind: 'unmanaged', reason: c === '' ? 'a rule without provenance' : c };
}

const BASE_CHAINS = new Set(['forward_egress', 'forward_ingress', 'input', 'output']);

/** Direction of a decision from the chain it was made in (the renderer's chain prefixes). */
export function directionOfChain(chain: string): 'ingress' | 'egress' | undefined {
  const p = /^([wthp])(in|eg)-/.exec(chain);
  if (p) return p[2] === 'in' ? 'ingress' : 'egress';
  if (chain === 'forward_egress' || chain === 'input') return 'egress';
  if (chain === 'forward_ingress' || chain === 'output') return 'ingress';
  return undefined;
}

/**
 * Comments of the owned table's rules by handle (`nft -a -j list table`), for the rules `nft
 * monitor trace` prints as `unknown rule handle N`. `comment` answers `undefined` for a handle
 * it does not hold (the assembler then asks for a refresh and holds the decision until it is
 * done), and `null` for a known rule without a comment.
 */
export interface RuleComments {
  comment(chain: string, handle: number): string | null | undefined;
  /** Asks for a fresh listing; `TraceAssembler.replay()` is called once it is in. */
  refresh(): void;
}

interface Held {
  readonly timeMs: number;
  readonly chain: string;
  readonly handle: number;
  readonly verdict: string;
  readonly packet: TracePacket;
}

/**
 * Groups trace lines by trace id and emits one observation per decision of the owned table.
 * Holds at most `maxPending` unfinished traces (oldest forgotten first), so a flood of traces
 * whose verdict never comes cannot grow it; decisions waiting for a rule's comment are bounded
 * the same way (what cannot be held or resolved is counted in `orphans`).
 */
export class TraceAssembler {
  private readonly packets = new Map<string, TracePacket>();
  private held: Held[] = [];
  /** Decisions whose packet line was never seen, or whose rule could not be found (parse shed). */
  orphans = 0;
  /** Set by the kernel source: comments by handle. */
  comments: RuleComments | undefined;

  constructor(
    private readonly table: string,
    private readonly emit: (o: FlowObservation) => void,
    private readonly now: () => number = Date.now,
    private readonly maxPending = 10_000,
  ) {}

  line(text: string): void {
    const l = parseTraceLine(text);
    if (l.kind === 'other' || l.table !== this.table) return;
    if (l.kind === 'packet') {
      if (!this.packets.has(l.id)) {
        if (this.packets.size >= this.maxPending) {
          const oldest = this.packets.keys().next().value;
          if (oldest !== undefined) this.packets.delete(oldest);
        }
        this.packets.set(l.id, l.packet);
      }
      return;
    }
    if (l.verdict !== 'accept' && l.verdict !== 'drop') return;
    const p = this.packets.get(l.id);
    if (!p) {
      this.orphans++;
      return;
    }
    // A forwarded packet is judged twice (egress of the sender, ingress of the receiver): keep the
    // packet until the trace ends; a drop ends it.
    if (l.verdict === 'drop') this.packets.delete(l.id);
    if (l.handle === undefined) {
      this.decide(this.now(), l.chain, l.verdict, l.comment, p);
      return;
    }
    const c = this.comments?.comment(l.chain, l.handle);
    if (c !== undefined) {
      this.decide(this.now(), l.chain, l.verdict, c ?? undefined, p);
      return;
    }
    if (!this.comments || this.held.length >= this.maxPending) {
      this.orphans++;
      return;
    }
    this.held.push({
      timeMs: this.now(),
      chain: l.chain,
      handle: l.handle,
      verdict: l.verdict,
      packet: p,
    });
    this.comments.refresh();
  }

  /** Decisions held for a rule's comment: resolved now, or counted when the rule is gone. */
  replay(): void {
    const held = this.held;
    this.held = [];
    for (const h of held) {
      const c = this.comments?.comment(h.chain, h.handle);
      if (c === undefined) this.orphans++;
      else this.decide(h.timeMs, h.chain, h.verdict, c ?? undefined, h.packet);
    }
  }

  get heldDecisions(): number {
    return this.held.length;
  }

  /** The rules the held decisions wait for. */
  heldRules(): { readonly chain: string; readonly handle: number }[] {
    return this.held.map((h) => ({ chain: h.chain, handle: h.handle }));
  }

  private decide(
    timeMs: number,
    chain: string,
    verdict: string,
    comment: string | undefined,
    p: TracePacket,
  ): void {
    const direction = directionOfChain(chain);
    if (direction === undefined) return;
    // In the base chains only refusals are decisions about a flow (an unprogrammed interface);
    // their accepts are the fast path and neighbour discovery.
    if (BASE_CHAINS.has(chain) && verdict === 'accept') return;
    this.emit({
      timeMs,
      point: 'kernel',
      direction,
      srcIp: p.srcIp,
      dstIp: p.dstIp,
      protocol: p.protocol,
      ...(p.srcPort !== undefined ? { srcPort: p.srcPort } : {}),
      ...(p.dstPort !== undefined ? { dstPort: p.dstPort } : {}),
      verdict: verdict === 'accept' ? 'allow' : 'deny',
      provenance: provenanceFromComment(comment),
      packets: 1,
      bytes: p.length,
    });
  }
}
