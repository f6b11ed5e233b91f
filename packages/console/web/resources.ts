// Reads the policy model from the API (every kind the engine uses) for the board, the endpoint
// page and the editor's preview. Names follow the engine's provenance: namespaced policies are
// `namespace/name`, Kubernetes ones `namespace/knp.default.name`.

import type { Resource } from '@palisade/core';
import { api } from './api.js';

interface List {
  items: Record<string, unknown>[];
}

export const MODEL_KINDS = [
  'projectcalico.org/Tier',
  'projectcalico.org/GlobalNetworkPolicy',
  'projectcalico.org/NetworkPolicy',
  'projectcalico.org/StagedGlobalNetworkPolicy',
  'projectcalico.org/StagedNetworkPolicy',
  'projectcalico.org/StagedKubernetesNetworkPolicy',
  'projectcalico.org/GlobalNetworkSet',
  'projectcalico.org/NetworkSet',
  'projectcalico.org/HostEndpoint',
  'projectcalico.org/WorkloadEndpoint',
  'projectcalico.org/Profile',
  'networking.k8s.io/NetworkPolicy',
  'core/Namespace',
  'core/Pod',
  'core/ServiceAccount',
  'core/Service',
  'security.istio.io/AuthorizationPolicy',
  'security.istio.io/PeerAuthentication',
] as const;

export async function loadModel(): Promise<Resource[]> {
  const lists = await Promise.all(
    MODEL_KINDS.map((k) => api<List>(`/api/v1/${k}?limit=100000`).catch(() => ({ items: [] }))),
  );
  return lists.flatMap((l) => l.items) as unknown as Resource[];
}

export interface PolicyRow {
  readonly kind: string;
  readonly qualified: string;
  readonly namespace?: string;
  readonly name: string;
  readonly tier: string;
  readonly order: number | undefined;
  readonly staged: boolean;
  readonly selector: string;
  readonly types: string;
}

type Spec = {
  tier?: string;
  order?: number;
  selector?: string;
  types?: string[];
  podSelector?: unknown;
  policyTypes?: string[];
};

export function policyRows(model: readonly Resource[]): PolicyRow[] {
  const rows: PolicyRow[] = [];
  for (const r of model) {
    const kind = r.kind;
    const md = r.metadata as { name: string; namespace?: string };
    const spec = (r as unknown as { spec?: Spec }).spec ?? {};
    const k8s =
      r.apiVersion.startsWith('networking.k8s.io') || kind === 'StagedKubernetesNetworkPolicy';
    if (!/NetworkPolicy$/.test(kind)) continue;
    const staged = kind.startsWith('Staged');
    const base = k8s ? `knp.default.${md.name}` : md.name;
    rows.push({
      kind: `${kind}${r.apiVersion.startsWith('networking.k8s.io') ? ' (Kubernetes)' : ''}`,
      qualified: md.namespace ? `${md.namespace}/${base}` : base,
      ...(md.namespace ? { namespace: md.namespace } : {}),
      name: md.name,
      tier: k8s ? 'default' : (spec.tier ?? 'default'),
      order: k8s ? 1000 : spec.order,
      staged,
      selector: k8s ? 'podSelector' : (spec.selector ?? 'all()'),
      types: (k8s ? spec.policyTypes : spec.types)?.join(', ') ?? '',
    });
  }
  return rows;
}

export interface TierRow {
  readonly name: string;
  readonly order: number | undefined;
  readonly defaultAction: string;
}

export function tierRows(model: readonly Resource[], policies: readonly PolicyRow[]): TierRow[] {
  const tiers = new Map<string, TierRow>();
  for (const r of model)
    if (r.kind === 'Tier') {
      const spec =
        (r as unknown as { spec?: { order?: number; defaultAction?: string } }).spec ?? {};
      tiers.set(r.metadata.name, {
        name: r.metadata.name,
        order: spec.order,
        defaultAction: spec.defaultAction ?? 'Deny',
      });
    }
  // The default tier exists implicitly (order 1000000 in Calico).
  if (!tiers.has('default') && policies.some((p) => p.tier === 'default'))
    tiers.set('default', { name: 'default', order: 1_000_000, defaultAction: 'Deny' });
  for (const p of policies)
    if (!tiers.has(p.tier))
      tiers.set(p.tier, { name: p.tier, order: undefined, defaultAction: 'Deny' });
  return [...tiers.values()].sort(byOrder);
}

/** Ascending order, nil last, then name (DESIGN §4.1). */
export function byOrder(
  a: { order: number | undefined; name?: string; qualified?: string },
  b: typeof a,
): number {
  const ao = a.order ?? Number.POSITIVE_INFINITY;
  const bo = b.order ?? Number.POSITIVE_INFINITY;
  if (ao !== bo) return ao < bo ? -1 : 1;
  const an = a.qualified ?? a.name ?? '';
  const bn = b.qualified ?? b.name ?? '';
  return an < bn ? -1 : an > bn ? 1 : 0;
}
