// The kinds the API server serves (DESIGN §3 and §7), with their REST names, kubectl-style short
// and plural names, scope and tiering. Owns: kind identity on the wire and in store keys.
// Must never: validate resource bodies (the core loader does) or decide access (auth/ does).

export interface ServerKind {
  /** The `kind` field, e.g. `NetworkPolicy`. */
  readonly kind: string;
  /** The API group in paths and keys: `projectcalico.org`, `core` for `v1`, `palisade.dev`. */
  readonly group: string;
  /** apiVersions accepted in bodies; the first is the one the server writes for new objects. */
  readonly apiVersions: readonly string[];
  readonly namespaced: boolean;
  readonly plural: string;
  readonly shortNames: readonly string[];
  /** A policy authorized by the tier it sits in (Calico tiers, DESIGN §7). */
  readonly tiered: 'spec.tier' | 'default' | 'self' | false;
  /** Access-control kinds of our own group: not fed to the engine. */
  readonly access: boolean;
}

const CALICO = 'projectcalico.org/v3';

function k(
  kind: string,
  group: string,
  apiVersions: readonly string[],
  namespaced: boolean,
  plural: string,
  shortNames: readonly string[],
  tiered: ServerKind['tiered'] = false,
  access = false,
): ServerKind {
  return { kind, group, apiVersions, namespaced, plural, shortNames, tiered, access };
}

export const SERVER_KINDS: readonly ServerKind[] = [
  k('Tier', 'projectcalico.org', [CALICO], false, 'tiers', [], 'self'),
  k(
    'GlobalNetworkPolicy',
    'projectcalico.org',
    [CALICO],
    false,
    'globalnetworkpolicies',
    ['gnp'],
    'spec.tier',
  ),
  k(
    'NetworkPolicy',
    'projectcalico.org',
    [CALICO],
    true,
    'networkpolicies',
    ['np', 'cnp', 'caliconetworkpolicy'],
    'spec.tier',
  ),
  k(
    'StagedGlobalNetworkPolicy',
    'projectcalico.org',
    [CALICO],
    false,
    'stagedglobalnetworkpolicies',
    ['sgnp'],
    'spec.tier',
  ),
  k(
    'StagedNetworkPolicy',
    'projectcalico.org',
    [CALICO],
    true,
    'stagednetworkpolicies',
    ['snp'],
    'spec.tier',
  ),
  k(
    'StagedKubernetesNetworkPolicy',
    'projectcalico.org',
    [CALICO],
    true,
    'stagedkubernetesnetworkpolicies',
    ['sknp'],
    'default',
  ),
  k('GlobalNetworkSet', 'projectcalico.org', [CALICO], false, 'globalnetworksets', ['gns']),
  k('NetworkSet', 'projectcalico.org', [CALICO], true, 'networksets', ['ns-set', 'netset']),
  k('HostEndpoint', 'projectcalico.org', [CALICO], false, 'hostendpoints', ['hep']),
  k('WorkloadEndpoint', 'projectcalico.org', [CALICO], true, 'workloadendpoints', ['wep']),
  k('Profile', 'projectcalico.org', [CALICO], false, 'profiles', ['pro']),
  k(
    'NetworkPolicy',
    'networking.k8s.io',
    ['networking.k8s.io/v1', 'extensions/v1beta1'],
    true,
    'networkpolicies',
    ['netpol', 'knp', 'k8snetworkpolicy'],
    'default',
  ),
  k('Namespace', 'core', ['v1'], false, 'namespaces', ['ns']),
  k('Pod', 'core', ['v1'], true, 'pods', ['po']),
  k('ServiceAccount', 'core', ['v1'], true, 'serviceaccounts', ['sa']),
  k('Service', 'core', ['v1'], true, 'services', ['svc']),
  // The endpoints of Services, for Calico's `services` rule matches.
  k('EndpointSlice', 'discovery.k8s.io', ['discovery.k8s.io/v1'], true, 'endpointslices', []),
  k('Endpoints', 'core', ['v1'], true, 'endpoints', ['ep']),
  k(
    'AuthorizationPolicy',
    'security.istio.io',
    ['security.istio.io/v1', 'security.istio.io/v1beta1'],
    true,
    'authorizationpolicies',
    ['ap'],
  ),
  k(
    'PeerAuthentication',
    'security.istio.io',
    ['security.istio.io/v1', 'security.istio.io/v1beta1'],
    true,
    'peerauthentications',
    ['pa'],
  ),
  // Legacy Istio RBAC (rbac.istio.io/v1alpha1), judged at L7 as Istio 1.4/1.5 did.
  k('ServiceRole', 'rbac.istio.io', ['rbac.istio.io/v1alpha1'], true, 'serviceroles', []),
  k(
    'ServiceRoleBinding',
    'rbac.istio.io',
    ['rbac.istio.io/v1alpha1'],
    true,
    'servicerolebindings',
    [],
  ),
  k('RbacConfig', 'rbac.istio.io', ['rbac.istio.io/v1alpha1'], true, 'rbacconfigs', []),
  k(
    'ClusterRbacConfig',
    'rbac.istio.io',
    ['rbac.istio.io/v1alpha1'],
    false,
    'clusterrbacconfigs',
    [],
  ),
  k('Role', 'palisade.dev', ['palisade.dev/v1'], false, 'roles', [], false, true),
  k('RoleBinding', 'palisade.dev', ['palisade.dev/v1'], false, 'rolebindings', [], false, true),
];

const byGroupKind = new Map(SERVER_KINDS.map((s) => [`${s.group}/${s.kind}`, s]));
const byApiVersionKind = new Map(
  SERVER_KINDS.flatMap((s) => s.apiVersions.map((v) => [`${v}/${s.kind}`, s] as const)),
);

/** The kind served at `/api/v1/<group>/<Kind>`. */
export function kindByPath(group: string, kind: string): ServerKind | undefined {
  return byGroupKind.get(`${group}/${kind}`);
}

/** The kind of a body (apiVersion and kind fields). */
export function kindOf(apiVersion: string, kind: string): ServerKind | undefined {
  return byApiVersionKind.get(`${apiVersion}/${kind}`);
}

/** `Kind.group`, the unambiguous name used in audit entries and messages. */
export function qualifiedKind(s: ServerKind): string {
  return `${s.kind}.${s.group}`;
}

/**
 * Resolves what a person types (`gnp`, `globalnetworkpolicies`, `NetworkPolicy`,
 * `networkpolicies.networking.k8s.io`, `knp`) to a kind. A bare `NetworkPolicy`/`np` is Calico's,
 * as in calicoctl; the Kubernetes one is `netpol`/`knp` or group-qualified.
 */
export function resolveKindName(input: string): ServerKind | undefined {
  const s = input.trim().toLowerCase();
  const dot = s.indexOf('.');
  if (dot > 0) {
    const head = s.slice(0, dot);
    const group = s.slice(dot + 1);
    return SERVER_KINDS.find(
      (x) =>
        x.group === group &&
        (x.kind.toLowerCase() === head || x.plural === head || x.shortNames.includes(head)),
    );
  }
  return (
    SERVER_KINDS.find((x) => x.kind.toLowerCase() === s) ??
    SERVER_KINDS.find((x) => x.plural === s) ??
    SERVER_KINDS.find((x) => x.shortNames.includes(s)) ??
    SERVER_KINDS.find((x) => x.kind.toLowerCase() + 's' === s)
  );
}
