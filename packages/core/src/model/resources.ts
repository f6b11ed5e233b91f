// The resources Palisade accepts, as typed data after loading and validation (DESIGN §3).
// These mirror the users' YAML field for field (camelCase, as the upstream APIs spell them);
// the loader guarantees every value here has the declared type and passed its field checks.
// Owns: the shapes. Must never: hold behaviour — compilation and evaluation live in engine/.

/** Where a resource (or one of its fields) came from, for diagnostics and provenance. */
export interface SourceRef {
  readonly file: string;
  /** 1-based. */
  readonly line: number;
  /** 1-based. */
  readonly column: number;
  /** 0-based index of the YAML document (or List item) in the file. */
  readonly doc: number;
}

export interface ObjectMeta {
  readonly name: string;
  readonly namespace?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly resourceVersion?: string;
  readonly uid?: string;
  readonly creationTimestamp?: string;
  readonly generation?: number;
}

interface Base<G extends string, K extends string> {
  readonly apiVersion: G;
  readonly kind: K;
  readonly metadata: ObjectMeta;
  /** Set by the loader; absent for resources built in code. */
  readonly source?: SourceRef;
}

// ---------------------------------------------------------------- Calico projectcalico.org/v3

export type CalicoAction = 'Allow' | 'Deny' | 'Pass' | 'Log';
/** A protocol by name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`) or number 1..255. */
export type ProtocolSpec = string | number;
/** A port number, a range `"a:b"`, or a named port. */
export type PortSpec = number | string;

export interface IcmpMatch {
  readonly type?: number;
  readonly code?: number;
}

export interface ServiceAccountMatch {
  readonly names?: readonly string[];
  readonly selector?: string;
}

export interface ServiceMatch {
  readonly name: string;
  readonly namespace?: string;
}

export interface EntityRule {
  readonly nets?: readonly string[];
  readonly notNets?: readonly string[];
  readonly selector?: string;
  readonly notSelector?: string;
  readonly namespaceSelector?: string;
  readonly ports?: readonly PortSpec[];
  readonly notPorts?: readonly PortSpec[];
  readonly serviceAccounts?: ServiceAccountMatch;
  readonly services?: ServiceMatch;
}

export interface HttpPathMatch {
  readonly exact?: string;
  readonly prefix?: string;
}

export interface HttpHeaderMatch {
  readonly header: string;
  readonly operator: 'HasPrefix' | 'Equals' | 'Exists' | 'NotEquals' | 'NotExists' | 'Contains';
  readonly values?: readonly string[];
}

export interface HttpMatch {
  readonly methods?: readonly string[];
  readonly paths?: readonly HttpPathMatch[];
  readonly headers?: readonly HttpHeaderMatch[];
}

export interface CalicoRule {
  readonly action: CalicoAction;
  readonly protocol?: ProtocolSpec;
  readonly notProtocol?: ProtocolSpec;
  readonly icmp?: IcmpMatch;
  readonly notICMP?: IcmpMatch;
  readonly ipVersion?: 4 | 6;
  readonly source?: EntityRule;
  readonly destination?: EntityRule;
  readonly http?: HttpMatch;
  readonly metadata?: { readonly annotations?: Readonly<Record<string, string>> };
}

export type PolicyType = 'Ingress' | 'Egress';

export interface CalicoPolicySpec {
  readonly tier?: string;
  readonly order?: number;
  readonly selector?: string;
  readonly serviceAccountSelector?: string;
  /** Only on global policies: which namespaces' endpoints the policy selects. */
  readonly namespaceSelector?: string;
  readonly types?: readonly PolicyType[];
  readonly ingress?: readonly CalicoRule[];
  readonly egress?: readonly CalicoRule[];
  readonly doNotTrack?: boolean;
  readonly preDNAT?: boolean;
  readonly applyOnForward?: boolean;
  readonly performanceHints?: readonly string[];
}

export type StagedAction = 'Set' | 'Delete';

export interface CalicoStagedPolicySpec extends CalicoPolicySpec {
  readonly stagedAction?: StagedAction;
}

export interface TierSpec {
  readonly order?: number;
  readonly defaultAction?: 'Deny' | 'Pass';
}

export interface NetworkSetSpec {
  readonly nets?: readonly string[];
  readonly allowedEgressDomains?: readonly string[];
}

export interface EndpointPort {
  readonly name: string;
  readonly protocol: ProtocolSpec;
  readonly port: number;
}

export interface HostEndpointSpec {
  readonly node?: string;
  readonly interfaceName?: string;
  readonly expectedIPs?: readonly string[];
  readonly profiles?: readonly string[];
  readonly ports?: readonly EndpointPort[];
}

export interface WorkloadEndpointSpec {
  readonly node?: string;
  readonly orchestrator?: string;
  readonly workload?: string;
  readonly pod?: string;
  readonly endpoint?: string;
  readonly serviceAccountName?: string;
  readonly ipNetworks?: readonly string[];
  readonly ipNATs?: readonly { readonly internalIP: string; readonly externalIP: string }[];
  readonly profiles?: readonly string[];
  readonly interfaceName?: string;
  readonly mac?: string;
  readonly ports?: readonly EndpointPort[];
}

export interface ProfileSpec {
  readonly ingress?: readonly CalicoRule[];
  readonly egress?: readonly CalicoRule[];
  readonly labelsToApply?: Readonly<Record<string, string>>;
}

export type CalicoGroup = 'projectcalico.org/v3';
export type Tier = Base<CalicoGroup, 'Tier'> & { readonly spec: TierSpec };
export type GlobalNetworkPolicy = Base<CalicoGroup, 'GlobalNetworkPolicy'> & {
  readonly spec: CalicoPolicySpec;
};
export type CalicoNetworkPolicy = Base<CalicoGroup, 'NetworkPolicy'> & {
  readonly spec: CalicoPolicySpec;
};
export type StagedGlobalNetworkPolicy = Base<CalicoGroup, 'StagedGlobalNetworkPolicy'> & {
  readonly spec: CalicoStagedPolicySpec;
};
export type StagedNetworkPolicy = Base<CalicoGroup, 'StagedNetworkPolicy'> & {
  readonly spec: CalicoStagedPolicySpec;
};
export type StagedKubernetesNetworkPolicy = Base<CalicoGroup, 'StagedKubernetesNetworkPolicy'> & {
  readonly spec: K8sNetworkPolicySpec & { readonly stagedAction?: StagedAction };
};
export type GlobalNetworkSet = Base<CalicoGroup, 'GlobalNetworkSet'> & {
  readonly spec: NetworkSetSpec;
};
export type NetworkSet = Base<CalicoGroup, 'NetworkSet'> & { readonly spec: NetworkSetSpec };
export type HostEndpoint = Base<CalicoGroup, 'HostEndpoint'> & { readonly spec: HostEndpointSpec };
export type WorkloadEndpoint = Base<CalicoGroup, 'WorkloadEndpoint'> & {
  readonly spec: WorkloadEndpointSpec;
};
export type Profile = Base<CalicoGroup, 'Profile'> & { readonly spec: ProfileSpec };

// ---------------------------------------------------------------- Kubernetes

export interface LabelSelectorRequirement {
  readonly key: string;
  readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  readonly values?: readonly string[];
}

/** A Kubernetes metav1.LabelSelector. `{}` selects everything. */
export interface K8sLabelSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly matchExpressions?: readonly LabelSelectorRequirement[];
}

export interface IPBlock {
  readonly cidr: string;
  readonly except?: readonly string[];
}

export interface NetworkPolicyPeer {
  readonly podSelector?: K8sLabelSelector;
  readonly namespaceSelector?: K8sLabelSelector;
  readonly ipBlock?: IPBlock;
}

export interface NetworkPolicyPort {
  /** Defaults to TCP. */
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP';
  readonly port?: number | string;
  readonly endPort?: number;
}

export interface NetworkPolicyIngressRule {
  readonly from?: readonly NetworkPolicyPeer[];
  readonly ports?: readonly NetworkPolicyPort[];
}

export interface NetworkPolicyEgressRule {
  readonly to?: readonly NetworkPolicyPeer[];
  readonly ports?: readonly NetworkPolicyPort[];
}

export interface K8sNetworkPolicySpec {
  readonly podSelector: K8sLabelSelector;
  readonly ingress?: readonly NetworkPolicyIngressRule[];
  readonly egress?: readonly NetworkPolicyEgressRule[];
  readonly policyTypes?: readonly PolicyType[];
}

export type K8sNetworkPolicy = Base<
  'networking.k8s.io/v1' | 'extensions/v1beta1',
  'NetworkPolicy'
> & { readonly spec: K8sNetworkPolicySpec };

export interface ContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP';
}

export interface Container {
  readonly name: string;
  readonly image?: string;
  readonly ports?: readonly ContainerPort[];
}

export interface PodSpec {
  readonly serviceAccountName?: string;
  readonly serviceAccount?: string;
  readonly nodeName?: string;
  readonly hostNetwork?: boolean;
  readonly containers?: readonly Container[];
  readonly initContainers?: readonly Container[];
}

export interface PodStatus {
  readonly podIP?: string;
  readonly podIPs?: readonly { readonly ip: string }[];
  readonly phase?: string;
}

export type Namespace = Base<'v1', 'Namespace'>;
export type ServiceAccount = Base<'v1', 'ServiceAccount'>;
export type Pod = Base<'v1', 'Pod'> & { readonly spec: PodSpec; readonly status?: PodStatus };

export interface ServicePort {
  readonly name?: string;
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP';
  readonly port: number;
  readonly targetPort?: number | string;
  readonly nodePort?: number;
}

export interface ServiceSpec {
  readonly selector?: Readonly<Record<string, string>>;
  readonly ports?: readonly ServicePort[];
  readonly clusterIP?: string;
  readonly clusterIPs?: readonly string[];
  readonly type?: string;
}

export type Service = Base<'v1', 'Service'> & { readonly spec: ServiceSpec };

/** A port of an EndpointSlice or Endpoints subset (`port` absent: no port — Calico matches none). */
export interface EndpointSlicePort {
  readonly name?: string;
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP';
  readonly port?: number;
  readonly appProtocol?: string;
}

export interface EndpointSliceEndpoint {
  readonly addresses: readonly string[];
  readonly conditions?: {
    readonly ready?: boolean;
    readonly serving?: boolean;
    readonly terminating?: boolean;
  };
  readonly nodeName?: string;
  readonly hostname?: string;
  readonly zone?: string;
}

/**
 * `discovery.k8s.io/v1` EndpointSlice: the endpoints of the Service named by its
 * `kubernetes.io/service-name` label (what Calico's service rules match). No `spec`.
 */
export type EndpointSlice = Base<'discovery.k8s.io/v1', 'EndpointSlice'> & {
  readonly addressType: 'IPv4' | 'IPv6' | 'FQDN';
  readonly endpoints?: readonly EndpointSliceEndpoint[];
  readonly ports?: readonly EndpointSlicePort[];
};

export interface EndpointAddress {
  readonly ip: string;
  readonly hostname?: string;
  readonly nodeName?: string;
}

/** `v1` Endpoints (the predecessor of EndpointSlice), named as its Service. No `spec`. */
export type Endpoints = Base<'v1', 'Endpoints'> & {
  readonly subsets?: readonly {
    readonly addresses?: readonly EndpointAddress[];
    readonly notReadyAddresses?: readonly EndpointAddress[];
    readonly ports?: readonly EndpointSlicePort[];
  }[];
};

/** The label tying an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

// ---------------------------------------------------------------- Istio security

export interface IstioWorkloadSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
}

export interface IstioSource {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly requestPrincipals?: readonly string[];
  readonly notRequestPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
  readonly ipBlocks?: readonly string[];
  readonly notIpBlocks?: readonly string[];
  readonly remoteIpBlocks?: readonly string[];
  readonly notRemoteIpBlocks?: readonly string[];
}

export interface IstioOperation {
  readonly hosts?: readonly string[];
  readonly notHosts?: readonly string[];
  readonly ports?: readonly string[];
  readonly notPorts?: readonly string[];
  readonly methods?: readonly string[];
  readonly notMethods?: readonly string[];
  readonly paths?: readonly string[];
  readonly notPaths?: readonly string[];
}

export interface IstioCondition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

export interface IstioRule {
  readonly from?: readonly { readonly source: IstioSource }[];
  readonly to?: readonly { readonly operation: IstioOperation }[];
  readonly when?: readonly IstioCondition[];
}

export interface IstioTargetRef {
  readonly group?: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string;
}

export interface AuthorizationPolicySpec {
  readonly selector?: IstioWorkloadSelector;
  readonly targetRef?: IstioTargetRef;
  readonly targetRefs?: readonly IstioTargetRef[];
  readonly action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  readonly provider?: { readonly name: string };
  readonly rules?: readonly IstioRule[];
}

export type PeerAuthenticationMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthenticationSpec {
  readonly selector?: IstioWorkloadSelector;
  readonly mtls?: { readonly mode?: PeerAuthenticationMode };
  readonly portLevelMtls?: Readonly<Record<string, { readonly mode?: PeerAuthenticationMode }>>;
}

export type IstioSecurityGroup = 'security.istio.io/v1' | 'security.istio.io/v1beta1';
export type AuthorizationPolicy = Base<IstioSecurityGroup, 'AuthorizationPolicy'> & {
  readonly spec: AuthorizationPolicySpec;
};
export type PeerAuthentication = Base<IstioSecurityGroup, 'PeerAuthentication'> & {
  readonly spec: PeerAuthenticationSpec;
};

// ---------------------------------------------------------------- Istio RBAC rbac.istio.io/v1alpha1 (legacy)

/** A ServiceRole constraint: `destination.*`, `request.headers[NAME]` or `connection.sni`. */
export interface ServiceRoleConstraint {
  readonly key: string;
  readonly values: readonly string[];
}

/** One permission of a ServiceRole (Istio's AccessRule). */
export interface ServiceRoleRule {
  readonly services: readonly string[];
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
  readonly constraints?: readonly ServiceRoleConstraint[];
}

export interface ServiceRoleSpec {
  readonly rules: readonly ServiceRoleRule[];
}

/** A ServiceRoleBinding subject: a user (principal or `*`), a group, and properties (ANDed). */
export interface RbacSubject {
  readonly user?: string;
  readonly group?: string;
  readonly properties?: Readonly<Record<string, string>>;
}

export type RbacEnforcementMode = 'ENFORCED' | 'PERMISSIVE';

export interface ServiceRoleBindingSpec {
  readonly subjects: readonly RbacSubject[];
  readonly roleRef: { readonly kind: 'ServiceRole'; readonly name: string };
  /** PERMISSIVE bindings are evaluated and reported, never enforced. */
  readonly mode?: RbacEnforcementMode;
}

export type RbacMode = 'OFF' | 'ON' | 'ON_WITH_INCLUSION' | 'ON_WITH_EXCLUSION';

export interface RbacTarget {
  /** Service host names, e.g. `reviews.default.svc.cluster.local` (exact). */
  readonly services?: readonly string[];
  readonly namespaces?: readonly string[];
}

export interface RbacConfigSpec {
  readonly mode?: RbacMode;
  readonly inclusion?: RbacTarget;
  readonly exclusion?: RbacTarget;
  readonly enforcementMode?: RbacEnforcementMode;
}

export type IstioRbacGroup = 'rbac.istio.io/v1alpha1';
export type ServiceRole = Base<IstioRbacGroup, 'ServiceRole'> & { readonly spec: ServiceRoleSpec };
export type ServiceRoleBinding = Base<IstioRbacGroup, 'ServiceRoleBinding'> & {
  readonly spec: ServiceRoleBindingSpec;
};
/** The namespaced predecessor of ClusterRbacConfig; used only when no ClusterRbacConfig exists. */
export type RbacConfig = Base<IstioRbacGroup, 'RbacConfig'> & { readonly spec: RbacConfigSpec };
export type ClusterRbacConfig = Base<IstioRbacGroup, 'ClusterRbacConfig'> & {
  readonly spec: RbacConfigSpec;
};

// ---------------------------------------------------------------- the union

export type Resource =
  | Tier
  | GlobalNetworkPolicy
  | CalicoNetworkPolicy
  | StagedGlobalNetworkPolicy
  | StagedNetworkPolicy
  | StagedKubernetesNetworkPolicy
  | GlobalNetworkSet
  | NetworkSet
  | HostEndpoint
  | WorkloadEndpoint
  | Profile
  | K8sNetworkPolicy
  | Namespace
  | ServiceAccount
  | Pod
  | Service
  | EndpointSlice
  | Endpoints
  | AuthorizationPolicy
  | PeerAuthentication
  | ServiceRole
  | ServiceRoleBinding
  | RbacConfig
  | ClusterRbacConfig;

export type ResourceKind = Resource['kind'];

/** Annotation on a Namespace that isolates its pods for ingress (Kubernetes before 1.7). */
export const LEGACY_ISOLATION_ANNOTATION = 'net.beta.kubernetes.io/network-policy';
