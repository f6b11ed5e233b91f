// Calico's host endpoint policy stages, as the node agent renders them (dataplane
// `calc/host-modes.ts`, `nft/render.ts`) and as Calico documents them (docs.tigera.io, "Host
// endpoints" → "Apply on forwarded traffic", "Pre-DNAT policy", "Summary of host endpoint
// policies"; the HostEndpoint resource for `interfaceName: '*'`):
// - untracked (`doNotTrack`): before connection tracking, both directions, for traffic through a
//   host endpoint's interface (to and from the host, and forwarded in through it). Allow = the
//   packet is not tracked and skips every later host endpoint stage; Deny drops; no match goes on
//   (no default deny). Not supported on all-interfaces host endpoints (Calico ignores it there).
//   Untracked packets have no conntrack entry: a reply is judged on its own.
// - pre-DNAT (`preDNAT`): ingress only, after conntrack and before DNAT, for new traffic in
//   through the interface (to the host and forwarded). Allow skips the later host endpoint
//   stages; no match goes on.
// - normal: traffic to and from the host's own processes, as today (tiers, profiles, default
//   deny, fail-safe ports). Never contains pre-DNAT or untracked policies.
// - forward (`applyOnForward` among the normal policies): traffic forwarded in or out through the
//   interface; allowed when no such policy selects the endpoint for the direction, else the tiers
//   decide (default deny); no profiles, no fail-safe ports.
// Fail-safe ports are left by the untracked and pre-DNAT stages to the normal one, which opens
// them. Workload endpoints never see pre-DNAT or untracked policies. Traffic between a host and
// its own workloads passes through the workload's interface only: the host endpoint's policy does
// not apply to it.
// Owns: the order of the stages and the reply of untracked traffic. Must never: select policies
// (the engine does) or change what a rule means.

import type { ActiveTier } from './evaluate.js';
import { FAILSAFE_INBOUND, FAILSAFE_OUTBOUND } from './evaluate.js';
import type { Endpoint } from './model.js';
import type { CompiledPolicy } from './policies.js';
import { matchRule } from './rules.js';
import type { CompiledRule, MatchContext, Peer } from './rules.js';
import type { Direction, DirectionVerdict, HostStage, Provenance } from './types.js';

export type ExtraStage = Exclude<HostStage, 'normal'>;

/** Whether a policy belongs to host endpoints' normal stage (and to workload endpoints). */
export function inNormalStage(p: CompiledPolicy): boolean {
  return !p.preDNAT && !p.doNotTrack;
}

/** Whether a policy belongs to one of the other stages. */
export function inStage(p: CompiledPolicy, stage: ExtraStage): boolean {
  switch (stage) {
    case 'untracked':
      return p.doNotTrack;
    case 'preDNAT':
      return p.preDNAT;
    case 'forward':
      return p.applyOnForward && inNormalStage(p);
  }
}

/** What the engine supplies: its normal evaluation and the policies of each stage. */
export interface HostPathView {
  /** The normal evaluation of one direction at an endpoint (workloads, and the normal stage). */
  normal(ep: Endpoint, dir: Direction, ctx: MatchContext): DirectionVerdict;
  /** The tiers of a stage's policies selecting a host endpoint, in order. */
  stageTiers(ep: Endpoint, stage: ExtraStage, dir: Direction): readonly ActiveTier[];
  /** Whether a host endpoint is the all-interfaces one (`interfaceName: '*'`). */
  allInterfaces(ep: Endpoint): boolean;
  readonly explain: boolean;
}

export interface HostPath {
  readonly src: Peer;
  readonly dst: Peer;
  /** How the two sides are named in provenance (an address when not an endpoint). */
  readonly srcLabel: string;
  readonly dstLabel: string;
  /** Host endpoint the traffic is forwarded in through (on the destination's node). */
  readonly viaIn: Endpoint | undefined;
  /** Host endpoint the traffic is forwarded out through (on the source's node). */
  readonly viaOut: Endpoint | undefined;
  /** The probe's context (kernel point); `l7Available` is set per endpoint here. */
  readonly ctx: MatchContext;
}

export interface HostPathVerdict {
  readonly allow: boolean;
  readonly egress: DirectionVerdict;
  readonly ingress: DirectionVerdict;
  readonly forward: readonly DirectionVerdict[];
  readonly reply: DirectionVerdict | undefined;
}

type StageStep =
  | { readonly kind: 'decided'; readonly v: DirectionVerdict }
  | { readonly kind: 'continue'; readonly trace: readonly string[] };

interface Hit {
  readonly tier: ActiveTier;
  readonly policy: CompiledPolicy;
  readonly rule: CompiledRule;
}

/** The tiers walk of a stage: the first Allow or Deny, a tier's default deny, or nothing. */
function walk(
  tiers: readonly ActiveTier[],
  dir: Direction,
  ctx: MatchContext,
  noDefaultDeny: boolean,
  trace: string[] | undefined,
): Hit | { readonly tier: ActiveTier } | { readonly anyTier: boolean } {
  let anyTier = false;
  tiers: for (const tier of tiers) {
    if (tier.policies.length === 0) continue;
    anyTier = true;
    for (const p of tier.policies) {
      for (const r of p[dir] ?? []) {
        if (r.action === 'Log' || matchRule(r, ctx) === 'no') continue;
        trace?.push(`tier ${tier.name}: policy ${p.name}: rule ${r.index} (${r.action}) matched`);
        if (r.action === 'Pass') continue tiers;
        return { tier, policy: p, rule: r };
      }
      trace?.push(`tier ${tier.name}: policy ${p.name}: no rule matched`);
    }
    if (tier.defaultAction === 'Pass' || noDefaultDeny) {
      trace?.push(`tier ${tier.name}: no rule decided; goes on`);
      continue;
    }
    trace?.push(`tier ${tier.name}: no rule decided; default action Deny`);
    return { tier };
  }
  return { anyTier };
}

const STAGE_WORDS: Record<HostStage, string> = {
  untracked: 'untracked (doNotTrack) stage',
  preDNAT: 'pre-DNAT stage',
  normal: 'normal host endpoint stage',
  forward: 'forward (applyOnForward) stage',
};

function prov(
  ep: Endpoint,
  stage: HostStage,
  dir: Direction,
  rest: Omit<Provenance, 'point' | 'direction' | 'stage' | 'hostEndpoint' | 'reason'>,
  reason: string,
): Provenance {
  return {
    point: 'kernel',
    direction: dir,
    ...rest,
    stage,
    hostEndpoint: ep.id,
    reason: `${STAGE_WORDS[stage]} of host endpoint ${ep.id}: ${reason}`,
  };
}

function failsafe(ctx: MatchContext, dir: Direction): boolean {
  if (ctx.dstPort === undefined) return false;
  for (const f of dir === 'ingress' ? FAILSAFE_INBOUND : FAILSAFE_OUTBOUND)
    if (f.protocol === ctx.protocol && f.port === ctx.dstPort) return true;
  return false;
}

/** An untracked or pre-DNAT stage: Allow or Deny decide, anything else goes on. */
function earlyStage(
  view: HostPathView,
  ep: Endpoint,
  stage: 'untracked' | 'preDNAT',
  dir: Direction,
  ctx: MatchContext,
): StageStep {
  const trace: string[] = [];
  if (stage === 'untracked' && view.allInterfaces(ep)) return { kind: 'continue', trace };
  const tiers = view.stageTiers(ep, stage, dir);
  if (!tiers.some((t) => t.policies.length > 0)) return { kind: 'continue', trace };
  // Fail-safe ports are left to the normal stage, which accepts them.
  if (failsafe(ctx, dir)) {
    trace.push(`${STAGE_WORDS[stage]}: fail-safe port, left to the normal stage`);
    return { kind: 'continue', trace };
  }
  const hit = walk(tiers, dir, ctx, true, view.explain ? trace : undefined);
  if (!('rule' in hit)) return { kind: 'continue', trace };
  const allow = hit.rule.action === 'Allow';
  return {
    kind: 'decided',
    v: {
      verdict: allow ? 'allow' : 'deny',
      provenance: prov(
        ep,
        stage,
        dir,
        { kind: 'rule', tier: hit.tier.name, policy: hit.policy.name, rule: hit.rule.index },
        `${dir} rule ${hit.rule.index} (${hit.rule.action}) of policy ${hit.policy.name} in tier ${hit.tier.name}${allow ? (stage === 'untracked' ? '; not connection-tracked, later host endpoint stages skipped' : '; later host endpoint stages skipped') : ''}`,
      ),
      trace: view.explain ? trace.map((t) => `${STAGE_WORDS[stage]}: ${t}`) : [],
    },
  };
}

/** The forward stage: allowed unless applyOnForward policies select the endpoint and deny. */
function forwardStage(
  view: HostPathView,
  ep: Endpoint,
  dir: Direction,
  ctx: MatchContext,
): DirectionVerdict {
  const trace: string[] = [];
  const hit = walk(
    view.stageTiers(ep, 'forward', dir),
    dir,
    ctx,
    false,
    view.explain ? trace : undefined,
  );
  const t = view.explain ? trace.map((x) => `${STAGE_WORDS.forward}: ${x}`) : [];
  if ('rule' in hit) {
    const allow = hit.rule.action === 'Allow';
    return {
      verdict: allow ? 'allow' : 'deny',
      provenance: prov(
        ep,
        'forward',
        dir,
        { kind: 'rule', tier: hit.tier.name, policy: hit.policy.name, rule: hit.rule.index },
        `${dir} rule ${hit.rule.index} (${hit.rule.action}) of policy ${hit.policy.name} in tier ${hit.tier.name}`,
      ),
      trace: t,
    };
  }
  if ('tier' in hit)
    return {
      verdict: 'deny',
      provenance: prov(
        ep,
        'forward',
        dir,
        { kind: 'tier-default', tier: hit.tier.name },
        `default deny of tier ${hit.tier.name}: applyOnForward policies select it for ${dir} and none allowed this traffic`,
      ),
      trace: t,
    };
  return {
    verdict: 'allow',
    provenance: prov(
      ep,
      'forward',
      dir,
      { kind: 'no-policy' },
      hit.anyTier
        ? `the tiers of its applyOnForward policies passed; forwarded traffic is allowed`
        : `no applyOnForward policy selects it for ${dir}; forwarded traffic is allowed`,
    ),
    trace: t,
  };
}

/** A normal-stage verdict, marked as such. */
function normalStage(
  view: HostPathView,
  ep: Endpoint,
  dir: Direction,
  ctx: MatchContext,
  before: readonly string[],
): DirectionVerdict {
  const v = view.normal(ep, dir, ctx);
  return {
    ...v,
    provenance: {
      ...v.provenance,
      stage: 'normal',
      hostEndpoint: ep.id,
      reason: `${STAGE_WORDS.normal} of host endpoint ${ep.id}: ${v.provenance.reason}`,
    },
    trace: [...before, ...v.trace],
  };
}

/** The host endpoint is not on the packet's way (host ⇄ its own workload). */
function bypassed(ep: Endpoint, dir: Direction, other: Endpoint): DirectionVerdict {
  return {
    verdict: 'allow',
    provenance: {
      point: 'kernel',
      direction: dir,
      kind: 'unmanaged',
      reason: `traffic between host endpoint ${ep.id} and its node's workload ${other.id} does not pass through the host endpoint's interface; its policy does not apply`,
    },
    trace: [],
  };
}

function withL7(ctx: MatchContext, ep: Endpoint): MatchContext {
  return ctx.l7Available === ep.l7 ? ctx : { ...ctx, l7Available: ep.l7 };
}

function sameNode(a: Endpoint, b: Endpoint | undefined): boolean {
  return b !== undefined && b.kind === 'workload' && a.node !== undefined && a.node === b.node;
}

/** Where an untracked Allow let a packet through, for its reply. */
interface UntrackedAt {
  readonly ep: Endpoint;
  readonly role: 'dst' | 'src' | 'viaIn';
}

/**
 * The stages a connection meets on its way, and its reply where untracked policy makes it
 * matter. `allow` is the kernel's answer for the connection.
 */
export function judgeHostPath(view: HostPathView, path: HostPath): HostPathVerdict {
  const { ctx } = path;
  const s = path.src.endpoint;
  const d = path.dst.endpoint;
  const forward: DirectionVerdict[] = [];
  let untracked: UntrackedAt | undefined;

  // Source side.
  let egress: DirectionVerdict;
  if (!s) egress = unmanagedSide('egress', path.srcLabel);
  else if (s.kind === 'workload') egress = view.normal(s, 'egress', withL7(ctx, s));
  else if (sameNode(s, d) && d) egress = bypassed(s, 'egress', d);
  else {
    const c = withL7(ctx, s);
    const u = earlyStage(view, s, 'untracked', 'egress', c);
    if (u.kind === 'decided') {
      egress = u.v;
      if (u.v.verdict === 'allow') untracked = { ep: s, role: 'src' };
    } else egress = normalStage(view, s, 'egress', c, u.trace);
  }
  // In through a host endpoint (to a workload of its node, or on out through another one).
  let marked = false;
  let inVerdict: DirectionVerdict | undefined;
  if (path.viaIn) {
    const h = path.viaIn;
    const c = withL7(ctx, h);
    const u = earlyStage(view, h, 'untracked', 'ingress', c);
    if (u.kind === 'decided') {
      inVerdict = u.v;
      if (u.v.verdict === 'allow') {
        untracked = { ep: h, role: 'viaIn' };
        marked = true;
      }
    } else {
      const p = earlyStage(view, h, 'preDNAT', 'ingress', c);
      if (p.kind === 'decided') {
        inVerdict = p.v;
        marked = p.v.verdict === 'allow';
      } else inVerdict = forwardStage(view, h, 'ingress', c);
    }
  }
  // Out through a host endpoint: a router hop (in and out on one node) skips it when the way in
  // accepted the packet untracked or pre-DNAT (the accept mark).
  let outVerdict: DirectionVerdict | undefined;
  if (path.viaOut) {
    const o = path.viaOut;
    const router = path.viaIn !== undefined && path.viaIn.node === o.node;
    outVerdict =
      router && marked
        ? {
            verdict: 'allow',
            provenance: prov(
              o,
              'forward',
              'egress',
              { kind: 'rule' },
              `skipped: the packet was accepted untracked or pre-DNAT on its way in`,
            ),
            trace: [],
          }
        : forwardStage(view, o, 'egress', withL7(ctx, o));
    if (router && inVerdict) forward.push(inVerdict, outVerdict);
    else forward.push(outVerdict);
  }
  if (inVerdict && !forward.includes(inVerdict)) forward.push(inVerdict);

  // Destination side.
  let ingress: DirectionVerdict;
  if (!d) ingress = unmanagedSide('ingress', path.dstLabel);
  else if (d.kind === 'workload') ingress = view.normal(d, 'ingress', withL7(ctx, d));
  else if (sameNode(d, s) && s) ingress = bypassed(d, 'ingress', s);
  else {
    const c = withL7(ctx, d);
    const u = earlyStage(view, d, 'untracked', 'ingress', c);
    if (u.kind === 'decided') {
      ingress = u.v;
      if (u.v.verdict === 'allow') untracked = { ep: d, role: 'dst' };
    } else {
      const p = earlyStage(view, d, 'preDNAT', 'ingress', c);
      ingress = p.kind === 'decided' ? p.v : normalStage(view, d, 'ingress', c, u.trace);
    }
  }

  const forwardOk = forward.every((f) => f.verdict === 'allow');
  const ok = egress.verdict === 'allow' && ingress.verdict === 'allow' && forwardOk;
  const reply = ok ? judgeReply(view, path, untracked) : undefined;
  return {
    allow: ok && (reply === undefined || reply.verdict === 'allow'),
    egress,
    ingress,
    forward,
    reply,
  };
}

function unmanagedSide(dir: Direction, label: string): DirectionVerdict {
  return {
    verdict: 'allow',
    provenance: {
      point: 'kernel',
      direction: dir,
      kind: 'unmanaged',
      reason: `${label} is not a Palisade endpoint; no ${dir} policy is enforced there`,
    },
    trace: [],
  };
}

/**
 * The reply of an allowed connection, at the host endpoints where untracked policy sees it:
 * untracked policy judges every packet (a Deny drops the reply of a tracked connection too), and a
 * connection let through untracked has no conntrack entry, so its reply either is allowed
 * untracked itself or meets connection tracking as a packet of no known connection — invalid for
 * TCP (dropped), a new flow for anything else (judged by the stages after conntrack).
 */
function judgeReply(
  view: HostPathView,
  path: HostPath,
  untracked: UntrackedAt | undefined,
): DirectionVerdict | undefined {
  const s = path.src.endpoint;
  const d = path.dst.endpoint;
  const rctx: MatchContext = {
    ...path.ctx,
    src: path.dst,
    dst: path.src,
    dstPort: undefined,
    ...(path.ctx.dstPort !== undefined ? { srcPort: path.ctx.dstPort } : {}),
  };
  // The untracked stages the reply meets: out of the destination host, in to the source host, in
  // through the host endpoint the connection left by.
  const meets: { ep: Endpoint; dir: Direction; role: UntrackedAt['role'] | 'viaOut' }[] = [];
  if (d?.kind === 'host' && !sameNode(d, s)) meets.push({ ep: d, dir: 'egress', role: 'dst' });
  if (path.viaOut) meets.push({ ep: path.viaOut, dir: 'ingress', role: 'viaOut' });
  if (s?.kind === 'host' && !sameNode(s, d)) meets.push({ ep: s, dir: 'ingress', role: 'src' });
  let last: DirectionVerdict | undefined;
  for (const m of meets) {
    const u = earlyStage(view, m.ep, 'untracked', m.dir, withL7(rctx, m.ep));
    if (u.kind === 'decided') {
      const v = asReply(u.v);
      if (v.verdict === 'deny') return v;
      last = v;
      // Let in untracked through the way out's host endpoint, the reply is no established
      // packet for the workload behind it: that workload's ingress judges it.
      if (m.role === 'viaOut' && s?.kind === 'workload') {
        const w = view.normal(s, 'ingress', withL7(rctx, s));
        if (w.verdict === 'deny') return asReply(w);
      }
      // Allowed untracked: the reply skips this host endpoint's later stages.
      if (untracked && untracked.ep === m.ep) untracked = undefined;
    } else if (untracked && untracked.ep === m.ep) {
      const v = replyWithoutConntrack(view, path, rctx, untracked);
      if (v.verdict === 'deny') return v;
      last = v;
      untracked = undefined;
    }
  }
  // Untracked in through a host endpoint to a workload: the reply from the workload meets no
  // untracked stage (the agent has none for traffic out of workloads), so it has no connection.
  if (untracked) {
    const v = replyWithoutConntrack(view, path, rctx, untracked);
    if (v.verdict === 'deny') return v;
    last = v;
  }
  return last;
}

function asReply(v: DirectionVerdict): DirectionVerdict {
  return {
    ...v,
    provenance: { ...v.provenance, reason: `the reply: ${v.provenance.reason}` },
  };
}

/** The reply of an untracked connection that its own untracked stage did not allow. */
function replyWithoutConntrack(
  view: HostPathView,
  path: HostPath,
  rctx: MatchContext,
  at: UntrackedAt,
): DirectionVerdict {
  const h = at.ep;
  const dir: Direction = at.role === 'src' ? 'ingress' : 'egress';
  if (rctx.protocol === 6)
    return {
      verdict: 'deny',
      provenance: {
        point: 'kernel',
        direction: dir,
        kind: 'untracked-reply',
        stage: 'untracked',
        hostEndpoint: h.id,
        reason: `the connection passed host endpoint ${h.id} untracked (doNotTrack), so no conntrack entry lets its reply back; the reply is not allowed by untracked policy, and a TCP reply of no known connection is invalid`,
      },
      trace: [],
    };
  // Anything else: the reply is a new flow for connection tracking, judged by what follows it.
  const c = withL7(rctx, h);
  switch (at.role) {
    case 'dst':
      return asReply(normalStage(view, h, 'egress', c, []));
    case 'src': {
      const p = earlyStage(view, h, 'preDNAT', 'ingress', c);
      return asReply(p.kind === 'decided' ? p.v : normalStage(view, h, 'ingress', c, []));
    }
    case 'viaIn': {
      const w = path.dst.endpoint;
      if (w) {
        const e = view.normal(w, 'egress', withL7(rctx, w));
        if (e.verdict === 'deny') return asReply(e);
      }
      return asReply(forwardStage(view, h, 'egress', c));
    }
  }
}
