// The sidecar's input: everything one endpoint's L7 enforcement point needs to decide, as one
// immutable, versioned object, and the holder that swaps versions atomically (DESIGN §4.6–7).
// Owns: the translation of an engine verdict into the inbound and outbound decisions, and the
// identity ↔ address bindings. Must never: mutate a published view, or fall back to "allow"
// when a view cannot be built (the holder keeps the last good one: fail static).

import { compile } from '@palisade/core';
import { interceptDestinations } from '../intercept/destinations.js';
import type { InterceptDestination } from '../intercept/destinations.js';
import type { Engine, L7Verdict, Provenance, Resource, StagedVerdict } from '@palisade/core';

/** A verdict of the L7 point for one request or connection, with why. */
export interface SidecarDecision {
  readonly verdict: 'allow' | 'deny';
  readonly provenance: Provenance;
  /** The would-be verdicts of staged policies at this L7 point (flow records). */
  readonly staged?: readonly StagedVerdict[];
}

/** The attributes of one request as the inbound listener saw them. */
export interface InboundRequest {
  /** The connection's source address (the peer's network identity). */
  readonly sourceIp: string;
  /** The verified SPIFFE ID of the peer certificate; `null` for a plaintext connection. */
  readonly principal: string | null;
  /** The endpoint's own port the request was addressed to (as policies name it). */
  readonly port: number;
  readonly method: string;
  readonly path: string;
  readonly host: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
}

/** One non-HTTP (L4) connection as the inbound listener saw it: no request attributes. */
export interface InboundConnection {
  readonly sourceIp: string;
  /** The verified SPIFFE ID of the peer certificate; `null` for a plaintext connection. */
  readonly principal: string | null;
  readonly port: number;
}

/** One outgoing non-HTTP connection, for the source's egress rules at L7. */
export interface OutboundConnection {
  readonly destinationIp: string;
  readonly port: number;
}

/**
 * Port names that declare a non-HTTP protocol the sidecar relays at L4, as Istio's explicit
 * protocol selection reads them (`<protocol>[-<suffix>]`): `tcp`, and the database protocols
 * Istio proxies as TCP.
 */
const L4_PORT_NAME = /^(tcp|mongo|mysql|redis)(-.*)?$/i;

/** The attributes of one outgoing request, for the source's egress rules at L7. */
export interface OutboundRequest {
  readonly destinationIp: string;
  readonly port: number;
  readonly method: string;
  readonly path: string;
  readonly host: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
}

export type ViewResult =
  | { readonly ok: true; readonly view: PolicyView }
  | { readonly ok: false; readonly reason: string };

function spiffeIdOf(trustDomain: string, namespace: string, sa: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${sa}`;
}

function deny(kind: Provenance['kind'], reason: string): SidecarDecision {
  return { verdict: 'deny', provenance: { point: 'l7', direction: 'ingress', kind, reason } };
}

/**
 * The inbound decision from a full check: the destination's L7 ingress rules and the Istio
 * layer must both allow; early refusals (PeerAuthentication, identity mismatch) decide alone.
 * The source's egress is judged by the source's own sidecar, not here.
 */
function inboundFrom(l7: L7Verdict): SidecarDecision {
  if (!l7.ingress && !l7.istio) {
    // Only refusals end L7 early; "no L7 point" while a sidecar runs is a broken view.
    if (l7.verdict === 'allow' || l7.provenance.kind === 'no-l7-point')
      return deny('no-l7-point', 'the endpoint has no L7 enforcement point in the policy view');
    return { verdict: 'deny', provenance: l7.provenance };
  }
  if (!l7.ingress || !l7.istio) return deny('no-l7-point', 'incomplete L7 verdict');
  const staged =
    l7.ingress.staged && l7.ingress.staged.length > 0 ? { staged: l7.ingress.staged } : {};
  if (l7.ingress.verdict === 'deny')
    return { verdict: 'deny', provenance: l7.ingress.provenance, ...staged };
  if (l7.istio.verdict === 'deny')
    return { verdict: 'deny', provenance: l7.istio.provenance, ...staged };
  return {
    ...staged,
    verdict: 'allow',
    provenance:
      // An explicit Istio allow (AuthorizationPolicy, or a legacy ServiceRole bound to the caller)
      // names what admitted the request better than "no policy selects it" of the rules layer.
      l7.istio.provenance.kind === 'istio-allow' || l7.istio.provenance.kind === 'istio-rbac-allow'
        ? l7.istio.provenance
        : l7.ingress.provenance,
  };
}

/**
 * One version of the policy for one endpoint. Built from resources into an engine this view
 * alone holds (never upserted afterwards), so a view never changes once published.
 */
export class PolicyView {
  private constructor(
    readonly version: number,
    /** `namespace/name` of the endpoint this sidecar stands beside. */
    readonly endpoint: string,
    /** The endpoint's own SPIFFE ID (what its SVID must say). */
    readonly identity: string,
    readonly trustDomain: string,
    private readonly engine: Engine,
  ) {}

  /** Builds a view for `endpoint` from resources; refuses what it cannot judge. */
  static fromResources(
    resources: readonly Resource[],
    endpoint: string,
    version: number,
    options: { readonly trustDomain?: string; readonly istioRootNamespace?: string } = {},
  ): ViewResult {
    let engine: Engine;
    try {
      engine = compile(resources, { ...options, revision: version });
    } catch (e) {
      return { ok: false, reason: `the resources do not compile: ${(e as Error).message}` };
    }
    return PolicyView.fromEngine(engine, endpoint, version);
  }

  /** Wraps an engine the caller hands over: it must not be changed afterwards. */
  static fromEngine(engine: Engine, endpoint: string, version: number): ViewResult {
    if (!Number.isSafeInteger(version) || version < 0)
      return { ok: false, reason: `version ${version} is not a non-negative integer` };
    const errors = engine.diagnostics().filter((d) => d.severity === 'error');
    if (errors.length > 0)
      return {
        ok: false,
        reason: `${errors.length} error(s) in the policy, first: ${errors[0]?.message ?? ''}`,
      };
    const ep = engine.describeEndpoint(endpoint);
    if (!ep || ep.kind !== 'workload' || ep.namespace === undefined)
      return {
        ok: false,
        reason: `no workload endpoint ${JSON.stringify(endpoint)} in the policy`,
      };
    if (!ep.serviceAccount)
      return { ok: false, reason: `${ep.id} has no service account, so no identity` };
    if (!ep.l7)
      return { ok: false, reason: `${ep.id} is marked as having no L7 enforcement point` };
    return {
      ok: true,
      view: new PolicyView(
        version,
        ep.id,
        spiffeIdOf(engine.trustDomain, ep.namespace, ep.serviceAccount),
        engine.trustDomain,
        engine,
      ),
    };
  }

  /** The SPIFFE ID of the workload endpoint registered at `ip`, if any (network identity). */
  identityAt(ip: string): string | undefined {
    return this.#at(ip).identity;
  }

  /**
   * What the view says about one address, looked up once (a view never changes; the same few
   * peers call on every request). At most 4 096 addresses are kept, then the memo starts again.
   */
  #at(ip: string): {
    readonly identity: string | undefined;
    readonly endpoint: string | undefined;
  } {
    let a = this.#addresses.get(ip);
    if (!a) {
      const ep = this.engine.describeEndpoint(ip);
      a = {
        endpoint: ep?.id,
        identity:
          !ep || ep.kind !== 'workload' || ep.namespace === undefined || !ep.serviceAccount
            ? undefined
            : spiffeIdOf(this.trustDomain, ep.namespace, ep.serviceAccount),
      };
      if (this.#addresses.size >= 4096) this.#addresses.clear();
      this.#addresses.set(ip, a);
    }
    return a;
  }

  readonly #addresses = new Map<
    string,
    { readonly identity: string | undefined; readonly endpoint: string | undefined }
  >();

  #destinations: readonly InterceptDestination[] | undefined;

  /**
   * The candidate destinations for interception in this view: every peer with an identity and an
   * L7 point, on its declared TCP ports (the agent keeps those the kernel lets the endpoint
   * reach). Computed once: a view never changes.
   */
  interceptDestinations(): readonly InterceptDestination[] {
    this.#destinations ??= interceptDestinations(this.engine, this.endpoint, { kernel: false });
    return this.#destinations;
  }

  /** `namespace/name` of the endpoint at `ip`, if any. */
  endpointAt(ip: string): string | undefined {
    return this.#at(ip).endpoint;
  }

  /**
   * Whether a plaintext connection from `sourceIp` to `port` may reach L7 at all
   * (PeerAuthentication PERMISSIVE or DISABLE; STRICT refuses it).
   */
  plaintextAllowed(sourceIp: string, port: number): SidecarDecision {
    const r = this.engine.check(
      { from: sourceIp, to: this.endpoint, protocol: 'TCP', port, principal: null },
      false,
    );
    if (!r.ok) return deny('unmanaged', `cannot judge: ${r.code} ${r.message}`);
    if (r.result.l7.provenance.kind === 'peer-authentication')
      return { verdict: 'deny', provenance: r.result.l7.provenance };
    return {
      verdict: 'allow',
      provenance: {
        point: 'l7',
        direction: 'ingress',
        kind: 'peer-authentication',
        reason: 'plaintext permitted by PeerAuthentication',
      },
    };
  }

  /** The inbound verdict for one request. Never throws for any input. */
  decideInbound(req: InboundRequest): SidecarDecision {
    // The network identity first: a certificate presented from an address that does not run
    // under it is refused before any rule is consulted (a stolen certificate).
    if (req.principal !== null) {
      const bound = this.identityAt(req.sourceIp);
      if (bound !== req.principal)
        return deny(
          'identity-mismatch',
          `identity ${req.principal} presented from ${req.sourceIp}, which ${bound ? `runs as ${bound}` : 'is not an endpoint running under that identity'}`,
        );
    }
    // The destination's L7 verdict alone (the kernel has judged the connection, the source's
    // sidecar its egress): the same evaluation as a full check, without their cost.
    const r = this.engine.decideL7({
      from: req.sourceIp,
      to: this.endpoint,
      protocol: 'TCP',
      port: req.port,
      method: req.method,
      path: req.path,
      ...(req.host !== undefined ? { host: req.host } : {}),
      headers: req.headers,
      principal: req.principal,
    });
    if (!r.ok) return deny('unmanaged', `cannot judge: ${r.code} ${r.message}`);
    return inboundFrom(r.result);
  }

  /**
   * The inbound verdict for one non-HTTP connection, judged once when it opens: the identity
   * binding, then the same L7 evaluation as a request but with no HTTP attributes, so Calico
   * rules with `http` cannot match and Istio rules with HTTP-only fields are dropped (ALLOW) or
   * lose those fields (DENY) — the engine's TCP semantics (DESIGN §4.6). Never throws.
   */
  decideInboundConnection(c: InboundConnection): SidecarDecision {
    if (c.principal !== null) {
      const bound = this.identityAt(c.sourceIp);
      if (bound !== c.principal)
        return deny(
          'identity-mismatch',
          `identity ${c.principal} presented from ${c.sourceIp}, which ${bound ? `runs as ${bound}` : 'is not an endpoint running under that identity'}`,
        );
    }
    const r = this.engine.decideL7({
      from: c.sourceIp,
      to: this.endpoint,
      protocol: 'TCP',
      port: c.port,
      principal: c.principal,
    });
    if (!r.ok) return deny('unmanaged', `cannot judge: ${r.code} ${r.message}`);
    return inboundFrom(r.result);
  }

  /** The source side of one outgoing non-HTTP connection: this endpoint's egress rules at L7. */
  decideOutboundConnection(c: OutboundConnection): SidecarDecision {
    const r = this.engine.decideL7Egress({
      from: this.endpoint,
      to: c.destinationIp,
      protocol: 'TCP',
      port: c.port,
    });
    if (!r.ok) return { ...deny('unmanaged', `cannot judge: ${r.code} ${r.message}`) };
    const eg = r.result;
    if (!eg) return deny('no-l7-point', 'no L7 egress verdict for this endpoint');
    return { verdict: eg.verdict, provenance: eg.provenance };
  }

  /**
   * Whether the endpoint at `ip` declares `port` as a non-HTTP protocol (a named port `tcp`,
   * `tcp-*`, `mongo*`, `mysql*` or `redis*`): the outbound side relays such connections at L4
   * instead of parsing HTTP.
   */
  speaksL4(ip: string, port: number): boolean {
    const ep = this.engine.describeEndpoint(ip);
    if (!ep || ep.kind !== 'workload') return false;
    return ep.namedPorts.some(
      (p) => p.port === port && p.protocol === 6 && L4_PORT_NAME.test(p.name),
    );
  }

  /** The source side: this endpoint's egress rules at L7 for an outgoing request. */
  decideOutbound(req: OutboundRequest): SidecarDecision {
    // The source's egress verdict at L7 alone (`check(...).l7.egress`, without the kernel and
    // destination-side work of a full check; the destination's sidecar judges its ingress).
    const r = this.engine.decideL7Egress({
      from: this.endpoint,
      to: req.destinationIp,
      protocol: 'TCP',
      port: req.port,
      method: req.method,
      path: req.path,
      ...(req.host !== undefined ? { host: req.host } : {}),
      headers: req.headers,
    });
    if (!r.ok) return { ...deny('unmanaged', `cannot judge: ${r.code} ${r.message}`) };
    const eg = r.result;
    if (!eg) return deny('no-l7-point', 'no L7 egress verdict for this endpoint');
    return { verdict: eg.verdict, provenance: eg.provenance };
  }
}

/** What the holder reports about its last update attempt. */
export interface HolderStatus {
  readonly version: number;
  readonly endpoint: string;
  readonly lastError: string | undefined;
  readonly rejectedUpdates: number;
}

/**
 * Holds the current view. `current` is read once per decision, so a swap is atomic for every
 * request: each is judged entirely by one version. A failed or stale update keeps the last view.
 */
export class PolicyViewHolder {
  #current: PolicyView;
  #lastError: string | undefined;
  #rejected = 0;

  constructor(initial: PolicyView) {
    this.#current = initial;
  }

  get current(): PolicyView {
    return this.#current;
  }

  /** Installs a new version; returns false (and keeps the old one) when it is not acceptable. */
  update(next: ViewResult): boolean {
    if (!next.ok) return this.#reject(next.reason);
    if (next.view.endpoint !== this.#current.endpoint)
      return this.#reject(
        `a view for ${next.view.endpoint} was offered to the sidecar of ${this.#current.endpoint}`,
      );
    if (next.view.identity !== this.#current.identity)
      return this.#reject(
        `the view changes this endpoint's identity to ${next.view.identity}; a new SVID is needed first`,
      );
    if (next.view.version <= this.#current.version)
      return this.#reject(
        `version ${next.view.version} is not newer than ${this.#current.version}`,
      );
    this.#current = next.view;
    this.#lastError = undefined;
    return true;
  }

  status(): HolderStatus {
    return {
      version: this.#current.version,
      endpoint: this.#current.endpoint,
      lastError: this.#lastError,
      rejectedUpdates: this.#rejected,
    };
  }

  #reject(reason: string): false {
    this.#lastError = reason;
    this.#rejected++;
    return false;
  }
}
