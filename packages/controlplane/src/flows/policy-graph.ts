// What policy allows, for the console's service graph beside the observed flows: every pair of
// workload endpoints the kernel would let connect on a port the destination declares (or, for
// a destination that declares none, a port the policies name), with the rule that decides it.
// Pairs that no policy restricts at all (neither the source's egress nor the destination's
// ingress is selected by any policy) are counted, not listed: they would be a complete graph.
// Owns: that computation over a resource set, pure and bounded. Must never: write anything, or
// block the server's event loop for long (it yields every few thousand decisions).

import { compile, formatIp } from '@palisade/core';
import type { Engine, Resource } from '@palisade/core';

export interface PolicyEdgeDecision {
  /** The side whose policy decided: the destination's ingress when it is selected, else the source's egress. */
  readonly direction: 'ingress' | 'egress';
  readonly kind: string;
  readonly tier?: string;
  readonly policy?: string;
  readonly rule?: number;
  readonly reason: string;
}

export interface PolicyEdge {
  readonly source: { readonly namespace: string; readonly name: string };
  readonly destination: { readonly namespace: string; readonly name: string };
  /** `TCP/5432` for each probed port the kernel allows. */
  readonly ports: readonly string[];
  readonly decision: PolicyEdgeDecision;
}

export interface PolicyGraphEndpoint {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  readonly labels: Readonly<Record<string, string>>;
  /** No policy selects it for ingress: any source may connect (such pairs are not listed). */
  readonly openIngress: boolean;
}

export interface PolicyGraph {
  readonly edges: readonly PolicyEdge[];
  readonly endpoints: readonly PolicyGraphEndpoint[];
  /** Allowed pairs found (`edges` holds at most `maxEdges` of them). */
  readonly pairs: number;
  /** Pairs no policy restricts (allowed, not listed). */
  readonly unrestricted: number;
  readonly truncated: boolean;
  /** Kernel decisions taken, and the endpoint classes they were taken for. */
  readonly checks: number;
  readonly classes: number;
  readonly computeMs: number;
}

export interface PolicyGraphOptions {
  /** Only pairs with an endpoint in this namespace. */
  readonly namespace?: string;
  readonly maxEdges?: number;
  readonly maxChecks?: number;
}

type Proto = 'TCP' | 'UDP' | 'SCTP';
const PROTO_NAME: Readonly<Record<number, Proto>> = { 6: 'TCP', 17: 'UDP', 132: 'SCTP' };

/**
 * Kinds and rule fields that make a decision depend on an endpoint's address (not only on its
 * labels, namespace and service account): with any of them, endpoints are judged one by one.
 */
const ADDRESS_KINDS = new Set(['NetworkSet', 'GlobalNetworkSet', 'HostEndpoint']);
const ADDRESS_FIELDS = /"(nets|notNets|ipBlock|services)"\s*:/;

function sorted(l: Readonly<Record<string, string>> | undefined): string {
  if (!l) return '';
  return JSON.stringify(
    Object.keys(l)
      .sort()
      .map((k) => [k, l[k]]),
  );
}

/** Ports pods and workload endpoints declare, by `namespace/name`. */
function declaredPorts(resources: readonly Resource[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (id: string, protocol: unknown, port: unknown) => {
    const p = typeof protocol === 'string' ? protocol.toUpperCase() : 'TCP';
    if ((p === 'TCP' || p === 'UDP' || p === 'SCTP') && typeof port === 'number')
      out.set(id, (out.get(id) ?? new Set()).add(`${p}/${port}`));
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

/** Numeric ports the policies' rules name (a destination without declared ports is probed on these). */
function rulePorts(resources: readonly Resource[]): string[] {
  const out = new Set<string>();
  const visit = (v: unknown, proto: string) => {
    if (Array.isArray(v)) for (const x of v) visit(x, proto);
    else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      const p = typeof o.protocol === 'string' ? o.protocol.toUpperCase() : proto;
      if (Array.isArray(o.ports))
        for (const x of o.ports) {
          if (typeof x === 'number') out.add(`${p}/${x}`);
          else if (typeof x === 'object' && x !== null) {
            const kp = x as { port?: unknown; protocol?: unknown };
            const kproto = typeof kp.protocol === 'string' ? kp.protocol.toUpperCase() : p;
            if (typeof kp.port === 'number') out.add(`${kproto}/${kp.port}`);
          }
        }
      for (const [k, x] of Object.entries(o)) if (k !== 'ports') visit(x, p);
    }
  };
  for (const r of resources)
    if (/NetworkPolicy$|^Profile$/.test(r.kind) && !r.kind.startsWith('Staged'))
      visit((r as { spec?: unknown }).spec, 'TCP');
  return [...out].filter((p) => /^(TCP|UDP|SCTP)\/\d+$/.test(p)).slice(0, 8);
}

function isolated(e: Engine, ep: string): { ingress: boolean; egress: boolean } {
  const a = e.activeTiers(ep);
  return {
    ingress: a?.ingress.some((t) => t.policies.length > 0) ?? false,
    egress: a?.egress.some((t) => t.policies.length > 0) ?? false,
  };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

export async function policyGraph(
  resources: readonly Resource[],
  options: PolicyGraphOptions = {},
): Promise<PolicyGraph> {
  const t0 = performance.now();
  const maxEdges = options.maxEdges ?? 5000;
  const maxChecks = options.maxChecks ?? 500_000;
  const engine = compile(resources);
  const ids = engine.workloadEndpoints();
  const declared = declaredPorts(resources);
  const fallback = rulePorts(resources);
  const byAddress = resources.some(
    (r) => ADDRESS_KINDS.has(r.kind) || ADDRESS_FIELDS.test(JSON.stringify(r)),
  );
  interface Info {
    id: string;
    namespace: string;
    name: string;
    ports: string[];
    iso: { ingress: boolean; egress: boolean };
    sig: string;
  }
  const infos: Info[] = [];
  const endpoints: PolicyGraphEndpoint[] = [];
  for (const id of ids) {
    const d = engine.describeEndpoint(id);
    if (!d || d.namespace === undefined) continue;
    const ports = new Set(declared.get(id) ?? []);
    for (const np of d.namedPorts) {
      const p = PROTO_NAME[np.protocol];
      if (p) ports.add(`${p}/${np.port}`);
    }
    const list = ports.size > 0 ? [...ports].sort() : fallback.length ? fallback : ['TCP/80'];
    const iso = isolated(engine, id);
    const name = id.slice(d.namespace.length + 1);
    // Endpoints alike in everything a selector or a port can see decide alike (unless a rule
    // looks at addresses): one decision per pair of classes.
    const sig = byAddress
      ? id
      : JSON.stringify([
          d.namespace,
          sorted(d.labels),
          sorted(d.nsView),
          d.serviceAccount ?? '',
          sorted(d.saView),
          list,
          d.namedPorts.map((p) => `${p.name}:${p.protocol}/${p.port}`).sort(),
        ]);
    infos.push({ id, namespace: d.namespace, name, ports: list, iso, sig });
    endpoints.push({
      namespace: d.namespace,
      name,
      ip: d.ips[0] ? formatIp(d.ips[0]) : '',
      labels: d.ownLabels,
      openIngress: !iso.ingress,
    });
  }
  const classes = new Map<string, Info[]>();
  for (const i of infos) classes.set(i.sig, [...(classes.get(i.sig) ?? []), i]);
  const list = [...classes.values()];
  const edges: PolicyEdge[] = [];
  let pairs = 0;
  let unrestricted = 0;
  let checks = 0;
  let truncated = false;
  const ns = options.namespace;
  outer: for (const ca of list) {
    for (const cb of list) {
      const a0 = ca[0] as Info;
      const b0 = cb[0] as Info;
      // Pairs of distinct endpoints in these classes (in scope).
      const members: [Info, Info][] = [];
      for (const a of ca)
        for (const b of cb)
          if (a !== b && (ns === undefined || a.namespace === ns || b.namespace === ns))
            members.push([a, b]);
      if (members.length === 0) continue;
      if (!a0.iso.egress && !b0.iso.ingress) {
        unrestricted += members.length;
        continue;
      }
      const [ra, rb] = members[0] as [Info, Info];
      const allowed: string[] = [];
      for (const port of rb.ports) {
        if (checks >= maxChecks) {
          truncated = true;
          break outer;
        }
        checks++;
        if (checks % 2000 === 0) await tick();
        const [proto = 'TCP', num = '0'] = port.split('/');
        if (engine.kernelAllows(ra.id, rb.id, proto, Number(num))) allowed.push(port);
      }
      if (allowed.length === 0) continue;
      const first = (allowed[0] as string).split('/');
      const c = engine.check(
        { from: ra.id, to: rb.id, protocol: first[0] ?? 'TCP', port: Number(first[1]) },
        false,
        true,
      );
      const side = rb.iso.ingress ? 'ingress' : 'egress';
      const prov = c.ok ? c.result.kernel[side].provenance : undefined;
      const decision: PolicyEdgeDecision = {
        direction: side,
        kind: prov?.kind ?? 'unknown',
        ...(prov?.tier !== undefined ? { tier: prov.tier } : {}),
        ...(prov?.policy !== undefined ? { policy: prov.policy } : {}),
        ...(prov?.rule !== undefined ? { rule: prov.rule } : {}),
        reason: prov?.reason ?? (c.ok ? '' : c.message),
      };
      pairs += members.length;
      for (const [a, b] of members) {
        if (edges.length >= maxEdges) {
          truncated = true;
          continue;
        }
        edges.push({
          source: { namespace: a.namespace, name: a.name },
          destination: { namespace: b.namespace, name: b.name },
          ports: allowed,
          decision,
        });
      }
    }
  }
  const key = (e: PolicyEdge) =>
    `${e.source.namespace}/${e.source.name}\u0000${e.destination.namespace}/${e.destination.name}`;
  edges.sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0));
  return {
    edges,
    endpoints: ns === undefined ? endpoints : endpoints.filter((e) => e.namespace === ns),
    pairs,
    unrestricted,
    truncated,
    checks,
    classes: list.length,
    computeMs: Math.round(performance.now() - t0),
  };
}
