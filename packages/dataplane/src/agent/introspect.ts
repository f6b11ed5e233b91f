// What the agent enforces, for people: the local endpoints, each endpoint's active policies in
// evaluation order, the chains rendered for it with the kernel's hit counters, the last sync and
// apply, and errors (the equivalent of `istioctl proxy-config`). Counters come from one
// `nft -j list table` of the owned table; the rule text is the agent's own rendering, matched to
// the kernel's rules by chain and position and checked by comment, so a rule changed behind the
// agent's back shows as drift instead of being silently mislabelled.
// Owns: the report shapes and their assembly. Must never: change the kernel or the calculation.

import type { Engine } from '@palisade/core';
import { formatIp } from '../calc/net.js';
import { endpointChainName, skeletonParts } from '../nft/render.js';
import type { Rendered } from '../nft/render.js';
import type { AgentStatus } from './agent.js';

/** What introspection reads from the agent (the agent implements it; tests can fake it). */
export interface AgentView {
  readonly node: string;
  readonly table: string;
  status(): AgentStatus;
  /** The local endpoints as programmed: ref, interface and kind. */
  locals(): readonly { ref: string; iface: string; kind: 'workload' | 'host' }[];
  readonly engine: Engine;
  /** The rendering last applied to the kernel. */
  applied(): Rendered | undefined;
  /** `nft -j list table inet T` of the owned table (undefined: it does not exist). */
  readBack(): Promise<string | undefined>;
  /** Pods of this node without a WorkloadEndpoint (not programmed; their traffic drops). */
  podsWithoutEndpoint(): readonly string[];
}

export interface PolicyRow {
  readonly tier: string;
  readonly order: number | null;
  readonly name: string;
  readonly kind: string;
  /** `networking.k8s.io/v1` for a Kubernetes NetworkPolicy, `projectcalico.org/v3` otherwise. */
  readonly apiVersion: string;
  readonly staged: boolean;
}

export interface RuleRow {
  /** The rule as the agent rendered it. */
  readonly rule: string;
  readonly packets: number | null;
  readonly bytes: number | null;
  /** The kernel's rule at this position is not the rendered one (tampering, or not yet applied). */
  readonly drift: boolean;
}

export interface ChainRow {
  readonly name: string;
  /** `endpoint ingress`, `tier T`, `profile P`. */
  readonly role: string;
  readonly rules: readonly RuleRow[];
}

export interface EndpointSummary {
  readonly ref: string;
  readonly kind: 'workload' | 'host';
  readonly iface: string;
  readonly addresses: readonly string[];
  readonly ingressPolicies: number;
  readonly egressPolicies: number;
}

export interface StatusReport {
  readonly node: string;
  readonly table: string;
  readonly connected: boolean;
  readonly revision: string | null;
  readonly appliedRevision: string | null;
  readonly lastSync: string | null;
  readonly lastApply: string | null;
  readonly applies: number;
  readonly ruleCount: number;
  readonly endpoints: readonly EndpointSummary[];
  readonly podsWithoutEndpoint: readonly string[];
  readonly errors: readonly { readonly at: string; readonly message: string }[];
}

export interface EndpointReport {
  readonly endpoint: EndpointSummary;
  readonly labels: Readonly<Record<string, string>>;
  readonly policies: {
    readonly ingress: readonly PolicyRow[];
    readonly egress: readonly PolicyRow[];
  };
  readonly profiles: { readonly ingress: readonly string[]; readonly egress: readonly string[] };
  readonly chains: readonly ChainRow[];
  readonly revision: string | null;
  readonly appliedRevision: string | null;
  readonly lastSync: string | null;
  readonly lastApply: string | null;
  readonly errors: readonly { readonly at: string; readonly message: string }[];
}

const iso = (d: Date | undefined): string | null => (d ? d.toISOString() : null);

function summary(
  view: AgentView,
  l: { ref: string; iface: string; kind: 'workload' | 'host' },
): EndpointSummary {
  const ep = view.engine.describeEndpoint(l.ref);
  const active = view.engine.activeTiers(l.ref);
  const count = (ts: readonly { policies: readonly unknown[] }[] | undefined) =>
    (ts ?? []).reduce((n, t) => n + t.policies.length, 0);
  return {
    ref: l.ref,
    kind: l.kind,
    iface: l.iface,
    addresses: (ep?.ips ?? []).map(formatIp),
    ingressPolicies: count(active?.ingress),
    egressPolicies: count(active?.egress),
  };
}

export function statusReport(view: AgentView): StatusReport {
  const s = view.status();
  return {
    node: view.node,
    table: view.table,
    connected: s.connected,
    revision: s.revision ?? null,
    appliedRevision: s.appliedRevision ?? null,
    lastSync: iso(s.lastSync),
    lastApply: iso(s.lastApply),
    applies: s.applies,
    ruleCount: s.ruleCount,
    endpoints: view.locals().map((l) => summary(view, l)),
    podsWithoutEndpoint: view.podsWithoutEndpoint(),
    errors: s.errors.map((e) => ({ at: e.at.toISOString(), message: e.message })),
  };
}

/** Kernel rules of the owned table from `nft -j`, per chain in order: comment and counter. */
export function kernelRules(
  listJson: string | undefined,
): Map<string, { comment: string | undefined; packets: number; bytes: number }[]> {
  const out = new Map<string, { comment: string | undefined; packets: number; bytes: number }[]>();
  if (listJson === undefined) return out;
  const data = JSON.parse(listJson) as { nftables?: unknown[] };
  for (const e of data.nftables ?? []) {
    const rule = (e as { rule?: { chain?: unknown; comment?: unknown; expr?: unknown } }).rule;
    if (!rule || typeof rule.chain !== 'string') continue;
    let packets = 0;
    let bytes = 0;
    for (const x of Array.isArray(rule.expr) ? rule.expr : []) {
      const c = (x as { counter?: { packets?: unknown; bytes?: unknown } }).counter;
      if (c && typeof c.packets === 'number' && typeof c.bytes === 'number') {
        packets = c.packets;
        bytes = c.bytes;
      }
    }
    const l = out.get(rule.chain) ?? [];
    l.push({
      comment: typeof rule.comment === 'string' ? rule.comment : undefined,
      packets,
      bytes,
    });
    out.set(rule.chain, l);
  }
  return out;
}

const COMMENT_RE = /comment "([^"]*)"$/;

function chainRows(
  name: string,
  role: string,
  rendered: readonly string[],
  kernel: Map<string, { comment: string | undefined; packets: number; bytes: number }[]>,
): ChainRow {
  const k = kernel.get(name);
  return {
    name,
    role,
    rules: rendered.map((rule, i) => {
      const kr = k?.[i];
      const want = COMMENT_RE.exec(rule)?.[1];
      const drift = kr === undefined || kr.comment !== want || k?.length !== rendered.length;
      return { rule, packets: kr?.packets ?? null, bytes: kr?.bytes ?? null, drift };
    }),
  };
}

/** Finds a local endpoint by `namespace/pod`, a host endpoint name or a WorkloadEndpoint name. */
export function findLocal(
  view: AgentView,
  ref: string,
): { ref: string; iface: string; kind: 'workload' | 'host' } | undefined {
  const locals = view.locals();
  return (
    locals.find((l) => l.ref === ref) ??
    locals.find((l) => !ref.includes('/') && l.ref === `default/${ref}`) ??
    locals.find((l) => l.iface === ref)
  );
}

export async function endpointReport(
  view: AgentView,
  ref: string,
): Promise<EndpointReport | undefined> {
  const l = findLocal(view, ref);
  if (!l) return undefined;
  const s = view.status();
  const ep = view.engine.describeEndpoint(l.ref);
  const active = view.engine.activeTiers(l.ref);
  const profiles = view.engine.dataplaneInputs(l.ref).profiles;
  // The engine names a Kubernetes policy as Calico does (`ns/knp.default.NAME`); its kind is
  // NetworkPolicy like a Calico one, so the API group tells them apart.
  const row = (
    tier: string,
    p: { order: number | undefined; name: string; kind: string },
    staged: boolean,
  ): PolicyRow => ({
    tier,
    order: p.order ?? null,
    name: p.name,
    kind: p.kind,
    apiVersion: /\/(staged:)?knp\.default\./.test(p.name)
      ? 'networking.k8s.io/v1'
      : 'projectcalico.org/v3',
    staged,
  });
  const rows = (dir: 'ingress' | 'egress'): PolicyRow[] => {
    const out: PolicyRow[] = [];
    for (const t of active?.[dir] ?? []) {
      for (const p of t.policies) out.push(row(t.name, p, false));
      for (const p of t.staged) out.push(row(t.name, p, true));
    }
    return out;
  };
  const chains: ChainRow[] = [];
  const rendered = view.applied();
  if (rendered) {
    const parts = rendered.parts ?? skeletonParts(rendered.skeleton);
    const kernel = kernelRules(await view.readBack());
    const seen = new Set<string>();
    for (const dir of ['ingress', 'egress'] as const) {
      const name = endpointChainName(l.kind, dir, l.ref);
      const body = parts.chains.get(name);
      if (!body) continue;
      chains.push(chainRows(name, `endpoint ${dir}`, body, kernel));
      for (const r of body) {
        const m = /\bjump (\S+) comment "(tier|profile) ([^:"]*)/.exec(r);
        if (!m || seen.has(m[1] ?? '')) continue;
        const target = m[1] ?? '';
        seen.add(target);
        const tb = parts.chains.get(target);
        if (!tb) continue;
        chains.push(chainRows(target, `${m[2] ?? ''} ${m[3] ?? ''} (${dir})`, tb, kernel));
        // A large tier's part chains (render.ts: tierPartPolicies), in the order it jumps to them.
        for (const pr of tb) {
          const pm = /\bjump (\S+) comment "tier ([^:"]*) part (\d+)/.exec(pr);
          const pb = pm ? parts.chains.get(pm[1] ?? '') : undefined;
          if (!pm || !pb || seen.has(pm[1] ?? '')) continue;
          seen.add(pm[1] ?? '');
          chains.push(
            chainRows(pm[1] ?? '', `tier ${pm[2] ?? ''} part ${pm[3] ?? ''} (${dir})`, pb, kernel),
          );
        }
      }
    }
  }
  return {
    endpoint: summary(view, l),
    labels: ep?.labels ?? {},
    policies: { ingress: rows('ingress'), egress: rows('egress') },
    profiles: {
      ingress: (profiles?.ingress ?? []).map((p) => p.profile.name),
      egress: (profiles?.egress ?? []).map((p) => p.profile.name),
    },
    chains,
    revision: s.revision ?? null,
    appliedRevision: s.appliedRevision ?? null,
    lastSync: iso(s.lastSync),
    lastApply: iso(s.lastApply),
    errors: s.errors.map((e) => ({ at: e.at.toISOString(), message: e.message })),
  };
}
