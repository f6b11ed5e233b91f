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

/**
 * Judges one direction at `ep`. `trace` collects a line per policy consulted when `explain` is
 * set; the hot path passes false and builds no strings.
 */
export function evaluateDirection(
  ep: Endpoint,
  dir: Direction,
  tiers: readonly ActiveTier[],
  profiles: readonly CompiledProfileRules[],
  ctx: MatchContext,
  explain: boolean,
): DirectionVerdict {
  const point = ctx.point;
  const trace: string[] = [];
  const staged: StagedVerdict[] = [];
  const base = { point, direction: dir } as const;

  if (ep.kind === 'host' && point === 'kernel' && ctx.dstPort !== undefined) {
    const list = dir === 'ingress' ? FAILSAFE_INBOUND : FAILSAFE_OUTBOUND;
    if (list.some((f) => f.protocol === ctx.protocol && f.port === ctx.dstPort)) {
      return {
        verdict: 'allow',
        provenance: {
          ...base,
          kind: 'failsafe',
          reason: `fail-safe port ${ctx.dstPort} of host endpoint ${ep.id} is always open`,
        },
        trace,
      };
    }
  }

  for (const tier of tiers) {
    if (tier.staged.length > 0) staged.push(...stagedVerdicts(tier, dir, ctx));
    if (tier.policies.length === 0) continue;
    let passed = false;
    for (const p of tier.policies) {
      const hit = ruleOutcome(p[dir] ?? [], ctx);
      if (!hit) {
        if (explain) trace.push(`tier ${tier.name}: policy ${p.name}: no rule matched`);
        continue;
      }
      const { rule, deferred } = hit;
      if (explain)
        trace.push(
          `tier ${tier.name}: policy ${p.name}: rule ${rule.index} (${rule.action}) matched${deferred ? ', handed to L7' : ''}`,
        );
      if (rule.action === 'Pass') {
        passed = true;
        break;
      }
      const verdict = rule.action === 'Allow' ? 'allow' : 'deny';
      const provenance: Provenance = {
        ...base,
        kind: 'rule',
        tier: tier.name,
        policy: p.name,
        rule: rule.index,
        reason: `${dir} rule ${rule.index} (${rule.action}) of policy ${p.name} in tier ${tier.name}${deferred ? ' (HTTP match left to the L7 point)' : ''}`,
      };
      return {
        verdict,
        provenance,
        trace,
        ...(staged.length > 0 ? { staged } : {}),
        ...(deferred ? { deferredToL7: true } : {}),
      };
    }
    if (passed) {
      if (explain) trace.push(`tier ${tier.name}: passed to the next tier`);
      continue;
    }
    if (tier.defaultAction === 'Pass') {
      if (explain) trace.push(`tier ${tier.name}: no rule decided; default action Pass`);
      continue;
    }
    if (explain) trace.push(`tier ${tier.name}: no rule decided; default action Deny`);
    return {
      verdict: 'deny',
      provenance: {
        ...base,
        kind: 'tier-default',
        tier: tier.name,
        reason: `default deny of tier ${tier.name}: policies select ${ep.id} for ${dir} and none allowed this traffic`,
      },
      trace,
      ...(staged.length > 0 ? { staged } : {}),
    };
  }

  const anyTier = tiers.some((t) => t.policies.length > 0);
  const withStaged = staged.length > 0 ? { staged } : {};
  if (profiles.length === 0) {
    if (ep.kind === 'host') {
      return {
        verdict: 'deny',
        provenance: {
          ...base,
          kind: anyTier ? 'profile-default' : 'no-policy',
          reason: `host endpoint ${ep.id} is denied by default: ${anyTier ? 'its tiers passed and it has no profile' : 'no policy selects it'} for ${dir}`,
        },
        trace,
        ...withStaged,
      };
    }
    return {
      verdict: 'allow',
      provenance: {
        ...base,
        kind: 'no-policy',
        reason: `no policy selects ${ep.id} for ${dir}`,
      },
      trace,
      ...withStaged,
    };
  }
  for (const pr of profiles) {
    const hit = ruleOutcome(pr.rules, ctx);
    if (!hit || hit.rule.action === 'Pass') {
      if (explain) trace.push(`profile ${pr.profile.name}: no rule matched`);
      continue;
    }
    const verdict = hit.rule.action === 'Allow' ? 'allow' : 'deny';
    if (explain)
      trace.push(`profile ${pr.profile.name}: rule ${hit.rule.index} (${hit.rule.action}) matched`);
    const legacy = pr.profile.legacyIsolation === true && verdict === 'deny';
    const kind = !anyTier && verdict === 'allow' ? 'no-policy' : 'profile';
    return {
      verdict,
      provenance: {
        ...base,
        kind,
        profile: pr.profile.name,
        rule: hit.rule.index,
        reason: legacy
          ? `namespace ${ep.namespace ?? ''} isolates ingress (DefaultDeny annotation) and no policy allowed this traffic`
          : kind === 'no-policy'
            ? `no policy selects ${ep.id} for ${dir}; profile ${pr.profile.name} allows`
            : `profile ${pr.profile.name} rule ${hit.rule.index} (${hit.rule.action})`,
      },
      trace,
      ...withStaged,
      ...(hit.deferred ? { deferredToL7: true } : {}),
    };
  }
  return {
    verdict: 'deny',
    provenance: {
      ...base,
      kind: 'profile-default',
      reason: `no rule of the profiles of ${ep.id} (${profiles.map((p) => p.profile.name).join(', ')}) matched`,
    },
    trace,
    ...withStaged,
  };
}
