// Precompiled kernel decisions. For one endpoint's active tiers and profiles in one direction, and
// one bucket (protocol, destination port, address family, L7 point), the rule walk of
// `decideDirection` is flattened into data:
//
//   KernelProgram   one per (active set, direction, bucket): segments in order, then `otherwise`
//   KernelSegment   one per (tier with its policies, or profile, direction, bucket), shared by every
//                   endpoint whose tier holds the same policies: steps in order, then `end`
//   KernelStep      one rule that can still match in the bucket: a peer predicate, what is left to
//                   check per connection on each side, and a verdict (or Pass: next segment)
//   PeerPredicate   a peer selector, shared by every step that tests it (the same `app == 'x'` in
//                   thirty policies is one predicate, tested at most once per decision)
//
// Everything the bucket fixes is decided when a segment is built: protocol, ICMP, IP version,
// numeric ports, the `http` hand-off, fail-safe ports, Log rules, and rules that cannot be reached
// (after a step that always decides, or that need a predicate an earlier step already decided on).
//
// Owns: flattening the decision order into data. Must never: keep a result that depends on a peer
// or a connection beyond one decision. Programs and segments are pure functions of immutable
// compiled rules and tiers; the engine drops them with the active set or tier they came from. The
// only mutable state is the predicates' memo, valid for one decision (`PredicateTable.begin`).
//
// This is also the shape the node agent's nftables renderer needs: per endpoint and direction,
// rules grouped by protocol and port, each matching a peer set (a predicate over endpoints, i.e.
// an address set) and ending in a verdict or a jump to the next tier.

import type { Direction } from './types.js';
import type { ActiveTier, CompiledProfileRules, Outcome } from './evaluate.js';
import { FAILSAFE_INBOUND, FAILSAFE_OUTBOUND, outcome as makeOutcome } from './evaluate.js';
import type { Endpoint, Entity } from './model.js';
import type { CompiledPolicy } from './policies.js';
import {
  kernelRuleStatic,
  matchSidePlan,
  peerSatisfies,
  planSide,
  sidePlanEmpty,
} from './rules.js';
import type { CompiledRule, MatchContext, Peer, SidePlan } from './rules.js';

/** A peer-side selector test (selector and notSelector of one rule side). */
export interface PeerPredicate {
  /** `CompiledEntity.selectorKey` and `notSelectorKey` as JSON; equal keys, equal predicates. */
  readonly key: string;
  readonly selector: ((e: Entity) => boolean) | undefined;
  readonly notSelector: ((e: Entity) => boolean) | undefined;
  /** Memo for the current decision only: valid while `stamp` equals the table's epoch. */
  stamp: number;
  value: boolean;
  /**
   * Results for numbered peers (`Peer.n`), two bits each (known, value), valid while `bitsEpoch`
   * is the table's numbering epoch. One array per predicate: a decision reads one word of it
   * instead of a hash table per peer.
   */
  bits: Uint32Array | undefined;
  bitsEpoch: number;
}

export interface KernelStep {
  /** Must hold for the peer, when set. */
  readonly predicate: PeerPredicate | undefined;
  /** Per-connection checks on the local endpoint's side of the rule (its address, named ports). */
  readonly local: SidePlan | undefined;
  /** Per-connection checks on the peer's side other than its selectors (nets, named ports...). */
  readonly peer: SidePlan | undefined;
  /** The verdict when the step matches; undefined for Pass (continue with the next segment). */
  readonly outcome: Outcome | undefined;
  /** `outcome.allow`, kept on the step so a yes/no decision reads no outcome object. */
  readonly allow: boolean;
  readonly policy: CompiledPolicy | undefined;
  /** Undefined for the step that stands for a segment's `end`. */
  readonly rule: CompiledRule | undefined;
}

export interface KernelSegment {
  /** The tier, or the profile, whose rules these are. */
  readonly tier: ActiveTier | undefined;
  readonly profile: CompiledProfileRules | undefined;
  readonly steps: readonly KernelStep[];
  /** When no step matches: the tier's default Deny, or undefined to continue. */
  readonly end: Outcome | undefined;
  /** Whether every connection is decided here (no Pass step, and an end or a final catch-all). */
  readonly alwaysDecides: boolean;
  /** `end` as a step, for flattened programs. */
  readonly endStep: KernelStep | undefined;
  /** Unique within the engine that built it: programs made of the same segments are one. */
  readonly serial: number;
}

export interface KernelProgram {
  readonly direction: Direction;
  readonly protocol: number;
  readonly port: number | undefined;
  readonly family: 4 | 6;
  readonly l7Available: boolean;
  readonly segments: readonly KernelSegment[];
  /** The outcome when no segment decides. */
  readonly otherwise: Outcome;
  /**
   * The segments' steps in one array (each segment's `end` as a final step that always
   * matches), and where a Pass step continues: what `runKernelProgram` walks.
   */
  readonly flat: readonly KernelStep[];
  readonly next: readonly number[];
  /**
   * Where `FlatKernel` keeps this program's flat code, valid while `flatGen` is its generation
   * (-1: not compiled). The only mutable fields: they cache a pure function of the program.
   */
  flatAt: number;
  flatGen: number;
}

/** The bucket a program or segment is built for. */
export interface KernelBucket {
  readonly protocol: number;
  readonly port: number | undefined;
  readonly family: 4 | 6;
  readonly l7Available: boolean;
}

/**
 * The engine's predicates: interned by key so that segments of different tiers share them, with
 * a memo per decision. `begin` starts a decision (one direction, one peer).
 */
export class PredicateTable {
  private readonly byKey = new Map<string, PeerPredicate>();
  private epoch = 0;
  /** Peer numbers are valid for one numbering; `renumber` forgets every numbered result. */
  private numbering = 0;
  private nextNumber = 0;

  /** A fresh number for a peer object the engine keeps; undefined when numbering starts over. */
  number(): number | undefined {
    if (this.nextNumber >= MAX_PEER_NUMBERS) return undefined;
    return this.nextNumber++;
  }

  /** Identifies the current numbering: results memoised for peer numbers are valid within it. */
  get numberingEpoch(): number {
    return this.numbering;
  }

  /** Numbers handed out in this numbering. */
  numbersUsed(): number {
    return this.nextNumber;
  }

  /** Starts a new numbering: peers numbered before must not be used with this table again. */
  renumber(): void {
    this.numbering++;
    this.nextNumber = 0;
  }

  intern(
    key: string | undefined,
    selector: PeerPredicate['selector'],
    notSelector: PeerPredicate['notSelector'],
  ): PeerPredicate {
    if (key !== undefined) {
      const known = this.byKey.get(key);
      if (known) return known;
    }
    const p: PeerPredicate = {
      key: key ?? '',
      selector,
      notSelector,
      stamp: 0,
      value: false,
      bits: undefined,
      bitsEpoch: this.numbering,
    };
    if (key !== undefined) {
      // Bounded: forgetting a key only stops sharing; segments keep their own predicate objects.
      if (this.byKey.size >= 100_000) this.byKey.clear();
      this.byKey.set(key, p);
    }
    return p;
  }

  begin(): void {
    this.epoch = this.epoch >= 0x3fffffff ? 1 : this.epoch + 1;
    // After the wrap-around an old stamp could equal the new epoch: forget all memos.
    if (this.epoch === 1) for (const p of this.byKey.values()) p.stamp = 0;
  }

  test(p: PeerPredicate, peer: Peer): boolean {
    const n = peer.n;
    if (n !== undefined) {
      const w = n >>> 4;
      const shift = (n & 15) << 1;
      let bits = p.bitsEpoch === this.numbering ? p.bits : undefined;
      if (bits !== undefined && w < bits.length) {
        const x = ((bits[w] as number) >>> shift) & 3;
        if (x !== 0) return x === 3;
      }
      const v =
        (p.selector === undefined || peerSatisfies(peer, p.selector)) &&
        (p.notSelector === undefined || !peerSatisfies(peer, p.notSelector));
      if (bits === undefined || w >= bits.length) {
        const grown = new Uint32Array(Math.max(w + 1, (bits?.length ?? 0) * 2, 64));
        if (bits) grown.set(bits);
        bits = grown;
        p.bits = bits;
        p.bitsEpoch = this.numbering;
      }
      bits[w] = (bits[w] as number) | ((v ? 3 : 1) << shift);
      return v;
    }
    const memo = peer.memo;
    if (memo) {
      const known = memo.get(p);
      if (known !== undefined) return known;
    } else if (p.stamp === this.epoch) return p.value;
    const v =
      (p.selector === undefined || peerSatisfies(peer, p.selector)) &&
      (p.notSelector === undefined || !peerSatisfies(peer, p.notSelector));
    if (memo) memo.set(p, v);
    else {
      p.stamp = this.epoch;
      p.value = v;
    }
    return v;
  }
}

/** A hard cap on peer numbers in one numbering (the engine renumbers well before). */
const MAX_PEER_NUMBERS = 1 << 22;

/**
 * One section of the walk: a tier's enforced policies (rules of each policy in order; a policy
 * whose rules all miss hands on to the next), or one profile. The first Allow or Deny decides,
 * Pass ends the section, Log is skipped; then the tier's default action (or nothing).
 * `anyTier` (whether some tier of the endpoint has enforced policies) shapes profile outcomes.
 */
export function buildKernelSegment(
  dir: Direction,
  section: { readonly tier: ActiveTier } | { readonly profile: CompiledProfileRules },
  anyTier: boolean,
  b: KernelBucket,
  predicates: PredicateTable,
  serial: number,
): KernelSegment {
  const tier = 'tier' in section ? section.tier : undefined;
  const profile = 'profile' in section ? section.profile : undefined;
  const rules: { rule: CompiledRule; policy: CompiledPolicy | undefined }[] = [];
  if (tier) {
    for (const p of tier.policies) for (const rule of p[dir] ?? []) rules.push({ rule, policy: p });
  } else if (profile) {
    for (const rule of profile.rules) rules.push({ rule, policy: undefined });
  }
  const end =
    tier && tier.defaultAction !== 'Pass'
      ? makeOutcome(false, 'tier-default', true, tier)
      : undefined;
  const steps: KernelStep[] = [];
  // Predicates known false at this point: a step that decides (or passes) on one alone came first.
  const dead = new Set<PeerPredicate>();
  let passes = false;
  let catchAll = false;
  for (const { rule, policy } of rules) {
    if (rule.action === 'Log') continue;
    const st = kernelRuleStatic(rule, b.protocol, b.family, b.l7Available);
    if (st === 'no') continue;
    // Ingress judges the local endpoint as the destination, egress as the source.
    const ingress = dir === 'ingress';
    const local = planSide(ingress ? rule.dst : rule.src, ingress ? b.port : undefined);
    if (local === 'no') continue;
    const peerFull = planSide(ingress ? rule.src : rule.dst, ingress ? undefined : b.port);
    if (peerFull === 'no') continue;
    let predicate: PeerPredicate | undefined;
    let peer: SidePlan | undefined = peerFull;
    if (peerFull && (peerFull.selector || peerFull.notSelector)) {
      // A selector without a key (compiled elsewhere) gets a predicate of its own.
      const keyed =
        (peerFull.selector === undefined || peerFull.selectorKey !== undefined) &&
        (peerFull.notSelector === undefined || peerFull.notSelectorKey !== undefined);
      predicate = predicates.intern(
        keyed ? `${peerFull.selectorKey ?? ''}\u0000${peerFull.notSelectorKey ?? ''}` : undefined,
        peerFull.selector,
        peerFull.notSelector,
      );
      if (dead.has(predicate)) continue;
      const rest: SidePlan = { ...peerFull, selector: undefined, notSelector: undefined };
      peer = sidePlanEmpty(rest) ? undefined : rest;
    }
    let outcome: Outcome | undefined;
    if (rule.action !== 'Pass') {
      const allow = rule.action === 'Allow';
      const deferred = st === 'deferred';
      outcome = profile
        ? makeOutcome(
            allow,
            !anyTier && allow ? 'no-policy' : 'profile',
            anyTier,
            undefined,
            undefined,
            rule,
            deferred,
            profile,
          )
        : makeOutcome(allow, 'rule', true, tier, policy, rule, deferred);
    } else passes = true;
    steps.push({ predicate, local, peer, outcome, allow: outcome?.allow ?? false, policy, rule });
    if (!local && !peer) {
      if (!predicate) {
        // Every connection that gets here matches: the rest of the section is unreachable.
        catchAll = outcome !== undefined;
        break;
      }
      dead.add(predicate);
    }
  }
  const endStep: KernelStep | undefined =
    end && !catchAll
      ? {
          predicate: undefined,
          local: undefined,
          peer: undefined,
          outcome: end,
          allow: end.allow,
          policy: undefined,
          rule: undefined,
        }
      : undefined;
  return {
    tier,
    profile,
    steps,
    end,
    alwaysDecides: !passes && (end !== undefined || catchAll),
    endStep,
    serial,
  };
}

/**
 * Assembles the program of one endpoint and direction from segments (looked up, usually shared):
 * fail-safe ports of host endpoints, tiers with enforced policies, profiles, the fall-through.
 */
export function buildKernelProgram(
  ep: Pick<Endpoint, 'kind'>,
  dir: Direction,
  tiers: readonly ActiveTier[],
  profiles: readonly CompiledProfileRules[],
  b: KernelBucket,
  segment: (
    section: { readonly tier: ActiveTier } | { readonly profile: CompiledProfileRules },
    anyTier: boolean,
  ) => KernelSegment,
  interned: Map<string, KernelProgram>,
): KernelProgram {
  const base = {
    direction: dir,
    protocol: b.protocol,
    port: b.port,
    family: b.family,
    l7Available: b.l7Available,
  };
  if (ep.kind === 'host' && b.port !== undefined) {
    const list = dir === 'ingress' ? FAILSAFE_INBOUND : FAILSAFE_OUTBOUND;
    for (const f of list) {
      if (f.protocol === b.protocol && f.port === b.port)
        return {
          ...base,
          segments: [],
          otherwise: makeOutcome(true, 'failsafe', false),
          flat: [],
          next: [],
          flatAt: -1,
          flatGen: -1,
        };
    }
  }
  let anyTier = false;
  for (const tier of tiers) if (tier.policies.length > 0) anyTier = true;
  const segments: KernelSegment[] = [];
  // A segment that always decides ends the program: nothing after it is reachable.
  let decided = false;
  for (const tier of tiers) {
    if (tier.policies.length === 0) continue;
    const s = segment({ tier }, true);
    if (s.steps.length > 0 || s.end) segments.push(s);
    if ((decided = s.alwaysDecides)) break;
  }
  let otherwise: Outcome;
  if (profiles.length === 0) {
    otherwise = makeOutcome(
      ep.kind !== 'host',
      anyTier && ep.kind === 'host' ? 'profile-default' : 'no-policy',
      anyTier,
    );
  } else {
    otherwise = makeOutcome(false, 'profile-default', anyTier);
    for (let i = 0; i < profiles.length && !decided; i++) {
      const s = segment({ profile: profiles[i] as CompiledProfileRules }, anyTier);
      if (s.steps.length > 0 || s.end) segments.push(s);
      decided = s.alwaysDecides;
    }
  }
  // Endpoints with different tier lists often end up with the same segments: one program.
  let key = `${dir}\u0000${b.protocol}\u0000${b.port ?? ''}\u0000${b.family}\u0000${b.l7Available}\u0000${otherwise.kind}\u0000${otherwise.allow}\u0000${otherwise.anyTier}\u0000`;
  for (const seg of segments) key += `${seg.serial},`;
  const known = interned.get(key);
  if (known) return known;
  const flat: KernelStep[] = [];
  const pass: number[] = [];
  const passEnd: number[] = [];
  for (const seg of segments) {
    const end = flat.length + seg.steps.length + (seg.endStep ? 1 : 0);
    for (const st of seg.steps) {
      if (!st.outcome) {
        pass.push(flat.length);
        passEnd.push(end);
      }
      flat.push(st);
    }
    if (seg.endStep) flat.push(seg.endStep);
  }
  const next: number[] = new Array<number>(flat.length).fill(0);
  for (let i = 0; i < pass.length; i++) next[pass[i] as number] = passEnd[i] as number;
  const prog: KernelProgram = {
    ...base,
    segments,
    otherwise,
    flat,
    next,
    flatAt: -1,
    flatGen: -1,
  };
  if (interned.size >= 100_000) interned.clear();
  interned.set(key, prog);
  return prog;
}

/**
 * Runs a program for one connection. `local` and `peer` are the two sides as `matchRule` sees
 * them (for ingress the local endpoint is the destination).
 */
export function runKernelProgram(
  prog: KernelProgram,
  local: Peer,
  peer: Peer,
  ctx: Pick<MatchContext, 'serviceMatch'>,
  predicates: PredicateTable,
): Outcome {
  const flat = prog.flat;
  if (flat.length === 0) return prog.otherwise;
  predicates.begin();
  const ingress = prog.direction === 'ingress';
  const localPort = ingress ? prog.port : undefined;
  const peerPort = ingress ? undefined : prog.port;
  const proto = prog.protocol;
  const next = prog.next;
  let i = 0;
  while (i < flat.length) {
    const s = flat[i] as KernelStep;
    if (
      (s.predicate && !predicates.test(s.predicate, peer)) ||
      (s.local && !matchSidePlan(s.local, local, localPort, proto, ctx.serviceMatch)) ||
      (s.peer && !matchSidePlan(s.peer, peer, peerPort, proto, ctx.serviceMatch))
    ) {
      i++;
      continue;
    }
    if (s.outcome) return s.outcome;
    i = next[i] as number; // Pass: the next segment.
  }
  return prog.otherwise;
}

/** `runKernelProgram(...).allow`, without reading outcome objects (the kernel's yes/no path). */
export function runKernelAllows(
  prog: KernelProgram,
  local: Peer,
  peer: Peer,
  ctx: Pick<MatchContext, 'serviceMatch'>,
  predicates: PredicateTable,
): boolean {
  const flat = prog.flat;
  if (flat.length === 0) return prog.otherwise.allow;
  predicates.begin();
  const ingress = prog.direction === 'ingress';
  const localPort = ingress ? prog.port : undefined;
  const peerPort = ingress ? undefined : prog.port;
  const proto = prog.protocol;
  const next = prog.next;
  let i = 0;
  while (i < flat.length) {
    const s = flat[i] as KernelStep;
    if (
      (s.predicate && !predicates.test(s.predicate, peer)) ||
      (s.local && !matchSidePlan(s.local, local, localPort, proto, ctx.serviceMatch)) ||
      (s.peer && !matchSidePlan(s.peer, peer, peerPort, proto, ctx.serviceMatch))
    ) {
      i++;
      continue;
    }
    if (s.outcome) return s.allow;
    i = next[i] as number; // Pass: the next segment.
  }
  return prog.otherwise.allow;
}
