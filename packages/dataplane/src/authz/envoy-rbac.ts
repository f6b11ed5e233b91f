// `palisade export envoy-rbac`: an endpoint's L7 policy as Envoy RBAC HTTP filter configuration
// (`envoy.extensions.filters.http.rbac.v3.RBAC`). Owns: the translation. Must never: emit a
// configuration that allows a request the engine denies.
//
// How: the policy is not translated rule by rule (tiers, Pass, order, default deny, profiles and
// the Istio layer do not map onto RBAC's unordered policies). Instead every attribute the policy
// can test is collected as an atom — each CIDR and endpoint address for the source, the source's
// certificate, the destination port, each method, path and header test — and the request space is
// cut into classes: the requests that satisfy exactly the same atoms. The engine decides every
// class once, through the same `PolicyView.decideInbound` the sidecar and the ext_authz server
// call, on one representative request; the filter then allows exactly the union of the classes
// that were allowed, each written as the conjunction of its atoms. Two requests of one class are
// indistinguishable to the policy, so they get the same verdict; a class for which no
// representative was found is never allowed. Constructs whose atoms this does not model are
// refused with their name and where they are.

import { cidrContains, cidrWithin, compile, formatIp, parseCidr } from '@palisade/core';
import type { Cidr, Engine, HttpMatch, IpAddr, Resource } from '@palisade/core';
import { PolicyView } from '../sidecar/policy-view.js';

// ------------------------------------------------------------------ Envoy configuration shapes
// Field names are those of envoy.config.rbac.v3 and envoy.type.matcher.v3 (snake_case, as Envoy
// accepts them in YAML and JSON).

export type StringMatcher =
  | { readonly exact: string }
  | { readonly prefix: string }
  | { readonly suffix: string }
  | { readonly contains: string };
export interface HeaderMatcher {
  readonly name: string;
  readonly string_match?: StringMatcher;
  readonly present_match?: boolean;
}
export interface CidrRange {
  readonly address_prefix: string;
  readonly prefix_len: number;
}
export type Permission =
  | { readonly any: true }
  | { readonly and_rules: { readonly rules: readonly Permission[] } }
  | { readonly or_rules: { readonly rules: readonly Permission[] } }
  | { readonly not_rule: Permission }
  | { readonly header: HeaderMatcher }
  | { readonly url_path: { readonly path: StringMatcher } }
  | { readonly destination_port: number };
export type Principal =
  | { readonly any: true }
  | { readonly and_ids: { readonly ids: readonly Principal[] } }
  | { readonly or_ids: { readonly ids: readonly Principal[] } }
  | { readonly not_id: Principal }
  | { readonly authenticated: { readonly principal_name?: StringMatcher } }
  | { readonly direct_remote_ip: CidrRange };
export interface RbacPolicy {
  readonly permissions: readonly Permission[];
  readonly principals: readonly Principal[];
}
export interface RbacRules {
  readonly action: 'ALLOW' | 'DENY';
  readonly policies: Readonly<Record<string, RbacPolicy>>;
}
export interface RbacHttpFilter {
  readonly name: 'envoy.filters.http.rbac';
  readonly typed_config: {
    readonly '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
    readonly rules: RbacRules;
  };
}

export interface RbacExportOptions {
  readonly endpoint: string;
  /** The endpoint's ports Envoy serves; default: its declared TCP container ports. */
  readonly ports?: readonly number[];
  readonly trustDomain?: string;
  readonly istioRootNamespace?: string;
  /** Upper bound on decisions evaluated (default 300 000). */
  readonly maxEvaluations?: number;
}

export interface RbacExportSummary {
  readonly endpoint: string;
  readonly identity: string;
  readonly ports: readonly number[];
  readonly sourceClasses: number;
  readonly requestClasses: number;
  readonly evaluations: number;
  readonly allowedClasses: number;
}

export type RbacExportResult =
  | {
      readonly ok: true;
      /** The chain, in order, to place before the router filter. */
      readonly filters: readonly RbacHttpFilter[];
      readonly summary: RbacExportSummary;
    }
  | {
      readonly ok: false;
      readonly code: 'EXPORT_ERR_UNSUPPORTED' | 'EXPORT_ERR_INPUT';
      readonly message: string;
    };

class Unsupported extends Error {}

// ------------------------------------------------------------------ formulas

const ANY_P: Permission = { any: true };
const NONE_P: Permission = { not_rule: { any: true } };

function andP(xs: readonly Permission[]): Permission {
  const ys = xs
    .flatMap((x) => ('and_rules' in x ? x.and_rules.rules : [x]))
    .filter((x) => !('any' in x));
  if (ys.length === 0) return ANY_P;
  if (ys.length === 1) return ys[0] as Permission;
  return { and_rules: { rules: ys } };
}
function orP(xs: readonly Permission[]): Permission {
  if (xs.length === 0) return NONE_P;
  if (xs.some((x) => 'any' in x)) return ANY_P;
  if (xs.length === 1) return xs[0] as Permission;
  return { or_rules: { rules: xs } };
}
function notP(x: Permission): Permission {
  return 'not_rule' in x ? x.not_rule : { not_rule: x };
}
function andI(xs: readonly Principal[]): Principal {
  const ys = xs.flatMap((x) => ('and_ids' in x ? x.and_ids.ids : [x])).filter((x) => !('any' in x));
  if (ys.length === 0) return { any: true };
  if (ys.length === 1) return ys[0] as Principal;
  return { and_ids: { ids: ys } };
}
function orI(xs: readonly Principal[]): Principal {
  if (xs.length === 1) return xs[0] as Principal;
  return { or_ids: { ids: xs } };
}

// ------------------------------------------------------------------ request-side atoms

interface HttpRep {
  readonly method: string;
  readonly target: string;
  readonly headers: Readonly<Record<string, string>>;
}

interface Atom {
  readonly key: string;
  readonly test: (r: HttpRep) => boolean;
  readonly permission: Permission;
}

const MARK = 'z~';

function pathOnly(target: string): string {
  return target.split('?')[0]?.split('#')[0] ?? target;
}

/** One dimension of the request: its atoms and representative requests. */
interface Dimension {
  readonly atoms: Atom[];
  readonly reps: HttpRep[];
}

interface ClassOf {
  readonly key: string;
  readonly formula: Permission;
  readonly rep: HttpRep;
}

/** Representatives deduplicated by the atoms they satisfy, each with its exact formula. */
function classes(d: Dimension): ClassOf[] {
  const out = new Map<string, ClassOf>();
  for (const r of d.reps) {
    const bits = d.atoms.map((a) => a.test(r));
    const key = bits.map((b) => (b ? '1' : '0')).join('');
    if (out.has(key)) continue;
    const formula = andP(d.atoms.map((a, i) => (bits[i] ? a.permission : notP(a.permission))));
    out.set(key, { key, formula, rep: r });
  }
  return [...out.values()];
}

interface Collected {
  readonly methods: Set<string>;
  readonly calicoExact: Set<string>;
  readonly calicoPrefix: Set<string>;
  readonly istioExact: Set<string>;
  readonly istioPrefix: Set<string>;
  readonly istioSuffix: Set<string>;
  /** header name → its tests. */
  readonly headers: Map<
    string,
    { exact: Set<string>; prefix: Set<string>; suffix: Set<string>; contains: Set<string> }
  >;
}

const ISTIO_KEYS = new Set([
  'source.ip',
  'remote.ip',
  'destination.ip',
  'source.namespace',
  'source.principal',
  'destination.port',
  'connection.sni',
]);

function headerEntry(
  c: Collected,
  name: string,
  where: string,
): NonNullable<ReturnType<Collected['headers']['get']>> {
  const n = name.toLowerCase();
  if (n === 'host' || n.startsWith(':'))
    throw new Unsupported(`${where}: a match on the ${JSON.stringify(n)} header`);
  let e = c.headers.get(n);
  if (!e) {
    e = { exact: new Set(), prefix: new Set(), suffix: new Set(), contains: new Set() };
    c.headers.set(n, e);
  }
  return e;
}

function istioPattern(
  p: string,
  sets: { exact: Set<string>; prefix: Set<string>; suffix: Set<string> },
): void {
  if (p === '*') return; // presence: the atom "non-empty" is added by the caller where it matters
  if (p.startsWith('*')) sets.suffix.add(p.slice(1));
  else if (p.endsWith('*')) sets.prefix.add(p.slice(0, -1));
  else sets.exact.add(p);
}

function collect(resources: readonly Resource[]): Collected {
  const c: Collected = {
    methods: new Set(),
    calicoExact: new Set(),
    calicoPrefix: new Set(),
    istioExact: new Set(),
    istioPrefix: new Set(),
    istioSuffix: new Set(),
    headers: new Map(),
  };
  for (const r of resources) {
    const where = `${r.kind} ${r.metadata.namespace ? `${r.metadata.namespace}/` : ''}${r.metadata.name}`;
    switch (r.kind) {
      case 'NetworkPolicy':
      case 'GlobalNetworkPolicy':
      case 'Profile': {
        if (r.apiVersion !== 'projectcalico.org/v3') break;
        const spec = r.spec as {
          ingress?: readonly { http?: HttpMatch }[];
          egress?: readonly { http?: HttpMatch }[];
        };
        // Egress rules too: more atoms only refine the classes, never merge two of them.
        for (const rule of [...(spec.ingress ?? []), ...(spec.egress ?? [])]) {
          const h = rule.http;
          if (!h) continue;
          for (const m of h.methods ?? []) c.methods.add(m);
          for (const p of h.paths ?? []) {
            if (p.exact !== undefined) c.calicoExact.add(p.exact);
            if (p.prefix !== undefined) c.calicoPrefix.add(p.prefix);
          }
          for (const hd of h.headers ?? []) {
            const e = headerEntry(c, hd.header, where);
            for (const v of hd.values ?? []) {
              switch (hd.operator) {
                case 'Equals':
                case 'NotEquals':
                  e.exact.add(v);
                  break;
                case 'HasPrefix':
                  e.prefix.add(v);
                  break;
                case 'Contains':
                  e.contains.add(v);
                  break;
                case 'Exists':
                case 'NotExists':
                  break;
              }
            }
          }
        }
        break;
      }
      case 'AuthorizationPolicy': {
        const spec = r.spec;
        for (const [i, rule] of (spec.rules ?? []).entries()) {
          const at = `${where} rule ${i}`;
          for (const t of rule.to ?? []) {
            const o = t.operation;
            if (o.hosts !== undefined || o.notHosts !== undefined)
              throw new Unsupported(`${at}: to.operation.hosts/notHosts`);
            for (const m of [...(o.methods ?? []), ...(o.notMethods ?? [])]) {
              if (m === '*') continue;
              if (m.includes('*'))
                throw new Unsupported(`${at}: the method pattern ${JSON.stringify(m)}`);
              c.methods.add(m);
            }
            for (const p of [...(o.paths ?? []), ...(o.notPaths ?? [])]) {
              if (p.includes('{'))
                throw new Unsupported(`${at}: the path template ${JSON.stringify(p)}`);
              istioPattern(p, {
                exact: c.istioExact,
                prefix: c.istioPrefix,
                suffix: c.istioSuffix,
              });
            }
          }
          for (const w of rule.when ?? []) {
            const hm = /^request\.headers\[(.+)\]$/.exec(w.key);
            if (hm) {
              const e = headerEntry(c, hm[1] ?? '', at);
              for (const v of [...(w.values ?? []), ...(w.notValues ?? [])]) istioPattern(v, e);
              continue;
            }
            if (w.key.startsWith('request.auth.') || ISTIO_KEYS.has(w.key)) continue;
            throw new Unsupported(`${at}: the condition key ${JSON.stringify(w.key)}`);
          }
        }
        break;
      }
      // Legacy Istio RBAC matches on services, constraints and properties this export does not
      // partition requests by: refused rather than sampled too coarsely (which could allow more).
      case 'ServiceRole':
      case 'ServiceRoleBinding':
      case 'RbacConfig':
      case 'ClusterRbacConfig':
        throw new Unsupported(
          `${where}: legacy Istio RBAC (rbac.istio.io/v1alpha1); express it as an AuthorizationPolicy to export it`,
        );
      default:
        break;
    }
  }
  return c;
}

function methodDimension(c: Collected): { classes: ClassOf[] } {
  const lits = [...c.methods].sort();
  const out: ClassOf[] = lits.map((m) => ({
    key: m,
    formula: { header: { name: ':method', string_match: { exact: m } } },
    rep: { method: m, target: '/', headers: {} },
  }));
  let other = 'GET';
  for (const cand of [
    'GET',
    'POST',
    'PUT',
    'DELETE',
    'PATCH',
    'HEAD',
    'OPTIONS',
    `X${MARK.replace('~', 'Q')}`,
  ]) {
    if (!c.methods.has(cand)) {
      other = cand;
      break;
    }
  }
  if (!c.methods.has(other))
    out.push({
      key: '*other*',
      formula: notP(
        orP(lits.map((m) => ({ header: { name: ':method', string_match: { exact: m } } }))),
      ),
      rep: { method: other, target: '/', headers: {} },
    });
  return { classes: out };
}

function pathDimension(c: Collected): { classes: ClassOf[] } {
  const atoms: Atom[] = [];
  for (const e of [...c.calicoExact].sort())
    atoms.push({
      key: `cx:${e}`,
      test: (r) => r.target === e,
      permission: { header: { name: ':path', string_match: { exact: e } } },
    });
  for (const p of [...c.calicoPrefix].sort())
    atoms.push({
      key: `cp:${p}`,
      test: (r) => r.target.startsWith(p),
      permission: { header: { name: ':path', string_match: { prefix: p } } },
    });
  for (const e of [...c.istioExact].sort())
    atoms.push({
      key: `ix:${e}`,
      test: (r) => pathOnly(r.target) === e,
      permission: { url_path: { path: { exact: e } } },
    });
  for (const p of [...c.istioPrefix].sort())
    atoms.push({
      key: `ip:${p}`,
      test: (r) => pathOnly(r.target).startsWith(p),
      permission: { url_path: { path: { prefix: p } } },
    });
  for (const s of [...c.istioSuffix].sort())
    atoms.push({
      key: `is:${s}`,
      test: (r) => pathOnly(r.target).endsWith(s),
      permission: { url_path: { path: { suffix: s } } },
    });
  const bases = new Set<string>(['/', `/${MARK}`]);
  const prefixes = [...c.calicoPrefix, ...c.istioPrefix];
  for (const e of [...c.calicoExact, ...c.istioExact]) bases.add(e);
  for (const p of prefixes) {
    bases.add(p);
    bases.add(`${p}${MARK}`);
    bases.add(`${p}/${MARK}`);
  }
  for (const s of c.istioSuffix) {
    bases.add(s);
    bases.add(`/${MARK}${s}`);
    for (const p of prefixes) bases.add(`${p}${MARK}${s}`);
  }
  const reps: HttpRep[] = [];
  for (const b of bases)
    for (const t of [b, `${b}?${MARK}=1`, b.endsWith('/') ? `${b}${MARK}` : `${b}/`])
      if (t.startsWith('/')) reps.push({ method: 'GET', target: t, headers: {} });
  return { classes: classes({ atoms, reps }) };
}

function headerDimension(c: Collected): { classes: ClassOf[] } {
  // The product of every header's classes.
  let acc: { key: string; formula: Permission[]; headers: Record<string, string> }[] = [
    { key: '', formula: [], headers: {} },
  ];
  for (const [name, e] of [...c.headers].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const atoms: Atom[] = [
      {
        key: 'present',
        test: (r) => r.headers[name] !== undefined,
        permission: { header: { name, present_match: true } },
      },
      {
        key: 'empty',
        test: (r) => r.headers[name] === '',
        permission: { header: { name, string_match: { exact: '' } } },
      },
    ];
    const hv = (r: HttpRep): string | undefined => r.headers[name];
    for (const v of [...e.exact].sort())
      atoms.push({
        key: `x:${v}`,
        test: (r) => hv(r) === v,
        permission: { header: { name, string_match: { exact: v } } },
      });
    for (const v of [...e.prefix].sort())
      atoms.push({
        key: `p:${v}`,
        test: (r) => hv(r)?.startsWith(v) === true,
        permission: { header: { name, string_match: { prefix: v } } },
      });
    for (const v of [...e.suffix].sort())
      atoms.push({
        key: `s:${v}`,
        test: (r) => hv(r)?.endsWith(v) === true,
        permission: { header: { name, string_match: { suffix: v } } },
      });
    for (const v of [...e.contains].sort())
      atoms.push({
        key: `c:${v}`,
        test: (r) => hv(r)?.includes(v) === true,
        permission: { header: { name, string_match: { contains: v } } },
      });
    const values = new Set<string | undefined>([undefined, '', MARK]);
    for (const v of e.exact) values.add(v);
    for (const v of e.prefix) {
      values.add(v);
      values.add(`${v}${MARK}`);
      for (const s of e.suffix) values.add(`${v}${MARK}${s}`);
    }
    for (const v of e.suffix) {
      values.add(v);
      values.add(`${MARK}${v}`);
    }
    for (const v of e.contains) values.add(`${MARK}${v}${MARK}`);
    const reps: HttpRep[] = [...values].map((v) => ({
      method: 'GET',
      target: '/',
      headers: v === undefined ? {} : { [name]: v },
    }));
    const cls = classes({ atoms, reps });
    const next: typeof acc = [];
    for (const a of acc)
      for (const k of cls)
        next.push({
          key: `${a.key}|${name}=${k.key}`,
          formula: [...a.formula, k.formula],
          headers: { ...a.headers, ...k.rep.headers },
        });
    acc = next;
    if (acc.length > 10_000)
      throw new Unsupported('the header tests combine into more than 10 000 classes');
  }
  return {
    classes: acc.map((a) => ({
      key: a.key,
      formula: andP(a.formula),
      rep: { method: 'GET', target: '/', headers: a.headers },
    })),
  };
}

// ------------------------------------------------------------------ source-side classes

interface SourceClass {
  readonly name: string;
  readonly ip: string;
  readonly principal: string | null;
  readonly formula: Principal;
}

function range(c: Cidr): CidrRange {
  return { address_prefix: formatIp({ family: c.family, value: c.base }), prefix_len: c.prefix };
}
function hostRange(ip: IpAddr): CidrRange {
  return { address_prefix: formatIp(ip), prefix_len: ip.family === 4 ? 32 : 128 };
}
const PLAINTEXT: Principal = { not_id: { authenticated: {} } };

/** Every IP or CIDR written anywhere in the resources (policy nets, network sets, ipBlocks, conditions). */
function sweepCidrs(resources: readonly Resource[]): Cidr[] {
  const out = new Map<string, Cidr>();
  const visit = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.length > 50 || !/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(v)) return;
      const c = parseCidr(v);
      if (c) out.set(`${c.family}/${c.base}/${c.prefix}`, c);
    } else if (Array.isArray(v)) for (const x of v) visit(x);
    else if (v && typeof v === 'object') for (const x of Object.values(v)) visit(x);
  };
  for (const r of resources) visit(r);
  return [...out.values()];
}

function lastOf(c: Cidr): bigint {
  const bits = c.family === 4 ? 32 : 128;
  return c.base + (1n << BigInt(bits - c.prefix)) - 1n;
}

function sourceClasses(engine: Engine, resources: readonly Resource[]): SourceClass[] {
  const out: SourceClass[] = [];
  const endpointIps: IpAddr[] = [];
  const seen = new Set<string>();
  for (const id of [...engine.workloadEndpoints(), ...engine.hostEndpoints()]) {
    const ep = engine.describeEndpoint(id);
    if (!ep) continue;
    const identity =
      ep.kind === 'workload' && ep.namespace !== undefined && ep.serviceAccount !== undefined
        ? `spiffe://${engine.trustDomain}/ns/${ep.namespace}/sa/${ep.serviceAccount}`
        : undefined;
    for (const ip of ep.ips) {
      const text = formatIp(ip);
      if (seen.has(text)) continue;
      seen.add(text);
      endpointIps.push(ip);
      const at: Principal = { direct_remote_ip: hostRange(ip) };
      if (identity !== undefined)
        out.push({
          name: `${ep.id}@${text}/mtls`,
          ip: text,
          principal: identity,
          formula: andI([at, { authenticated: { principal_name: { exact: identity } } }]),
        });
      out.push({
        name: `${ep.id}@${text}/plaintext`,
        ip: text,
        principal: null,
        formula: andI([at, PLAINTEXT]),
      });
    }
  }
  // Addresses no endpoint owns: one class per cell of the CIDRs the resources mention.
  const cidrs = sweepCidrs(resources);
  for (const family of [4, 6] as const) {
    const universe = parseCidr(family === 4 ? '0.0.0.0/0' : '::/0');
    if (!universe) continue;
    const fam = cidrs.filter((c) => c.family === family && c.prefix > 0);
    const eps = endpointIps.filter((ip) => ip.family === family);
    for (const cell of [universe, ...fam]) {
      const inner = fam.filter(
        (c) =>
          c !== cell && cidrWithin(c, cell) && !(c.prefix === cell.prefix && c.base === cell.base),
      );
      // Only the outermost inner blocks need excluding.
      const children = inner.filter(
        (c) => !inner.some((o) => o !== c && o.prefix < c.prefix && cidrWithin(c, o)),
      );
      const epsIn = eps.filter(
        (ip) => cidrContains(cell, ip) && !children.some((c) => cidrContains(c, ip)),
      );
      const excluded = (v: bigint): boolean => {
        const ip: IpAddr = { family, value: v };
        return children.some((c) => cidrContains(c, ip)) || epsIn.some((e) => e.value === v);
      };
      const last = lastOf(cell);
      const cands = [cell.base + 1n, cell.base, last - 1n, last];
      for (const c of children) cands.push(c.base - 1n, lastOf(c) + 1n);
      for (const e of epsIn) cands.push(e.value - 1n, e.value + 1n);
      const rep = cands.find((v) => v >= cell.base && v <= last && !excluded(v));
      if (rep === undefined) continue;
      const not: Principal[] = [
        ...children.map((c) => ({ direct_remote_ip: range(c) })),
        ...epsIn.map((e) => ({ direct_remote_ip: hostRange(e) })),
      ];
      const r = range(cell);
      out.push({
        name: `address ${r.address_prefix}/${r.prefix_len}${not.length > 0 ? ` less ${not.length} block(s)` : ''}/plaintext`,
        ip: formatIp({ family, value: rep }),
        principal: null,
        formula: andI([
          { direct_remote_ip: r },
          ...(not.length > 0 ? [{ not_id: orI(not) }] : []),
          PLAINTEXT,
        ]),
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------ the export

export function exportEnvoyRbac(
  resources: readonly Resource[],
  opts: RbacExportOptions,
): RbacExportResult {
  let engine: Engine;
  try {
    engine = compile(resources, {
      ...(opts.trustDomain ? { trustDomain: opts.trustDomain } : {}),
      ...(opts.istioRootNamespace ? { istioRootNamespace: opts.istioRootNamespace } : {}),
    });
  } catch (e) {
    return {
      ok: false,
      code: 'EXPORT_ERR_INPUT',
      message: `the resources do not compile: ${(e as Error).message}`,
    };
  }
  const built = PolicyView.fromEngine(engine, opts.endpoint, 0);
  if (!built.ok) return { ok: false, code: 'EXPORT_ERR_INPUT', message: built.reason };
  const view = built.view;
  const ep = engine.describeEndpoint(view.endpoint);
  const ports = [
    ...new Set(
      opts.ports ??
        (ep?.namedPorts ?? [])
          .filter((np) => np.protocol === 6 || String(np.protocol) === 'TCP')
          .map((np) => np.port),
    ),
  ].sort((a, b) => a - b);
  if (ports.length === 0)
    return {
      ok: false,
      code: 'EXPORT_ERR_INPUT',
      message: `${view.endpoint} declares no TCP container port; give --port N`,
    };
  for (const p of ports)
    if (!Number.isInteger(p) || p < 1 || p > 65535)
      return { ok: false, code: 'EXPORT_ERR_INPUT', message: `${p} is not a port number` };
  let methods: ClassOf[];
  let paths: ClassOf[];
  let headers: ClassOf[];
  try {
    const c = collect(resources);
    methods = methodDimension(c).classes;
    paths = pathDimension(c).classes;
    headers = headerDimension(c).classes;
  } catch (e) {
    if (e instanceof Unsupported)
      return {
        ok: false,
        code: 'EXPORT_ERR_UNSUPPORTED',
        message: `cannot be expressed as Envoy RBAC: ${e.message}`,
      };
    throw e;
  }
  const sources = sourceClasses(engine, resources);
  const perSource = methods.length * paths.length * headers.length;
  const total = sources.length * ports.length * perSource;
  const max = opts.maxEvaluations ?? 300_000;
  if (total > max)
    return {
      ok: false,
      code: 'EXPORT_ERR_UNSUPPORTED',
      message: `the policy distinguishes ${total} request classes for ${view.endpoint} (limit ${max}); export fewer ports or simplify the HTTP matches`,
    };

  // port → HTTP formula (JSON) → the source classes allowed it.
  const groups = new Map<string, { port: number; permission: Permission; sources: Principal[] }>();
  let allowedClasses = 0;
  for (const port of ports)
    for (const s of sources) {
      // (header class, path class) → allowed method classes.
      const allowed: { m: ClassOf; p: ClassOf; h: ClassOf }[] = [];
      for (const h of headers)
        for (const p of paths)
          for (const m of methods) {
            const d = view.decideInbound({
              sourceIp: s.ip,
              principal: s.principal,
              port,
              method: m.rep.method,
              path: p.rep.target,
              host: undefined,
              headers: h.rep.headers,
            });
            if (d.verdict === 'allow') allowed.push({ m, p, h });
          }
      allowedClasses += allowed.length;
      if (allowed.length === 0) continue;
      const permission = andP([
        { destination_port: port },
        httpFormula(allowed, methods, paths, headers),
      ]);
      const key = `${port}\0${JSON.stringify(permission)}`;
      const g = groups.get(key);
      if (g) g.sources.push(s.formula);
      else groups.set(key, { port, permission, sources: [s.formula] });
    }
  const policies: Record<string, RbacPolicy> = {};
  const counters = new Map<number, number>();
  for (const g of groups.values()) {
    const n = (counters.get(g.port) ?? 0) + 1;
    counters.set(g.port, n);
    policies[`palisade-port-${g.port}-${String(n).padStart(3, '0')}`] = {
      permissions: [g.permission],
      principals: g.sources,
    };
  }
  return {
    ok: true,
    filters: [
      {
        name: 'envoy.filters.http.rbac',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC',
          rules: { action: 'ALLOW', policies },
        },
      },
    ],
    summary: {
      endpoint: view.endpoint,
      identity: view.identity,
      ports,
      sourceClasses: sources.length,
      requestClasses: perSource,
      evaluations: total,
      allowedClasses,
    },
  };
}

/** The allowed (method, path, header) classes as one formula, factored where a dimension is full. */
function httpFormula(
  allowed: readonly { m: ClassOf; p: ClassOf; h: ClassOf }[],
  methods: readonly ClassOf[],
  paths: readonly ClassOf[],
  headers: readonly ClassOf[],
): Permission {
  if (allowed.length === methods.length * paths.length * headers.length) return ANY_P;
  // (h, p) → methods
  const byHp = new Map<string, { h: ClassOf; p: ClassOf; ms: ClassOf[] }>();
  for (const a of allowed) {
    const k = `${a.h.key}\0${a.p.key}`;
    const e = byHp.get(k);
    if (e) e.ms.push(a.m);
    else byHp.set(k, { h: a.h, p: a.p, ms: [a.m] });
  }
  const mFormula = (ms: readonly ClassOf[]): Permission =>
    ms.length === methods.length ? ANY_P : orP(ms.map((m) => m.formula));
  // (h, method set) → paths
  const byHm = new Map<string, { h: ClassOf; m: Permission; ps: ClassOf[] }>();
  for (const e of byHp.values()) {
    const m = mFormula(e.ms);
    const k = `${e.h.key}\0${JSON.stringify(m)}`;
    const x = byHm.get(k);
    if (x) x.ps.push(e.p);
    else byHm.set(k, { h: e.h, m, ps: [e.p] });
  }
  const terms: Permission[] = [];
  for (const e of byHm.values()) {
    const p = e.ps.length === paths.length ? ANY_P : orP(e.ps.map((x) => x.formula));
    terms.push(andP([e.m, p, headers.length === 1 ? ANY_P : e.h.formula]));
  }
  return orP(terms);
}
