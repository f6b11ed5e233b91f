// Who is calling (DESIGN §7): a user or a node, authenticated by a bearer token or a client
// certificate from our CA. Owns: the principal shape and how a certificate maps to one.
// Must never: hold the credential itself (no token, no key) — principals go into logs and audit.

export type SubjectKind = 'User' | 'Node';

export interface Principal {
  readonly kind: SubjectKind;
  readonly name: string;
  readonly groups: readonly string[];
  readonly via: 'token' | 'certificate';
  /** The token's public id (never the token), for the audit log. */
  readonly tokenId?: string;
}

/** Group of the first admin token; bound to the built-in `admin` role. */
export const ADMINS_GROUP = 'system:admins';
/** Bound to the built-in `viewer` role. */
export const VIEWERS_GROUP = 'system:viewers';

export interface PeerCertificateInfo {
  readonly subjectCN?: string;
  readonly subjectO?: readonly string[];
  /** URI subject alternative names, e.g. `spiffe://cluster.local/ns/a/sa/b`. */
  readonly uris: readonly string[];
}

/**
 * A verified client certificate's principal: a SPIFFE ID `spiffe://<td>/node/<name>` is that
 * node; any other SPIFFE ID or the subject's CN is a user (CN `node:NAME` is also a node);
 * the subject's O values are groups.
 */
export function principalFromCertificate(c: PeerCertificateInfo): Principal | undefined {
  const groups = [...(c.subjectO ?? [])];
  const spiffe = c.uris.find((u) => u.startsWith('spiffe://'));
  if (spiffe) {
    const m = /^spiffe:\/\/[^/]+\/node\/([a-z0-9.-]+)$/.exec(spiffe);
    if (m?.[1]) return { kind: 'Node', name: m[1], groups, via: 'certificate' };
    return { kind: 'User', name: spiffe, groups, via: 'certificate' };
  }
  const cn = c.subjectCN;
  if (!cn) return undefined;
  if (cn.startsWith('node:'))
    return { kind: 'Node', name: cn.slice(5), groups, via: 'certificate' };
  return { kind: 'User', name: cn, groups, via: 'certificate' };
}

/** `User admin`, `Node n1` — for messages and logs. */
export function describePrincipal(p: Principal): string {
  return `${p.kind} ${p.name}`;
}
