// The legacy Istio RBAC (`rbac.istio.io/v1alpha1`: ServiceRole, ServiceRoleBinding, RbacConfig,
// ClusterRbacConfig), evaluated as Istio's v1alpha1 RBAC filter generator translates it into
// Envoy's RBAC filter (Istio 1.4/1.5, the last releases that had it): once RBAC is on for a
// service, a request is allowed only when some role of the service's namespace has a rule the
// request matches and a binding of that role has a subject the caller matches (deny by default).
// Owns: those semantics. Must never: look at Calico policy or AuthorizationPolicy (engine.ts
// decides which layer applies).

import type {
  RbacConfigSpec,
  RbacSubject,
  RbacTarget,
  ServiceRole,
  ServiceRoleBinding,
  ServiceRoleRule,
} from '../model/resources.js';
import { cidrContains, parseCidr } from '../net/ip.js';
import type { IpAddr } from '../net/ip.js';
import type { IstioRequest } from './istio.js';

/** The Kubernetes service a request reaches, as Istio names it for RBAC. */
export interface LegacyService {
  /** `name.namespace.svc.cluster.local`. */
  readonly hostname: string;
  readonly name: string;
  readonly namespace: string;
}

/** What Istio's ServiceMetadata holds about the destination instance. */
export interface LegacyDestination {
  readonly service: LegacyService;
  /** The destination pod's own labels (`destination.labels[...]`). */
  readonly labels: Readonly<Record<string, string>>;
  /** The service account name (`destination.user`). */
  readonly serviceAccount: string | undefined;
}

export interface RbacOutcome {
  readonly verdict: 'allow' | 'deny';
  readonly kind: 'istio-rbac-allow' | 'istio-rbac-deny';
  /** `namespace/role` that allowed. */
  readonly role: string | undefined;
  readonly binding: string | undefined;
  /** Index of the role's rule that matched. */
  readonly rule: number | undefined;
  /** Set when the config is PERMISSIVE: nothing is enforced, this is what would have happened. */
  readonly wouldBe: 'allow' | 'deny' | undefined;
  readonly trace: readonly string[];
}

/** Whether RBAC is on for a service (Istio's `isRbacEnabled`: exact names, exact namespaces). */
export function legacyRbacEnabled(spec: RbacConfigSpec, svc: LegacyService): boolean {
  const listed = (t: RbacTarget | undefined): boolean =>
    t !== undefined &&
    ((t.namespaces ?? []).includes(svc.namespace) || (t.services ?? []).includes(svc.hostname));
  const mode = spec.mode ?? 'OFF';
  switch (mode) {
    case 'OFF':
      return false;
    case 'ON':
      return true;
    case 'ON_WITH_INCLUSION':
      return listed(spec.inclusion);
    case 'ON_WITH_EXCLUSION':
      return !listed(spec.exclusion);
  }
}

/**
 * Istio's v1alpha1 string match (`stringMatch`, and Envoy's StringMatcher as the generator builds
 * it): `*` matches anything, even the empty string, `prefix*`, `*suffix`, otherwise exact.
 */
export function rbacStringMatch(pattern: string, value: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  if (pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  return pattern === value;
}

/** Envoy's HeaderMatcher as Istio builds it: `*` presence, `*suffix`, `prefix*`, exact. */
function headerMatch(pattern: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  if (pattern === '*') return true;
  if (pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  if (pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  return pattern === value;
}

function bracket(key: string, prefix: string): string | undefined {
  if (!key.startsWith(`${prefix}[`) || !key.endsWith(']')) return undefined;
  return key.slice(prefix.length + 1, -1);
}

function ipIn(block: string, ip: IpAddr | undefined): boolean {
  const c = parseCidr(block);
  return ip !== undefined && c !== undefined && cidrContains(c, ip);
}

/** Whether a rule can be judged without HTTP (the generator drops it from the TCP filter). */
function ruleNeedsHttp(r: ServiceRoleRule): boolean {
  return (
    (r.methods !== undefined && r.methods.length > 0) ||
    (r.paths !== undefined && r.paths.length > 0) ||
    (r.constraints ?? []).some((c) => c.key.startsWith('request.headers'))
  );
}

/** `Permission.Match`: the service name and the constraints on the destination instance. */
function ruleSelectsDestination(r: ServiceRoleRule, d: LegacyDestination): boolean {
  if (r.services.length > 0 && !r.services.some((s) => rbacStringMatch(s, d.service.hostname)))
    return false;
  for (const c of r.constraints ?? []) {
    let value: string | undefined;
    const label = bracket(c.key, 'destination.labels');
    if (label !== undefined) value = Object.hasOwn(d.labels, label) ? d.labels[label] : undefined;
    else if (c.key === 'destination.name') value = d.service.name;
    else if (c.key === 'destination.namespace') value = d.service.namespace;
    else if (c.key === 'destination.user') value = d.serviceAccount;
    else continue;
    if (value === undefined || !c.values.some((v) => rbacStringMatch(v, value))) return false;
  }
  return true;
}

/** The per-request part of a rule (what the generated Envoy permission checks). */
function ruleMatchesRequest(r: ServiceRoleRule, req: IstioRequest): boolean {
  const h = req.http;
  if (h) {
    if (r.methods && r.methods.length > 0 && !r.methods.some((m) => headerMatch(m, h.method)))
      return false;
    const path = h.path.split('?')[0]?.split('#')[0] ?? h.path;
    if (r.paths && r.paths.length > 0 && !r.paths.some((p) => rbacStringMatch(p, path)))
      return false;
  }
  for (const c of r.constraints ?? []) {
    const header = bracket(c.key, 'request.headers');
    let ok: boolean;
    if (header !== undefined) {
      const v = h?.headers[header.toLowerCase()];
      ok = c.values.some((p) => headerMatch(p, v));
    } else if (c.key === 'destination.ip') ok = c.values.some((b) => ipIn(b, req.destinationIp));
    else if (c.key === 'destination.port')
      ok = req.port !== undefined && c.values.some((p) => Number(p) === req.port);
    else if (c.key === 'connection.sni')
      ok = c.values.some((p) => rbacStringMatch(p, req.sni ?? ''));
    else continue; // destination.labels/name/namespace/user: judged on the destination
    if (!ok) return false;
  }
  return true;
}

/** Whether a subject needs HTTP attributes (the generator drops it from the TCP filter). */
function subjectNeedsHttp(s: RbacSubject): boolean {
  if (s.group !== undefined && s.group !== '') return true;
  return Object.keys(s.properties ?? {}).some(
    (k) => k.startsWith('request.') || k === 'source.user',
  );
}

/** `.*\/ns/NAMESPACE/.*` over the principal, `*` standing for `.*`, as the generator writes it. */
function namespaceOfPrincipal(pattern: string, principal: string | undefined): boolean {
  if (principal === undefined) return false;
  const body = pattern
    .split('*')
    .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^.*/ns/${body}/.*$`, 's').test(principal);
}

function principalMatch(pattern: string, principal: string | undefined): boolean {
  // `*` is Envoy's "any": it matches plaintext callers too.
  if (pattern === '*') return true;
  return principal !== undefined && rbacStringMatch(pattern, principal);
}

function subjectMatches(s: RbacSubject, req: IstioRequest): boolean {
  if (s.user !== undefined && s.user !== '' && !principalMatch(s.user, req.principal)) return false;
  // Groups come from a JWT claim; Palisade verifies no JWTs, so no request carries one.
  if (s.group !== undefined && s.group !== '') return false;
  for (const [k, v] of Object.entries(s.properties ?? {})) {
    let ok: boolean;
    const header = bracket(k, 'request.headers');
    if (header !== undefined) ok = headerMatch(v, req.http?.headers[header.toLowerCase()]);
    else if (k === 'source.ip') ok = ipIn(v, req.sourceIp);
    else if (k === 'source.namespace') ok = namespaceOfPrincipal(v, req.principal);
    else if (k === 'source.principal') ok = principalMatch(v, req.principal);
    else if (k === 'source.user')
      ok = req.principal !== undefined && rbacStringMatch(v, req.principal);
    else ok = false; // request.auth.*: no JWT, never present
    if (!ok) return false;
  }
  return true;
}

interface Found {
  readonly role: ServiceRole;
  readonly rule: number;
  readonly binding: ServiceRoleBinding;
}

function name(r: { metadata: { namespace?: string; name: string } }): string {
  return `${r.metadata.namespace ?? 'default'}/${r.metadata.name}`;
}

function firstMatch(
  roles: readonly ServiceRole[],
  bindingsByRole: ReadonlyMap<string, readonly ServiceRoleBinding[]>,
  d: LegacyDestination,
  req: IstioRequest,
  trace: string[],
  label: string,
): Found | undefined {
  const http = req.http !== undefined;
  for (const role of roles) {
    const bindings = bindingsByRole.get(role.metadata.name) ?? [];
    if (bindings.length === 0) continue;
    // Rules that do not select this service, or need HTTP on a TCP connection, are left out.
    const rule = role.spec.rules.findIndex(
      (r) =>
        ruleSelectsDestination(r, d) && (http || !ruleNeedsHttp(r)) && ruleMatchesRequest(r, req),
    );
    if (rule < 0) {
      trace.push(`${label}ServiceRole ${name(role)}: no rule matched`);
      continue;
    }
    const binding = bindings.find((b) =>
      b.spec.subjects.some((s) => (http || !subjectNeedsHttp(s)) && subjectMatches(s, req)),
    );
    trace.push(
      `${label}ServiceRole ${name(role)}: rule ${rule} matched; ${binding ? `ServiceRoleBinding ${name(binding)} has a matching subject` : 'no binding has a matching subject'}`,
    );
    if (binding) return { role, rule, binding };
  }
  return undefined;
}

/**
 * Judges a request to a service for which RBAC is on. `roles` and `bindings` are those of the
 * service's namespace (roles by name, for stable provenance).
 */
export function evaluateLegacyRbac(
  config: { readonly name: string; readonly spec: RbacConfigSpec },
  roles: readonly ServiceRole[],
  bindings: readonly ServiceRoleBinding[],
  d: LegacyDestination,
  req: IstioRequest,
): RbacOutcome {
  const globalPermissive = config.spec.enforcementMode === 'PERMISSIVE';
  const enforced = new Map<string, ServiceRoleBinding[]>();
  const shadow = new Map<string, ServiceRoleBinding[]>();
  for (const b of bindings) {
    const target = globalPermissive || b.spec.mode === 'PERMISSIVE' ? shadow : enforced;
    const list = target.get(b.spec.roleRef.name) ?? [];
    list.push(b);
    target.set(b.spec.roleRef.name, list);
  }
  const trace: string[] = [
    `legacy Istio RBAC (${config.name}) is on for ${d.service.hostname}: deny unless a role and a binding match`,
  ];
  const shadowHit =
    shadow.size > 0 ? firstMatch(roles, shadow, d, req, trace, '(permissive) ') : undefined;
  if (shadow.size > 0)
    trace.push(
      `permissive bindings would ${shadowHit ? `allow (ServiceRoleBinding ${name(shadowHit.binding)})` : 'deny'}; they are not enforced`,
    );
  if (globalPermissive) {
    return {
      verdict: 'allow',
      kind: 'istio-rbac-allow',
      role: shadowHit ? name(shadowHit.role) : undefined,
      binding: shadowHit ? name(shadowHit.binding) : undefined,
      rule: shadowHit?.rule,
      wouldBe: shadowHit ? 'allow' : 'deny',
      trace,
    };
  }
  const hit = firstMatch(roles, enforced, d, req, trace, '');
  if (hit)
    return {
      verdict: 'allow',
      kind: 'istio-rbac-allow',
      role: name(hit.role),
      binding: name(hit.binding),
      rule: hit.rule,
      wouldBe: undefined,
      trace,
    };
  return {
    verdict: 'deny',
    kind: 'istio-rbac-deny',
    role: undefined,
    binding: undefined,
    rule: undefined,
    wouldBe: undefined,
    trace,
  };
}
