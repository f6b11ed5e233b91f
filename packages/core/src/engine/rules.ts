// Calico rules, compiled once and matched many times, in the kernel and at L7 (DESIGN §4).
// Owns: the meaning of one rule against one connection or request. Must never: decide the order
// in which rules are consulted (evaluate.ts does).

import type { CalicoAction, CalicoRule, EntityRule, HttpMatch } from '../model/resources.js';
import { cidrContains, parseCidr } from '../net/ip.js';
import type { Cidr, IpAddr } from '../net/ip.js';
import {
  allOf,
  compileCalicoSelector,
  compilePort,
  protocolNumber,
  selectorIsAll,
  type LabelMatcher,
  type PortMatch,
  type SelectorCompileError,
} from './matchers.js';
import type { Endpoint, Entity, NetSetEntity } from './model.js';
import type { EnforcementPoint } from './types.js';

/** One side of a connection: an address, and the endpoint that owns it when we know one. */
export interface Peer {
  readonly ip: IpAddr | undefined;
  readonly endpoint: Endpoint | undefined;
  /** Network sets whose nets contain `ip`. */
  readonly netsets: readonly NetSetEntity[];
  /**
   * Results of selector predicates for this peer (kernel programs), when the peer object is kept
   * by the engine. Exact: the peer, its endpoint and its network sets are immutable, so a result
   * holds as long as the object does.
   */
  readonly memo?: Map<object, boolean>;
  /**
   * A dense number for this peer object, when the engine keeps it: predicate results are then
   * memoised in each predicate's bit array at this index (exact for the same reason as `memo`).
   */
  readonly n?: number;
}

export interface HttpRequest {
  readonly method: string;
  readonly path: string;
  readonly host: string | undefined;
  /** Lower-cased names. */
  readonly headers: Readonly<Record<string, string>>;
}

/** The service account a presented certificate names, with that account's labels. */
export interface PeerIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly saLabels: Readonly<Record<string, string>>;
}

export interface MatchContext {
  readonly point: EnforcementPoint;
  readonly protocol: number;
  readonly dstPort: number | undefined;
  /**
   * The source port, when known: only for the reply of a probe (its source port is the probe's
   * port). Probes themselves carry none, so a rule requiring source ports does not match them.
   */
  readonly srcPort?: number;
  readonly icmp: { readonly type?: number; readonly code?: number } | undefined;
  readonly family: 4 | 6;
  readonly src: Peer;
  readonly dst: Peer;
  /** Whether the endpoint whose policy is evaluated has an L7 point to hand `http` rules to. */
  readonly l7Available: boolean;
  /** At L7: the HTTP request, if the traffic is HTTP. */
  readonly request: HttpRequest | undefined;
  /** At L7 ingress: the source identity proven by mTLS; null for plaintext. */
  readonly srcIdentity: PeerIdentity | null | undefined;
  /**
   * Whether a peer is an endpoint of a Kubernetes Service (Calico `services`): its address is one
   * of the service's endpoint addresses, and with `checkPort` the protocol and port are one of
   * that endpoint's ports.
   */
  readonly serviceMatch: (
    ns: string,
    name: string,
    peer: Peer,
    protocol: number,
    port: number | undefined,
    checkPort: boolean,
  ) => boolean;
}

export interface CompiledEntity {
  /** The effective selector (namespace scope, service accounts and selector), if any. */
  readonly selector: ((e: Entity) => boolean) | undefined;
  /**
   * What `selector` tests, as text: equal keys mean equal predicates, so precompiled decisions
   * evaluate a selector shared by many rules once per connection.
   */
  readonly selectorKey: string | undefined;
  readonly notSelector: ((e: Entity) => boolean) | undefined;
  readonly notSelectorKey: string | undefined;
  readonly nets: readonly Cidr[] | undefined;
  readonly notNets: readonly Cidr[] | undefined;
  readonly ports: readonly PortMatch[] | undefined;
  readonly notPorts: readonly PortMatch[] | undefined;
  readonly saNames: ReadonlySet<string> | undefined;
  readonly saSelector: LabelMatcher | undefined;
  readonly service: { readonly namespace: string; readonly name: string } | undefined;
}

export interface CompiledRule {
  /** 0-based index in the policy's original rule list (Kubernetes rules expand to several). */
  readonly index: number;
  readonly action: CalicoAction;
  readonly protocol: number | undefined;
  readonly notProtocol: number | undefined;
  readonly icmp: { readonly type?: number; readonly code?: number } | undefined;
  readonly notIcmp: { readonly type?: number; readonly code?: number } | undefined;
  readonly ipVersion: 4 | 6 | undefined;
  readonly src: CompiledEntity;
  readonly dst: CompiledEntity;
  readonly http: HttpMatch | undefined;
}

export type RuleMatch = 'no' | 'yes' | 'deferred';

export interface RuleScope {
  /** The namespace of a namespaced policy; undefined for global policies and profiles. */
  readonly namespace: string | undefined;
  readonly onSelectorError?: (e: SelectorCompileError) => void;
}

function compileCidrs(list: readonly string[] | undefined): Cidr[] | undefined {
  if (!list || list.length === 0) return undefined;
  const out: Cidr[] = [];
  for (const s of list) {
    const c = parseCidr(s);
    // An unparseable net matches nothing (the loader already reported it).
    if (c) out.push(c);
  }
  return out;
}

/**
 * The effective entity selector, as Calico forms it: once any of selector, notSelector,
 * namespaceSelector or serviceAccounts is used, a namespaced policy's rule is limited to its own
 * namespace unless a namespaceSelector says otherwise; `all()` as a namespace selector means
 * every namespaced entity and `global()` every non-namespaced one.
 */
function compileEntitySelector(
  er: EntityRule,
  scope: RuleScope,
): {
  selector: CompiledEntity['selector'];
  key: string | undefined;
  saNames: Set<string> | undefined;
  saSel: LabelMatcher | undefined;
} {
  const parts: ((e: Entity) => boolean)[] = [];
  // One segment per predicate in `parts`, in the same order: equal keys, equal predicates.
  const keyParts: unknown[] = [];
  const nsSelText = er.namespaceSelector?.trim();
  const anySelector =
    (er.selector !== undefined && er.selector.trim() !== '') ||
    (er.notSelector !== undefined && er.notSelector.trim() !== '') ||
    (nsSelText !== undefined && nsSelText !== '') ||
    er.serviceAccounts !== undefined;
  if (nsSelText) {
    keyParts.push(['ns', nsSelText]);
    if (selectorIsAll(nsSelText)) {
      parts.push((e) => e.namespace !== undefined);
    } else if (/^global\(\s*\)$/.test(nsSelText)) {
      parts.push((e) => e.namespace === undefined);
    } else {
      const m = compileCalicoSelector(nsSelText, scope.onSelectorError);
      parts.push((e) => m(e.nsView));
    }
  } else if (scope.namespace !== undefined && anySelector) {
    const ns = scope.namespace;
    keyParts.push(['scope', ns]);
    parts.push((e) => e.namespace === ns);
  }
  let saNames: Set<string> | undefined;
  let saSel: LabelMatcher | undefined;
  if (er.serviceAccounts) {
    if (er.serviceAccounts.names && er.serviceAccounts.names.length > 0) {
      const names = new Set(er.serviceAccounts.names);
      keyParts.push(['saNames', [...names].sort()]);
      saNames = names;
      parts.push((e) => e.serviceAccount !== undefined && names.has(e.serviceAccount));
    }
    if (er.serviceAccounts.selector !== undefined && er.serviceAccounts.selector.trim() !== '') {
      const m = compileCalicoSelector(er.serviceAccounts.selector, scope.onSelectorError);
      keyParts.push(['saSel', er.serviceAccounts.selector]);
      saSel = m;
      parts.push((e) => e.saView !== undefined && m(e.saView));
    } else if (!saNames) {
      // `serviceAccounts: {}` selects every entity that runs under a service account.
      keyParts.push(['saAny']);
      parts.push((e) => e.serviceAccount !== undefined);
    }
  }
  if (er.selector !== undefined && er.selector.trim() !== '' && !selectorIsAll(er.selector)) {
    const m = compileCalicoSelector(er.selector, scope.onSelectorError);
    keyParts.push(['sel', er.selector]);
    parts.push((e) => m(e.labels));
  } else if (er.selector !== undefined && er.selector.trim() !== '') {
    // `all()` still restricts the match to known entities (not arbitrary addresses).
    keyParts.push(['selAll']);
    parts.push(() => true);
  }
  if (parts.length === 0) return { selector: undefined, key: undefined, saNames, saSel };
  const key = JSON.stringify(keyParts);
  if (parts.length === 1) return { selector: parts[0], key, saNames, saSel };
  return { selector: (e) => allOf(parts, e), key, saNames, saSel };
}

export function compileEntity(er: EntityRule | undefined, scope: RuleScope): CompiledEntity {
  if (!er) {
    return {
      selector: undefined,
      selectorKey: undefined,
      notSelector: undefined,
      notSelectorKey: undefined,
      nets: undefined,
      notNets: undefined,
      ports: undefined,
      notPorts: undefined,
      saNames: undefined,
      saSelector: undefined,
      service: undefined,
    };
  }
  const { selector, key, saNames, saSel } = compileEntitySelector(er, scope);
  let notSelector: CompiledEntity['notSelector'];
  let notSelectorKey: string | undefined;
  if (er.notSelector !== undefined && er.notSelector.trim() !== '') {
    const m = compileCalicoSelector(er.notSelector, scope.onSelectorError);
    notSelector = (e) => m(e.labels);
    notSelectorKey = JSON.stringify(['notSel', er.notSelector]);
  }
  return {
    selector,
    selectorKey: key,
    notSelector,
    notSelectorKey,
    nets: compileCidrs(er.nets),
    notNets: compileCidrs(er.notNets),
    ports: er.ports && er.ports.length > 0 ? er.ports.map(compilePort) : undefined,
    notPorts: er.notPorts && er.notPorts.length > 0 ? er.notPorts.map(compilePort) : undefined,
    saNames,
    saSelector: saSel,
    service: er.services
      ? { name: er.services.name, namespace: er.services.namespace ?? scope.namespace ?? 'default' }
      : undefined,
  };
}

export function compileRule(r: CalicoRule, index: number, scope: RuleScope): CompiledRule {
  return {
    index,
    action: r.action,
    protocol: protocolNumber(r.protocol),
    notProtocol: protocolNumber(r.notProtocol),
    icmp: r.icmp,
    notIcmp: r.notICMP,
    ipVersion: r.ipVersion,
    src: compileEntity(r.source, scope),
    dst: compileEntity(r.destination, scope),
    http: r.http,
  };
}

function inNets(ip: IpAddr | undefined, nets: readonly Cidr[]): boolean {
  if (!ip) return false;
  for (const n of nets) if (cidrContains(n, ip)) return true;
  return false;
}

/** Whether any entity behind the peer (its endpoint or a network set holding its address) matches. */
function peerMatches(peer: Peer, m: (e: Entity) => boolean): boolean {
  if (peer.endpoint && m(peer.endpoint)) return true;
  for (const s of peer.netsets) if (m(s)) return true;
  return false;
}

function portMatches(
  pm: PortMatch,
  port: number | undefined,
  protocol: number,
  ep: Endpoint | undefined,
): boolean {
  if (port === undefined) return false;
  if (pm.kind === 'range') return port >= pm.from && port <= pm.to;
  if (!ep) return false;
  for (const np of ep.namedPorts) {
    if (np.name === pm.name && np.protocol === protocol && np.port === port) return true;
  }
  return false;
}

function anyPort(
  list: readonly PortMatch[],
  port: number | undefined,
  protocol: number,
  ep: Endpoint | undefined,
): boolean {
  for (const p of list) if (portMatches(p, port, protocol, ep)) return true;
  return false;
}

function icmpMatches(
  want: { readonly type?: number; readonly code?: number },
  got: { readonly type?: number; readonly code?: number } | undefined,
): boolean {
  if (want.type !== undefined && got?.type !== want.type) return false;
  if (want.code !== undefined && got?.code !== want.code) return false;
  return true;
}

function matchSide(
  ce: CompiledEntity,
  peer: Peer,
  port: number | undefined,
  ctx: MatchContext,
  identity: PeerIdentity | null | undefined,
): boolean {
  if (ce.nets && !inNets(peer.ip, ce.nets)) return false;
  if (ce.notNets && inNets(peer.ip, ce.notNets)) return false;
  if (ce.ports && !anyPort(ce.ports, port, ctx.protocol, peer.endpoint)) return false;
  if (ce.notPorts && anyPort(ce.notPorts, port, ctx.protocol, peer.endpoint)) return false;
  if (ce.selector && !peerMatches(peer, ce.selector)) return false;
  if (ce.notSelector && peerMatches(peer, ce.notSelector)) return false;
  if (ce.service) {
    // A source service matches addresses only; a destination service also its ports.
    const checkPort = !ce.ports && port !== undefined && peer === ctx.dst;
    if (
      !ctx.serviceMatch(ce.service.namespace, ce.service.name, peer, ctx.protocol, port, checkPort)
    )
      return false;
  }
  // At L7 the cryptographic identity must satisfy the service-account match as well.
  if (identity !== undefined && (ce.saNames || ce.saSelector)) {
    if (identity === null) return false;
    if (ce.saNames && !ce.saNames.has(identity.serviceAccount)) return false;
    if (ce.saSelector && !ce.saSelector(identity.saLabels)) return false;
  }
  return true;
}

function httpMatches(h: HttpMatch, req: HttpRequest | undefined): boolean {
  if (!req) return false;
  if (h.methods && h.methods.length > 0 && !h.methods.includes(req.method)) return false;
  if (h.paths && h.paths.length > 0) {
    const ok = h.paths.some((p) =>
      p.exact !== undefined
        ? req.path === p.exact
        : p.prefix !== undefined && req.path.startsWith(p.prefix),
    );
    if (!ok) return false;
  }
  for (const hd of h.headers ?? []) {
    const v = req.headers[hd.header.toLowerCase()];
    const values = hd.values ?? [];
    switch (hd.operator) {
      case 'Exists':
        if (v === undefined) return false;
        break;
      case 'NotExists':
        if (v !== undefined) return false;
        break;
      case 'Equals':
        if (v === undefined || !values.includes(v)) return false;
        break;
      case 'NotEquals':
        if (v !== undefined && values.includes(v)) return false;
        break;
      case 'HasPrefix':
        if (v === undefined || !values.some((p) => v.startsWith(p))) return false;
        break;
      case 'Contains':
        if (v === undefined || !values.some((p) => v.includes(p))) return false;
        break;
    }
  }
  return true;
}

/**
 * Matches one rule. In the kernel, an `http` rule cannot be judged: an Allow rule whose L3/L4
 * part matches is handed on to the L7 point ('deferred') when there is one and does not match
 * otherwise (fail closed); Deny, Pass and Log rules with `http` are left to L7 entirely, since
 * the kernel cannot tell which requests they cover.
 */
export function matchRule(r: CompiledRule, ctx: MatchContext): RuleMatch {
  if (r.protocol !== undefined && r.protocol !== ctx.protocol) return 'no';
  if (r.notProtocol !== undefined && r.notProtocol === ctx.protocol) return 'no';
  if (r.ipVersion !== undefined && r.ipVersion !== ctx.family) return 'no';
  if (r.icmp && !icmpMatches(r.icmp, ctx.icmp)) return 'no';
  if (r.notIcmp && (r.notIcmp.type !== undefined || r.notIcmp.code !== undefined)) {
    if (ctx.icmp !== undefined && icmpMatches(r.notIcmp, ctx.icmp)) return 'no';
  }
  // Destination first: its ports are the cheapest and most selective test.
  if (!matchSide(r.dst, ctx.dst, ctx.dstPort, ctx, undefined)) return 'no';
  // Source ports are not known for a probe: a rule that requires some cannot be shown to match.
  if (
    !matchSide(r.src, ctx.src, ctx.srcPort, ctx, ctx.point === 'l7' ? ctx.srcIdentity : undefined)
  )
    return 'no';
  if (r.http) {
    if (ctx.point === 'kernel') {
      if (!ctx.l7Available || r.action !== 'Allow') return 'no';
      return 'deferred';
    }
    if (!httpMatches(r.http, ctx.request)) return 'no';
  }
  return 'yes';
}

// ------------------------------------------------------------------ precompiled kernel matching
//
// `matchRule` judges everything at once. For precompiled kernel decisions (kernel-program.ts) a
// rule is split, once per (protocol, port, family, L7 point), into what that fixes — decided now —
// and what depends on the two endpoints of the connection, checked per connection. The two
// functions below and `matchSidePlan` must agree with `matchRule` exactly; the differential test
// (`kernel-program.test.ts`) checks that they do.

/** What `matchRule` decides from the kernel connection's protocol, family and L7 point alone. */
export function kernelRuleStatic(
  r: CompiledRule,
  protocol: number,
  family: 4 | 6,
  l7Available: boolean,
): RuleMatch {
  if (r.protocol !== undefined && r.protocol !== protocol) return 'no';
  if (r.notProtocol !== undefined && r.notProtocol === protocol) return 'no';
  if (r.ipVersion !== undefined && r.ipVersion !== family) return 'no';
  // The kernel sees no ICMP type or code: a rule that names one cannot match, `notICMP` never
  // excludes (the same as `icmpMatches` with no ICMP header).
  if (r.icmp && !icmpMatches(r.icmp, undefined)) return 'no';
  if (r.http) return l7Available && r.action === 'Allow' ? 'deferred' : 'no';
  return 'yes';
}

/** The per-connection part of one side of a rule (the fields `matchSide` tests). */
export interface SidePlan {
  readonly nets: readonly Cidr[] | undefined;
  readonly notNets: readonly Cidr[] | undefined;
  /** Named ports of which one must match on the side's endpoint (no numeric port matched). */
  readonly namedPorts: readonly string[] | undefined;
  /** Named ports none of which may match on the side's endpoint. */
  readonly notNamedPorts: readonly string[] | undefined;
  readonly selector: ((e: Entity) => boolean) | undefined;
  readonly selectorKey: string | undefined;
  readonly notSelector: ((e: Entity) => boolean) | undefined;
  readonly notSelectorKey: string | undefined;
  readonly service: { readonly namespace: string; readonly name: string } | undefined;
  readonly serviceCheckPort: boolean;
}

function rangeHit(list: readonly PortMatch[], port: number): boolean {
  for (const p of list) if (p.kind === 'range' && port >= p.from && port <= p.to) return true;
  return false;
}

function namedOf(list: readonly PortMatch[]): string[] {
  const out: string[] = [];
  for (const p of list) if (p.kind === 'named') out.push(p.name);
  return out;
}

/**
 * Splits one side of a rule for a fixed port (the destination port on the destination side,
 * undefined on the source side): 'no' when the side can never match, `undefined` when it always
 * does, otherwise what remains to check per connection.
 */
export function planSide(
  ce: CompiledEntity,
  port: number | undefined,
): SidePlan | 'no' | undefined {
  let namedPorts: string[] | undefined;
  let notNamedPorts: string[] | undefined;
  if (ce.ports) {
    // An unknown port (source ports of a probe) cannot be shown to match.
    if (port === undefined) return 'no';
    if (!rangeHit(ce.ports, port)) {
      const named = namedOf(ce.ports);
      if (named.length === 0) return 'no';
      namedPorts = named;
    }
  }
  if (ce.notPorts && port !== undefined) {
    if (rangeHit(ce.notPorts, port)) return 'no';
    const named = namedOf(ce.notPorts);
    if (named.length > 0) notNamedPorts = named;
  }
  const plan: SidePlan = {
    nets: ce.nets,
    notNets: ce.notNets,
    namedPorts,
    notNamedPorts,
    selector: ce.selector,
    selectorKey: ce.selectorKey,
    notSelector: ce.notSelector,
    notSelectorKey: ce.notSelectorKey,
    service: ce.service,
    serviceCheckPort: !ce.ports && port !== undefined,
  };
  return sidePlanEmpty(plan) ? undefined : plan;
}

/** Whether a plan checks nothing (every connection matches). */
export function sidePlanEmpty(p: SidePlan): boolean {
  return (
    !p.nets &&
    !p.notNets &&
    !p.namedPorts &&
    !p.notNamedPorts &&
    !p.selector &&
    !p.notSelector &&
    !p.service
  );
}

function namedPortOn(
  names: readonly string[],
  ep: Endpoint | undefined,
  protocol: number,
  port: number | undefined,
): boolean {
  if (!ep || port === undefined) return false;
  for (const np of ep.namedPorts) {
    if (np.protocol !== protocol || np.port !== port) continue;
    for (const n of names) if (n === np.name) return true;
  }
  return false;
}

/** Whether one entity (an endpoint or a network set behind the peer) satisfies a selector. */
export function peerSatisfies(peer: Peer, m: (e: Entity) => boolean): boolean {
  return peerMatches(peer, m);
}

/** The per-connection check of a side plan: the same tests as `matchSide` in the kernel. */
export function matchSidePlan(
  p: SidePlan,
  peer: Peer,
  port: number | undefined,
  protocol: number,
  serviceMatch: MatchContext['serviceMatch'],
): boolean {
  if (p.nets && !inNets(peer.ip, p.nets)) return false;
  if (p.notNets && inNets(peer.ip, p.notNets)) return false;
  if (p.namedPorts && !namedPortOn(p.namedPorts, peer.endpoint, protocol, port)) return false;
  if (p.notNamedPorts && namedPortOn(p.notNamedPorts, peer.endpoint, protocol, port)) return false;
  if (p.selector && !peerMatches(peer, p.selector)) return false;
  if (p.notSelector && peerMatches(peer, p.notSelector)) return false;
  if (
    p.service &&
    !serviceMatch(p.service.namespace, p.service.name, peer, protocol, port, p.serviceCheckPort)
  )
    return false;
  return true;
}
