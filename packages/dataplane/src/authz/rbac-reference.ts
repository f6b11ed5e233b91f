// Test support (not part of the public surface): a small evaluator of Envoy RBAC HTTP filter
// configuration, written from Envoy's documented matching rules and independent of the exporter
// (its own CIDR matching through node:net's BlockList), to check that an exported configuration
// allows exactly what the engine allows.
//
// Rules implemented: a filter with action ALLOW lets a request through iff at least one policy
// matches, DENY iff none does; a chain lets it through iff every filter does. A policy matches iff
// one of its permissions and one of its principals match. `url_path` matches the path without the
// query; the `:path` header includes it. Header string matchers never match an absent header;
// `present_match: true` matches a present one, whatever its value. `authenticated` without
// `principal_name` matches any peer that presented a certificate; with it, the certificate's URI
// SAN. `direct_remote_ip` is the connection's peer address.

import { BlockList, isIP } from 'node:net';

export interface RbacRequest {
  readonly sourceIp: string;
  /** The URI SAN of the peer certificate; null when no certificate was presented. */
  readonly principal: string | null;
  readonly destinationPort: number;
  readonly method: string;
  /** The request target, query included (`:path`). */
  readonly path: string;
  /** Lower-case names, without pseudo-headers. */
  readonly headers: Readonly<Record<string, string>>;
}

type Json = Record<string, unknown>;

function obj(v: unknown, what: string): Json {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what}: not an object`);
  return v as Json;
}

function only(o: Json, what: string): [string, unknown] {
  const keys = Object.keys(o);
  if (keys.length !== 1)
    throw new Error(`${what}: expected exactly one field, got ${keys.join(',')}`);
  const k = keys[0] as string;
  return [k, o[k]];
}

function stringMatch(m: unknown, value: string | undefined): boolean {
  if (value === undefined) return false;
  const o = obj(m, 'StringMatcher');
  const ic = o['ignore_case'] === true;
  const v = ic ? value.toLowerCase() : value;
  const pat = (x: unknown): string => (ic ? String(x).toLowerCase() : String(x));
  if ('exact' in o) return v === pat(o['exact']);
  if ('prefix' in o) return v.startsWith(pat(o['prefix']));
  if ('suffix' in o) return v.endsWith(pat(o['suffix']));
  if ('contains' in o) return v.includes(pat(o['contains']));
  throw new Error(`StringMatcher: unsupported ${Object.keys(o).join(',')}`);
}

function headerValue(r: RbacRequest, name: string): string | undefined {
  switch (name.toLowerCase()) {
    case ':method':
      return r.method;
    case ':path':
      return r.path;
    default:
      return r.headers[name.toLowerCase()];
  }
}

function headerMatch(h: unknown, r: RbacRequest): boolean {
  const o = obj(h, 'HeaderMatcher');
  const v = headerValue(r, String(o['name']));
  let m: boolean;
  if ('present_match' in o) m = (v !== undefined) === (o['present_match'] === true);
  else if ('string_match' in o) m = stringMatch(o['string_match'], v);
  else if ('exact_match' in o) m = v === o['exact_match'];
  else if ('prefix_match' in o) m = v !== undefined && v.startsWith(String(o['prefix_match']));
  else if ('suffix_match' in o) m = v !== undefined && v.endsWith(String(o['suffix_match']));
  else m = v !== undefined;
  return o['invert_match'] === true ? !m : m;
}

function cidrMatch(c: unknown, ip: string): boolean {
  const o = obj(c, 'CidrRange');
  const prefix = String(o['address_prefix']);
  const fam = isIP(prefix);
  if (fam === 0) throw new Error(`CidrRange: ${prefix} is not an address`);
  const len = Number(o['prefix_len'] ?? 0);
  const ipFam = isIP(ip);
  if (ipFam !== fam) return false;
  const b = new BlockList();
  b.addSubnet(prefix, len, fam === 4 ? 'ipv4' : 'ipv6');
  return b.check(ip, fam === 4 ? 'ipv4' : 'ipv6');
}

function pathOnly(p: string): string {
  return p.split('?')[0]?.split('#')[0] ?? p;
}

export function permissionMatches(p: unknown, r: RbacRequest): boolean {
  const [k, v] = only(obj(p, 'Permission'), 'Permission');
  switch (k) {
    case 'any':
      return v === true;
    case 'and_rules':
      return (obj(v, 'Set')['rules'] as unknown[]).every((x) => permissionMatches(x, r));
    case 'or_rules':
      return (obj(v, 'Set')['rules'] as unknown[]).some((x) => permissionMatches(x, r));
    case 'not_rule':
      return !permissionMatches(v, r);
    case 'header':
      return headerMatch(v, r);
    case 'url_path':
      return stringMatch(obj(v, 'PathMatcher')['path'], pathOnly(r.path));
    case 'destination_port':
      return r.destinationPort === v;
    default:
      throw new Error(`Permission: unsupported ${k}`);
  }
}

export function principalMatches(p: unknown, r: RbacRequest): boolean {
  const [k, v] = only(obj(p, 'Principal'), 'Principal');
  switch (k) {
    case 'any':
      return v === true;
    case 'and_ids':
      return (obj(v, 'Set')['ids'] as unknown[]).every((x) => principalMatches(x, r));
    case 'or_ids':
      return (obj(v, 'Set')['ids'] as unknown[]).some((x) => principalMatches(x, r));
    case 'not_id':
      return !principalMatches(v, r);
    case 'authenticated': {
      if (r.principal === null) return false;
      const name = obj(v, 'Authenticated')['principal_name'];
      return name === undefined || stringMatch(name, r.principal);
    }
    case 'direct_remote_ip':
      return cidrMatch(v, r.sourceIp);
    case 'header':
      return headerMatch(v, r);
    case 'url_path':
      return stringMatch(obj(v, 'PathMatcher')['path'], pathOnly(r.path));
    default:
      throw new Error(`Principal: unsupported ${k}`);
  }
}

/** Whether a chain of `envoy.filters.http.rbac` filters lets the request through. */
export function rbacChainAllows(filters: readonly unknown[], r: RbacRequest): boolean {
  for (const f of filters) {
    const tc = obj(obj(f, 'HttpFilter')['typed_config'], 'typed_config');
    if (tc['@type'] !== 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC')
      throw new Error(`not an RBAC filter: ${String(tc['@type'])}`);
    const rules = obj(tc['rules'], 'RBAC');
    const policies = obj(rules['policies'] ?? {}, 'policies');
    const matched = Object.values(policies).some((pol) => {
      const po = obj(pol, 'Policy');
      return (
        (po['permissions'] as unknown[]).some((x) => permissionMatches(x, r)) &&
        (po['principals'] as unknown[]).some((x) => principalMatches(x, r))
      );
    });
    const action = rules['action'] ?? 'ALLOW';
    const pass = action === 'ALLOW' ? matched : action === 'DENY' ? !matched : true;
    if (!pass) return false;
  }
  return true;
}
