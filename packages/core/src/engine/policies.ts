// Calico and Kubernetes policies compiled into one form: which endpoints a policy applies to,
// per direction, and its ordered rules (DESIGN §4 items 1–4, 8).
// Owns: translation of Kubernetes NetworkPolicy into Calico's model, as Calico does it.
// Must never: evaluate traffic.

import type {
  CalicoNetworkPolicy,
  CalicoPolicySpec,
  CalicoRule,
  EntityRule,
  GlobalNetworkPolicy,
  K8sLabelSelector,
  K8sNetworkPolicy,
  K8sNetworkPolicySpec,
  NetworkPolicyPeer,
  NetworkPolicyPort,
  StagedGlobalNetworkPolicy,
  StagedKubernetesNetworkPolicy,
  StagedNetworkPolicy,
  SourceRef,
} from '../model/resources.js';
import {
  allOf,
  compileCalicoSelector,
  compileK8sSelector,
  parseSelectorCached,
  selectorIsAll,
} from './matchers.js';
import type { SelectorCompileError } from './matchers.js';
import type { Endpoint, Entity } from './model.js';
import { LABEL_ORCHESTRATOR } from './model.js';
import { compileRule, type CompiledRule, type RuleScope } from './rules.js';

export const DEFAULT_TIER = 'default';
/** Calico's default tier order when no Tier resource says otherwise. */
export const DEFAULT_TIER_ORDER = 1_000_000;
/** Kubernetes NetworkPolicies sit in the default tier at this order, as in Calico. */
export const K8S_POLICY_ORDER = 1000;

export interface CompiledPolicy {
  /** Unique key: kind/namespace/name. */
  readonly key: string;
  /** Name used in provenance and for the name tie-break: `ns/name` or `name`. */
  readonly name: string;
  readonly kind: string;
  readonly tier: string;
  readonly order: number | undefined;
  readonly namespace: string | undefined;
  readonly staged: boolean;
  readonly stagedDelete: boolean;
  /**
   * Calico's host endpoint policy modes (global policies only): `preDNAT` and `doNotTrack`
   * policies apply to host endpoints alone, each in its own stage, never in normal evaluation;
   * `applyOnForward` ones also apply to traffic forwarded through a host endpoint (see
   * host-stages.ts).
   */
  readonly preDNAT: boolean;
  readonly doNotTrack: boolean;
  readonly applyOnForward: boolean;
  readonly applies: (ep: Endpoint) => boolean;
  /** Absent when the policy's types leave out the direction. */
  readonly ingress: readonly CompiledRule[] | undefined;
  readonly egress: readonly CompiledRule[] | undefined;
  readonly source: SourceRef | undefined;
  /**
   * A label `key=value` every endpoint the policy selects must carry, when its selector says so
   * (`app == 'x' && ...`): lets the engine look policies up by an endpoint's labels instead of
   * testing every global policy against every endpoint.
   */
  readonly requires: readonly [string, string] | undefined;
  /**
   * What `applies` tests, as text: two policies with the same key select exactly the same
   * endpoints, so the engine evaluates the selector once for all of them.
   */
  readonly selectorKey: string;
}

/** The first `key == 'value'` conjunct of a selector, if any. */
export function requiredLabel(text: string | undefined): [string, string] | undefined {
  if (text === undefined) return undefined;
  const r = parseSelectorCached(text);
  if (!r.ok) return undefined;
  const s = r.selector;
  const candidates = s.kind === 'and' ? s.operands : [s];
  for (const c of candidates) {
    if (c.kind === 'eq') return [c.key, c.value];
    if (c.kind === 'in' && c.values.length === 1 && c.values[0] !== undefined)
      return [c.key, c.values[0]];
  }
  return undefined;
}

type CalicoPolicyResource =
  CalicoNetworkPolicy | GlobalNetworkPolicy | StagedNetworkPolicy | StagedGlobalNetworkPolicy;

/** Calico's `types` defaulting: Egress only when there are egress rules and no ingress rules. */
export function calicoTypes(spec: CalicoPolicySpec): { ingress: boolean; egress: boolean } {
  if (spec.types && spec.types.length > 0) {
    return { ingress: spec.types.includes('Ingress'), egress: spec.types.includes('Egress') };
  }
  const hasIn = (spec.ingress?.length ?? 0) > 0;
  const hasEg = (spec.egress?.length ?? 0) > 0;
  if (hasEg && !hasIn) return { ingress: false, egress: true };
  if (hasEg && hasIn) return { ingress: true, egress: true };
  return { ingress: true, egress: false };
}

function and(parts: ((ep: Endpoint) => boolean)[]): (ep: Endpoint) => boolean {
  if (parts.length === 0) return () => true;
  if (parts.length === 1) return parts[0] ?? (() => true);
  return (ep) => allOf(parts, ep);
}

export function compileCalicoPolicy(
  p: CalicoPolicyResource,
  onSelectorError?: (e: SelectorCompileError) => void,
): CompiledPolicy {
  const spec = p.spec;
  const global = p.kind === 'GlobalNetworkPolicy' || p.kind === 'StagedGlobalNetworkPolicy';
  const namespace = global ? undefined : (p.metadata.namespace ?? 'default');
  const staged = p.kind.startsWith('Staged');
  const parts: ((ep: Endpoint) => boolean)[] = [];
  // Built beside `parts`, one segment per predicate, so equal keys mean equal predicates.
  const keyParts: (string | null)[] = ['calico', namespace ?? null];
  if (namespace !== undefined) parts.push((ep) => ep.namespace === namespace);
  if (global && spec.namespaceSelector && spec.namespaceSelector.trim() !== '') {
    const t = spec.namespaceSelector.trim();
    keyParts.push('ns', t);
    if (selectorIsAll(t)) parts.push((ep) => ep.namespace !== undefined);
    else if (/^global\(\s*\)$/.test(t)) parts.push((ep) => ep.namespace === undefined);
    else {
      const m = compileCalicoSelector(t, onSelectorError);
      parts.push((ep) => m(ep.nsView));
    }
  }
  if (spec.serviceAccountSelector && spec.serviceAccountSelector.trim() !== '') {
    keyParts.push('sa', spec.serviceAccountSelector);
    const m = compileCalicoSelector(spec.serviceAccountSelector, onSelectorError);
    parts.push((ep) => ep.saView !== undefined && m(ep.saView));
  }
  if (spec.selector !== undefined && !selectorIsAll(spec.selector)) {
    keyParts.push('sel', spec.selector);
    const m = compileCalicoSelector(spec.selector, onSelectorError);
    parts.push((ep) => m(ep.labels));
  }
  const types = calicoTypes(spec);
  const scope: RuleScope = onSelectorError ? { namespace, onSelectorError } : { namespace };
  const compileRules = (rules: readonly CalicoRule[] | undefined) =>
    (rules ?? []).map((r, i) => compileRule(r, i, scope));
  const name = namespace !== undefined ? `${namespace}/${p.metadata.name}` : p.metadata.name;
  return {
    key: `${p.kind}/${namespace ?? ''}/${p.metadata.name}`,
    name,
    kind: p.kind,
    tier: spec.tier ?? DEFAULT_TIER,
    order: spec.order,
    namespace,
    staged,
    stagedDelete:
      staged &&
      'stagedAction' in spec &&
      (spec as { stagedAction?: string }).stagedAction === 'Delete',
    preDNAT: spec.preDNAT === true,
    doNotTrack: spec.doNotTrack === true,
    applyOnForward: spec.applyOnForward === true,
    applies: and(parts),
    ingress: types.ingress ? compileRules(spec.ingress) : undefined,
    egress: types.egress ? compileRules(spec.egress) : undefined,
    source: p.source,
    requires: requiredLabel(spec.selector),
    // JSON keeps the segments unambiguous whatever the selector texts contain.
    selectorKey: JSON.stringify(keyParts),
  };
}

// ------------------------------------------------------------------ Kubernetes NetworkPolicy

/** `policyTypes` defaulting: Ingress always, Egress when the policy has egress rules. */
export function k8sTypes(spec: K8sNetworkPolicySpec): { ingress: boolean; egress: boolean } {
  if (spec.policyTypes && spec.policyTypes.length > 0) {
    return {
      ingress: spec.policyTypes.includes('Ingress'),
      egress: spec.policyTypes.includes('Egress'),
    };
  }
  return { ingress: true, egress: (spec.egress?.length ?? 0) > 0 };
}

/** A pod selector over Calico's labels: pods only (orchestrator k8s), then the label selector. */
function k8sPodMatcher(s: K8sLabelSelector): (labels: Readonly<Record<string, string>>) => boolean {
  const m = compileK8sSelector(s);
  return (l) => l[LABEL_ORCHESTRATOR] === 'k8s' && m(l);
}

interface K8sPeerParts {
  readonly entity: EntityRule;
  readonly matcher?: (ep: Entity) => boolean;
  /** What `matcher` tests, as text (see `CompiledEntity.selectorKey`). */
  readonly matcherKey?: string;
}

/**
 * One Kubernetes peer as a Calico entity rule. Selectors are compiled directly (not through the
 * Calico selector text) so any valid Kubernetes label selector is honoured exactly.
 */
function k8sPeer(peer: NetworkPolicyPeer, namespace: string): K8sPeerParts {
  if (peer.ipBlock) {
    return {
      entity: {
        nets: [peer.ipBlock.cidr],
        ...(peer.ipBlock.except && peer.ipBlock.except.length > 0
          ? { notNets: peer.ipBlock.except }
          : {}),
      },
    };
  }
  const pod = peer.podSelector ? k8sPodMatcher(peer.podSelector) : undefined;
  const ns = peer.namespaceSelector ? compileK8sSelector(peer.namespaceSelector) : undefined;
  let matcher: (e: Entity) => boolean;
  if (ns && pod) matcher = (e) => e.namespace !== undefined && ns(e.nsView) && pod(e.labels);
  else if (ns) matcher = (e) => e.namespace !== undefined && ns(e.nsView);
  else if (pod) matcher = (e) => e.namespace === namespace && pod(e.labels);
  else matcher = (e) => e.namespace === namespace;
  const matcherKey = JSON.stringify(
    ['k8sPeer', namespace, peer.podSelector ?? null, peer.namespaceSelector ?? null],
    (_k, v: unknown) => (v === undefined ? { undefined: true } : v),
  );
  return { entity: {}, matcher, matcherKey };
}

function k8sPorts(ports: readonly NetworkPolicyPort[] | undefined): {
  protocol?: string;
  ports?: (number | string)[];
}[] {
  if (!ports || ports.length === 0) return [{}];
  return ports.map((p) => {
    const protocol = p.protocol ?? 'TCP';
    if (p.port === undefined) return { protocol };
    if (typeof p.port === 'number' && p.endPort !== undefined)
      return { protocol, ports: [`${p.port}:${p.endPort}`] };
    if (typeof p.port === 'string' && /^\d+$/.test(p.port))
      return { protocol, ports: [Number(p.port)] };
    return { protocol, ports: [p.port] };
  });
}

type K8sPolicyResource = K8sNetworkPolicy | StagedKubernetesNetworkPolicy;

export function compileK8sPolicy(p: K8sPolicyResource): CompiledPolicy {
  const spec = p.spec;
  const namespace = p.metadata.namespace ?? 'default';
  const staged = p.kind === 'StagedKubernetesNetworkPolicy';
  const podSel = k8sPodMatcher(spec.podSelector);
  const types = k8sTypes(spec);
  const scope: RuleScope = { namespace };
  const expand = (
    peers: readonly NetworkPolicyPeer[] | undefined,
    ports: readonly NetworkPolicyPort[] | undefined,
    index: number,
    side: 'source' | 'destination',
  ): CompiledRule[] => {
    const peerList: (K8sPeerParts | undefined)[] =
      peers && peers.length > 0 ? peers.map((x) => k8sPeer(x, namespace)) : [undefined];
    const out: CompiledRule[] = [];
    for (const peer of peerList) {
      for (const port of k8sPorts(ports)) {
        const rule: CalicoRule = {
          action: 'Allow',
          ...(port.protocol ? { protocol: port.protocol } : {}),
          [side]: peer?.entity ?? {},
          destination: {
            ...(side === 'destination' ? (peer?.entity ?? {}) : {}),
            ...(port.ports ? { ports: port.ports } : {}),
          },
        };
        const compiled = compileRule(rule, index, scope);
        const matcher = peer?.matcher;
        if (matcher) {
          const target = side === 'source' ? 'src' : 'dst';
          out.push({
            ...compiled,
            [target]: { ...compiled[target], selector: matcher, selectorKey: peer.matcherKey },
          });
        } else {
          out.push(compiled);
        }
      }
    }
    return out;
  };
  const ingress = types.ingress
    ? (spec.ingress ?? []).flatMap((r, i) => expand(r.from, r.ports, i, 'source'))
    : undefined;
  const egress = types.egress
    ? (spec.egress ?? []).flatMap((r, i) => expand(r.to, r.ports, i, 'destination'))
    : undefined;
  const name = `${namespace}/knp.default.${p.metadata.name}`;
  return {
    key: `${p.kind}/${namespace}/${p.metadata.name}`,
    name: staged ? `${namespace}/staged:knp.default.${p.metadata.name}` : name,
    kind: p.kind,
    tier: DEFAULT_TIER,
    order: K8S_POLICY_ORDER,
    namespace,
    staged,
    stagedDelete: staged && p.spec.stagedAction === 'Delete',
    preDNAT: false,
    doNotTrack: false,
    applyOnForward: false,
    applies: (ep) => ep.namespace === namespace && podSel(ep.labels),
    ingress,
    egress,
    source: p.source,
    requires: firstMatchLabel(spec.podSelector),
    // `undefined` is kept distinct (a `matchLabels` entry holding it still tests the key).
    selectorKey: JSON.stringify(['k8s', namespace, spec.podSelector], (_k, v: unknown) =>
      v === undefined ? { undefined: true } : v,
    ),
  };
}

function firstMatchLabel(s: K8sLabelSelector): [string, string] | undefined {
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) return [k, v];
  return undefined;
}

/** Sort key comparison: order ascending with nil last, then name. */
export function compareOrder(
  a: { order: number | undefined; name: string },
  b: { order: number | undefined; name: string },
): number {
  if (a.order !== b.order) {
    if (a.order === undefined) return 1;
    if (b.order === undefined) return -1;
    return a.order - b.order;
  }
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
