// Evaluation of one direction at one endpoint: tiers in order, policies in order, rules in order,
// then profiles (DESIGN §4 items 1–3, 5, 8). Pure: the caller supplies the endpoint's active
// tiers, its profiles and the match context.
// Owns: the order of evaluation and provenance. Must never: compute which policies apply.

import type { CompiledPolicy } from './policies.js';
import type { CompiledRule, MatchContext } from './rules.js';
import { matchRule } from './rules.js';
import type { CompiledProfile, Endpoint } from './model.js';
import type { Direction, DirectionVerdict, Provenance, StagedVerdict } from './types.js';

export interface ActiveTier {
  readonly name: string;
  readonly defaultAction: 'Deny' | 'Pass';
  /** Enforced policies that select the endpoint and cover this direction, in order. */
  readonly policies: readonly CompiledPolicy[];
  /** Staged policies that select the endpoint and cover this direction, in order. */
  readonly staged: readonly CompiledPolicy[];
}

export interface CompiledProfileRules {
  readonly profile: CompiledProfile;
  readonly rules: readonly CompiledRule[];
}

/** Host endpoint fail-safe ports, as Calico's defaults, plus the Palisade API port. */
export const FAILSAFE_INBOUND: readonly { protocol: number; port: number }[] = [
  { protocol: 6, port: 22 },
  { protocol: 17, port: 68 },
  { protocol: 6, port: 179 },
  { protocol: 6, port: 2379 },
  { protocol: 6, port: 2380 },
  { protocol: 6, port: 5473 },
  { protocol: 6, port: 6443 },
  { protocol: 6, port: 6666 },
  { protocol: 6, port: 6667 },
  { protocol: 6, port: 9443 },
];

export const FAILSAFE_OUTBOUND: readonly { protocol: number; port: number }[] = [
  { protocol: 17, port: 53 },
  { protocol: 17, port: 67 },
  { protocol: 6, port: 179 },
  { protocol: 6, port: 2379 },
  { protocol: 6, port: 2380 },
  { protocol: 6, port: 5473 },
  { protocol: 6, port: 6443 },
  { protocol: 6, port: 6666 },
  { protocol: 6, port: 6667 },
];

function ruleOutcome(
  rules: readonly CompiledRule[],
  ctx: MatchContext,
): { rule: CompiledRule; deferred: boolean } | undefined {
  for (const r of rules) {
    const m = matchRule(r, ctx);
    if (m === 'no' || r.action === 'Log') continue;
    return { rule: r, deferred: m === 'deferred' };
  }
  return undefined;
}

function stagedVerdicts(tier: ActiveTier, dir: Direction, ctx: MatchContext): StagedVerdict[] {
  const out: StagedVerdict[] = [];
  for (const p of tier.staged) {
    const rules = p[dir] ?? [];
    const hit = p.stagedDelete ? undefined : ruleOutcome(rules, ctx);
    out.push({
      policy: p.name,
      tier: tier.name,
      verdict: hit
        ? hit.rule.action === 'Allow'
          ? 'allow'
          : hit.rule.action === 'Deny'
            ? 'deny'
            : 'pass'
        : tier.policies.length === 0 && !p.stagedDelete
          ? tier.defaultAction === 'Deny'
            ? 'deny'
            : 'pass'
          : 'no-match',
      ...(hit ? { rule: hit.rule.index } : {}),
    });
  }
  return out;
}

/** What decided one direction, before it is dressed as a DirectionVerdict. */
export interface Outcome {
  readonly allow: boolean;
  readonly kind: 'rule' | 'tier-default' | 'profile' | 'profile-default' | 'no-policy' | 'failsafe';
  readonly tier: ActiveTier | undefined;
  readonly policy: CompiledPolicy | undefined;
  readonly rule: CompiledRule | undefined;
  readonly profile: CompiledProfileRules | undefined;
  readonly deferred: boolean;
  /** Whether any tier had enforced policies selecting the endpoint. */
  readonly anyTier: boolean;
}

/** An outcome of the walk (shared with the precompiled kernel programs). */
export function outcome(
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

/**
 * The decision walk (DESIGN §4 items 1–3, 5): tiers, policies, rules, then profiles. Builds no
 * strings, so the kernel's hot path stays cheap; `trace` is filled only when given.
 */
export function decideDirection(
  ep: Endpoint,
  dir: Direction,
  tiers: readonly ActiveTier[],
  profiles: readonly CompiledProfileRules[],
  ctx: MatchContext,
  trace?: string[],
): Outcome {
  if (ep.kind === 'host' && ctx.point === 'kernel' && ctx.dstPort !== undefined) {
    const list = dir === 'ingress' ? FAILSAFE_INBOUND : FAILSAFE_OUTBOUND;
    for (const f of list) {
      if (f.protocol === ctx.protocol && f.port === ctx.dstPort)
        return outcome(true, 'failsafe', false);
    }
  }
  let anyTier = false;
  tiers: for (const tier of tiers) {
    if (tier.policies.length === 0) continue;
    anyTier = true;
    for (const p of tier.policies) {
      const hit = ruleOutcome(p[dir] ?? NO_RULES, ctx);
      if (!hit) {
        trace?.push(`tier ${tier.name}: policy ${p.name}: no rule matched`);
        continue;
      }
      trace?.push(
        `tier ${tier.name}: policy ${p.name}: rule ${hit.rule.index} (${hit.rule.action}) matched${hit.deferred ? ', handed to L7' : ''}`,
      );
      if (hit.rule.action === 'Pass') {
        trace?.push(`tier ${tier.name}: passed to the next tier`);
        continue tiers;
      }
      return outcome(hit.rule.action === 'Allow', 'rule', true, tier, p, hit.rule, hit.deferred);
    }
    if (tier.defaultAction === 'Pass') {
      trace?.push(`tier ${tier.name}: no rule decided; default action Pass`);
      continue;
    }
    trace?.push(`tier ${tier.name}: no rule decided; default action Deny`);
    return outcome(false, 'tier-default', true, tier);
  }
  if (profiles.length === 0) {
    return outcome(
      ep.kind !== 'host',
      anyTier && ep.kind === 'host' ? 'profile-default' : 'no-policy',
      anyTier,
    );
  }
  for (const pr of profiles) {
    const hit = ruleOutcome(pr.rules, ctx);
    if (!hit || hit.rule.action === 'Pass') {
      trace?.push(`profile ${pr.profile.name}: no rule matched`);
      continue;
    }
    trace?.push(`profile ${pr.profile.name}: rule ${hit.rule.index} (${hit.rule.action}) matched`);
    const allow = hit.rule.action === 'Allow';
    return outcome(
      allow,
      !anyTier && allow ? 'no-policy' : 'profile',
      anyTier,
      undefined,
      undefined,
      hit.rule,
      hit.deferred,
      pr,
    );
  }
  return outcome(false, 'profile-default', anyTier);
}

const NO_RULES: readonly CompiledRule[] = [];

/** Dresses an outcome with its provenance and a readable reason. */
export function describeOutcome(
  o: Outcome,
  ep: Endpoint,
  dir: Direction,
  point: 'kernel' | 'l7',
  profiles: readonly CompiledProfileRules[],
): Provenance {
  const base = { point, direction: dir };
  switch (o.kind) {
    case 'failsafe':
      return {
        ...base,
        kind: 'failsafe',
        reason: `a fail-safe port of host endpoint ${ep.id} is always open`,
      };
    case 'rule': {
      const r = o.rule;
      const tier = o.tier?.name ?? '';
      const policy = o.policy?.name ?? '';
      return {
        ...base,
        kind: 'rule',
        tier,
        policy,
        rule: r?.index ?? 0,
        reason: `${dir} rule ${r?.index ?? 0} (${r?.action ?? ''}) of policy ${policy} in tier ${tier}${o.deferred ? ' (HTTP match left to the L7 point)' : ''}`,
      };
    }
    case 'tier-default': {
      const tier = o.tier?.name ?? '';
      return {
        ...base,
        kind: 'tier-default',
        tier,
        reason: `default deny of tier ${tier}: policies select ${ep.id} for ${dir} and none allowed this traffic`,
      };
    }
    case 'no-policy':
      if (ep.kind === 'host')
        return {
          ...base,
          kind: 'no-policy',
          reason: `host endpoint ${ep.id} is denied by default: no policy selects it for ${dir}`,
        };
      if (o.profile)
        return {
          ...base,
          kind: 'no-policy',
          profile: o.profile.profile.name,
          reason: `no policy selects ${ep.id} for ${dir}; profile ${o.profile.profile.name} allows`,
        };
      return { ...base, kind: 'no-policy', reason: `no policy selects ${ep.id} for ${dir}` };
    case 'profile': {
      const pr = o.profile;
      const name = pr?.profile.name ?? '';
      const legacy = pr?.profile.legacyIsolation === true && !o.allow;
      return {
        ...base,
        kind: 'profile',
        profile: name,
        rule: o.rule?.index ?? 0,
        reason: legacy
          ? `namespace ${ep.namespace ?? ''} isolates ingress (DefaultDeny annotation) and no policy allowed this traffic`
          : `profile ${name} rule ${o.rule?.index ?? 0} (${o.rule?.action ?? ''})`,
      };
    }
    case 'profile-default':
      return {
        ...base,
        kind: 'profile-default',
        reason:
          profiles.length === 0
            ? `host endpoint ${ep.id} is denied by default: its tiers passed and it has no profile`
            : `no rule of the profiles of ${ep.id} (${profiles.map((p) => p.profile.name).join(', ')}) matched`,
      };
  }
}

/**
 * Judges one direction at `ep` with provenance; with `explain`, a trace line per policy consulted
 * and the would-be verdicts of staged policies.
 */
export function evaluateDirection(
  ep: Endpoint,
  dir: Direction,
  tiers: readonly ActiveTier[],
  profiles: readonly CompiledProfileRules[],
  ctx: MatchContext,
  explain: boolean,
): DirectionVerdict {
  const trace: string[] = [];
  const o = decideDirection(ep, dir, tiers, profiles, ctx, explain ? trace : undefined);
  return dressOutcome(o, ep, dir, tiers, profiles, ctx, trace);
}

/**
 * The verdict of one direction from its outcome (however it was decided): provenance, the
 * would-be verdicts of staged policies and the L7 hand-off.
 */
export function dressOutcome(
  o: Outcome,
  ep: Endpoint,
  dir: Direction,
  tiers: readonly ActiveTier[],
  profiles: readonly CompiledProfileRules[],
  ctx: MatchContext,
  trace: string[],
): DirectionVerdict {
  const staged: StagedVerdict[] = [];
  for (const tier of tiers)
    if (tier.staged.length > 0) staged.push(...stagedVerdicts(tier, dir, ctx));
  const v: DirectionVerdict = {
    verdict: o.allow ? 'allow' : 'deny',
    provenance: describeOutcome(o, ep, dir, ctx.point, profiles),
    trace,
  };
  if (staged.length === 0 && !o.deferred) return v;
  return {
    ...v,
    ...(staged.length > 0 ? { staged } : {}),
    ...(o.deferred ? { deferredToL7: true } : {}),
  };
}
