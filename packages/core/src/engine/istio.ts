// Istio AuthorizationPolicy and PeerAuthentication, evaluated as Istio documents them
// (DESIGN §4 item 6): DENY before ALLOW, no ALLOW policy means allow, an ALLOW policy without
// rules allows nothing; string matches are exact, `prefix*`, `*suffix` or `*` (presence).
// Owns: Istio's semantics. Must never: look at Calico policy.

import type {
  AuthorizationPolicy,
  IstioCondition,
  IstioOperation,
  IstioRule,
  IstioSource,
  PeerAuthentication,
  PeerAuthenticationMode,
} from '../model/resources.js';
import { cidrContains, parseCidr, parseIp } from '../net/ip.js';
import type { IpAddr } from '../net/ip.js';
import { compileMatchLabels } from './matchers.js';
import type { LabelMatcher } from './matchers.js';
import type { Endpoint } from './model.js';

export interface IstioRequest {
  /** Principal without `spiffe://`, e.g. `cluster.local/ns/default/sa/sleep`; undefined if plaintext. */
  readonly principal: string | undefined;
  readonly sourceNamespace: string | undefined;
  readonly sourceIp: IpAddr | undefined;
  readonly remoteIp: IpAddr | undefined;
  readonly destinationIp: IpAddr | undefined;
  readonly port: number | undefined;
  readonly sni: string | undefined;
  /** Present for HTTP traffic only. */
  readonly http:
    | {
        readonly method: string;
        readonly path: string;
        readonly host: string | undefined;
        /** Lower-cased names. */
        readonly headers: Readonly<Record<string, string>>;
      }
    | undefined;
}

export interface CompiledAuthz {
  readonly name: string;
  readonly namespace: string;
  readonly action: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  readonly root: boolean;
  readonly selects: (ep: Endpoint) => boolean;
  readonly rules: readonly IstioRule[];
}

export function compileAuthz(p: AuthorizationPolicy, rootNamespace: string): CompiledAuthz {
  const namespace = p.metadata.namespace ?? 'default';
  const root = namespace === rootNamespace;
  let labelMatch: LabelMatcher;
  if (p.spec.selector) labelMatch = compileMatchLabels(p.spec.selector.matchLabels);
  else if (p.spec.targetRef || p.spec.targetRefs) labelMatch = () => false;
  else labelMatch = () => true;
  const selects = (ep: Endpoint) =>
    ep.kind === 'workload' && (root || ep.namespace === namespace) && labelMatch(ep.ownLabels);
  return {
    name: `${namespace}/${p.metadata.name}`,
    namespace,
    action: p.spec.action ?? 'ALLOW',
    root,
    selects,
    rules: p.spec.rules ?? [],
  };
}

/** Istio's string match: `*` presence, `prefix*`, `*suffix`, otherwise exact. */
export function istioStringMatch(pattern: string, value: string, caseInsensitive = false): boolean {
  const p = caseInsensitive ? pattern.toLowerCase() : pattern;
  const v = caseInsensitive ? value.toLowerCase() : value;
  if (p === '*') return v !== '';
  if (p.startsWith('*')) return v.endsWith(p.slice(1));
  if (p.endsWith('*')) return v.startsWith(p.slice(0, -1));
  return p === v;
}

/** Path templates `{*}` (one segment) and `{**}` (any number of segments). */
function pathTemplateMatch(pattern: string, path: string): boolean {
  const re = pattern
    .split(/(\{\*\*\}|\{\*\})/)
    .map((part) =>
      part === '{**}'
        ? '.*'
        : part === '{*}'
          ? '[^/]+'
          : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('');
  return new RegExp(`^${re}$`).test(path);
}

function pathMatch(pattern: string, path: string): boolean {
  if (pattern.includes('{*}') || pattern.includes('{**}')) return pathTemplateMatch(pattern, path);
  return istioStringMatch(pattern, path);
}

function ipMatch(blocks: readonly string[], ip: IpAddr | undefined): boolean {
  if (!ip) return false;
  for (const b of blocks) {
    const c = parseCidr(b);
    if (c && cidrContains(c, ip)) return true;
  }
  return false;
}

type FieldResult = boolean | 'http-only';

/** A positive list matches when the attribute is present and any value matches. */
function pos<T>(list: readonly T[] | undefined, f: (v: T) => boolean): boolean {
  if (list === undefined) return true;
  return list.some(f);
}

/** A negative list matches when no value matches (absent attributes never match a value). */
function neg<T>(list: readonly T[] | undefined, f: (v: T) => boolean): boolean {
  if (list === undefined) return true;
  return !list.some(f);
}

function sourceMatches(s: IstioSource, req: IstioRequest): FieldResult {
  if (
    (s.requestPrincipals !== undefined || s.notRequestPrincipals !== undefined) &&
    req.http === undefined
  )
    return 'http-only';
  const principal = req.principal;
  const ns = req.sourceNamespace;
  const ok =
    pos(s.principals, (p) => principal !== undefined && istioStringMatch(p, principal)) &&
    neg(s.notPrincipals, (p) => principal !== undefined && istioStringMatch(p, principal)) &&
    // No JWT support: request principals are never present.
    pos(s.requestPrincipals, () => false) &&
    neg(s.notRequestPrincipals, () => false) &&
    pos(s.namespaces, (p) => ns !== undefined && istioStringMatch(p, ns)) &&
    neg(s.notNamespaces, (p) => ns !== undefined && istioStringMatch(p, ns)) &&
    pos(s.ipBlocks, (b) => ipMatch([b], req.sourceIp)) &&
    neg(s.notIpBlocks, (b) => ipMatch([b], req.sourceIp)) &&
    pos(s.remoteIpBlocks, (b) => ipMatch([b], req.remoteIp)) &&
    neg(s.notRemoteIpBlocks, (b) => ipMatch([b], req.remoteIp));
  return ok;
}

function hostMatch(pattern: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  if (istioStringMatch(pattern, host, true)) return true;
  const colon = host.lastIndexOf(':');
  if (colon > 0 && !host.endsWith(']'))
    return istioStringMatch(pattern, host.slice(0, colon), true);
  return false;
}

function operationMatches(o: IstioOperation, req: IstioRequest): FieldResult {
  const httpOnly =
    o.hosts !== undefined ||
    o.notHosts !== undefined ||
    o.methods !== undefined ||
    o.notMethods !== undefined ||
    o.paths !== undefined ||
    o.notPaths !== undefined;
  const port = req.port === undefined ? undefined : String(req.port);
  const portsOk =
    pos(o.ports, (p) => port !== undefined && p === port) &&
    neg(o.notPorts, (p) => port !== undefined && p === port);
  if (!req.http) {
    if (httpOnly) return portsOk ? 'http-only' : false;
    return portsOk;
  }
  const h = req.http;
  const path = h.path.split('?')[0]?.split('#')[0] ?? h.path;
  return (
    portsOk &&
    pos(o.hosts, (p) => hostMatch(p, h.host)) &&
    neg(o.notHosts, (p) => hostMatch(p, h.host)) &&
    pos(o.methods, (p) => istioStringMatch(p, h.method)) &&
    neg(o.notMethods, (p) => istioStringMatch(p, h.method)) &&
    pos(o.paths, (p) => pathMatch(p, path)) &&
    neg(o.notPaths, (p) => pathMatch(p, path))
  );
}

function conditionValue(
  key: string,
  req: IstioRequest,
): { http: boolean; value: string | undefined; ip?: boolean } {
  const hm = /^request\.headers\[(.+)\]$/.exec(key);
  if (hm) return { http: true, value: req.http?.headers[(hm[1] ?? '').toLowerCase()] };
  if (key.startsWith('request.auth.')) return { http: true, value: undefined };
  switch (key) {
    case 'source.ip':
      return { http: false, value: ipText(req.sourceIp), ip: true };
    case 'remote.ip':
      return { http: false, value: ipText(req.remoteIp), ip: true };
    case 'destination.ip':
      return { http: false, value: ipText(req.destinationIp), ip: true };
    case 'source.namespace':
      return { http: false, value: req.sourceNamespace };
    case 'source.principal':
      return { http: false, value: req.principal };
    case 'destination.port':
      return { http: false, value: req.port === undefined ? undefined : String(req.port) };
    case 'connection.sni':
      return { http: false, value: req.sni };
    default:
      return { http: false, value: undefined };
  }
}

function ipText(ip: IpAddr | undefined): string | undefined {
  return ip ? 'ip' : undefined;
}

function conditionMatches(c: IstioCondition, req: IstioRequest): FieldResult {
  const { http, value, ip } = conditionValue(c.key, req);
  if (http && !req.http) return 'http-only';
  const one = (pattern: string): boolean => {
    if (value === undefined) return false;
    if (ip) {
      const addr =
        c.key === 'source.ip'
          ? req.sourceIp
          : c.key === 'remote.ip'
            ? req.remoteIp
            : req.destinationIp;
      return ipMatch([pattern], addr);
    }
    return istioStringMatch(pattern, value);
  };
  return pos(c.values, one) && neg(c.notValues, one);
}

/**
 * Whether a rule matches. For TCP traffic, HTTP-only fields cannot be judged: an ALLOW rule that
 * uses them never matches; a DENY rule ignores them (and so denies more), as Istio documents.
 */
export function istioRuleMatches(
  rule: IstioRule,
  req: IstioRequest,
  action: CompiledAuthz['action'],
): boolean {
  const lenient = action === 'DENY' || action === 'AUDIT';
  const fold = (r: FieldResult): boolean => (r === 'http-only' ? lenient : r);
  const from = rule.from;
  if (from && from.length > 0 && !from.some((f) => fold(sourceMatches(f.source, req))))
    return false;
  const to = rule.to;
  if (to && to.length > 0 && !to.some((t) => fold(operationMatches(t.operation, req))))
    return false;
  for (const c of rule.when ?? []) if (!fold(conditionMatches(c, req))) return false;
  return true;
}

export interface IstioOutcome {
  readonly verdict: 'allow' | 'deny';
  readonly kind: 'istio-deny' | 'istio-allow' | 'istio-no-allow-match' | 'istio-no-policy';
  readonly policy: string | undefined;
  readonly rule: number | undefined;
  readonly audited: readonly string[];
  readonly trace: readonly string[];
}

export function evaluateIstio(
  policies: readonly CompiledAuthz[],
  ep: Endpoint,
  req: IstioRequest,
): IstioOutcome {
  const applicable = policies.filter((p) => p.action !== 'CUSTOM' && p.selects(ep));
  const trace: string[] = [];
  const audited: string[] = [];
  for (const p of applicable) {
    if (p.action !== 'AUDIT') continue;
    if (p.rules.some((r) => istioRuleMatches(r, req, 'AUDIT'))) audited.push(p.name);
  }
  for (const p of applicable) {
    if (p.action !== 'DENY') continue;
    const i = p.rules.findIndex((r) => istioRuleMatches(r, req, 'DENY'));
    trace.push(`istio DENY policy ${p.name}: ${i >= 0 ? `rule ${i} matched` : 'no rule matched'}`);
    if (i >= 0)
      return { verdict: 'deny', kind: 'istio-deny', policy: p.name, rule: i, audited, trace };
  }
  const allows = applicable.filter((p) => p.action === 'ALLOW');
  if (allows.length === 0)
    return {
      verdict: 'allow',
      kind: 'istio-no-policy',
      policy: undefined,
      rule: undefined,
      audited,
      trace,
    };
  for (const p of allows) {
    const i = p.rules.findIndex((r) => istioRuleMatches(r, req, 'ALLOW'));
    trace.push(`istio ALLOW policy ${p.name}: ${i >= 0 ? `rule ${i} matched` : 'no rule matched'}`);
    if (i >= 0)
      return { verdict: 'allow', kind: 'istio-allow', policy: p.name, rule: i, audited, trace };
  }
  return {
    verdict: 'deny',
    kind: 'istio-no-allow-match',
    policy: allows.map((p) => p.name).join(', '),
    rule: undefined,
    audited,
    trace,
  };
}

// ------------------------------------------------------------------ PeerAuthentication

export interface CompiledPeerAuthn {
  readonly name: string;
  readonly namespace: string;
  readonly hasSelector: boolean;
  readonly selects: LabelMatcher;
  readonly mode: PeerAuthenticationMode;
  readonly portModes: ReadonlyMap<number, PeerAuthenticationMode>;
  readonly created: string;
}

export function compilePeerAuthn(p: PeerAuthentication): CompiledPeerAuthn {
  const portModes = new Map<number, PeerAuthenticationMode>();
  for (const [k, v] of Object.entries(p.spec.portLevelMtls ?? {})) {
    if (v.mode) portModes.set(Number(k), v.mode);
  }
  return {
    name: `${p.metadata.namespace ?? 'default'}/${p.metadata.name}`,
    namespace: p.metadata.namespace ?? 'default',
    hasSelector: p.spec.selector?.matchLabels !== undefined,
    selects: compileMatchLabels(p.spec.selector?.matchLabels),
    mode: p.spec.mtls?.mode ?? 'UNSET',
    portModes,
    created: p.metadata.creationTimestamp ?? '',
  };
}

function oldest(list: CompiledPeerAuthn[]): CompiledPeerAuthn | undefined {
  return [...list].sort(
    (a, b) => a.created.localeCompare(b.created) || a.name.localeCompare(b.name),
  )[0];
}

/**
 * The effective mTLS mode for a workload and port: workload policy (port-level first), then the
 * namespace policy, then the mesh policy in the root namespace; UNSET inherits; default PERMISSIVE.
 */
export function effectiveMtlsMode(
  policies: readonly CompiledPeerAuthn[],
  ep: Endpoint,
  port: number | undefined,
  rootNamespace: string,
): { mode: 'DISABLE' | 'PERMISSIVE' | 'STRICT'; policy: string | undefined } {
  if (ep.namespace === undefined) return { mode: 'PERMISSIVE', policy: undefined };
  const chain: CompiledPeerAuthn[] = [];
  const wl = oldest(
    policies.filter(
      (p) => p.namespace === ep.namespace && p.hasSelector && p.selects(ep.ownLabels),
    ),
  );
  if (wl) chain.push(wl);
  const nsp = oldest(policies.filter((p) => p.namespace === ep.namespace && !p.hasSelector));
  if (nsp) chain.push(nsp);
  const mesh = oldest(policies.filter((p) => p.namespace === rootNamespace && !p.hasSelector));
  if (mesh) chain.push(mesh);
  for (const p of chain) {
    const m = (port !== undefined && p.hasSelector ? p.portModes.get(port) : undefined) ?? p.mode;
    if (m !== 'UNSET') return { mode: m, policy: p.name };
  }
  return { mode: 'PERMISSIVE', policy: undefined };
}

export function parsePrincipalIp(s: string | undefined): IpAddr | undefined {
  return s === undefined ? undefined : parseIp(s);
}
