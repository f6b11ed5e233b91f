// Precompiled kernel decisions: for one endpoint's active tiers and profiles in one direction,
// and one (protocol, destination port, address family, L7 point) bucket, the rule walk of
// `decideDirection` flattened into a short program of steps. What the bucket fixes (protocol,
// ports, ICMP, `http` hand-off, fail-safe ports, rules that cannot be reached) is decided when
// the program is built; each step keeps only what depends on the two endpoints of a connection.
// Peer selectors shared by many rules (the same `app == 'x'` in thirty policies) become one
// predicate, evaluated at most once per decision.
//
// Owns: flattening the decision order into data. Must never: cache anything that depends on a
// peer or a connection — a program is a pure function of its inputs (immutable compiled rules
// and tiers), and the caller drops it with the active set it was built from.
//
// This is also the shape the node agent's nftables renderer needs: per endpoint and direction,
// rules grouped by protocol and port, each matching a peer set (a predicate over endpoints) and
// ending in a verdict or a jump to the next tier.

import type { Direction } from './types.js';
import type { ActiveTier, CompiledProfileRules, Outcome } from './evaluate.js';
import { FAILSAFE_INBOUND, FAILSAFE_OUTBOUND } from './evaluate.js';
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

/** A peer-side selector test shared by every step that needs it. */
export interface PeerPredicate {
  /** `CompiledEntity.selectorKey` and `notSelectorKey`, as JSON. */
  readonly key: string;
  readonly selector: ((e: Entity) => boolean) | undefined;
  readonly notSelector: ((e: Entity) => boolean) | undefined;
}

export interface KernelStep {
  /** Index into `KernelProgram.predicates` that must hold, or -1. */
  readonly predicate: number;
  /** Per-connection checks on the local endpoint's side of the rule (its own address, ports...). */
  readonly local: SidePlan | undefined;
  /** Per-connection checks on the peer's side other than its selectors (nets, named ports...). */
  readonly peer: SidePlan | undefined;
  /** The verdict when the step matches; undefined for Pass, which continues at `next`. */
  readonly outcome: Outcome | undefined;
  readonly next: number;
  /** Where the step came from, for renderers and explanations. */
  readonly tier: string | undefined;
  readonly policy: CompiledPolicy | undefined;
  readonly profile: CompiledProfileRules | undefined;
  /** Undefined for the default action at the end of a tier. */
  readonly rule: CompiledRule | undefined;
}

export interface KernelProgram {
  readonly direction: Direction;
  readonly protocol: number;
  readonly port: number | undefined;
  readonly family: 4 | 6;
  readonly l7Available: boolean;
  readonly predicates: readonly PeerPredicate[];
  readonly steps: readonly KernelStep[];
  /** The outcome when no step decides. */
  readonly otherwise: Outcome;
}

function makeOutcome(
  allow: boolean,
  kind: Outcome['kind'],
  anyTier: boolean,
  tier?: ActiveTier,
  policy?: CompiledPolicy,
  rule?: CompiledRule,
  deferred = false,
  profile?: CompiledProfileRules,
): Outcome {
  return { allow, kind, tier, policy, rule, profile, deferred, anyTier };
}

/** A tier with enforced policies, or one profile: rules in order, a Pass rule ends it. */
interface Section {
  readonly rules: readonly { readonly rule: CompiledRule; readonly policy?: CompiledPolicy }[];
  readonly tier: ActiveTier | undefined;
  readonly profile: CompiledProfileRules | undefined;
  /** Outcome when the section ends without a decision; undefined to continue. */
  readonly end: Outcome | undefined;
}

function intersect(sets: readonly ReadonlySet<number>[]): Set<number> {
  const [first, ...rest] = sets;
  const out = new Set<number>();
  if (!first) return out;
  for (const x of first) if (rest.every((r) => r.has(x))) out.add(x);
  return out;
}

/**
 * Builds the program for one bucket. Mirrors `decideDirection` step for step: tiers with enforced
 * policies in order (a policy whose rules all miss hands on to the next, the first Allow or Deny
 * decides, Pass ends the tier, Log is skipped), the tier's default action, then profiles (a Pass
 * rule ends the profile), then the fall-through.
 *
 * Steps that cannot be reached are left out: after a step that decides unconditionally, after a
 * predicate already known false on every path to a step (a step that decides on that predicate
 * alone comes earlier), and rules the bucket excludes.
 */
export function buildKernelProgram(
  ep: Pick<Endpoint, 'kind'>,
  dir: Direction,
  tiers: readonly ActiveTier[],
  profiles: readonly CompiledProfileRules[],
  protocol: number,
  port: number | undefined,
  family: 4 | 6,
  l7Available: boolean,
): KernelProgram {
  const base = { direction: dir, protocol, port, family, l7Available };
  if (ep.kind === 'host' && port !== undefined) {
    const list = dir === 'ingress' ? FAILSAFE_INBOUND : FAILSAFE_OUTBOUND;
    for (const f of list) {
      if (f.protocol === protocol && f.port === port) {
        return {
          ...base,
          predicates: [],
          steps: [],
          otherwise: makeOutcome(true, 'failsafe', false),
        };
      }
    }
  }

  const sections: Section[] = [];
  let anyTier = false;
  for (const tier of tiers) {
    if (tier.policies.length === 0) continue;
    anyTier = true;
    const rules: { rule: CompiledRule; policy: CompiledPolicy }[] = [];
    for (const p of tier.policies) for (const rule of p[dir] ?? []) rules.push({ rule, policy: p });
    sections.push({
      rules,
      tier,
      profile: undefined,
      end:
        tier.defaultAction === 'Pass' ? undefined : makeOutcome(false, 'tier-default', true, tier),
    });
  }
  let otherwise: Outcome;
  if (profiles.length === 0) {
    otherwise = makeOutcome(
      ep.kind !== 'host',
      anyTier && ep.kind === 'host' ? 'profile-default' : 'no-policy',
      anyTier,
    );
  } else {
    for (const pr of profiles) {
      sections.push({
        rules: pr.rules.map((rule) => ({ rule })),
        tier: undefined,
        profile: pr,
        end: undefined,
      });
    }
    otherwise = makeOutcome(false, 'profile-default', anyTier);
  }

  const predicates: PeerPredicate[] = [];
  const predicateIndex = new Map<string, number>();
  const steps: (Omit<KernelStep, 'next'> & { next: number })[] = [];
  // `dead`: predicates known false whenever the current point is reached by falling through
  // (a step that decides on a predicate alone was passed). Pass jumps carry their own snapshot.
  let dead = new Set<number>();
  let fallsThrough = true;
  let passSnapshots: Set<number>[] = [];
  let pendingPass: number[] = [];

  for (const section of sections) {
    if (!fallsThrough && passSnapshots.length === 0) break; // Nothing below is reachable.
    dead = intersect(fallsThrough ? [dead, ...passSnapshots] : passSnapshots);
    for (const i of pendingPass) (steps[i] as { next: number }).next = steps.length;
    pendingPass = [];
    passSnapshots = [];
    fallsThrough = true;
    for (const { rule, policy } of section.rules) {
      if (rule.action === 'Log') continue;
      const st = kernelRuleStatic(rule, protocol, family, l7Available);
      if (st === 'no') continue;
      // Ingress judges the local endpoint as the destination, egress as the source.
      const local = planSide(
        dir === 'ingress' ? rule.dst : rule.src,
        dir === 'ingress' ? port : undefined,
      );
      if (local === 'no') continue;
      const peerFull = planSide(
        dir === 'ingress' ? rule.src : rule.dst,
        dir === 'ingress' ? undefined : port,
      );
      if (peerFull === 'no') continue;
      let predicate = -1;
      let peer: SidePlan | undefined = peerFull;
      if (peerFull && (peerFull.selector || peerFull.notSelector)) {
        // Without keys (a selector compiled elsewhere) a predicate is never shared.
        const shareable =
          (peerFull.selector === undefined || peerFull.selectorKey !== undefined) &&
          (peerFull.notSelector === undefined || peerFull.notSelectorKey !== undefined);
        const key = JSON.stringify([peerFull.selectorKey ?? null, peerFull.notSelectorKey ?? null]);
        const known = shareable ? predicateIndex.get(key) : undefined;
        if (known !== undefined) predicate = known;
        else {
          predicate = predicates.length;
          predicates.push({ key, selector: peerFull.selector, notSelector: peerFull.notSelector });
          if (shareable) predicateIndex.set(key, predicate);
        }
        if (dead.has(predicate)) continue;
        const rest: SidePlan = { ...peerFull, selector: undefined, notSelector: undefined };
        peer = sidePlanEmpty(rest) ? undefined : rest;
      }
      const outcome =
        rule.action === 'Pass'
          ? undefined
          : section.profile
            ? makeOutcome(
                rule.action === 'Allow',
                !anyTier && rule.action === 'Allow' ? 'no-policy' : 'profile',
                anyTier,
                undefined,
                undefined,
                rule,
                st === 'deferred',
                section.profile,
              )
            : makeOutcome(
                rule.action === 'Allow',
                'rule',
                true,
                section.tier,
                policy,
                rule,
                st === 'deferred',
              );
      steps.push({
        predicate,
        local,
        peer,
        outcome,
        next: -1,
        tier: section.tier?.name,
        policy,
        profile: section.profile,
        rule,
      });
      const unconditional = predicate < 0 && !local && !peer;
      if (!outcome) {
        passSnapshots.push(new Set(dead));
        pendingPass.push(steps.length - 1);
      }
      if (unconditional) {
        // The rest of the section is unreachable.
        fallsThrough = false;
        break;
      }
      if (predicate >= 0 && !local && !peer) dead.add(predicate);
    }
    if (fallsThrough && section.end) {
      steps.push({
        predicate: -1,
        local: undefined,
        peer: undefined,
        outcome: section.end,
        next: -1,
        tier: section.tier?.name,
        policy: undefined,
        profile: undefined,
        rule: undefined,
      });
      fallsThrough = false;
    }
  }
  for (const i of pendingPass) (steps[i] as { next: number }).next = steps.length;
  // A last step that always decides and that no jump passes is the fall-through itself.
  const last = steps[steps.length - 1];
  if (
    last?.outcome &&
    last.predicate < 0 &&
    !last.local &&
    !last.peer &&
    !steps.some((x) => x.next === steps.length)
  ) {
    steps.pop();
    otherwise = last.outcome;
  }
  return { ...base, predicates, steps, otherwise };
}

/**
 * Runs a program for one connection. `local` and `peer` are the two sides as `matchRule` sees
 * them (for ingress the local endpoint is the destination). `scratch` holds one byte per
 * predicate (0 unknown, 1 true, 2 false) and is reset here; it carries nothing between calls.
 */
export function runKernelProgram(
  prog: KernelProgram,
  local: Peer,
  peer: Peer,
  ctx: Pick<MatchContext, 'serviceMatch'>,
  scratch: Uint8Array,
): Outcome {
  const steps = prog.steps;
  const n = prog.predicates.length;
  if (n > 0) scratch.fill(0, 0, n);
  const ingress = prog.direction === 'ingress';
  const localPort = ingress ? prog.port : undefined;
  const peerPort = ingress ? undefined : prog.port;
  let i = 0;
  while (i < steps.length) {
    const s = steps[i] as KernelStep;
    if (s.predicate >= 0) {
      let m = scratch[s.predicate];
      if (m === 0) {
        const p = prog.predicates[s.predicate] as PeerPredicate;
        const ok =
          (p.selector === undefined || peerSatisfies(peer, p.selector)) &&
          (p.notSelector === undefined || !peerSatisfies(peer, p.notSelector));
        m = ok ? 1 : 2;
        scratch[s.predicate] = m;
      }
      if (m === 2) {
        i++;
        continue;
      }
    }
    if (s.local && !matchSidePlan(s.local, local, localPort, prog.protocol, ctx.serviceMatch)) {
      i++;
      continue;
    }
    if (s.peer && !matchSidePlan(s.peer, peer, peerPort, prog.protocol, ctx.serviceMatch)) {
      i++;
      continue;
    }
    if (s.outcome) return s.outcome;
    i = s.next;
  }
  return prog.otherwise;
}
