// The decision engine: resources in (in any order, incrementally), verdicts out, for the kernel,
// for L7 and combined (DESIGN §4). Derived state (endpoints, the policies active on each) is
// computed lazily and invalidated precisely, so one label or policy change costs little.
// Owns: resolving probes and combining the enforcement points. Must never: do I/O.

import type { Diagnostic } from '../diagnostics/diagnostic.js';
import { SERVICE_NAME_LABEL } from '../model/resources.js';
import type {
  AuthorizationPolicy,
  ClusterRbacConfig,
  EndpointSlice,
  Endpoints,
  GlobalNetworkSet,
  HostEndpoint,
  Namespace,
  NetworkSet,
  Pod,
  Profile,
  RbacConfig,
  Resource,
  Service,
  ServiceAccount,
  ServiceRole,
  ServiceRoleBinding,
  Tier,
  WorkloadEndpoint,
} from '../model/resources.js';
import { canonicalIp, cidrContains, formatIp, parseIp } from '../net/ip.js';
import type { IpAddr } from '../net/ip.js';
import { suggest } from '../diagnostics/suggest.js';
import { decideDirection, dressOutcome, evaluateDirection } from './evaluate.js';
import type { ActiveTier, CompiledProfileRules, Outcome } from './evaluate.js';
import {
  buildKernelProgram,
  buildKernelSegment,
  PredicateTable,
  runKernelAllows,
  runKernelProgram,
} from './kernel-program.js';
import type { KernelBucket, KernelProgram, KernelSegment } from './kernel-program.js';
import { memberKey, serviceMembers } from './services.js';
import type { ServiceMembers } from './services.js';
import { FlatKernel } from './kernel-flat.js';
import { compileAuthz, compilePeerAuthn, effectiveMtlsMode, evaluateIstio } from './istio.js';
import { inNormalStage, inStage, judgeHostPath } from './host-stages.js';
import type { ExtraStage, HostPathVerdict } from './host-stages.js';
import type { CompiledAuthz, CompiledPeerAuthn, IstioRequest } from './istio.js';
import { evaluateLegacyRbac, legacyRbacEnabled } from './istio-rbac.js';
import type { LegacyService, RbacOutcome } from './istio-rbac.js';
import { protocolNumber } from './matchers.js';
import type { Labels } from './matchers.js';
import {
  hostEndpoint,
  namespaceInfo,
  namespaceProfile,
  networkSet,
  parseSpiffeId,
  podEndpoint,
  serviceAccountProfile,
  serviceInfo,
  saLabels,
  spiffeId,
  TRUST_DOMAIN,
  userProfile,
  workloadEndpoint,
  NS_PROFILE_PREFIX,
  SA_PROFILE_PREFIX,
} from './model.js';
import type {
  CompiledProfile,
  Endpoint,
  EndpointParts,
  NamespaceInfo,
  NetSetEntity,
  ServiceInfo,
} from './model.js';
import {
  compareOrder,
  compileCalicoPolicy,
  compileK8sPolicy,
  DEFAULT_TIER,
  DEFAULT_TIER_ORDER,
} from './policies.js';
import type { CompiledPolicy } from './policies.js';
import { compileRule } from './rules.js';
import type { HttpRequest, MatchContext, Peer, PeerIdentity } from './rules.js';
import type {
  CheckResult,
  Direction,
  DirectionVerdict,
  L7Verdict,
  Probe,
  Provenance,
} from './types.js';

export interface CompileOptions {
  /** Istio root namespace (default `istio-system`). */
  readonly istioRootNamespace?: string;
  /** Store revision the resources came from; stamped on the compiled form. */
  readonly revision?: number;
  /** SPIFFE trust domain of workload identities (default `cluster.local`). */
  readonly trustDomain?: string;
  /**
   * Kernel decisions number the peers they memoise predicates for; after this many numbers more
   * than twice the endpoints, numbering starts over (default 262 144; tests make it small).
   */
  readonly peerNumberSlack?: number;
  /**
   * How `kernelAllows` runs kernel programs: `flat` (default) over typed arrays
   * (kernel-flat.ts), `object` over the program objects. Both decide alike; `object` is there for
   * the differential test and side-by-side benchmarks.
   */
  readonly kernelForm?: 'flat' | 'object';
}

export type CheckOutcome =
  | { readonly ok: true; readonly result: CheckResult }
  | { readonly ok: false; readonly code: string; readonly message: string };

/** What `Engine.decideL7` answers: the destination L7 point's verdict, or why there is none. */
export type L7Outcome =
  | { readonly ok: true; readonly result: L7Verdict }
  | { readonly ok: false; readonly code: string; readonly message: string };

/** What `Engine.decideL7Egress` answers: the source L7 point's egress verdict (none without one). */
export type L7EgressOutcome =
  | { readonly ok: true; readonly result: DirectionVerdict | undefined }
  | { readonly ok: false; readonly code: string; readonly message: string };

type Key = string;

const NO_NETSETS: readonly NetSetEntity[] = [];

interface CompiledProfileBoth {
  readonly profile: CompiledProfile;
  readonly ingress: CompiledProfileRules['rules'];
  readonly egress: CompiledProfileRules['rules'];
}

function resourceKey(kind: string, namespace: string | undefined, name: string): Key {
  return `${kind}\u0000${namespace ?? ''}\u0000${name}`;
}

/**
 * The kind as an identity: a Calico `NetworkPolicy` and a Kubernetes `NetworkPolicy` of the same
 * namespace and name are two policies (Calico keeps Kubernetes ones apart as `knp.default.*`).
 */
function identityKind(kind: string, apiVersion: string | undefined): string {
  return kind === 'NetworkPolicy' &&
    apiVersion !== undefined &&
    apiVersion !== 'projectcalico.org/v3'
    ? 'NetworkPolicy.k8s'
    : kind;
}

const SERVICE_INPUTS = new Set([
  'Service',
  'EndpointSlice',
  'Endpoints',
  'Pod',
  'WorkloadEndpoint',
  'Namespace',
  'ServiceAccount',
  'Profile',
]);

const NAMESPACED_KINDS = new Set([
  'EndpointSlice',
  'Endpoints',
  'NetworkPolicy',
  'StagedNetworkPolicy',
  'StagedKubernetesNetworkPolicy',
  'NetworkSet',
  'WorkloadEndpoint',
  'Pod',
  'ServiceAccount',
  'Service',
  'AuthorizationPolicy',
  'PeerAuthentication',
  'ServiceRole',
  'ServiceRoleBinding',
  'RbacConfig',
]);

/** The DNS domain of service host names in legacy Istio RBAC (`name.ns.svc.cluster.local`). */
const CLUSTER_DOMAIN = 'cluster.local';

interface ActiveSet {
  readonly ep: Endpoint;
  readonly worldGen: number;
  readonly globalGen: number;
  readonly nsGen: number;
  readonly ingress: readonly ActiveTier[];
  readonly egress: readonly ActiveTier[];
  readonly profilesIn: readonly CompiledProfileRules[];
  readonly profilesOut: readonly CompiledProfileRules[];
  /**
   * Kernel decision programs built from these tiers and profiles, by bucket (`programKey`). Shared
   * by every endpoint sharing the set, dropped with it.
   */
  readonly programsIn: Map<number, KernelProgram | null>;
  readonly programsOut: Map<number, KernelProgram | null>;
}

interface EndpointEntry {
  readonly gen: number;
  readonly ep: Endpoint;
  /** What the pod shares with its replicas (labels, active set), when it is a pod. */
  readonly share: PodShare | undefined;
  active: ActiveSet | undefined;
  /** What `resolve` answers for the endpoint's name. */
  readonly resolved: Resolved;
  /** The endpoint as a peer at its first address, valid while `peerGen` is the netset generation. */
  peer: Peer | undefined;
  peerGen: number;
  /** From `ep`, kept here so the kernel's hot path reads one object per endpoint. */
  readonly ip0: IpAddr | undefined;
  readonly l7: boolean;
  readonly ns: string | undefined;
  /**
   * The kernel program last used per direction and its bucket, valid while `decisionEpoch` is
   * unchanged (every change that can replace an active set bumps it): a decision in the same
   * bucket skips the generation checks and the program lookup.
   */
  inEpoch: number;
  inKey: number;
  inProg: KernelProgram | undefined;
  outEpoch: number;
  outKey: number;
  outProg: KernelProgram | undefined;
  /** The family of `ip0` (0 without an address) and `peer.n` (-1 unnumbered): no object read. */
  readonly fam: 0 | 4 | 6;
  peerN: number;
  /**
   * The flat form's program slots (`FlatKernel.compile` offsets), two buckets per direction,
   * valid while `decisionEpoch` is unchanged, as the slots above.
   */
  inFlatEpoch: number;
  inFlatKey: number;
  inFlatAt: number;
  inFlatKey2: number;
  inFlatAt2: number;
  outFlatEpoch: number;
  outFlatKey: number;
  outFlatAt: number;
  outFlatKey2: number;
  outFlatAt2: number;
  /** Set when the cache no longer holds this entry (its endpoint changed or went away). */
  dropped: boolean;
}

/**
 * What replicas share: pods of one namespace and service account with equal own labels (one
 * signature) have equal full labels and select the same policies. One lookup per pod finds both.
 * Reset by every world change (the labels include the namespace's and service account's).
 */
/** What a namespace and service account give their workloads, and the shares of their pods. */
type DerivedParts = EndpointParts & {
  readonly shares: Map<string, PodShare>;
  /** `profilesFor` of its pods (their profiles are these parts' profiles). */
  profileRules: ProfileRules | undefined;
};

interface ProfileRules {
  readonly ingress: CompiledProfileRules[];
  readonly egress: CompiledProfileRules[];
}

interface PodShare {
  readonly parts: DerivedParts;
  readonly labels: Labels;
  active: ActiveSet | undefined;
}

interface Resolved {
  readonly endpoint: Endpoint | undefined;
  readonly ip: IpAddr | undefined;
  readonly label: string;
}

/**
 * The incremental engine: feed resources in any order, then query. `compile` is a convenience
 * that feeds a whole list into a fresh engine.
 */
export class Engine {
  readonly rootNamespace: string;
  readonly trustDomain: string;
  revision: number | undefined;

  // Raw inputs.
  private readonly namespaces = new Map<string, Namespace>();
  private readonly serviceAccounts = new Map<string, ServiceAccount>();
  private readonly pods = new Map<string, Pod>();
  private readonly weps = new Map<string, WorkloadEndpoint>();
  /** The keys (`ns/name`) of the WorkloadEndpoints behind each endpoint id (`ns/pod`). */
  private readonly wepKeysById = new Map<string, Set<string>>();
  private readonly heps = new Map<string, HostEndpoint>();
  private readonly netsetsRaw = new Map<Key, NetworkSet | GlobalNetworkSet>();
  private readonly profilesRaw = new Map<string, Profile>();
  private readonly servicesRaw = new Map<string, Service>();
  private readonly tiers = new Map<string, Tier>();
  private readonly globalPolicies = new Map<Key, CompiledPolicy>();
  /** Global policies by the label they require (key, then value), and those requiring none. */
  private readonly globalByLabel = new Map<string, Map<string, PolicyGroups>>();
  private readonly globalUnindexed: PolicyGroups = new Map();
  private readonly nsPolicies = new Map<string, Map<Key, CompiledPolicy>>();
  /** The policies of each namespace, grouped by selector like the global ones. */
  private readonly nsGroups = new Map<string, PolicyGroups>();
  private readonly authz = new Map<Key, CompiledAuthz>();
  private readonly authzRaw = new Map<Key, AuthorizationPolicy>();
  private readonly peerAuthn = new Map<Key, CompiledPeerAuthn>();
  /** Bumped on every AuthorizationPolicy or PeerAuthentication change (guards the caches below). */
  private authzGen = 0;
  private peerAuthnGen = 0;
  private readonly authzByEndpoint = new WeakMap<
    Endpoint,
    { readonly gen: number; readonly list: readonly CompiledAuthz[] }
  >();
  private readonly mtlsByEndpoint = new WeakMap<
    Endpoint,
    { readonly gen: number; readonly byPort: Map<number, ReturnType<typeof effectiveMtlsMode>> }
  >();
  private readonly identityCache = new Map<string, { gen: number; id: PeerIdentity }>();
  /** Legacy Istio RBAC: roles and bindings per namespace (by name), and the configs. */
  private readonly rbacRoles = new Map<string, Map<string, ServiceRole>>();
  private readonly rbacBindings = new Map<string, Map<string, ServiceRoleBinding>>();
  private readonly rbacConfigs = new Map<Key, RbacConfig | ClusterRbacConfig>();
  private readonly selectorProblems = new Map<Key, Diagnostic[]>();
  private readonly tierInfoCache = new Map<string, TierInfo>();

  // Generations for precise invalidation.
  private worldGen = 0;
  /** Bumped whenever the network sets an address falls in may have changed. */
  private netsetGen = 0;
  private globalPolicyGen = 0;
  private readonly nsPolicyGen = new Map<string, number>();
  /** Bumped with every generation above: guards the entries' program slots. */
  private decisionEpoch = 0;

  // Derived, lazily built.
  /** Built endpoints with their active policies, which are valid only for that endpoint object. */
  private readonly endpointCache = new Map<string, EndpointEntry>();
  private readonly activeBySignature = new Map<string, ActiveSet>();
  /** Full label sets of pods by signature (the signature fixes them); reset by world changes. */
  /** Pod shares held by every `DerivedParts` (bounded: all are forgotten beyond 200k). */
  private podShareCount = 0;
  private ipIndex: Map<string, string> | undefined;
  private netsetCache:
    | { gen: number; sets: NetSetEntity[]; byIp: WeakMap<IpAddr, readonly NetSetEntity[]> }
    | undefined;
  private serviceCache: Map<string, ServiceInfo> | undefined;
  private readonly nsInfoCache = new Map<string, NamespaceInfo>();
  /** `derivedParts` by namespace, then service account name. */
  private readonly derivedProfiles = new Map<string, Map<string, DerivedParts>>();
  /** Set by `buildEndpoint` for pods: a short signature (see `active`). */
  private lastShare: PodShare | undefined;
  private userProfileCache = new Map<string, { gen: number; p: CompiledProfileBoth }>();
  /** Compiled profile rules per profile list (`Endpoint.profiles` joined); reset by world changes. */
  private readonly profileRulesCache = new Map<
    string,
    { readonly ingress: CompiledProfileRules[]; readonly egress: CompiledProfileRules[] }
  >();

  /** Peer numbers beyond twice the endpoints before a renumbering (see `kernelAllows`). */
  private readonly peerNumberLimit: number;

  constructor(readonly options: CompileOptions = {}) {
    this.peerNumberLimit = options.peerNumberSlack ?? 1 << 18;
    this.flatKernel =
      options.kernelForm === 'object'
        ? undefined
        : new FlatKernel(this.predicates, this.serviceMatch);
    this.rootNamespace = options.istioRootNamespace ?? 'istio-system';
    this.trustDomain = options.trustDomain ?? TRUST_DOMAIN;
    this.revision = options.revision;
  }

  // ---------------------------------------------------------------- input

  /** Adds or replaces a resource (keyed by kind, namespace and name). */
  upsert(r: Resource): void {
    this.apply(r, false);
  }

  /** Removes a resource; a no-op when absent. */
  /**
   * Removes a resource. `apiVersion` is part of its identity: it tells a Kubernetes
   * NetworkPolicy (`networking.k8s.io/v1`, `extensions/v1beta1`) from a Calico one of the same
   * name, so it is required rather than guessed.
   */
  remove(
    kind: Resource['kind'],
    namespace: string | undefined,
    name: string,
    apiVersion: string,
  ): void {
    const ns = NAMESPACED_KINDS.has(kind) ? (namespace ?? 'default') : undefined;
    this.apply(
      { kind, apiVersion, metadata: { name, ...(ns ? { namespace: ns } : {}) } } as Resource,
      true,
    );
  }

  private apply(r: Resource, removing: boolean): void {
    const name = r.metadata.name;
    const ns = NAMESPACED_KINDS.has(r.kind) ? (r.metadata.namespace ?? 'default') : undefined;
    const nsName = `${ns ?? ''}/${name}`;
    const key = resourceKey(identityKind(r.kind, r.apiVersion), ns, name);
    // Service endpoints depend on Services, their slices and (derived) on pods and namespaces.
    if (SERVICE_INPUTS.has(r.kind)) this.serviceMemberCache.clear();
    switch (r.kind) {
      case 'Namespace':
        setOrDelete(this.namespaces, name, r, removing);
        this.worldChanged();
        break;
      case 'ServiceAccount':
        setOrDelete(this.serviceAccounts, nsName, r, removing);
        this.worldChanged();
        break;
      case 'Pod':
        setOrDelete(this.pods, nsName, r, removing);
        this.endpointChanged(nsName);
        break;
      case 'WorkloadEndpoint': {
        const old = this.weps.get(nsName);
        setOrDelete(this.weps, nsName, r, removing);
        const id = `${ns}/${r.kind === 'WorkloadEndpoint' && !removing ? (r.spec.pod ?? r.spec.workload ?? name) : name}`;
        const oldId = old ? `${ns}/${old.spec.pod ?? old.spec.workload ?? name}` : undefined;
        if (oldId !== undefined && (removing || oldId !== id)) {
          const keys = this.wepKeysById.get(oldId);
          keys?.delete(nsName);
          if (keys?.size === 0) this.wepKeysById.delete(oldId);
        }
        if (!removing) {
          const keys = this.wepKeysById.get(id);
          if (keys) keys.add(nsName);
          else this.wepKeysById.set(id, new Set([nsName]));
        }
        if (oldId !== undefined) this.endpointChanged(oldId);
        this.endpointChanged(id);
        break;
      }
      case 'HostEndpoint':
        setOrDelete(this.heps, name, r, removing);
        this.endpointChanged(name);
        this.allInterfacesByNode = undefined;
        break;
      case 'NetworkSet':
      case 'GlobalNetworkSet':
        setOrDelete(this.netsetsRaw, key, r, removing);
        this.netsetCache = undefined;
        this.netsetGen++;
        break;
      case 'Profile':
        setOrDelete(this.profilesRaw, name, r, removing);
        this.worldChanged();
        break;
      case 'Service':
        setOrDelete(this.servicesRaw, nsName, r, removing);
        this.serviceCache = undefined;
        break;
      case 'EndpointSlice':
        setOrDelete(this.slicesRaw, nsName, r, removing);
        this.slicesByService.clear();
        for (const [k, sl] of this.slicesRaw) {
          const svc = sl.metadata.labels?.[SERVICE_NAME_LABEL];
          if (svc === undefined) continue;
          const sk = `${k.slice(0, k.indexOf('/'))}/${svc}`;
          const list = this.slicesByService.get(sk);
          if (list) list.push(sl);
          else this.slicesByService.set(sk, [sl]);
        }
        break;
      case 'Endpoints':
        setOrDelete(this.endpointsRaw, nsName, r, removing);
        break;
      case 'Tier':
        setOrDelete(this.tiers, name, r, removing);
        this.tierInfoCache.clear();
        this.clearTierIntern();
        this.programIntern.clear();
        this.globalPolicyGen++;
        this.decisionEpoch++;
        break;
      case 'NetworkPolicy':
      case 'StagedNetworkPolicy':
      case 'StagedKubernetesNetworkPolicy':
      case 'GlobalNetworkPolicy':
      case 'StagedGlobalNetworkPolicy':
        this.applyPolicy(r, key, ns, removing);
        break;
      case 'AuthorizationPolicy':
        this.authzGen++;
        if (removing) {
          this.authz.delete(key);
          this.authzRaw.delete(key);
        } else {
          this.authz.set(key, compileAuthz(r, this.rootNamespace));
          this.authzRaw.set(key, r);
        }
        break;
      case 'PeerAuthentication':
        this.peerAuthnGen++;
        if (removing) this.peerAuthn.delete(key);
        else this.peerAuthn.set(key, compilePeerAuthn(r));
        break;
      case 'ServiceRole':
        setOrDeleteIn(this.rbacRoles, ns ?? 'default', name, r, removing);
        break;
      case 'ServiceRoleBinding':
        setOrDeleteIn(this.rbacBindings, ns ?? 'default', name, r, removing);
        break;
      case 'RbacConfig':
      case 'ClusterRbacConfig':
        setOrDelete(this.rbacConfigs, key, r, removing);
        break;
    }
  }

  private applyPolicy(r: Resource, key: Key, ns: string | undefined, removing: boolean): void {
    let compiled: CompiledPolicy | undefined;
    // Interned tiers hold policies: forget them so a replaced policy is not kept alive.
    this.clearTierIntern();
    this.programIntern.clear();
    this.selectorProblems.delete(key);
    if (!removing) {
      const problems: Diagnostic[] = [];
      const onError = (e: { text: string; message: string }) =>
        problems.push({
          code: 'POLICY_ERR_INVALID_SELECTOR',
          severity: 'error',
          message: `selector ${JSON.stringify(e.text)} of ${r.kind} ${r.metadata.name} is invalid (${e.message}); it matches nothing`,
          file: r.source?.file ?? '<input>',
          line: r.source?.line ?? 0,
          column: r.source?.column ?? 0,
        });
      if (r.apiVersion === 'projectcalico.org/v3' && r.kind !== 'StagedKubernetesNetworkPolicy') {
        compiled = compileCalicoPolicy(r as Parameters<typeof compileCalicoPolicy>[0], onError);
      } else {
        compiled = compileK8sPolicy(r as Parameters<typeof compileK8sPolicy>[0]);
      }
      if (problems.length > 0) this.selectorProblems.set(key, problems);
    }
    if (ns === undefined) {
      const old = this.globalPolicies.get(key);
      if (old) {
        if (old.requires) {
          const [k, v] = old.requires;
          const byValue = this.globalByLabel.get(k);
          const bucket = byValue?.get(v);
          if (byValue && bucket) {
            ungroup(bucket, key, old);
            if (bucket.size === 0) byValue.delete(v);
            if (byValue.size === 0) this.globalByLabel.delete(k);
          }
        } else ungroup(this.globalUnindexed, key, old);
      }
      if (compiled) {
        this.globalPolicies.set(key, compiled);
        if (compiled.requires) {
          const [k, v] = compiled.requires;
          let byValue = this.globalByLabel.get(k);
          if (!byValue) {
            byValue = new Map();
            this.globalByLabel.set(k, byValue);
          }
          let b = byValue.get(v);
          if (!b) {
            b = new Map();
            byValue.set(v, b);
          }
          group(b, key, compiled);
        } else group(this.globalUnindexed, key, compiled);
      } else this.globalPolicies.delete(key);
      this.globalPolicyGen++;
      this.decisionEpoch++;
    } else {
      let m = this.nsPolicies.get(ns);
      let g = this.nsGroups.get(ns);
      if (!m || !g) {
        m = new Map();
        g = new Map();
        this.nsPolicies.set(ns, m);
        this.nsGroups.set(ns, g);
      }
      const old = m.get(key);
      if (old) ungroup(g, key, old);
      if (compiled) {
        m.set(key, compiled);
        group(g, key, compiled);
      } else m.delete(key);
      if (m.size === 0) {
        this.nsPolicies.delete(ns);
        this.nsGroups.delete(ns);
      }
      this.nsPolicyGen.set(ns, (this.nsPolicyGen.get(ns) ?? 0) + 1);
      this.decisionEpoch++;
    }
  }

  private worldChanged(): void {
    this.worldGen++;
    this.decisionEpoch++;
    this.derivedProfiles.clear();
    this.podShareCount = 0;
    this.nsInfoCache.clear();
    this.netsetCache = undefined;
    this.netsetGen++;
    this.userProfileCache = new Map();
    this.profileRulesCache.clear();
    this.programIntern.clear();
  }

  private endpointChanged(id: string): void {
    const old = this.endpointCache.get(id);
    if (old) old.dropped = true;
    this.endpointCache.delete(id);
    this.ipIndex = undefined;
  }

  // ---------------------------------------------------------------- derived state

  private namespaceInfo(name: string): NamespaceInfo {
    let info = this.nsInfoCache.get(name);
    if (!info) {
      info = namespaceInfo(name, this.namespaces.get(name));
      this.nsInfoCache.set(name, info);
    }
    return info;
  }

  /**
   * The namespace, service account and derived profiles of a workload, shared by its replicas
   * (reset by every world change, so `sa` is current).
   */
  private derivedParts(ns: string, saName: string): DerivedParts {
    let bySa = this.derivedProfiles.get(ns);
    if (!bySa) {
      bySa = new Map();
      this.derivedProfiles.set(ns, bySa);
    }
    let parts = bySa.get(saName);
    if (!parts) {
      const info = this.namespaceInfo(ns);
      const sa = this.serviceAccounts.get(`${ns}/${saName}`);
      const profiles = [namespaceProfile(info), serviceAccountProfile(ns, saName, sa)];
      parts = {
        ns: info,
        saName,
        sa,
        profiles,
        saView: saLabels(saName, sa),
        profileNames: profiles.map((p) => p.name),
        shares: new Map(),
        profileRules: undefined,
      };
      bySa.set(saName, parts);
    }
    return parts;
  }

  private profileFor(name: string): CompiledProfile {
    if (name.startsWith(NS_PROFILE_PREFIX)) {
      const ns = name.slice(NS_PROFILE_PREFIX.length);
      return namespaceProfile(this.namespaceInfo(ns));
    }
    if (name.startsWith(SA_PROFILE_PREFIX)) {
      const rest = name.slice(SA_PROFILE_PREFIX.length);
      const dot = rest.indexOf('.');
      if (dot > 0) {
        const ns = rest.slice(0, dot);
        const sa = rest.slice(dot + 1);
        return serviceAccountProfile(ns, sa, this.serviceAccounts.get(`${ns}/${sa}`));
      }
    }
    const p = this.profilesRaw.get(name);
    // A missing profile has no rules, so traffic it would judge is denied (fail closed).
    return p ? userProfile(p) : { name, labels: {}, ingress: [], egress: [] };
  }

  private buildEndpoint(id: string): Endpoint | undefined {
    const pod = this.pods.get(id);
    const slash = id.indexOf('/');
    if (pod && slash > 0) {
      const ns = id.slice(0, slash);
      const saName = pod.spec.serviceAccountName ?? pod.spec.serviceAccount ?? 'default';
      const parts = this.derivedParts(ns, saName);
      // A pod's entity (labels, views, service account, profiles) is its own labels over what
      // its namespace and service account give (`parts`, one object per pair and world
      // generation): those two determine it, which is cheaper than printing every label.
      // Replicas (one namespace, service account and own labels) have equal full label sets:
      // build one, share it (label maps are never mutated), and their active set with it.
      const sig = JSON.stringify(pod.metadata.labels ?? {});
      let share = parts.shares.get(sig);
      const ep = podEndpoint(pod, parts, share?.labels);
      if (!share) {
        if (++this.podShareCount > 200_000) {
          // Forget every share (and the parts holding them); this one goes on with its parts.
          this.derivedProfiles.clear();
          this.podShareCount = 0;
        }
        share = { parts, labels: ep.labels, active: undefined };
        parts.shares.set(sig, share);
      }
      this.lastShare = share;
      return ep;
    }
    if (slash > 0) {
      const keys = this.wepKeysById.get(id);
      if (!keys) return undefined;
      // One WorkloadEndpoint per id is the rule; with several, the first stored wins, as a scan
      // of every WorkloadEndpoint in insertion order would find it.
      const candidates: Iterable<[string, WorkloadEndpoint]> =
        keys.size === 1
          ? [...keys].flatMap((k) => {
              const w = this.weps.get(k);
              return w ? [[k, w] as [string, WorkloadEndpoint]] : [];
            })
          : this.weps;
      for (const [k, wep] of candidates) {
        const ns = k.slice(0, k.indexOf('/'));
        const wname = wep.spec.pod ?? wep.spec.workload ?? wep.metadata.name;
        if (`${ns}/${wname}` !== id) continue;
        const saName = wep.spec.serviceAccountName ?? 'default';
        const explicit = wep.spec.profiles?.map((p) => this.profileFor(p));
        return workloadEndpoint(
          wep,
          this.derivedParts(ns, saName),
          explicit && explicit.length > 0 ? explicit : undefined,
        );
      }
      return undefined;
    }
    const hep = this.heps.get(id);
    if (hep)
      return hostEndpoint(
        hep,
        (hep.spec.profiles ?? []).map((p) => this.profileFor(p)),
      );
    return undefined;
  }

  private endpoint(id: string): Endpoint | undefined {
    const c = this.endpointCache.get(id);
    if (c && c.gen === this.worldGen) return c.ep;
    return this.rebuildEntry(id, c)?.ep;
  }

  /** Builds the cache entry of `id` anew (`c` the stale one, if any); undefined when it is gone. */
  private rebuildEntry(id: string, c: EndpointEntry | undefined): EndpointEntry | undefined {
    this.lastShare = undefined;
    const ep = this.buildEndpoint(id);
    let e: EndpointEntry | undefined;
    if (ep) {
      e = {
        // The kernel's hot fields first, so that a decision reads one or two cache lines of
        // an entry (field order is the object's layout).
        gen: this.worldGen,
        ep,
        fam: ep.ips[0]?.family ?? 0,
        peerGen: -1,
        peerN: -1,
        l7: ep.l7,
        peer: undefined,
        dropped: false,
        outFlatEpoch: -1,
        outFlatKey: -1,
        outFlatAt: -1,
        outFlatKey2: -1,
        outFlatAt2: -1,
        inFlatEpoch: -1,
        inFlatKey: -1,
        inFlatAt: -1,
        inFlatKey2: -1,
        inFlatAt2: -1,
        share: this.lastShare,
        active: undefined,
        resolved: { endpoint: ep, ip: undefined, label: ep.id },
        ip0: ep.ips[0],
        ns: ep.namespace,
        inEpoch: -1,
        inKey: -1,
        inProg: undefined,
        outEpoch: -1,
        outKey: -1,
        outProg: undefined,
      };
      this.endpointCache.set(id, e);
    } else if (c) this.endpointCache.delete(id);
    if (c) c.dropped = true;
    return e;
  }

  private allEndpointIds(): string[] {
    const ids = new Set<string>();
    for (const k of this.pods.keys()) ids.add(k);
    for (const [k, w] of this.weps) {
      const ns = k.slice(0, k.indexOf('/'));
      ids.add(`${ns}/${w.spec.pod ?? w.spec.workload ?? w.metadata.name}`);
    }
    for (const k of this.heps.keys()) ids.add(k);
    return [...ids];
  }

  private ipToEndpoint(ip: IpAddr): string | undefined {
    if (!this.ipIndex) {
      const idx = new Map<string, string>();
      for (const id of this.allEndpointIds()) {
        const ep = this.endpoint(id);
        if (!ep) continue;
        for (const a of ep.ips) {
          const k = formatIp(a);
          if (!idx.has(k)) idx.set(k, id);
        }
      }
      this.ipIndex = idx;
    }
    return this.ipIndex.get(formatIp(ip));
  }

  private netsetsFor(ip: IpAddr | undefined): readonly NetSetEntity[] {
    if (!ip || this.netsetsRaw.size === 0) return NO_NETSETS;
    if (!this.netsetCache || this.netsetCache.gen !== this.worldGen) {
      const sets: NetSetEntity[] = [];
      for (const r of this.netsetsRaw.values()) {
        const ns =
          r.kind === 'NetworkSet'
            ? this.namespaceInfo(r.metadata.namespace ?? 'default')
            : undefined;
        sets.push(networkSet(r, ns));
      }
      this.netsetCache = { gen: this.worldGen, sets, byIp: new WeakMap() };
    }
    // Keyed by the address object: endpoint addresses are stable while the endpoint is cached.
    let hit = this.netsetCache.byIp.get(ip);
    if (!hit) {
      hit = this.netsetCache.sets.filter((s) => s.nets.some((n) => cidrContains(n, ip)));
      this.netsetCache.byIp.set(ip, hit);
    }
    return hit;
  }

  private services(): Map<string, ServiceInfo> {
    if (!this.serviceCache) {
      this.serviceCache = new Map();
      for (const [k, s] of this.servicesRaw) this.serviceCache.set(k, serviceInfo(s));
    }
    return this.serviceCache;
  }

  private tierInfo(name: string): { order: number | undefined; defaultAction: 'Deny' | 'Pass' } {
    const t = this.tiers.get(name);
    if (t) {
      return {
        order: t.spec.order ?? (name === DEFAULT_TIER ? DEFAULT_TIER_ORDER : undefined),
        defaultAction: t.spec.defaultAction ?? 'Deny',
      };
    }
    return { order: name === DEFAULT_TIER ? DEFAULT_TIER_ORDER : undefined, defaultAction: 'Deny' };
  }

  private compiledProfile(name: string): CompiledProfileBoth {
    const c = this.userProfileCache.get(name);
    if (c && c.gen === this.worldGen) return c.p;
    const profile = this.profileFor(name);
    const p: CompiledProfileBoth = {
      profile,
      ingress: profile.ingress.map((r, i) => compileRule(r, i, { namespace: undefined })),
      egress: profile.egress.map((r, i) => compileRule(r, i, { namespace: undefined })),
    };
    this.userProfileCache.set(name, { gen: this.worldGen, p });
    return p;
  }

  private profilesFor(ep: Endpoint): ProfileRules {
    const k = ep.profiles.join('\u0000');
    let c = this.profileRulesCache.get(k);
    if (!c) {
      const both = ep.profiles.map((name) => this.compiledProfile(name));
      c = {
        ingress: both.map((b) => ({ profile: b.profile, rules: b.ingress })),
        egress: both.map((b) => ({ profile: b.profile, rules: b.egress })),
      };
      this.profileRulesCache.set(k, c);
    }
    return c;
  }

  private tierInfoCached(name: string): TierInfo {
    let t = this.tierInfoCache.get(name);
    if (!t) {
      t = { name, ...this.tierInfo(name) };
      this.tierInfoCache.set(name, t);
    }
    return t;
  }

  /**
   * One object per distinct tier content; a changed policy is a new object, so a new path. The
   * intern is a trie per direction, tier name and default action, walked by the policy objects
   * (enforced ones, a separator, staged ones): no key is built, and a lookup reads one small map
   * per policy.
   */
  private internTier(
    dir: Direction,
    t: TierInfo,
    policies: CompiledPolicy[],
    staged: CompiledPolicy[],
  ): ActiveTier {
    const rootKey = `${dir === 'ingress' ? 'i' : 'e'}${t.defaultAction}\u0000${t.name}`;
    let node = this.tierIntern.get(rootKey);
    if (!node) {
      node = { next: undefined, tier: undefined };
      this.tierIntern.set(rootKey, node);
    }
    for (const p of policies) node = this.tierStep(node, p);
    node = this.tierStep(node, STAGED_AFTER);
    for (const p of staged) node = this.tierStep(node, p);
    let tier = node.tier;
    if (!tier) {
      tier = { name: t.name, defaultAction: t.defaultAction, policies, staged };
      node.tier = tier;
    }
    return tier;
  }

  private tierStep(node: TierTrie, p: CompiledPolicy | typeof STAGED_AFTER): TierTrie {
    let next = node.next;
    if (!next) {
      next = new Map();
      node.next = next;
    }
    let child = next.get(p);
    if (!child) {
      // Bounded: beyond the limit every interned tier is forgotten (they are rebuilt on use).
      if (++this.tierTrieNodes > 400_000) this.clearTierIntern();
      child = { next: undefined, tier: undefined };
      next.set(p, child);
    }
    return child;
  }

  private clearTierIntern(): void {
    this.tierIntern.clear();
    this.tierTrieNodes = 0;
    this.listTrie = newListTrie();
    this.listTrieNodes = 0;
  }

  /**
   * `activeTierLists` of a candidate list, remembered by the list: endpoints whose candidates
   * were collected as the same policies in the same order (every replica set of an app in one
   * namespace, and across namespaces the global part) share the ordering. The trie is walked by
   * the policy objects, and forgotten with the interned tiers (every policy or tier change).
   */
  private tierListsOf(candidates: CompiledPolicy[]): {
    ingress: ActiveTier[];
    egress: ActiveTier[];
  } {
    let node = this.listTrie;
    for (const p of candidates) {
      let next = node.key === p ? node.child : node.more?.get(p);
      if (next === undefined) {
        if (++this.listTrieNodes > 1_000_000) {
          // Bounded: start over (this walk goes on in the old trie, which is dropped).
          this.listTrie = newListTrie();
          this.listTrieNodes = 0;
        }
        next = newListTrie();
        if (node.child === undefined) {
          node.key = p;
          node.child = next;
        } else {
          node.more ??= new Map();
          node.more.set(p, next);
        }
      }
      node = next;
    }
    node.lists ??= this.activeTierLists(candidates);
    return node.lists;
  }

  /**
   * Orders the policies selecting an endpoint into tiers: tiers by order (nil last) then name,
   * policies by order then name (then key, so ties cannot depend on input order), and per
   * direction the enforced and staged policies that cover it. One sort for both directions.
   */
  private activeTierLists(candidates: CompiledPolicy[]): {
    ingress: ActiveTier[];
    egress: ActiveTier[];
  } {
    const ranked = candidates.map((p) => ({ p, t: this.tierInfoCached(p.tier) }));
    ranked.sort((a, b) => {
      if (a.t !== b.t) {
        const c = compareOrder(a.t, b.t);
        if (c !== 0) return c;
      }
      const c = compareOrder(a.p, b.p);
      if (c !== 0) return c;
      return a.p.key < b.p.key ? -1 : a.p.key > b.p.key ? 1 : 0;
    });
    const ingress: ActiveTier[] = [];
    const egress: ActiveTier[] = [];
    let i = 0;
    while (i < ranked.length) {
      const t = (ranked[i] as (typeof ranked)[number]).t;
      const inP: CompiledPolicy[] = [];
      const inS: CompiledPolicy[] = [];
      const outP: CompiledPolicy[] = [];
      const outS: CompiledPolicy[] = [];
      for (; i < ranked.length && (ranked[i] as (typeof ranked)[number]).t === t; i++) {
        const p = (ranked[i] as (typeof ranked)[number]).p;
        if (p.ingress !== undefined) (p.staged ? inS : inP).push(p);
        if (p.egress !== undefined) (p.staged ? outS : outP).push(p);
      }
      ingress.push(this.internTier('ingress', t, inP, inS));
      egress.push(this.internTier('egress', t, outP, outS));
    }
    return { ingress, egress };
  }

  /** The tiers (in order) with the policies (in order) that select `ep`, per direction. */
  /** `entry`, when the caller has it, must be the cache entry of `ep` (saves a lookup). */
  private active(ep: Endpoint, entry?: EndpointEntry): ActiveSet {
    const nsGen = ep.namespace === undefined ? 0 : (this.nsPolicyGen.get(ep.namespace) ?? 0);
    const e = entry ?? this.endpointCache.get(ep.id);
    const own = e?.ep === ep ? e : undefined;
    const cached = own?.active;
    if (
      cached &&
      cached.worldGen === this.worldGen &&
      cached.globalGen === this.globalPolicyGen &&
      cached.nsGen === nsGen
    )
      return cached;
    // Endpoints with the same kind, namespace, service account, profiles and labels select the
    // same policies: share one computation (replicas of a deployment are the common case). A
    // pod's entry holds what it shares with its replicas; other endpoints share by signature.
    const share = own?.share;
    const sig =
      share !== undefined
        ? undefined
        : `${ep.kind}\u0000${ep.namespace ?? ''}\u0000${ep.serviceAccount ?? ''}\u0000${ep.profiles.join(',')}\u0000${JSON.stringify(ep.labels)}`;
    const shared = share !== undefined ? share.active : this.activeBySignature.get(sig as string);
    // The world generation guards the profiles: a namespace or profile change keeps labels (and
    // so the signature) but may change the profiles' rules.
    if (
      shared &&
      shared.worldGen === this.worldGen &&
      shared.globalGen === this.globalPolicyGen &&
      shared.nsGen === nsGen
    ) {
      // Shared as is: a set depends only on what the signature covers (`own` is ep's entry).
      if (own) own.active = shared;
      return shared;
    }
    const candidates: CompiledPolicy[] = [];
    collect(this.globalUnindexed, ep, candidates);
    if (this.globalByLabel.size > 0) {
      // Walk the indexed keys when there are few of them, the endpoint's labels otherwise.
      const labels = ep.labels;
      if (this.globalByLabel.size <= 16) {
        for (const [k, byValue] of this.globalByLabel) {
          const v = Object.hasOwn(labels, k) ? labels[k] : undefined;
          if (v !== undefined) collect(byValue.get(v), ep, candidates);
        }
      } else {
        for (const k in labels) {
          const v = Object.hasOwn(labels, k) ? labels[k] : undefined;
          if (v !== undefined) collect(this.globalByLabel.get(k)?.get(v), ep, candidates);
        }
      }
    }
    if (ep.namespace !== undefined) collect(this.nsGroups.get(ep.namespace), ep, candidates);
    const build = this.tierListsOf(candidates);
    // A pod's profiles are its parts': their rules are kept there, found without a key.
    let profiles: ProfileRules;
    if (share !== undefined) {
      share.parts.profileRules ??= this.profilesFor(ep);
      profiles = share.parts.profileRules;
    } else profiles = this.profilesFor(ep);
    const set: ActiveSet = {
      ep,
      worldGen: this.worldGen,
      globalGen: this.globalPolicyGen,
      nsGen,
      ingress: build.ingress,
      egress: build.egress,
      profilesIn: profiles.ingress,
      profilesOut: profiles.egress,
      programsIn: new Map(),
      programsOut: new Map(),
    };
    if (own) own.active = set;
    if (share !== undefined) share.active = set;
    else {
      if (this.activeBySignature.size > 200_000) this.activeBySignature.clear();
      this.activeBySignature.set(sig as string, set);
    }
    return set;
  }

  // ---------------------------------------------------------------- host endpoint stages

  /** The tiers of one host endpoint stage's policies selecting `ep` (global policies only). */
  private stageTiers(ep: Endpoint, stage: ExtraStage, dir: Direction): readonly ActiveTier[] {
    let c = this.stageCache.get(ep);
    if (!c || c.worldGen !== this.worldGen || c.globalGen !== this.globalPolicyGen) {
      c = { worldGen: this.worldGen, globalGen: this.globalPolicyGen, byStage: new Map() };
      this.stageCache.set(ep, c);
    }
    let lists = c.byStage.get(stage);
    if (!lists) {
      const candidates: CompiledPolicy[] = [];
      const take = (groups: PolicyGroups | undefined) => {
        if (!groups) return;
        for (const g of groups.values()) {
          if (!g.applies(ep)) continue;
          for (const p of g.policies.values()) if (inStage(p, stage)) candidates.push(p);
        }
      };
      take(this.globalUnindexed);
      for (const byValue of this.globalByLabel.values()) for (const g of byValue.values()) take(g);
      lists = this.activeTierLists(candidates);
      c.byStage.set(stage, lists);
    }
    return dir === 'ingress' ? lists.ingress : lists.egress;
  }

  /** Whether any enforced policy has a stage beyond the normal one (guards the host paths). */
  private anyStagePolicy(): boolean {
    if (this.stagePolicies?.gen !== this.globalPolicyGen) {
      let any = false;
      for (const p of this.globalPolicies.values())
        if (!p.staged && (p.applyOnForward || p.preDNAT || p.doNotTrack)) {
          any = true;
          break;
        }
      this.stagePolicies = { gen: this.globalPolicyGen, any };
    }
    return this.stagePolicies.any;
  }

  /**
   * The all-interfaces host endpoint of each node (the alphabetically first, as Felix picks),
   * for nodes that have no host endpoint for a specific interface: only there is it certain that
   * traffic leaving or entering the node passes through it.
   */
  private allInterfacesOf(node: string | undefined): Endpoint | undefined {
    if (node === undefined || this.heps.size === 0) return undefined;
    if (!this.allInterfacesByNode) {
      const star = new Map<string, string>();
      const specific = new Set<string>();
      for (const [name, h] of this.heps) {
        const n = h.spec.node;
        if (n === undefined) continue;
        if (h.spec.interfaceName === '*') {
          const cur = star.get(n);
          if (cur === undefined || name < cur) star.set(n, name);
        } else specific.add(n);
      }
      for (const n of specific) star.delete(n);
      this.allInterfacesByNode = star;
    }
    const name = this.allInterfacesByNode.get(node);
    return name === undefined ? undefined : this.endpoint(name);
  }

  /**
   * The host endpoint stages of a probe, when host endpoints are on its way: the source or
   * destination is one, the probe names one it is forwarded through, or an all-interfaces host
   * endpoint of a workload's node is (inferred for traffic to or from off the node, when stage
   * policies exist). Undefined when none is: the plain evaluation is exact then.
   */
  private hostPath(
    probe: Pick<Probe, 'viaIn' | 'viaOut'>,
    src: Resolved,
    dst: Resolved,
    ctx: MatchContext,
    explain: boolean,
  ): HostPathVerdict | { readonly code: string; readonly message: string } | undefined {
    const s = src.endpoint;
    const d = dst.endpoint;
    let viaIn: Endpoint | undefined;
    let viaOut: Endpoint | undefined;
    for (const [field, name] of [
      ['viaIn', probe.viaIn],
      ['viaOut', probe.viaOut],
    ] as const) {
      if (name === undefined) continue;
      const h = this.heps.has(name) ? this.endpoint(name) : undefined;
      if (!h)
        return {
          code: 'ENGINE_ERR_BAD_PROBE',
          message: `${field} ${JSON.stringify(name)} is not a host endpoint${suggestText(name, this.hostEndpoints())}`,
        };
      if (field === 'viaIn') viaIn = h;
      else viaOut = h;
    }
    if (viaIn && d?.kind === 'host')
      return {
        code: 'ENGINE_ERR_BAD_PROBE',
        message: `viaIn names the host endpoint traffic is forwarded in through; traffic to host endpoint ${d.id} is not forwarded`,
      };
    if (viaOut && s?.kind === 'host')
      return {
        code: 'ENGINE_ERR_BAD_PROBE',
        message: `viaOut names the host endpoint traffic is forwarded out through; traffic from host endpoint ${s.id} is not forwarded`,
      };
    if (probe.viaIn === undefined && probe.viaOut === undefined && this.anyStagePolicy()) {
      const offNode = (e: Endpoint | undefined, node: string) =>
        e === undefined || (e.node !== undefined && e.node !== node);
      if (d?.kind === 'workload' && d.node !== undefined && offNode(s, d.node))
        viaIn = this.allInterfacesOf(d.node);
      if (s?.kind === 'workload' && s.node !== undefined && offNode(d, s.node))
        viaOut = this.allInterfacesOf(s.node);
    }
    if (!viaIn && !viaOut && s?.kind !== 'host' && d?.kind !== 'host') return undefined;
    return judgeHostPath(
      {
        explain,
        normal: (ep, dir, c) => {
          const act = this.active(ep);
          return evaluateDirection(
            ep,
            dir,
            dir === 'ingress' ? act.ingress : act.egress,
            dir === 'ingress' ? act.profilesIn : act.profilesOut,
            c,
            explain,
          );
        },
        stageTiers: (ep, stage, dir) => this.stageTiers(ep, stage, dir),
        allInterfaces: (ep) => this.heps.get(ep.id)?.spec.interfaceName === '*',
      },
      { src: ctx.src, dst: ctx.dst, srcLabel: src.label, dstLabel: dst.label, viaIn, viaOut, ctx },
    );
  }

  /** `kernelAllows` when host endpoints are on the way; undefined when they are not. */
  private hostPathAllows(
    from: string,
    to: string,
    protocol: string | number,
    port: number,
  ): boolean | undefined {
    const src = this.resolve(from);
    const dst = this.resolve(to);
    const proto = protocolNumber(protocol);
    if (!src || !dst || proto === undefined) return undefined;
    if (src.endpoint && src.endpoint === dst.endpoint) return undefined;
    const { srcIp, dstIp, family } = pickAddresses(src, dst);
    const srcPeer: Peer = { ip: srcIp, endpoint: src.endpoint, netsets: this.netsetsFor(srcIp) };
    const dstPeer: Peer = { ip: dstIp, endpoint: dst.endpoint, netsets: this.netsetsFor(dstIp) };
    const ctx = kernelCtx(proto, port, family, srcPeer, dstPeer, false, this.serviceMatch);
    const h = this.hostPath({}, src, dst, ctx, false);
    return h && 'allow' in h ? h.allow : undefined;
  }

  private readonly stageCache = new WeakMap<
    Endpoint,
    {
      readonly worldGen: number;
      readonly globalGen: number;
      readonly byStage: Map<ExtraStage, { ingress: ActiveTier[]; egress: ActiveTier[] }>;
    }
  >();
  private stagePolicies: { readonly gen: number; readonly any: boolean } | undefined;
  private allInterfacesByNode: Map<string, string> | undefined;

  // ---------------------------------------------------------------- queries

  /** Problems found while compiling (selectors that failed to compile, unknown tiers...). */
  diagnostics(): Diagnostic[] {
    const out: Diagnostic[] = [];
    for (const list of this.selectorProblems.values()) out.push(...list);
    const policies = [
      ...this.globalPolicies.values(),
      ...[...this.nsPolicies.values()].flatMap((m) => [...m.values()]),
    ];
    for (const p of policies) {
      if (p.tier !== DEFAULT_TIER && !this.tiers.has(p.tier)) {
        out.push({
          code: 'POLICY_ERR_UNKNOWN_TIER',
          severity: 'warning',
          message: `policy ${p.name} is in tier ${JSON.stringify(p.tier)}, which no Tier resource defines; it is ordered last with default action Deny`,
          hint: `define the tier: apiVersion: projectcalico.org/v3, kind: Tier, metadata: {name: ${p.tier}}`,
          file: p.source?.file ?? '<input>',
          line: p.source?.line ?? 0,
          column: p.source?.column ?? 0,
        });
      }
    }
    return out;
  }

  /** `namespace/name` of every workload endpoint (pods and WorkloadEndpoints), sorted. */
  workloadEndpoints(): string[] {
    return this.allEndpointIds()
      .filter((id) => id.includes('/'))
      .sort();
  }

  /**
   * The tiers and policies that apply to an endpoint, in evaluation order, per direction (for
   * `explain`, the console's endpoint page and the agent's calculation).
   */
  activeTiers(
    ref: string,
  ):
    | { readonly ingress: readonly ActiveTier[]; readonly egress: readonly ActiveTier[] }
    | undefined {
    const c0 = ref.charCodeAt(0);
    // A name (the common case): its entry, so that `active` needs no lookup of its own.
    const e = (c0 >= 48 && c0 <= 57) || ref.includes(':') ? undefined : this.nameEntry(ref);
    const ep = e?.ep ?? this.resolve(ref)?.endpoint;
    if (!ep) return undefined;
    const a = this.active(ep, e);
    return { ingress: a.ingress, egress: a.egress };
  }

  /** Every host endpoint's name, sorted. */
  hostEndpoints(): string[] {
    return [...this.heps.keys()].sort();
  }

  /** The endpoint behind a `namespace/name`, host endpoint name or IP address, for callers. */
  describeEndpoint(ref: string): Endpoint | undefined {
    return this.resolve(ref)?.endpoint;
  }

  private resolve(ref: string): Resolved | undefined {
    const c0 = ref.charCodeAt(0);
    const mayBeIp = (c0 >= 48 && c0 <= 57) || ref.includes(':');
    const ip = mayBeIp ? parseIp(ref) : undefined;
    if (ip) {
      const id = this.ipToEndpoint(ip);
      return { endpoint: id ? this.endpoint(id) : undefined, ip, label: canonicalIp(ref) ?? ref };
    }
    return this.nameEntry(ref)?.resolved;
  }

  /** The cache entry of the endpoint a name (not an address) refers to. */
  private nameEntry(ref: string): EndpointEntry | undefined {
    const e = this.entry(ref);
    if (e || ref.includes('/')) return e;
    return this.entry(`default/${ref}`);
  }

  private entry(id: string): EndpointEntry | undefined {
    const c = this.endpointCache.get(id);
    if (c && c.gen === this.worldGen) return c;
    return this.rebuildEntry(id, c);
  }

  /** The endpoint of an entry as a peer at its first address. */
  private entryPeer(e: EndpointEntry, ip: IpAddr): Peer {
    if (e.peer && e.peerGen === this.netsetGen) return e.peer;
    // `kernelAllows` made sure two numbers are left (`ensurePeerNumbers`); without one the peer
    // simply goes unnumbered and uses the per-decision memo.
    const n = this.predicates.number();
    const peer: Peer =
      n === undefined
        ? { ip, endpoint: e.ep, netsets: this.netsetsFor(ip) }
        : { ip, endpoint: e.ep, netsets: this.netsetsFor(ip), n };
    e.peer = peer;
    e.peerN = n ?? -1;
    e.peerGen = this.netsetGen;
    return peer;
  }

  private unknownRef(ref: string): {
    readonly ok: false;
    readonly code: string;
    readonly message: string;
  } {
    const all = [...this.workloadEndpoints(), ...this.hostEndpoints()];
    const near = suggest(ref, all);
    return {
      ok: false,
      code: 'ENGINE_ERR_UNKNOWN_ENDPOINT',
      message: `no pod, workload endpoint or host endpoint named ${JSON.stringify(ref)}${near ? `; did you mean ${JSON.stringify(near)}?` : ''} (give namespace/name, a host endpoint name or an IP address)`,
    };
  }

  /**
   * Kernel-only verdict (egress at source and ingress at destination), for `matrix` and the
   * agent's hot path: no provenance, no strings.
   */
  kernelAllows(from: string, to: string, protocol: string | number, port: number): boolean {
    // Names decided before: their entries straight from the name cache (no address checks), then
    // what `kernelAllowsByHandle` does.
    const se = this.cachedName(from);
    const de = se && this.cachedName(to);
    if (de && !this.mayCrossHost(se, de)) {
      const proto = protocol === 'TCP' ? 6 : protocol === 'UDP' ? 17 : protocolNumber(protocol);
      if (proto !== undefined) {
        const v = this.entriesAllow(se, de, proto, port);
        if (v !== undefined) return v;
      }
    }
    if (this.heps.size > 0) {
      const h = this.hostPathAllows(from, to, protocol, port);
      if (h !== undefined) return h;
    }
    // The common case, without allocation: two endpoint names whose first addresses share a
    // family (what `pickAddresses` picks then), decided by the endpoints' programs.
    const proto = protocol === 'TCP' ? 6 : protocol === 'UDP' ? 17 : protocolNumber(protocol);
    const c0 = from.charCodeAt(0);
    const c1 = to.charCodeAt(0);
    if (
      proto !== undefined &&
      !(c0 >= 48 && c0 <= 57) &&
      !(c1 >= 48 && c1 <= 57) &&
      !from.includes(':') &&
      !to.includes(':')
    ) {
      const se = this.nameEntry(from);
      const de = this.nameEntry(to);
      if (!se || !de) return false;
      this.cacheName(from, se);
      this.cacheName(to, de);
      const v = this.entriesAllow(se, de, proto, port);
      if (v !== undefined) return v;
    }
    return this.kernelAllowsResolved(from, to, protocol, port);
  }

  /**
   * The entry a name refers to, from the name cache; undefined when the cache has none or one
   * that is no longer current (the caller looks the name up then).
   */
  private cachedName(ref: string): EndpointEntry | undefined {
    const e = this.nameCache.get(ref);
    return e !== undefined && !e.dropped && e.gen === this.worldGen ? e : undefined;
  }

  /**
   * Remembers the entry of a name that is its endpoint's id (a bare name resolved in `default`
   * is not kept: what it refers to can change without that entry changing). Bounded: starts over
   * beyond twice the endpoints cached.
   */
  private cacheName(ref: string, e: EndpointEntry): void {
    if (e.ep.id !== ref) return;
    if (this.nameCache.size > 2 * this.endpointCache.size + 1024) this.nameCache.clear();
    this.nameCache.set(ref, e);
  }

  /**
   * Whether host endpoint stages may be on the way between two endpoints (what `hostPath` looks
   * for, over-approximated from what the entries hold): one of them is a host endpoint, or stage
   * policies exist and one of them is a workload on a known node. When not, the endpoints'
   * programs decide alone.
   */
  private mayCrossHost(se: EndpointEntry, de: EndpointEntry): boolean {
    if (this.heps.size === 0) return false;
    const s = se.ep;
    const d = de.ep;
    if (s.kind === 'host' || d.kind === 'host') return true;
    return (s.node !== undefined || d.node !== undefined) && this.anyStagePolicy();
  }

  /**
   * The kernel yes/no for two endpoint entries by their programs; undefined when their first
   * addresses do not share a family (the caller resolves addresses then).
   */
  private entriesAllow(
    se: EndpointEntry,
    de: EndpointEntry,
    proto: number,
    port: number,
  ): boolean | undefined {
    if (this.predicates.numbersUsed() > this.peerNumberLimit + 2 * this.endpointCache.size) {
      // Rebuilt peers take new numbers, so numbers grow with churn, and with them every
      // predicate's bit array: start a new numbering, every kept peer is rebuilt with a new
      // number (before this decision takes its two peers, so they share one numbering).
      this.predicates.renumber();
      this.netsetGen++;
    }
    if (se.ep === de.ep) return true;
    const flat = this.flatKernel;
    if (flat && se.fam !== 0 && se.fam === de.fam) {
      // The flat form: entries, code and memo words; the peer objects only on a memo miss.
      if (se.peerGen !== this.netsetGen) this.entryPeer(se, se.ip0 as IpAddr);
      if (de.peerGen !== this.netsetGen) this.entryPeer(de, de.ip0 as IpAddr);
      if (se.peerN >= 0 && de.peerN >= 0)
        return (
          this.flatAllows(flat, se, de, 'egress', proto, port) &&
          this.flatAllows(flat, de, se, 'ingress', proto, port)
        );
    }
    const a = se.ip0;
    const b = de.ip0;
    if (a && b && a.family === b.family) {
      const sp = this.entryPeer(se, a);
      const dp = this.entryPeer(de, b);
      return (
        this.entryAllows(se, 'egress', proto, port, a.family, sp, dp) &&
        this.entryAllows(de, 'ingress', proto, port, a.family, sp, dp)
      );
    }
    return undefined;
  }

  /**
   * A number standing for an endpoint name (`namespace/name`, a bare pod name in `default`, a host
   * endpoint name) for `kernelAllowsByHandle`, which then skips the name lookups: for callers such
   * as the agent that decide for the same endpoints again and again. Undefined for an unknown
   * endpoint and for what `kernelAllows` reads as an address. A handle names the endpoint, not
   * its current state: it follows every change, and answers false while the endpoint is absent.
   */
  endpointHandle(ref: string): number | undefined {
    const c0 = ref.charCodeAt(0);
    if ((c0 >= 48 && c0 <= 57) || ref.includes(':')) return undefined;
    const e = this.nameEntry(ref);
    if (!e) return undefined;
    const id = this.endpointCache.get(ref) === e ? ref : `default/${ref}`;
    let h = this.handleOf.get(id);
    if (h === undefined) {
      if (this.handleIds.length >= MAX_HANDLES) return undefined;
      h = this.handleIds.length;
      this.handleIds.push(id);
      this.handleEntries.push(e);
      this.handleOf.set(id, h);
    }
    return h;
  }

  /** `kernelAllows` for two handles from `endpointHandle`; false for a handle it did not give. */
  kernelAllowsByHandle(from: number, to: number, protocol: string | number, port: number): boolean {
    const se = this.handleEntry(from);
    const de = this.handleEntry(to);
    if (!se || !de) return false;
    // Host endpoint stages on the way: what `kernelAllows` decides by the names.
    if (this.mayCrossHost(se, de))
      return this.kernelAllows(
        this.handleIds[from] as string,
        this.handleIds[to] as string,
        protocol,
        port,
      );
    const proto = protocol === 'TCP' ? 6 : protocol === 'UDP' ? 17 : protocolNumber(protocol);
    if (proto === undefined) return false;
    const v = this.entriesAllow(se, de, proto, port);
    if (v !== undefined) return v;
    return this.kernelAllowsResolved(
      this.handleIds[from] as string,
      this.handleIds[to] as string,
      protocol,
      port,
    );
  }

  /** The current entry of a handle's endpoint (the kept one while the cache still holds it). */
  private handleEntry(h: number): EndpointEntry | undefined {
    const e = this.handleEntries[h];
    if (e !== undefined && !e.dropped && e.gen === this.worldGen) return e;
    const id = this.handleIds[h];
    if (id === undefined) return undefined;
    const f = this.entry(id);
    this.handleEntries[h] = f;
    return f;
  }

  /** One direction's yes/no in the kernel, by the precompiled program when there is one. */
  private entryAllows(
    e: EndpointEntry,
    dir: Direction,
    proto: number,
    port: number,
    family: 4 | 6,
    src: Peer,
    dst: Peer,
  ): boolean {
    const key = programKey(proto, port, family, e.l7);
    const epoch = this.decisionEpoch;
    if (dir === 'ingress') {
      if (e.inEpoch === epoch && e.inKey === key && e.inProg)
        return runKernelAllows(e.inProg, dst, src, this.serviceCtx, this.predicates);
    } else if (e.outEpoch === epoch && e.outKey === key && e.outProg)
      return runKernelAllows(e.outProg, src, dst, this.serviceCtx, this.predicates);
    const act = e.active;
    if (
      key !== undefined &&
      act &&
      act.worldGen === this.worldGen &&
      act.globalGen === this.globalPolicyGen &&
      act.nsGen === (e.ns === undefined ? 0 : (this.nsPolicyGen.get(e.ns) ?? 0))
    ) {
      const prog = (dir === 'ingress' ? act.programsIn : act.programsOut).get(key);
      if (prog) {
        if (dir === 'ingress') {
          e.inEpoch = epoch;
          e.inKey = key;
          e.inProg = prog;
          return runKernelAllows(prog, dst, src, this.serviceCtx, this.predicates);
        }
        e.outEpoch = epoch;
        e.outKey = key;
        e.outProg = prog;
        return runKernelAllows(prog, src, dst, this.serviceCtx, this.predicates);
      }
    }
    return this.kernelOutcome(e.ep, dir, proto, port, family, src, dst).allow;
  }

  /**
   * `entryAllows` by the flat form, for the entry `e` (the source for egress, the destination for
   * ingress) and the other side `o`, both with numbered peers: the entry's slots hold the flat
   * code of its last two buckets per direction.
   */
  private flatAllows(
    flat: FlatKernel,
    e: EndpointEntry,
    o: EndpointEntry,
    dir: Direction,
    proto: number,
    port: number,
  ): boolean {
    const key = programKey(proto, port, e.fam as 4 | 6, e.l7);
    const epoch = this.decisionEpoch;
    const ingress = dir === 'ingress';
    if (ingress) {
      if (e.inFlatEpoch === epoch) {
        if (e.inFlatKey === key) return flat.run(e.inFlatAt, e, o);
        if (e.inFlatKey2 === key) return flat.run(e.inFlatAt2, e, o);
      }
    } else if (e.outFlatEpoch === epoch) {
      if (e.outFlatKey === key) return flat.run(e.outFlatAt, e, o);
      if (e.outFlatKey2 === key) return flat.run(e.outFlatAt2, e, o);
    }
    const act = e.active;
    if (
      key !== undefined &&
      act &&
      act.worldGen === this.worldGen &&
      act.globalGen === this.globalPolicyGen &&
      act.nsGen === (e.ns === undefined ? 0 : (this.nsPolicyGen.get(e.ns) ?? 0))
    ) {
      let prog = (ingress ? act.programsIn : act.programsOut).get(key);
      // Asked for once before (null): build it now, and its flat code with it, so that a
      // bucket's third decision is already a steady one.
      if (prog === null)
        prog = this.program(act, e.ep, dir, proto, port, e.fam as 4 | 6, 'now') ?? null;
      if (prog) {
        const gen = flat.gen;
        const at = flat.compile(prog);
        // Compiling may have started the flat pool over: every slot's offset is stale then.
        if (flat.gen !== gen) this.decisionEpoch++;
        const now = this.decisionEpoch;
        if (ingress) {
          const keep = e.inFlatEpoch === now;
          e.inFlatKey2 = keep ? e.inFlatKey : -1;
          e.inFlatAt2 = e.inFlatAt;
          e.inFlatEpoch = now;
          e.inFlatKey = key;
          e.inFlatAt = at;
        } else {
          const keep = e.outFlatEpoch === now;
          e.outFlatKey2 = keep ? e.outFlatKey : -1;
          e.outFlatAt2 = e.outFlatAt;
          e.outFlatEpoch = now;
          e.outFlatKey = key;
          e.outFlatAt = at;
        }
        return flat.run(at, e, o);
      }
    }
    const src = (ingress ? o : e).peer as Peer;
    const dst = (ingress ? e : o).peer as Peer;
    return this.kernelOutcome(e.ep, dir, proto, port, e.fam as 4 | 6, src, dst).allow;
  }

  private kernelAllowsResolved(
    from: string,
    to: string,
    protocol: string | number,
    port: number,
  ): boolean {
    const src = this.resolve(from);
    const dst = this.resolve(to);
    const proto = protocolNumber(protocol);
    if (!src || !dst || proto === undefined) return false;
    if (src.endpoint && src.endpoint === dst.endpoint) return true;
    const { srcIp, dstIp, family } = pickAddresses(src, dst);
    const srcPeer: Peer = { ip: srcIp, endpoint: src.endpoint, netsets: this.netsetsFor(srcIp) };
    const dstPeer: Peer = { ip: dstIp, endpoint: dst.endpoint, netsets: this.netsetsFor(dstIp) };
    const s = src.endpoint;
    if (s && !this.kernelOutcome(s, 'egress', proto, port, family, srcPeer, dstPeer).allow)
      return false;
    const d = dst.endpoint;
    if (d && !this.kernelOutcome(d, 'ingress', proto, port, family, srcPeer, dstPeer).allow)
      return false;
    return true;
  }

  /**
   * One direction in the kernel, from the endpoint's precompiled program for the bucket; the rule
   * walk when the port cannot key a bucket (not an integer in 0–65535).
   */
  private kernelOutcome(
    ep: Endpoint,
    dir: Direction,
    proto: number,
    port: number | undefined,
    family: 4 | 6,
    src: Peer,
    dst: Peer,
    when: 'now' | 'on-reuse' = 'on-reuse',
  ): Outcome {
    const act = this.active(ep);
    const prog = this.program(act, ep, dir, proto, port, family, when);
    if (!prog) {
      const tiers = dir === 'ingress' ? act.ingress : act.egress;
      const profiles = dir === 'ingress' ? act.profilesIn : act.profilesOut;
      const ctx = kernelCtx(proto, port, family, src, dst, ep.l7, this.serviceMatch);
      return decideDirection(ep, dir, tiers, profiles, ctx);
    }
    return dir === 'ingress'
      ? runKernelProgram(prog, dst, src, this.serviceCtx, this.predicates)
      : runKernelProgram(prog, src, dst, this.serviceCtx, this.predicates);
  }

  private program(
    act: ActiveSet,
    ep: Endpoint,
    dir: Direction,
    proto: number,
    port: number | undefined,
    family: 4 | 6,
    when: 'now' | 'on-reuse' = 'now',
  ): KernelProgram | undefined {
    const key = programKey(proto, port, family, ep.l7);
    if (key === undefined) return undefined;
    const programs = dir === 'ingress' ? act.programsIn : act.programsOut;
    let prog = programs.get(key);
    if (!prog) {
      // A bucket asked for once is walked: a program pays off only when it is used again.
      if (prog === undefined && when === 'on-reuse') {
        if (programs.size >= MAX_PROGRAMS_PER_SET) programs.clear();
        programs.set(key, null);
        return undefined;
      }
      const bucket: KernelBucket = { protocol: proto, port, family, l7Available: ep.l7 };
      prog = buildKernelProgram(
        ep,
        dir,
        dir === 'ingress' ? act.ingress : act.egress,
        dir === 'ingress' ? act.profilesIn : act.profilesOut,
        bucket,
        (section, anyTier) => this.segment(section, anyTier, dir, bucket, key),
        this.programIntern,
      );
      // Bounded: a caller probing every port must not grow one set without limit.
      if (programs.size >= MAX_PROGRAMS_PER_SET) programs.clear();
      programs.set(key, prog);
    }
    return prog;
  }

  /**
   * One tier's or profile's segment for a bucket, shared by every program that holds the same
   * (interned) tier or the same profile rules.
   */
  private segment(
    section: { readonly tier: ActiveTier } | { readonly profile: CompiledProfileRules },
    anyTier: boolean,
    dir: Direction,
    bucket: KernelBucket,
    bucketKey: number,
  ): KernelSegment {
    const key = (bucketKey * 2 + (dir === 'ingress' ? 1 : 0)) * 2 + (anyTier ? 1 : 0);
    const owner = 'tier' in section ? section.tier : section.profile;
    let byBucket = this.segments.get(owner);
    if (!byBucket) {
      byBucket = new Map();
      this.segments.set(owner, byBucket);
    }
    let seg = byBucket.get(key);
    if (!seg) {
      seg = buildKernelSegment(dir, section, anyTier, bucket, this.predicates, this.nextSegment++);
      if (byBucket.size >= MAX_PROGRAMS_PER_SET) byBucket.clear();
      byBucket.set(key, seg);
    }
    return seg;
  }

  /**
   * The kernel decision program of one endpoint and direction for a protocol, destination port
   * and address family (default: the family of its first address): the structure a renderer turns
   * into sets and verdict maps. Undefined for an unknown endpoint, protocol or port.
   */
  kernelProgram(
    ref: string,
    direction: Direction,
    protocol: string | number,
    port: number | undefined,
    family?: 4 | 6,
  ): KernelProgram | undefined {
    const ep = this.resolve(ref)?.endpoint;
    const proto = protocolNumber(protocol);
    if (!ep || proto === undefined) return undefined;
    return this.program(
      this.active(ep),
      ep,
      direction,
      proto,
      port,
      family ?? ep.ips[0]?.family ?? 4,
    );
  }

  /**
   * Both kernel directions with provenance (no trace, no staged verdicts), decided by the
   * precompiled programs or, with `via: 'walk'`, by the rule walk they must agree with. Undefined
   * for an unknown endpoint or protocol.
   */
  kernelVerdicts(
    from: string,
    to: string,
    protocol: string | number,
    port: number | undefined,
    via: 'program' | 'walk' = 'program',
  ): { readonly egress: DirectionVerdict; readonly ingress: DirectionVerdict } | undefined {
    const src = this.resolve(from);
    const dst = this.resolve(to);
    const proto = protocolNumber(protocol);
    if (!src || !dst || proto === undefined) return undefined;
    if (src.endpoint && src.endpoint === dst.endpoint) return loopback(src.endpoint).kernel;
    const { srcIp, dstIp, family } = pickAddresses(src, dst);
    const srcPeer: Peer = { ip: srcIp, endpoint: src.endpoint, netsets: this.netsetsFor(srcIp) };
    const dstPeer: Peer = { ip: dstIp, endpoint: dst.endpoint, netsets: this.netsetsFor(dstIp) };
    if (this.heps.size > 0) {
      // Host endpoints on the way: their stages decide (one walk for both modes), a denying
      // forward hop or reply folded into the direction it belongs to.
      const ctx = kernelCtx(proto, port, family, srcPeer, dstPeer, false, this.serviceMatch);
      const h = this.hostPath({}, src, dst, ctx, false);
      if (h && 'allow' in h) {
        let egress = h.egress;
        let ingress = h.ingress;
        for (const v of [...h.forward, ...(h.reply ? [h.reply] : [])]) {
          if (v.verdict === 'allow' || egress.verdict === 'deny' || ingress.verdict === 'deny')
            continue;
          if (v.provenance.direction === 'egress' && v !== h.reply) egress = v;
          else ingress = v;
        }
        return { egress, ingress };
      }
    }
    const side = (ep: Endpoint | undefined, dir: Direction): DirectionVerdict => {
      if (!ep) return unmanaged('kernel', dir, dir === 'egress' ? src.label : dst.label);
      const act = this.active(ep);
      const tiers = dir === 'ingress' ? act.ingress : act.egress;
      const profiles = dir === 'ingress' ? act.profilesIn : act.profilesOut;
      const ctx = kernelCtx(proto, port, family, srcPeer, dstPeer, ep.l7, this.serviceMatch);
      const o =
        via === 'walk'
          ? decideDirection(ep, dir, tiers, profiles, ctx)
          : this.kernelOutcome(ep, dir, proto, port, family, srcPeer, dstPeer, 'now');
      return dressOutcome(o, ep, dir, tiers, profiles, ctx, []);
    };
    return { egress: side(src.endpoint, 'egress'), ingress: side(dst.endpoint, 'ingress') };
  }

  private readonly serviceMatch: MatchContext['serviceMatch'] = (
    ns,
    name,
    peer,
    proto,
    port,
    checkPort,
  ) => {
    if (!peer.ip) return false;
    const m = this.serviceMembersOf(ns, name);
    if (!checkPort) return m.addresses.has(formatIp(peer.ip));
    return port !== undefined && m.ports.has(memberKey(peer.ip, proto, port));
  };

  /** A service's endpoint addresses and ports (`services.ts`), cached until an input changes. */
  serviceMembersOf(ns: string, name: string): ServiceMembers {
    const key = `${ns}/${name}`;
    let m = this.serviceMemberCache.get(key);
    if (!m) {
      m = serviceMembers(
        this.servicesRaw.get(key),
        this.slicesByService.get(key) ?? [],
        this.endpointsRaw.get(key),
        () =>
          this.allEndpointIds()
            .filter((id) => id.startsWith(`${ns}/`))
            .map((id) => this.endpoint(id))
            .filter((e): e is Endpoint => e !== undefined),
      );
      if (this.serviceMemberCache.size >= 10_000) this.serviceMemberCache.clear();
      this.serviceMemberCache.set(key, m);
    }
    return m;
  }

  private readonly serviceMemberCache = new Map<string, ServiceMembers>();
  private readonly slicesRaw = new Map<string, EndpointSlice>();
  /** EndpointSlices by the `namespace/name` of their Service. */
  private readonly slicesByService = new Map<string, EndpointSlice[]>();
  private readonly endpointsRaw = new Map<string, Endpoints>();
  private readonly serviceCtx: Pick<MatchContext, 'serviceMatch'> = {
    serviceMatch: this.serviceMatch,
  };
  /** Peer predicates shared by kernel segments, with their per-decision memo. */
  private readonly predicates = new PredicateTable();
  /** The flat form of kernel programs for `kernelAllows`; undefined with `kernelForm: 'object'`. */
  private flatKernel: FlatKernel | undefined;
  /** `endpointHandle`: endpoint ids by handle, their last entries, and handles by id. */
  private readonly handleIds: string[] = [];
  private readonly handleEntries: (EndpointEntry | undefined)[] = [];
  private readonly handleOf = new Map<string, number>();
  /**
   * `cachedName`: entries by the name strings callers passed. Its keys are the callers' own
   * string objects, so a caller that passes the same strings again (a probe list, a matrix's
   * names) is answered by pointer comparison; the endpoint cache's keys are strings the engine
   * built, which a lookup must compare character by character (three times slower at 100k).
   */
  private readonly nameCache = new Map<string, EndpointEntry>();
  /** Kernel segments by the (immutable) tier or profile rules they were built from. */
  private readonly segments = new WeakMap<
    ActiveTier | CompiledProfileRules,
    Map<number, KernelSegment>
  >();
  /** Identical tiers (same name, default action and policies) are one object, so segments are shared. */
  /** `internTier`'s tries, by direction, default action and tier name, and their node count. */
  private readonly tierIntern = new Map<string, TierTrie>();
  private tierTrieNodes = 0;
  /** `tierListsOf`'s trie and its node count. */
  private listTrie = newListTrie();
  private listTrieNodes = 0;
  private nextSegment = 1;
  /** Kernel programs by their segments (see `buildKernelProgram`); cleared with `tierIntern`. */
  private readonly programIntern = new Map<string, KernelProgram>();

  /** Judges a probe at every enforcement point. `explain` adds the evaluation trace. */
  check(probe: Probe, explain = true, kernelOnly = false): CheckOutcome {
    const src = this.resolve(probe.from);
    if (!src) return this.unknownRef(probe.from);
    const dst = this.resolve(probe.to);
    if (!dst) return this.unknownRef(probe.to);
    const protocol = protocolNumber(probe.protocol ?? 'TCP');
    if (protocol === undefined) {
      return {
        ok: false,
        code: 'ENGINE_ERR_BAD_PROBE',
        message: `unknown protocol ${JSON.stringify(probe.protocol)} (use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 0-255)`,
      };
    }
    const { srcIp, dstIp, family } = pickAddresses(src, dst);
    const srcPeer: Peer = { ip: srcIp, endpoint: src.endpoint, netsets: this.netsetsFor(srcIp) };
    const dstPeer: Peer = { ip: dstIp, endpoint: dst.endpoint, netsets: this.netsetsFor(dstIp) };
    const serviceMatch = this.serviceMatch;
    const base = {
      protocol,
      dstPort: probe.port,
      icmp: probe.icmp,
      family,
      src: srcPeer,
      dst: dstPeer,
      serviceMatch,
    };

    if (src.endpoint && src.endpoint === dst.endpoint)
      return { ok: true, result: loopback(src.endpoint) };

    const host =
      this.heps.size > 0
        ? this.hostPath(
            probe,
            src,
            dst,
            {
              ...base,
              point: 'kernel',
              l7Available: false,
              request: undefined,
              srcIdentity: undefined,
            },
            explain,
          )
        : undefined;
    if (host && !('allow' in host)) return { ok: false, ...host };
    if (host) {
      const kernel = {
        egress: host.egress,
        ingress: host.ingress,
        ...(host.forward.length > 0 ? { forward: host.forward } : {}),
        ...(host.reply ? { reply: host.reply } : {}),
      };
      if (kernelOnly) return { ok: true, result: { verdict: 'deny', kernel, l7: notJudged() } };
      const l7 = this.judgeL7(probe, src, dst, base, explain);
      const verdict = host.allow && l7.verdict === 'allow' ? 'allow' : 'deny';
      return { ok: true, result: { verdict, kernel, l7 } };
    }

    const kernelSide = (ep: Endpoint | undefined, dir: Direction): DirectionVerdict => {
      if (!ep) return unmanaged('kernel', dir, dir === 'egress' ? src.label : dst.label);
      const act = this.active(ep);
      const ctx: MatchContext = {
        ...base,
        point: 'kernel',
        l7Available: ep.l7,
        request: undefined,
        srcIdentity: undefined,
      };
      if (!explain && probe.icmp === undefined) {
        // The precompiled program decides; provenance and staged verdicts are dressed as usual.
        const o = this.kernelOutcome(ep, dir, protocol, probe.port, family, srcPeer, dstPeer);
        return dressOutcome(
          o,
          ep,
          dir,
          dir === 'ingress' ? act.ingress : act.egress,
          dir === 'ingress' ? act.profilesIn : act.profilesOut,
          ctx,
          [],
        );
      }
      return evaluateDirection(
        ep,
        dir,
        dir === 'ingress' ? act.ingress : act.egress,
        dir === 'ingress' ? act.profilesIn : act.profilesOut,
        ctx,
        explain,
      );
    };
    const egress = kernelSide(src.endpoint, 'egress');
    const ingress = kernelSide(dst.endpoint, 'ingress');
    const kernel = { egress, ingress };
    if (kernelOnly) {
      return { ok: true, result: { verdict: 'deny', kernel, l7: notJudged() } };
    }
    const l7 = this.judgeL7(probe, src, dst, base, explain);
    const verdict =
      egress.verdict === 'allow' && ingress.verdict === 'allow' && l7.verdict === 'allow'
        ? 'allow'
        : 'deny';
    return { ok: true, result: { verdict, kernel, l7 } };
  }

  /**
   * The destination L7 point's verdict for one request, and only that: what a sidecar or the
   * ext_authz server beside `probe.to` decides per request (PeerAuthentication, the identity
   * binding, the Calico-model ingress rules at L7, Istio AuthorizationPolicy or legacy RBAC). No
   * kernel verdict and no source-side egress verdict are computed, so it costs a fraction of
   * `check`; what it returns is exactly `check(probe).l7` without the source's egress part (its
   * `ingress`, `istio`, `mtls` and `principal` are equal; `l7-decide.test.ts` holds it to that).
   */
  decideL7(probe: Probe, explain = false): L7Outcome {
    const r = this.l7Request(probe);
    if (!r.ok) return r;
    const { src, dst } = r;
    if (src.endpoint && src.endpoint === dst.endpoint)
      return { ok: true, result: loopback(src.endpoint).l7 };
    return { ok: true, result: this.judgeL7(probe, src, dst, this.l7Base(r), explain, true) };
  }

  /**
   * The source L7 point's verdict for one outgoing request, and only that: what the sidecar
   * beside `probe.from` decides about its own egress rules at L7 (Calico `http` matches in egress
   * rules, profiles' egress). No kernel verdict and no destination-side L7 verdict are computed.
   * What it returns is exactly `check(probe).l7.egress`: `undefined` when the source has no L7
   * point, is no endpoint, or talks to itself (`l7-egress-decide.test.ts` holds it to that).
   */
  decideL7Egress(probe: Probe, explain = false): L7EgressOutcome {
    const r = this.l7Request(probe);
    if (!r.ok) return r;
    const srcEp = r.src.endpoint;
    if (!srcEp?.l7 || srcEp === r.dst.endpoint) return { ok: true, result: undefined };
    const act = this.active(srcEp);
    const result = evaluateDirection(
      srcEp,
      'egress',
      act.egress,
      act.profilesOut,
      {
        ...this.l7Base(r),
        point: 'l7',
        l7Available: true,
        request: httpRequest(probe),
        srcIdentity: undefined,
      },
      explain,
    );
    return { ok: true, result };
  }

  /**
   * What `decideL7` and `decideL7Egress` start with: both sides resolved and the protocol known,
   * or the refusal they answer (an unknown endpoint, an unknown protocol).
   */
  private l7Request(probe: Probe):
    | {
        readonly ok: true;
        readonly probe: Probe;
        readonly src: Resolved;
        readonly dst: Resolved;
        readonly protocol: number;
      }
    | { readonly ok: false; readonly code: string; readonly message: string } {
    const src = this.resolve(probe.from);
    if (!src) return this.unknownRef(probe.from);
    const dst = this.resolve(probe.to);
    if (!dst) return this.unknownRef(probe.to);
    const protocol = protocolNumber(probe.protocol ?? 'TCP');
    if (protocol === undefined)
      return {
        ok: false,
        code: 'ENGINE_ERR_BAD_PROBE',
        message: `unknown protocol ${JSON.stringify(probe.protocol)} (use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 0-255)`,
      };
    return { ok: true, probe, src, dst, protocol };
  }

  /** The connection part of an L7 match context: both sides as peers at the picked addresses. */
  private l7Base(r: {
    readonly probe: Probe;
    readonly src: Resolved;
    readonly dst: Resolved;
    readonly protocol: number;
  }): Pick<
    MatchContext,
    'protocol' | 'dstPort' | 'icmp' | 'family' | 'src' | 'dst' | 'serviceMatch'
  > {
    const { srcIp, dstIp, family } = pickAddresses(r.src, r.dst);
    return {
      protocol: r.protocol,
      dstPort: r.probe.port,
      icmp: r.probe.icmp,
      family,
      src: { ip: srcIp, endpoint: r.src.endpoint, netsets: this.netsetsFor(srcIp) },
      dst: { ip: dstIp, endpoint: r.dst.endpoint, netsets: this.netsetsFor(dstIp) },
      serviceMatch: this.serviceMatch,
    };
  }

  /** The AuthorizationPolicies (other than CUSTOM) that select `ep`, per endpoint object. */
  private authzFor(ep: Endpoint): readonly CompiledAuthz[] {
    const c = this.authzByEndpoint.get(ep);
    if (c && c.gen === this.authzGen) return c.list;
    const list: CompiledAuthz[] = [];
    for (const p of this.authz.values()) if (p.action !== 'CUSTOM' && p.selects(ep)) list.push(p);
    this.authzByEndpoint.set(ep, { gen: this.authzGen, list });
    return list;
  }

  /** `effectiveMtlsMode` per endpoint object and port, until a PeerAuthentication changes. */
  private mtlsFor(ep: Endpoint, port: number | undefined): ReturnType<typeof effectiveMtlsMode> {
    let c = this.mtlsByEndpoint.get(ep);
    if (!c || c.gen !== this.peerAuthnGen) {
      c = { gen: this.peerAuthnGen, byPort: new Map() };
      this.mtlsByEndpoint.set(ep, c);
    }
    const k = port ?? -1;
    let m = c.byPort.get(k);
    if (!m) {
      m = effectiveMtlsMode([...this.peerAuthn.values()], ep, port, this.rootNamespace);
      if (c.byPort.size >= MAX_PROGRAMS_PER_SET) c.byPort.clear();
      c.byPort.set(k, m);
    }
    return m;
  }

  /** The service account a verified certificate names, with its labels (per world generation). */
  private peerIdentity(namespace: string, serviceAccount: string): PeerIdentity {
    const k = `${namespace}/${serviceAccount}`;
    const c = this.identityCache.get(k);
    if (c && c.gen === this.worldGen) return c.id;
    const id: PeerIdentity = {
      namespace,
      serviceAccount,
      saLabels: {
        ...(this.serviceAccounts.get(k)?.metadata.labels ?? {}),
        'projectcalico.org/name': serviceAccount,
      },
    };
    if (this.identityCache.size >= 100_000) this.identityCache.clear();
    this.identityCache.set(k, { gen: this.worldGen, id });
    return id;
  }

  private judgeL7(
    probe: Probe,
    src: Resolved,
    dst: Resolved,
    base: Omit<MatchContext, 'point' | 'l7Available' | 'request' | 'srcIdentity'>,
    explain: boolean,
    destinationOnly = false,
  ): L7Verdict {
    const request = httpRequest(probe);
    const srcEp = src.endpoint;
    const dstEp = dst.endpoint;
    const ownIdentity =
      srcEp?.kind === 'workload' && srcEp.namespace !== undefined && srcEp.serviceAccount
        ? spiffeId(srcEp.namespace, srcEp.serviceAccount, this.trustDomain)
        : undefined;
    // Without a sidecar of its own the source cannot originate mTLS: it is a plaintext client.
    let principal: string | null =
      probe.principal === undefined ? (srcEp?.l7 ? (ownIdentity ?? null) : null) : probe.principal;
    const trace: string[] = [];
    // `check` has always returned its L7 trace; `decideL7` builds one only when asked to explain.
    const tracing = explain || !destinationOnly;
    const parts: { verdict: 'allow' | 'deny'; provenance: Provenance }[] = [];

    // The source's own L7 point judges its egress rules (secure naming gives the peer identity).
    let egressL7: DirectionVerdict | undefined;
    if (srcEp?.l7 && !destinationOnly) {
      const act = this.active(srcEp);
      egressL7 = evaluateDirection(
        srcEp,
        'egress',
        act.egress,
        act.profilesOut,
        { ...base, point: 'l7', l7Available: true, request, srcIdentity: undefined },
        explain,
      );
      parts.push(egressL7);
      trace.push(
        `source L7 point (${srcEp.id}) egress: ${egressL7.verdict} — ${egressL7.provenance.reason}`,
      );
    }

    if (!dstEp?.l7) {
      const reason = dstEp
        ? `${dstEp.id} has no L7 enforcement point`
        : `${dst.label} is not a Palisade endpoint; nothing judges L7 there`;
      const provenance: Provenance = {
        point: 'l7',
        direction: 'ingress',
        kind: 'no-l7-point',
        reason,
      };
      trace.push(reason);
      const deny = parts.find((p) => p.verdict === 'deny');
      return {
        verdict: deny ? 'deny' : 'allow',
        provenance: deny?.provenance ?? provenance,
        trace,
        ...(egressL7 ? { egress: egressL7 } : {}),
        mtls: principal === null ? 'plaintext' : 'mutual',
        principal,
      };
    }

    const port = probe.port;
    const mtls = this.mtlsFor(dstEp, port);
    if (mtls.mode === 'DISABLE' && principal !== null) {
      trace.push(
        `PeerAuthentication ${mtls.policy ?? ''} disables mTLS: the caller is treated as plaintext`,
      );
      principal = null;
    }
    const finish = (
      verdict: 'allow' | 'deny',
      provenance: Provenance,
      extra: Partial<L7Verdict> = {},
    ): L7Verdict => ({
      verdict,
      provenance,
      trace,
      ...(egressL7 ? { egress: egressL7 } : {}),
      ...extra,
      mtls: principal === null ? 'plaintext' : 'mutual',
      principal,
    });
    if (mtls.mode === 'STRICT' && principal === null) {
      const reason = `PeerAuthentication ${mtls.policy ?? ''} requires mTLS (STRICT) and the caller is plaintext`;
      trace.push(reason);
      return finish('deny', {
        point: 'l7',
        direction: 'ingress',
        kind: 'peer-authentication',
        reason,
      });
    }

    // The presented identity must be a valid SVID of our trust domain, held by an endpoint that
    // runs under it at the connection's source address (a stolen certificate is refused).
    let identity: PeerIdentity | null = null;
    if (principal !== null) {
      const parsed = parseSpiffeId(principal);
      let refusal: string | undefined;
      if (!parsed) refusal = `${JSON.stringify(principal)} is not a SPIFFE workload identity`;
      else if (parsed.trustDomain !== this.trustDomain)
        refusal = `identity ${principal} is from trust domain ${parsed.trustDomain}, not ${this.trustDomain}`;
      else if (principal !== ownIdentity)
        refusal = `identity ${principal} presented from ${src.label}, which ${ownIdentity ? `runs as ${ownIdentity}` : 'is not an endpoint running under that identity'} (stolen or misused certificate)`;
      if (refusal || !parsed) {
        trace.push(refusal ?? '');
        return finish('deny', {
          point: 'l7',
          direction: 'ingress',
          kind: 'identity-mismatch',
          reason: refusal ?? 'invalid identity',
        });
      }
      identity = this.peerIdentity(parsed.namespace, parsed.serviceAccount);
    }

    const act = this.active(dstEp);
    const ingressL7 = evaluateDirection(
      dstEp,
      'ingress',
      act.ingress,
      act.profilesIn,
      { ...base, point: 'l7', l7Available: true, request, srcIdentity: identity },
      explain,
    );
    if (tracing)
      trace.push(
        `destination L7 point (${dstEp.id}) ingress: ${ingressL7.verdict} — ${ingressL7.provenance.reason}`,
      );

    const istioReq: IstioRequest = {
      principal: principal === null ? undefined : principal.replace(/^spiffe:\/\//, ''),
      sourceNamespace: identity?.namespace,
      sourceIp: base.src.ip,
      remoteIp: probe.remoteIp !== undefined ? parseIp(probe.remoteIp) : base.src.ip,
      destinationIp: base.dst.ip,
      port,
      sni: probe.sni,
      http: request,
    };
    const authz = this.authzFor(dstEp);
    const io = evaluateIstio(authz, dstEp, istioReq);
    if (tracing) trace.push(...io.trace);
    let istioProv: Provenance = {
      point: 'l7',
      direction: 'ingress',
      kind: io.kind,
      ...(io.policy !== undefined ? { policy: io.policy } : {}),
      ...(io.rule !== undefined ? { rule: io.rule } : {}),
      reason:
        io.kind === 'istio-deny'
          ? `Istio DENY policy ${io.policy ?? ''} rule ${io.rule ?? 0} matched`
          : io.kind === 'istio-allow'
            ? `Istio ALLOW policy ${io.policy ?? ''} rule ${io.rule ?? 0} matched`
            : io.kind === 'istio-no-allow-match'
              ? `Istio ALLOW policies apply to ${dstEp.id} (${io.policy ?? ''}) and none matched`
              : `no Istio authorization policy applies to ${dstEp.id}`,
    };
    let istioVerdict = io.verdict;
    // Legacy RBAC applies only where no ALLOW or DENY AuthorizationPolicy selects the workload:
    // Istio 1.4 and 1.5 build the v1alpha1 filter only when v1beta1 has nothing for it.
    const legacy = this.legacyRbac(dstEp, port, istioReq);
    if (legacy) {
      const v1beta1 = authz.some((p) => p.action === 'ALLOW' || p.action === 'DENY');
      if (v1beta1) {
        trace.push(
          `legacy Istio RBAC is on for ${legacy.service.hostname} but ignored: an AuthorizationPolicy selects ${dstEp.id}`,
        );
      } else {
        const o = legacy.outcome;
        if (tracing) trace.push(...o.trace);
        istioVerdict = o.verdict;
        istioProv = {
          point: 'l7',
          direction: 'ingress',
          kind: o.kind,
          ...(o.role !== undefined ? { policy: o.role } : {}),
          ...(o.rule !== undefined ? { rule: o.rule } : {}),
          ...(o.binding !== undefined ? { binding: o.binding } : {}),
          reason:
            o.wouldBe !== undefined
              ? `legacy Istio RBAC for ${legacy.service.hostname} is PERMISSIVE (not enforced); it would ${o.wouldBe}${o.binding !== undefined ? ` by ServiceRole ${o.role ?? ''} rule ${o.rule ?? 0} and ServiceRoleBinding ${o.binding}` : ''}`
              : o.kind === 'istio-rbac-allow'
                ? `legacy Istio RBAC: ServiceRole ${o.role ?? ''} rule ${o.rule ?? 0} bound by ServiceRoleBinding ${o.binding ?? ''} allowed`
                : `legacy Istio RBAC is on for ${legacy.service.hostname} and no ServiceRole bound to the caller allows this request`,
        };
      }
    }
    const istio = { verdict: istioVerdict, provenance: istioProv };
    parts.push(ingressL7, istio);
    const deny = parts.find((p) => p.verdict === 'deny');
    const decisive =
      deny ??
      (istioProv.kind === 'istio-allow' || istioProv.kind === 'istio-rbac-allow'
        ? istio
        : ingressL7);
    return finish(deny ? 'deny' : 'allow', decisive.provenance, { ingress: ingressL7, istio });
  }

  /** The effective legacy RBAC config: ClusterRbacConfig `default`, else RbacConfig `default`. */
  private legacyRbacConfig(): RbacConfig | ClusterRbacConfig | undefined {
    let fallback: RbacConfig | undefined;
    for (const c of this.rbacConfigs.values()) {
      if (c.metadata.name !== 'default') continue;
      if (c.kind === 'ClusterRbacConfig') return c;
      if (
        !fallback ||
        (c.metadata.namespace ?? '').localeCompare(fallback.metadata.namespace ?? '') < 0
      )
        fallback = c;
    }
    return fallback;
  }

  /**
   * The Kubernetes Service Istio would attach the inbound request to: one in the endpoint's
   * namespace whose selector picks the pod and whose port targets `port` (numeric or named); the
   * oldest (then first by name) when several do. None: the port takes Istio's passthrough chain,
   * which has no RBAC filter.
   */
  private legacyService(ep: Endpoint, port: number | undefined): LegacyService | undefined {
    if (ep.kind !== 'workload' || ep.namespace === undefined || port === undefined)
      return undefined;
    let best: Service | undefined;
    for (const [k, info] of this.services()) {
      if (info.namespace !== ep.namespace || !serviceCovers(info, ep, 6, port, true)) continue;
      const s = this.servicesRaw.get(k);
      if (!s) continue;
      const created = s.metadata.creationTimestamp ?? '';
      const bestCreated = best?.metadata.creationTimestamp ?? '';
      if (
        !best ||
        created < bestCreated ||
        (created === bestCreated && s.metadata.name < best.metadata.name)
      )
        best = s;
    }
    if (!best) return undefined;
    return {
      hostname: `${best.metadata.name}.${ep.namespace}.svc.${CLUSTER_DOMAIN}`,
      name: best.metadata.name,
      namespace: ep.namespace,
    };
  }

  /** Legacy RBAC's outcome for a request to `ep`, when RBAC is on for the service it reaches. */
  private legacyRbac(
    ep: Endpoint,
    port: number | undefined,
    req: IstioRequest,
  ): { readonly service: LegacyService; readonly outcome: RbacOutcome } | undefined {
    if (this.rbacConfigs.size === 0) return undefined;
    const config = this.legacyRbacConfig();
    if (!config) return undefined;
    const service = this.legacyService(ep, port);
    if (!service || !legacyRbacEnabled(config.spec, service)) return undefined;
    const byName = (m: Map<string, ServiceRole> | Map<string, ServiceRoleBinding> | undefined) =>
      [...(m?.keys() ?? [])].sort();
    const rolesMap = this.rbacRoles.get(service.namespace);
    const bindingsMap = this.rbacBindings.get(service.namespace);
    const roles = byName(rolesMap).flatMap((n) => rolesMap?.get(n) ?? []);
    const bindings = byName(bindingsMap).flatMap((n) => bindingsMap?.get(n) ?? []);
    const outcome = evaluateLegacyRbac(
      {
        name: `${config.kind} ${config.metadata.namespace ? `${config.metadata.namespace}/` : ''}${config.metadata.name}`,
        spec: config.spec,
      },
      roles,
      bindings,
      { service, labels: ep.ownLabels, serviceAccount: ep.serviceAccount },
      req,
    );
    return { service, outcome };
  }

  /** Every Istio AuthorizationPolicy as loaded, for tools that list them. */
  authorizationPolicies(): AuthorizationPolicy[] {
    return [...this.authzRaw.values()];
  }

  /**
   * Read-only inputs of the node agent's kernel calculation (`packages/dataplane`): every network
   * set as a selectable entity, and, for `ref`, the endpoint's profiles with their compiled rules.
   */
  dataplaneInputs(ref?: string): {
    readonly networkSets: readonly NetSetEntity[];
    readonly profiles:
      | {
          readonly ingress: readonly CompiledProfileRules[];
          readonly egress: readonly CompiledProfileRules[];
        }
      | undefined;
  } {
    const networkSets = [...this.netsetsRaw.values()].map((r) =>
      networkSet(
        r,
        r.kind === 'NetworkSet' ? this.namespaceInfo(r.metadata.namespace ?? 'default') : undefined,
      ),
    );
    const ep = ref === undefined ? undefined : this.resolve(ref)?.endpoint;
    const profiles = ep ? this.profilesFor(ep) : undefined;
    return { networkSets, profiles };
  }
}

function kernelCtx(
  protocol: number,
  dstPort: number | undefined,
  family: 4 | 6,
  src: Peer,
  dst: Peer,
  l7Available: boolean,
  serviceMatch: MatchContext['serviceMatch'],
): MatchContext {
  return {
    point: 'kernel',
    protocol,
    dstPort,
    icmp: undefined,
    family,
    src,
    dst,
    l7Available,
    request: undefined,
    srcIdentity: undefined,
    serviceMatch,
  };
}

/** A node of `Engine.internTier`'s trie: children by policy, and the tier ending here. */
interface TierTrie {
  next: Map<CompiledPolicy | typeof STAGED_AFTER, TierTrie> | undefined;
  tier: ActiveTier | undefined;
}

/**
 * A node of `Engine.tierListsOf`'s trie: the first child by its policy (most nodes have one),
 * the others in a map, and the tier lists of the candidate list ending here.
 */
interface ListTrie {
  key: CompiledPolicy | undefined;
  child: ListTrie | undefined;
  more: Map<CompiledPolicy, ListTrie> | undefined;
  lists: { ingress: ActiveTier[]; egress: ActiveTier[] } | undefined;
}

function newListTrie(): ListTrie {
  return { key: undefined, child: undefined, more: undefined, lists: undefined };
}

/** In a tier trie path, what separates the enforced policies from the staged ones. */
const STAGED_AFTER: unique symbol = Symbol('staged after');

interface TierInfo {
  readonly name: string;
  readonly order: number | undefined;
  readonly defaultAction: 'Deny' | 'Pass';
}

/** Policies with the same selector, tested once for all of them (`CompiledPolicy.selectorKey`). */
interface PolicyGroup {
  readonly applies: (ep: Endpoint) => boolean;
  readonly policies: Map<Key, CompiledPolicy>;
}
type PolicyGroups = Map<string, PolicyGroup>;

function group(groups: PolicyGroups, key: Key, p: CompiledPolicy): void {
  let g = groups.get(p.selectorKey);
  if (!g) {
    g = { applies: p.applies, policies: new Map() };
    groups.set(p.selectorKey, g);
  }
  g.policies.set(key, p);
}

function setOrDeleteIn<T>(
  m: Map<string, Map<string, T>>,
  outer: string,
  k: string,
  v: T,
  removing: boolean,
): void {
  let inner = m.get(outer);
  if (!inner) {
    if (removing) return;
    inner = new Map();
    m.set(outer, inner);
  }
  setOrDelete(inner, k, v, removing);
  if (inner.size === 0) m.delete(outer);
}

function setOrDelete<T>(m: Map<string, T>, k: string, v: T, removing: boolean): void {
  if (removing) m.delete(k);
  else m.set(k, v);
}

/** Appends the policies of every group whose selector picks `ep`. */
function collect(groups: PolicyGroups | undefined, ep: Endpoint, out: CompiledPolicy[]): void {
  if (!groups) return;
  for (const g of groups.values()) {
    if (!g.applies(ep)) continue;
    // Pre-DNAT and untracked policies have stages of their own, at host endpoints only.
    for (const p of g.policies.values()) if (inNormalStage(p)) out.push(p);
  }
}

function ungroup(groups: PolicyGroups, key: Key, p: CompiledPolicy): void {
  const g = groups.get(p.selectorKey);
  if (!g) return;
  g.policies.delete(key);
  if (g.policies.size === 0) groups.delete(p.selectorKey);
}

/** Programs kept per active set and direction before the cache starts over. */
const MAX_PROGRAMS_PER_SET = 256;
/** Distinct endpoint names `endpointHandle` numbers (beyond, it answers undefined). */
const MAX_HANDLES = 1 << 24;
/** The bucket of a kernel program: protocol, port (or none), family and L7 point, as a number. */
function programKey(
  proto: number,
  port: number | undefined,
  family: 4 | 6,
  l7: boolean,
): number | undefined {
  let p = 65536;
  if (port !== undefined) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
    p = port;
  }
  return ((proto * 65537 + p) * 2 + (family === 6 ? 1 : 0)) * 2 + (l7 ? 1 : 0);
}

function pickAddresses(
  src: Resolved,
  dst: Resolved,
): { srcIp: IpAddr | undefined; dstIp: IpAddr | undefined; family: 4 | 6 } {
  if (!src.ip && !dst.ip) {
    // Fast path: two endpoints whose first addresses share a family.
    const a = src.endpoint?.ips[0];
    const b = dst.endpoint?.ips[0];
    if (a && b && a.family === b.family) return { srcIp: a, dstIp: b, family: a.family };
  }
  const fixed = src.ip?.family ?? dst.ip?.family;
  const candidates: (4 | 6)[] = fixed ? [fixed] : [4, 6];
  for (const family of candidates) {
    const s = src.ip ?? src.endpoint?.ips.find((a) => a.family === family);
    const d = dst.ip ?? dst.endpoint?.ips.find((a) => a.family === family);
    if ((s || !src.endpoint?.ips.length) && (d || !dst.endpoint?.ips.length)) {
      return {
        srcIp: s?.family === family ? s : undefined,
        dstIp: d?.family === family ? d : undefined,
        family,
      };
    }
  }
  const family = fixed ?? 4;
  return {
    srcIp: src.ip ?? src.endpoint?.ips.find((a) => a.family === family),
    dstIp: dst.ip ?? dst.endpoint?.ips.find((a) => a.family === family),
    family,
  };
}

function serviceCovers(
  svc: ServiceInfo | undefined,
  ep: Endpoint | undefined,
  protocol: number,
  port: number | undefined,
  checkPort: boolean,
): boolean {
  if (!svc || !ep || ep.kind !== 'workload' || ep.namespace !== svc.namespace || !svc.selector)
    return false;
  for (const [k, v] of Object.entries(svc.selector)) if (ep.ownLabels[k] !== v) return false;
  if (!checkPort) return true;
  return svc.ports.some((p) => {
    if (p.protocol !== protocol) return false;
    if (typeof p.targetPort === 'number') return p.targetPort === port;
    return ep.namedPorts.some(
      (np) => np.name === p.targetPort && np.protocol === protocol && np.port === port,
    );
  });
}

function suggestText(ref: string, names: readonly string[]): string {
  const near = suggest(ref, names);
  return near ? `; did you mean ${JSON.stringify(near)}?` : '';
}

function httpRequest(probe: Probe): HttpRequest | undefined {
  const isHttp =
    probe.method !== undefined ||
    probe.path !== undefined ||
    probe.host !== undefined ||
    (probe.headers !== undefined && Object.keys(probe.headers).length > 0) ||
    probe.http2 === true;
  if (!isHttp) return undefined;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(probe.headers ?? {})) headers[k.toLowerCase()] = v;
  return {
    method: probe.method ?? 'GET',
    path: probe.path ?? '/',
    host: probe.host ?? headers[':authority'] ?? headers['host'],
    headers,
  };
}

function unmanaged(point: 'kernel' | 'l7', dir: Direction, label: string): DirectionVerdict {
  return {
    verdict: 'allow',
    provenance: {
      point,
      direction: dir,
      kind: 'unmanaged',
      reason: `${label} is not a Palisade endpoint; no ${dir} policy is enforced there`,
    },
    trace: [],
  };
}

function loopback(ep: Endpoint): CheckResult {
  const p = (point: 'kernel' | 'l7', direction: Direction): Provenance => ({
    point,
    direction,
    kind: 'loopback',
    reason: `traffic from ${ep.id} to itself is never blocked`,
  });
  const v = (point: 'kernel' | 'l7', d: Direction): DirectionVerdict => ({
    verdict: 'allow',
    provenance: p(point, d),
    trace: [],
  });
  return {
    verdict: 'allow',
    kernel: { egress: v('kernel', 'egress'), ingress: v('kernel', 'ingress') },
    l7: {
      verdict: 'allow',
      provenance: p('l7', 'ingress'),
      trace: [],
      mtls: 'plaintext',
      principal: null,
    },
  };
}

function notJudged(): L7Verdict {
  return {
    verdict: 'allow',
    provenance: {
      point: 'l7',
      kind: 'not-reached',
      reason: 'L7 not evaluated (kernel-only query)',
    },
    trace: [],
    mtls: 'plaintext',
    principal: null,
  };
}

export function compile(resources: readonly Resource[], options: CompileOptions = {}): Engine {
  const e = new Engine(options);
  for (const r of resources) e.upsert(r);
  return e;
}
