// SPIFFE IDs as the SPIFFE ID standard defines them (spiffe/spiffe standards/SPIFFE-ID.md §2),
// and Palisade's workload form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
// Owns: parsing, validation, building. Must never: accept an ID a strict validator would refuse,
// or normalise one (an ID is compared as the exact string that was validated).

import type { PkiFailure } from './errors.js';
import { fail } from './errors.js';

export interface SpiffeId {
  /** The whole ID, exactly as validated. */
  readonly uri: string;
  readonly trustDomain: string;
  /** '' for a trust domain's own ID, otherwise starts with '/'. */
  readonly path: string;
  readonly segments: readonly string[];
}

export type SpiffeIdResult = { readonly ok: true; readonly id: SpiffeId } | PkiFailure;

export interface WorkloadIdentity {
  readonly id: SpiffeId;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export type WorkloadIdentityResult =
  { readonly ok: true; readonly identity: WorkloadIdentity } | PkiFailure;

const PREFIX = 'spiffe://';
/** §2.3: implementations must support 2048 bytes and should not generate longer IDs. */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** §2.3: RFC 3986 limits the host component to 255 characters. */
export const MAX_TRUST_DOMAIN_BYTES = 255;

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

const bad = (message: string): PkiFailure => fail('PKI_ERR_BAD_SPIFFE_ID', message);

/** Checks a trust domain name (§2.1); undefined when it is valid. */
export function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'the trust domain is empty';
  if (td.length > MAX_TRUST_DOMAIN_BYTES)
    return `the trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`;
  if (td.startsWith('[')) return 'an IPv6 address is not a trust domain name';
  if (td.includes('@')) return 'the trust domain must not carry userinfo (@)';
  if (td.includes(':')) return 'the trust domain must not carry a port (:)';
  if (td.includes('%')) return 'the trust domain must not contain percent-encoded characters';
  if (/[A-Z]/.test(td)) return 'the trust domain must be lowercase';
  if (!TRUST_DOMAIN_CHARS.test(td))
    return 'the trust domain may contain only letters, digits, dots, dashes and underscores ([a-z0-9._-])';
  return undefined;
}

/** Checks one path segment (§2.2); undefined when it is valid. */
export function pathSegmentProblem(s: string): string | undefined {
  if (s.length === 0) return 'a path segment is empty';
  if (s === '.' || s === '..') return `a path segment is the relative modifier ${s}`;
  if (s.includes('%')) return 'the path must not contain percent-encoded characters';
  if (!SEGMENT_CHARS.test(s))
    return `path segment ${JSON.stringify(s)} may contain only letters, digits, dots, dashes and underscores ([a-zA-Z0-9._-])`;
  return undefined;
}

/** Parses a SPIFFE ID strictly. Never throws. */
export function parseSpiffeId(input: unknown): SpiffeIdResult {
  if (typeof input !== 'string') return bad('a SPIFFE ID must be a string');
  // Byte length: RFC 3986 URIs are ASCII, so any non-ASCII is refused below anyway.
  if (Buffer.byteLength(input, 'utf8') > MAX_SPIFFE_ID_BYTES)
    return bad(`the SPIFFE ID is longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
  if (!input.startsWith(PREFIX)) {
    if (/^spiffe:\/\//i.test(input)) return bad('the scheme must be written spiffe:// (lowercase)');
    return bad('a SPIFFE ID must start with spiffe://');
  }
  const rest = input.slice(PREFIX.length);
  if (rest.includes('?')) return bad('a SPIFFE ID must not have a query (?)');
  if (rest.includes('#')) return bad('a SPIFFE ID must not have a fragment (#)');
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) return bad(tdProblem);
  const path = slash < 0 ? '' : rest.slice(slash);
  const segments: string[] = [];
  if (path !== '') {
    if (path === '/') return bad('the path must not be a lone /');
    if (path.endsWith('/')) return bad('the path must not end with /');
    for (const s of path.slice(1).split('/')) {
      const p = pathSegmentProblem(s);
      if (p) return bad(p);
      segments.push(s);
    }
  }
  return { ok: true, id: { uri: input, trustDomain, path, segments } };
}

/** Reads a workload identity `spiffe://TD/ns/N/sa/S`. Never throws. */
export function parseWorkloadId(input: unknown): WorkloadIdentityResult {
  const r = parseSpiffeId(input);
  if (!r.ok) return r;
  const [ns, namespace, sa, serviceAccount, ...more] = r.id.segments;
  if (
    ns !== 'ns' ||
    sa !== 'sa' ||
    namespace === undefined ||
    serviceAccount === undefined ||
    more.length > 0
  )
    return bad(
      `${r.id.uri} is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)`,
    );
  return { ok: true, identity: { id: r.id, namespace, serviceAccount } };
}

/** Builds and validates `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`. Never throws. */
export function workloadSpiffeId(
  trustDomain: string,
  namespace: string,
  serviceAccount: string,
): SpiffeIdResult {
  for (const [what, v] of [
    ['namespace', namespace],
    ['service account', serviceAccount],
  ] as const) {
    const p = pathSegmentProblem(v);
    if (p) return bad(`${what} ${JSON.stringify(v)}: ${p}`);
  }
  return parseSpiffeId(`${PREFIX}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`);
}
