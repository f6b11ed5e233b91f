// The decision engine's public types: what a probe asks and what a verdict answers (DESIGN §4, §5).
// Owns: the shapes shared by the CLI, the conformance runner, the benchmarks and, later, the
// enforcement points. Must never: depend on how verdicts are computed.

export type Protocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP' | 'ICMPv6' | 'UDPLite' | number;

/** One connection or request to judge (the `--probes` line format of DESIGN §5). */
export interface Probe {
  /** `namespace/name` of a pod or workload endpoint, a host endpoint's name, or an IP address. */
  readonly from: string;
  readonly to: string;
  /** Protocol name or number; defaults to TCP. */
  readonly protocol?: string | number;
  readonly port?: number;
  readonly icmp?: { readonly type?: number; readonly code?: number };
  /** Any of method, path, host or headers makes the probe an HTTP request. */
  readonly method?: string;
  readonly path?: string;
  readonly host?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly http2?: boolean;
  /**
   * The presented client certificate's SPIFFE ID. Absent: the source's own service account
   * identity (mTLS). `null`: a plaintext client.
   */
  readonly principal?: string | null;
  readonly sni?: string;
  /** The original client address (X-Forwarded-For), for Istio `remoteIpBlocks`/`remote.ip`. */
  readonly remoteIp?: string;
  /**
   * The host endpoint the traffic is forwarded in through on the destination's node (and out
   * through on the source's node, `viaOut`), for Calico's applyOnForward, pre-DNAT and untracked
   * stages. Without them, an all-interfaces host endpoint (`interfaceName: '*'`) of a node is
   * inferred for traffic between that node's workloads and anything off the node.
   */
  readonly viaIn?: string;
  readonly viaOut?: string;
}

export type Decision = 'allow' | 'deny';
export type EnforcementPoint = 'kernel' | 'l7';
export type Direction = 'ingress' | 'egress';

/** Why a verdict came out as it did (DESIGN §4, last paragraph). */
export type ProvenanceKind =
  /** A rule of a policy decided (Allow or Deny). */
  | 'rule'
  /** A tier selected the endpoint, no rule decided, the tier's default action applied. */
  | 'tier-default'
  /** A profile's rule decided, or the endpoint's profiles ended without a match. */
  | 'profile'
  | 'profile-default'
  /** No policy selects this endpoint for this direction (and no profile decided). */
  | 'no-policy'
  /** Host endpoint fail-safe port. */
  | 'failsafe'
  /** Traffic from a pod to itself is never blocked. */
  | 'loopback'
  /** The endpoint is not known or the traffic leaves the cluster: nothing to enforce here. */
  | 'unmanaged'
  /** Istio AuthorizationPolicy outcomes. */
  | 'istio-deny'
  | 'istio-allow'
  | 'istio-no-allow-match'
  | 'istio-no-policy'
  /** Legacy Istio RBAC (rbac.istio.io/v1alpha1): a role and a binding allowed, or RBAC is on and none did. */
  | 'istio-rbac-allow'
  | 'istio-rbac-deny'
  /** Istio PeerAuthentication refused a plaintext connection. */
  | 'peer-authentication'
  /** The presented certificate does not belong to the endpoint at the source address. */
  | 'identity-mismatch'
  /**
   * The connection was let through untracked (doNotTrack policy): no connection tracking lets
   * its reply back, and the reply was not allowed on its own.
   */
  | 'untracked-reply'
  /** The kernel refused, so the request never reached L7. */
  | 'not-reached'
  /** L7 had nothing to judge: the endpoint has no L7 enforcement point. */
  | 'no-l7-point';

/**
 * The provenance kinds a flow record may carry: every engine kind, and `guard` (the kernel
 * refused a packet before any policy: spoofed source, unprogrammed interface). The node and the
 * flow store both validate against this one list.
 */
export const FLOW_PROVENANCE_KINDS = [
  'rule',
  'tier-default',
  'profile',
  'profile-default',
  'no-policy',
  'failsafe',
  'loopback',
  'unmanaged',
  'istio-deny',
  'istio-allow',
  'istio-no-allow-match',
  'istio-no-policy',
  'istio-rbac-allow',
  'istio-rbac-deny',
  'peer-authentication',
  'identity-mismatch',
  'untracked-reply',
  'not-reached',
  'no-l7-point',
  'guard',
] as const satisfies readonly (ProvenanceKind | 'guard')[];

/**
 * Calico's host endpoint policy stages, in the order a packet meets them: untracked
 * (`doNotTrack`, before connection tracking), pre-DNAT (`preDNAT`, ingress only), normal (traffic
 * to and from the host itself) and forward (`applyOnForward`, traffic through the host).
 */
export type HostStage = 'untracked' | 'preDNAT' | 'normal' | 'forward';

export interface Provenance {
  readonly point: EnforcementPoint;
  readonly direction?: Direction;
  /** At a host endpoint in the kernel: the stage that decided. */
  readonly stage?: HostStage;
  /** The host endpoint whose stage decided (set with `stage`). */
  readonly hostEndpoint?: string;
  readonly kind: ProvenanceKind;
  readonly tier?: string;
  /** Qualified policy name, e.g. `default/allow-frontend`, `knp.default.deny`, `istio/ns/name`. */
  readonly policy?: string;
  /** 0-based index of the rule within its direction. */
  readonly rule?: number;
  readonly profile?: string;
  /** Legacy Istio RBAC: the `namespace/name` of the ServiceRoleBinding that allowed. */
  readonly binding?: string;
  /** One line a person can read: "rule 0 of policy x in tier security allowed". */
  readonly reason: string;
}

/** The would-be verdict of a staged policy, reported beside the real one. */
export interface StagedVerdict {
  readonly policy: string;
  readonly tier: string;
  readonly verdict: Decision | 'pass' | 'no-match';
  readonly rule?: number;
}

export interface DirectionVerdict {
  readonly verdict: Decision;
  readonly provenance: Provenance;
  /** Each policy consulted, in evaluation order, for `explain`. */
  readonly trace: readonly string[];
  readonly staged?: readonly StagedVerdict[];
  /** Rules matched here that need L7 (http) and were handed on to the L7 point. */
  readonly deferredToL7?: boolean;
}

export interface L7Verdict {
  readonly verdict: Decision;
  readonly provenance: Provenance;
  readonly trace: readonly string[];
  /** The Calico-model rules evaluated at L7 for each side (absent where there is no L7 point). */
  readonly egress?: DirectionVerdict;
  readonly ingress?: DirectionVerdict;
  /** The Istio AuthorizationPolicy outcome at the destination. */
  readonly istio?: { readonly verdict: Decision; readonly provenance: Provenance };
  readonly mtls: 'mutual' | 'plaintext';
  readonly principal: string | null;
}

export interface CheckResult {
  readonly verdict: Decision;
  readonly kernel: {
    readonly egress: DirectionVerdict;
    readonly ingress: DirectionVerdict;
    /**
     * Host endpoints the traffic is forwarded through (`provenance.hostEndpoint`; direction
     * ingress = in through it, egress = out through it), each with the stage that decided.
     */
    readonly forward?: readonly DirectionVerdict[];
    /**
     * The reply's verdict, where a host endpoint's untracked policy makes it matter: the reply
     * of an untracked connection has no conntrack entry, and untracked policy judges every reply.
     */
    readonly reply?: DirectionVerdict;
  };
  readonly l7: L7Verdict;
}
