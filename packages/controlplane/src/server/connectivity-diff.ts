// The server-side dry run's connectivity diff: which endpoint pairs, ports (and protocols) an
// apply newly allows or newly denies in the kernel, with the provenance before and after.
// Cost is bounded: only endpoints the change can affect are re-judged (those a changed policy
// selects before or after, those whose own resource, namespace or service account changed; every
// endpoint when a tier, profile, network set, service or Istio resource changed), against every
// endpoint, on the ports the changed policies name plus the affected endpoints' declared ports;
// at most `maxChecks` probes, after which the diff says it was truncated.
// Owns: that computation, pure over two resource sets. Must never: write anything.

import { compile } from '@palisade/core';
import type { DirectionVerdict, Engine, Resource } from '@palisade/core';

export interface PortProbe {
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
  readonly port: number;
}

export interface VerdictSummary {
  readonly verdict: 'allow' | 'deny';
  /** Why, at the source's egress and the destination's ingress. */
  readonly egress: string;
  readonly ingress: string;
  /** The deciding reason: the refusing side's, or both sides' when allowed. */
  readonly reason: string;
  readonly policy?: string;
  readonly tier?: string;
}

export interface ConnectivityChange {
  readonly from: string;
  readonly to: string;
  readonly protocol: string;
  readonly port: number;
  readonly change: 'newly-allowed' | 'newly-denied';
  readonly before: VerdictSummary;
  readonly after: VerdictSummary;
}

/** An HTTP route of a changed policy whose combined (kernel and L7) verdict flips. */
export interface RouteChange {
  readonly from: string;
  readonly to: string;
  readonly port: number;
  readonly method: string;
  readonly path: string;
  readonly change: 'newly-allowed' | 'newly-denied';
  readonly before: { readonly verdict: 'allow' | 'deny'; readonly reason: string };
  readonly after: { readonly verdict: 'allow' | 'deny'; readonly reason: string };
}

export interface HttpRoute {
  readonly method: string;
  readonly path: string;
  readonly port: number;
}

export interface ConnectivityDiff {
  /** The routes named by the changed policies' `http` rules, judged at L7 too. */
  readonly routes: readonly HttpRoute[];
  readonly routeChanges: readonly RouteChange[];
  /** Endpoints the change creates or removes: their pairs have no before (or after) to compare. */
  readonly addedEndpoints: readonly string[];
  readonly removedEndpoints: readonly string[];
  readonly affectedEndpoints: number;
  readonly endpoints: number;
  readonly ports: readonly PortProbe[];
  readonly checks: number;
  readonly truncated: boolean;
  readonly changes: readonly ConnectivityChange[];
}

export interface ChangedResource {
  readonly before: Resource | undefined;
  readonly after: Resource | undefined;
}

const GLOBAL_EFFECT = new Set([
  'Tier',
  'Profile',
  'NetworkSet',
  'GlobalNetworkSet',
  'Service',
  'AuthorizationPolicy',
  'PeerAuthentication',
]);
const POLICY_KINDS = new Set([
  'NetworkPolicy',
  'GlobalNetworkPolicy',
  'StagedNetworkPolicy',
  'StagedGlobalNetworkPolicy',
  'StagedKubernetesNetworkPolicy',
]);
const PROTO_NAME: Readonly<Record<number, PortProbe['protocol']>> = {
  6: 'TCP',
  17: 'UDP',
  132: 'SCTP',
};

function policyKey(r: Resource): string {
  const ns = r.metadata.namespace;
  return `${r.kind}/${['NetworkPolicy', 'StagedNetworkPolicy', 'StagedKubernetesNetworkPolicy'].includes(r.kind) ? (ns ?? 'default') : ''}/${r.metadata.name}`;
}

/** A rule that matches every port is probed on TCP/80, a representative of "any other port". */
const ANY_PORT: PortProbe = { protocol: 'TCP', port: 80 };

function addRulePorts(r: Resource, out: Map<string, PortProbe>): void {
  const add = (protocol: unknown, port: unknown) => {
    const p = typeof protocol === 'string' ? protocol.toUpperCase() : 'TCP';
    if (p !== 'TCP' && p !== 'UDP' && p !== 'SCTP') return;
    if (typeof port === 'number' && port > 0 && port < 65536)
      out.set(`${p}/${port}`, { protocol: p, port });
    if (typeof port === 'string' && /^\d+:\d+$/.test(port)) {
      const [a, b] = port.split(':').map(Number);
      if (a !== undefined && b !== undefined) {
        out.set(`${p}/${a}`, { protocol: p, port: a });
        out.set(`${p}/${b}`, { protocol: p, port: b });
      }
    }
  };
  const spec = (r as { spec?: Record<string, unknown> }).spec ?? {};
  for (const dir of ['ingress', 'egress'] as const) {
    const rules = spec[dir];
    if (!Array.isArray(rules)) continue;
    for (const rule of rules as Record<string, unknown>[]) {
      const src = rule.source as { ports?: unknown[] } | undefined;
      const dst = rule.destination as { ports?: unknown[] } | undefined;
      const k8sPorts = rule.ports as unknown[] | undefined;
      if (!src?.ports?.length && !dst?.ports?.length && !k8sPorts?.length)
        out.set('TCP/80', ANY_PORT);
      // Calico rules
      for (const side of ['source', 'destination'] as const) {
        const ent = rule[side] as { ports?: unknown[]; notPorts?: unknown[] } | undefined;
        for (const p of [...(ent?.ports ?? []), ...(ent?.notPorts ?? [])])
          add(rule.protocol ?? 'TCP', p);
      }
      // Kubernetes rules
      for (const p of (rule.ports as
        { protocol?: string; port?: unknown; endPort?: number }[] | undefined) ?? []) {
        add(p.protocol ?? 'TCP', p.port);
        if (p.endPort !== undefined) add(p.protocol ?? 'TCP', p.endPort);
      }
    }
  }
}

/** Ports pods and workload endpoints declare (named or not), by `namespace/name`. */
function declaredPorts(resources: readonly Resource[]): Map<string, PortProbe[]> {
  const out = new Map<string, PortProbe[]>();
  const add = (id: string, protocol: unknown, port: unknown) => {
    const p = typeof protocol === 'string' ? protocol.toUpperCase() : 'TCP';
    if ((p === 'TCP' || p === 'UDP' || p === 'SCTP') && typeof port === 'number')
      out.set(id, [...(out.get(id) ?? []), { protocol: p, port }]);
  };
  for (const r of resources) {
    const ns = r.metadata.namespace ?? 'default';
    if (r.kind === 'Pod')
      for (const c of [...(r.spec.containers ?? []), ...(r.spec.initContainers ?? [])])
        for (const cp of c.ports ?? [])
          add(`${ns}/${r.metadata.name}`, cp.protocol, cp.containerPort);
    if (r.kind === 'WorkloadEndpoint')
      for (const ep of r.spec.ports ?? [])
        add(`${ns}/${r.spec.pod ?? r.spec.workload ?? r.metadata.name}`, ep.protocol, ep.port);
  }
  return out;
}

/** The routes the `http` rules of a Calico policy name (first method, each exact or prefix path). */
function addRoutes(r: Resource, ports: readonly PortProbe[], out: Map<string, HttpRoute>): void {
  const spec = (r as { spec?: Record<string, unknown> }).spec ?? {};
  for (const dir of ['ingress', 'egress'] as const) {
    const rules = spec[dir];
    if (!Array.isArray(rules)) continue;
    for (const rule of rules as {
      http?: { methods?: string[]; paths?: { exact?: string; prefix?: string }[] };
      destination?: { ports?: unknown[] };
    }[]) {
      if (!rule.http) continue;
      const methods = rule.http.methods?.length ? rule.http.methods : ['GET'];
      const paths = rule.http.paths?.length
        ? rule.http.paths.map((x) => x.exact ?? x.prefix ?? '/')
        : ['/'];
      const rulePorts = (rule.destination?.ports ?? []).filter(
        (x): x is number => typeof x === 'number',
      );
      const on =
        rulePorts.length > 0
          ? rulePorts
          : ports.filter((x) => x.protocol === 'TCP').map((x) => x.port);
      for (const method of methods.slice(0, 4))
        for (const path of paths.slice(0, 16))
          for (const port of on.slice(0, 4))
            out.set(`${method} ${port} ${path}`, { method, path, port });
    }
  }
}

function routeVerdict(
  e: Engine,
  from: string,
  to: string,
  r: HttpRoute,
): { verdict: 'allow' | 'deny'; reason: string } {
  const c = e.check(
    { from, to, protocol: 'TCP', port: r.port, method: r.method, path: r.path },
    false,
  );
  if (!c.ok) return { verdict: 'deny', reason: c.message };
  const k = c.result.kernel;
  const reason =
    k.egress.verdict === 'deny'
      ? k.egress.provenance.reason
      : k.ingress.verdict === 'deny'
        ? k.ingress.provenance.reason
        : c.result.l7.provenance.reason;
  return { verdict: c.result.verdict, reason };
}

function summary(e: Engine, from: string, to: string, probe: PortProbe): VerdictSummary {
  const r = e.check({ from, to, protocol: probe.protocol, port: probe.port }, false, true);
  if (!r.ok) return { verdict: 'deny', egress: r.message, ingress: r.message, reason: r.message };
  const k = r.result.kernel;
  const decided: DirectionVerdict = k.egress.verdict === 'deny' ? k.egress : k.ingress;
  return {
    verdict: k.egress.verdict === 'allow' && k.ingress.verdict === 'allow' ? 'allow' : 'deny',
    egress: k.egress.provenance.reason,
    ingress: k.ingress.provenance.reason,
    reason:
      k.egress.verdict === 'deny'
        ? `egress: ${k.egress.provenance.reason}`
        : k.ingress.verdict === 'deny'
          ? `ingress: ${k.ingress.provenance.reason}`
          : `egress: ${k.egress.provenance.reason}; ingress: ${k.ingress.provenance.reason}`,
    ...(decided.provenance.policy !== undefined ? { policy: decided.provenance.policy } : {}),
    ...(decided.provenance.tier !== undefined ? { tier: decided.provenance.tier } : {}),
  };
}

function activeKeys(e: Engine, ep: string): Set<string> {
  const a = e.activeTiers(ep);
  const out = new Set<string>();
  if (!a) return out;
  for (const t of [...a.ingress, ...a.egress])
    for (const p of [...t.policies, ...t.staged]) out.add(p.key);
  return out;
}

export function connectivityDiff(
  before: readonly Resource[],
  after: readonly Resource[],
  changed: readonly ChangedResource[],
  options: { maxChecks?: number; maxChanges?: number } = {},
): ConnectivityDiff {
  const maxChecks = options.maxChecks ?? 200_000;
  const maxChanges = options.maxChanges ?? 1000;
  const eb = compile(before);
  const ea = compile(after);
  const endpoints = [...new Set([...ea.workloadEndpoints(), ...eb.workloadEndpoints()])].sort();
  const changedPolicies = new Set<string>();
  const ports = new Map<string, PortProbe>();
  const direct = new Set<string>();
  let everything = false;
  for (const c of changed) {
    for (const r of [c.before, c.after]) {
      if (!r) continue;
      if (POLICY_KINDS.has(r.kind)) {
        changedPolicies.add(policyKey(r));
        addRulePorts(r, ports);
      } else if (GLOBAL_EFFECT.has(r.kind)) {
        everything = true;
        if (r.kind === 'Profile') addRulePorts(r, ports);
      } else if (r.kind === 'Namespace') {
        for (const ep of endpoints) if (ep.startsWith(`${r.metadata.name}/`)) direct.add(ep);
      } else if (r.kind === 'ServiceAccount') {
        for (const ep of endpoints) {
          const d = ea.describeEndpoint(ep) ?? eb.describeEndpoint(ep);
          if (d && d.namespace === r.metadata.namespace && d.serviceAccount === r.metadata.name)
            direct.add(ep);
        }
      } else if (r.kind === 'Pod' || r.kind === 'WorkloadEndpoint') {
        const ns = r.metadata.namespace ?? 'default';
        const pod =
          r.kind === 'WorkloadEndpoint'
            ? (r.spec.pod ?? r.spec.workload ?? r.metadata.name)
            : r.metadata.name;
        direct.add(`${ns}/${pod}`);
      }
    }
  }
  const affected = endpoints.filter((ep) => {
    if (everything || direct.has(ep)) return true;
    for (const k of activeKeys(eb, ep)) if (changedPolicies.has(k)) return true;
    for (const k of activeKeys(ea, ep)) if (changedPolicies.has(k)) return true;
    return false;
  });
  const declared = declaredPorts([...before, ...after]);
  for (const ep of affected) {
    for (const p of declared.get(ep) ?? []) ports.set(`${p.protocol}/${p.port}`, p);
    for (const e of [eb, ea])
      for (const np of e.describeEndpoint(ep)?.namedPorts ?? []) {
        const p = PROTO_NAME[np.protocol];
        if (p) ports.set(`${p}/${np.port}`, { protocol: p, port: np.port });
      }
  }
  if (ports.size === 0) ports.set('TCP/80', { protocol: 'TCP', port: 80 });
  const portList = [...ports.values()].sort(
    (a, b) => a.protocol.localeCompare(b.protocol) || a.port - b.port,
  );
  const inBefore = new Set(eb.workloadEndpoints());
  const inAfter = new Set(ea.workloadEndpoints());
  const comparable = (ep: string) => inBefore.has(ep) && inAfter.has(ep);
  const affectedSet = new Set(affected);
  const changes: ConnectivityChange[] = [];
  let checks = 0;
  let truncated = false;
  outer: for (const a of endpoints) {
    for (const b of endpoints) {
      if (a === b || (!affectedSet.has(a) && !affectedSet.has(b))) continue;
      if (!comparable(a) || !comparable(b)) continue;
      for (const probe of portList) {
        if (checks >= maxChecks || changes.length >= maxChanges) {
          truncated = true;
          break outer;
        }
        checks++;
        const was = eb.kernelAllows(a, b, probe.protocol, probe.port);
        const is = ea.kernelAllows(a, b, probe.protocol, probe.port);
        if (was === is) continue;
        changes.push({
          from: a,
          to: b,
          protocol: probe.protocol,
          port: probe.port,
          change: is ? 'newly-allowed' : 'newly-denied',
          before: summary(eb, a, b, probe),
          after: summary(ea, a, b, probe),
        });
      }
    }
  }
  const routes = new Map<string, HttpRoute>();
  for (const c of changed)
    for (const r of [c.before, c.after])
      if (r && POLICY_KINDS.has(r.kind)) addRoutes(r, portList, routes);
  const routeList = [...routes.values()].slice(0, 64);
  const routeChanges: RouteChange[] = [];
  if (routeList.length > 0)
    outerRoutes: for (const a of endpoints) {
      for (const b of endpoints) {
        if (a === b || (!affectedSet.has(a) && !affectedSet.has(b))) continue;
        if (!comparable(a) || !comparable(b)) continue;
        for (const route of routeList) {
          if (checks >= maxChecks || routeChanges.length >= maxChanges) {
            truncated = true;
            break outerRoutes;
          }
          checks++;
          const was = routeVerdict(eb, a, b, route);
          const is = routeVerdict(ea, a, b, route);
          if (was.verdict === is.verdict) continue;
          routeChanges.push({
            from: a,
            to: b,
            ...route,
            change: is.verdict === 'allow' ? 'newly-allowed' : 'newly-denied',
            before: was,
            after: is,
          });
        }
      }
    }
  return {
    routes: routeList,
    routeChanges,
    addedEndpoints: endpoints.filter((e) => !inBefore.has(e)),
    removedEndpoints: endpoints.filter((e) => !inAfter.has(e)),
    affectedEndpoints: affected.length,
    endpoints: endpoints.length,
    ports: portList,
    checks,
    truncated,
    changes,
  };
}
