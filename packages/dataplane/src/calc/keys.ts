// Stable identities for the sets rules reference, so equal selectors share one kernel set and a
// set keeps its name while only its members change (then the driver updates elements, not rules).
// Owns: turning a rule's user-written peer (Calico entity rule or Kubernetes peer) into a key.
// Must never: decide membership (the engine's compiled matchers do; keys only name them).

import { createHash } from 'node:crypto';
import { parseSelector, printSelector } from '@palisade/core';
import type {
  CalicoRule,
  EntityRule,
  K8sLabelSelector,
  NetworkPolicyPeer,
  Resource,
} from '@palisade/core';

function canonicalSelector(text: string | undefined): string | null {
  if (text === undefined || text.trim() === '') return null;
  const r = parseSelector(text);
  return r.ok ? printSelector(r.selector) : `invalid:${text}`;
}

function canonicalK8s(s: K8sLabelSelector | undefined): unknown {
  if (!s) return null;
  const labels = Object.entries(s.matchLabels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  const exprs = (s.matchExpressions ?? [])
    .map((e) => [e.key, e.operator, [...(e.values ?? [])].sort()] as const)
    .sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  return { l: labels, e: exprs };
}

/** The key of a Calico entity rule's effective selector (see rules.ts in the core for scoping). */
export function calicoSelectorKey(er: EntityRule, policyNamespace: string | undefined): string {
  const nsSel = canonicalSelector(er.namespaceSelector);
  const sa = er.serviceAccounts
    ? {
        n: [...(er.serviceAccounts.names ?? [])].sort(),
        s: canonicalSelector(er.serviceAccounts.selector),
      }
    : null;
  return JSON.stringify([
    'c',
    nsSel === null ? (policyNamespace ?? null) : null,
    nsSel,
    sa,
    canonicalSelector(er.selector),
  ]);
}

export function notSelectorKey(text: string): string {
  return JSON.stringify(['not', canonicalSelector(text)]);
}

/** The key of a Kubernetes peer's pod/namespace selector in the policy's namespace. */
export function k8sPeerKey(peer: NetworkPolicyPeer, policyNamespace: string): string {
  return JSON.stringify([
    'k',
    peer.namespaceSelector ? null : policyNamespace,
    canonicalK8s(peer.namespaceSelector),
    canonicalK8s(peer.podSelector),
  ]);
}

/** A short, stable, nft-safe name for a key. */
export function setName(prefix: string, key: string): string {
  return `${prefix}${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

/** The raw rule lists of a policy resource, per direction, for key lookup. */
export type RawRules =
  | {
      readonly kind: 'calico';
      readonly namespace: string | undefined;
      readonly ingress: readonly CalicoRule[];
      readonly egress: readonly CalicoRule[];
    }
  | {
      readonly kind: 'k8s';
      readonly namespace: string;
      readonly ingress: readonly {
        readonly peers: readonly NetworkPolicyPeer[];
        readonly nPorts: number;
      }[];
      readonly egress: readonly {
        readonly peers: readonly NetworkPolicyPeer[];
        readonly nPorts: number;
      }[];
    };

const NAMESPACED_POLICIES = new Set([
  'NetworkPolicy',
  'StagedNetworkPolicy',
  'StagedKubernetesNetworkPolicy',
]);

/** The engine's CompiledPolicy key for a policy resource, and its raw rules; undefined otherwise. */
export function rawPolicyRules(r: Resource): { key: string; rules: RawRules } | undefined {
  switch (r.kind) {
    case 'NetworkPolicy':
    case 'StagedNetworkPolicy':
    case 'StagedKubernetesNetworkPolicy':
    case 'GlobalNetworkPolicy':
    case 'StagedGlobalNetworkPolicy':
      break;
    default:
      return undefined;
  }
  const ns = NAMESPACED_POLICIES.has(r.kind) ? (r.metadata.namespace ?? 'default') : undefined;
  const key = `${r.kind}/${ns ?? ''}/${r.metadata.name}`;
  if (r.apiVersion === 'projectcalico.org/v3' && r.kind !== 'StagedKubernetesNetworkPolicy') {
    const spec = (
      r as unknown as {
        spec: { ingress?: readonly CalicoRule[]; egress?: readonly CalicoRule[] };
      }
    ).spec;
    return {
      key,
      rules: {
        kind: 'calico',
        namespace: ns,
        ingress: spec.ingress ?? [],
        egress: spec.egress ?? [],
      },
    };
  }
  const spec = (
    r as unknown as {
      spec: {
        ingress?: readonly { from?: readonly NetworkPolicyPeer[]; ports?: readonly unknown[] }[];
        egress?: readonly { to?: readonly NetworkPolicyPeer[]; ports?: readonly unknown[] }[];
      };
    }
  ).spec;
  return {
    key,
    rules: {
      kind: 'k8s',
      namespace: ns ?? 'default',
      ingress: (spec.ingress ?? []).map((x) => ({
        peers: x.from ?? [],
        nPorts: Math.max(1, x.ports?.length ?? 0),
      })),
      egress: (spec.egress ?? []).map((x) => ({
        peers: x.to ?? [],
        nPorts: Math.max(1, x.ports?.length ?? 0),
      })),
    },
  };
}
