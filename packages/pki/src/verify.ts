// Verification of a presented X.509-SVID against a trust bundle: RFC 5280 path building to a
// bundle certificate plus the SPIFFE leaf rules (spiffe/spiffe standards/X509-SVID.md §5).
// Owns: the refusal codes a peer check answers with. Must never: accept on a parse error, or
// trust a certificate because it is in the peer's own chain.

import { X509Certificate as NodeCertificate } from 'node:crypto';
import { pemCertificates, x509 } from './crypto.js';
import type { PkiFailure } from './errors.js';
import { fail } from './errors.js';
import { parseSpiffeId } from './spiffe-id.js';
import type { SpiffeId } from './spiffe-id.js';

/** A certificate as PEM, DER or Node's X509Certificate. */
export type CertificateInput = string | Uint8Array | NodeCertificate;

export interface VerifyOptions {
  /** When given, the SVID's SPIFFE ID must be in this trust domain. */
  readonly trustDomain?: string;
  readonly now: Date;
}

export type VerifyResult =
  | {
      readonly ok: true;
      readonly spiffeId: string;
      readonly id: SpiffeId;
      readonly notAfter: Date;
      readonly serial: string;
    }
  | PkiFailure;

/** Longest chain followed from the leaf to a bundle certificate. */
export const MAX_CHAIN_DEPTH = 8;

function toDerList(input: string | readonly CertificateInput[]): Buffer[] {
  if (typeof input === 'string') return pemCertificates(input);
  const out: Buffer[] = [];
  for (const c of input) {
    if (typeof c === 'string') out.push(...pemCertificates(c));
    else if (c instanceof NodeCertificate) out.push(Buffer.from(c.raw));
    else out.push(Buffer.from(c));
  }
  return out;
}

interface Parsed {
  readonly der: Buffer;
  readonly node: NodeCertificate;
  readonly lib: x509.X509Certificate;
}

function parse(der: Buffer): Parsed | undefined {
  try {
    return { der, node: new NodeCertificate(der), lib: new x509.X509Certificate(der) };
  } catch {
    return undefined;
  }
}

function describe(c: Parsed): string {
  return c.node.subject
    ? `CA certificate "${c.node.subject.replace(/\n/g, ', ')}"`
    : 'a certificate';
}

function signingProblem(c: Parsed): string | undefined {
  const bc = c.lib.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) return `${describe(c)} in the chain is not a CA certificate`;
  const ku = c.lib.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0)
    return `${describe(c)} in the chain may not sign certificates (no keyCertSign)`;
  return undefined;
}

type LeafCheck = { readonly ok: true; readonly id: SpiffeId } | PkiFailure;

/** X509-SVID §2, §4.1, §4.3, §4.4, §5.2: what makes a certificate usable as a leaf SVID. */
function checkLeaf(leaf: Parsed): LeafCheck {
  const bad = (m: string) => fail('PKI_ERR_BAD_SVID', m);
  let bc: x509.BasicConstraintsExtension | null;
  let kus: x509.KeyUsagesExtension[];
  let eku: x509.ExtendedKeyUsageExtension | null;
  let sans: x509.SubjectAlternativeNameExtension[];
  try {
    bc = leaf.lib.getExtension(x509.BasicConstraintsExtension);
    kus = leaf.lib.getExtensions(x509.KeyUsagesExtension);
    eku = leaf.lib.getExtension(x509.ExtendedKeyUsageExtension);
    sans = leaf.lib.getExtensions(x509.SubjectAlternativeNameExtension);
  } catch {
    return bad('the certificate has an extension that cannot be read');
  }
  if (bc?.ca)
    return bad('a CA certificate cannot be used as a leaf SVID (basic constraints CA:true)');
  const ku = kus[0];
  if (!ku || kus.length > 1) return bad('a leaf SVID must carry exactly one key usage extension');
  if ((ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) !== 0)
    return bad('a leaf SVID must not set keyCertSign or cRLSign');
  if ((ku.usages & x509.KeyUsageFlags.digitalSignature) === 0)
    return bad('a leaf SVID must set digitalSignature');
  if (eku) {
    const u = eku.usages.map(String);
    if (
      !u.includes(x509.ExtendedKeyUsage.serverAuth) ||
      !u.includes(x509.ExtendedKeyUsage.clientAuth)
    )
      return bad('a leaf SVID extended key usage must include both serverAuth and clientAuth');
  }
  const san = sans[0];
  if (!san || sans.length > 1) return bad('a leaf SVID must carry exactly one SAN extension');
  const uris = san.names.items.filter((n) => n.type === 'url').map((n) => n.value);
  if (uris.length !== 1)
    return bad(`a leaf SVID must carry exactly one URI SAN, found ${uris.length}`);
  const id = parseSpiffeId(uris[0]);
  if (!id.ok) return bad(`the URI SAN is not a valid SPIFFE ID: ${id.message}`);
  if (id.id.path === '') return bad('a leaf SVID SPIFFE ID must have a path');
  return { ok: true, id: id.id };
}

function timeProblem(c: Parsed, now: Date, what: string): PkiFailure | undefined {
  const from = new Date(c.node.validFrom);
  const to = new Date(c.node.validTo);
  if (now.getTime() < from.getTime())
    return fail('PKI_ERR_NOT_YET_VALID', `${what} is not valid before ${from.toISOString()}`);
  if (now.getTime() > to.getTime())
    return fail('PKI_ERR_EXPIRED', `${what} expired at ${to.toISOString()}`);
  return undefined;
}

function issues(issuer: Parsed, subject: Parsed): boolean {
  try {
    return subject.node.checkIssued(issuer.node) && subject.node.verify(issuer.node.publicKey);
  } catch {
    return false;
  }
}

/**
 * Verifies a peer's chain (leaf first, then any intermediates it sent) against a trust bundle.
 * Structure first (is it an SVID?), then the trust domain, then the path, then validity times
 * of every certificate on the path. Never throws.
 */
export function verifySvid(
  peerChain: string | readonly CertificateInput[],
  trustBundle: string | readonly CertificateInput[],
  opts: VerifyOptions,
): VerifyResult {
  let chainDer: Buffer[];
  let bundleDer: Buffer[];
  try {
    chainDer = toDerList(peerChain);
    bundleDer = toDerList(trustBundle);
  } catch {
    return fail('PKI_ERR_BAD_SVID', 'the certificates cannot be read');
  }
  const [leafDer, ...restDer] = chainDer;
  if (!leafDer) return fail('PKI_ERR_BAD_SVID', 'no certificate was presented');
  const leaf = parse(leafDer);
  if (!leaf) return fail('PKI_ERR_BAD_SVID', 'the presented certificate is not well-formed X.509');
  const l = checkLeaf(leaf);
  if (!l.ok) return l;
  if (opts.trustDomain !== undefined && l.id.trustDomain !== opts.trustDomain)
    return fail(
      'PKI_ERR_WRONG_TRUST_DOMAIN',
      `${l.id.uri} is in trust domain ${l.id.trustDomain}, expected ${opts.trustDomain}`,
    );
  const intermediates = restDer.map(parse).filter((c): c is Parsed => c !== undefined);
  const anchors = bundleDer.map(parse).filter((c): c is Parsed => c !== undefined);
  if (anchors.length === 0) return fail('PKI_ERR_UNTRUSTED', 'the trust bundle is empty');

  // Path building: from the leaf, prefer a bundle certificate as issuer, else an intermediate
  // the peer sent (each used once). The peer's own certificates are never trust anchors.
  const path: Parsed[] = [leaf];
  const used = new Set<Parsed>();
  let cur = leaf;
  let anchored = false;
  for (let depth = 0; depth < MAX_CHAIN_DEPTH && !anchored; depth++) {
    const anchor = anchors.find((a) => issues(a, cur));
    if (anchor) {
      const p = signingProblem(anchor);
      if (p) return fail('PKI_ERR_UNTRUSTED', p);
      path.push(anchor);
      anchored = true;
      break;
    }
    const next = intermediates.find((c) => !used.has(c) && issues(c, cur));
    if (!next) break;
    const p = signingProblem(next);
    if (p) return fail('PKI_ERR_UNTRUSTED', p);
    used.add(next);
    path.push(next);
    cur = next;
  }
  if (!anchored)
    return fail(
      'PKI_ERR_UNTRUSTED',
      `${l.id.uri} is not signed by a certificate authority of the trust bundle`,
    );
  for (const [i, c] of path.entries()) {
    const t = timeProblem(c, opts.now, i === 0 ? `the SVID of ${l.id.uri}` : describe(c));
    if (t) return t;
  }
  return {
    ok: true,
    spiffeId: l.id.uri,
    id: l.id,
    notAfter: new Date(leaf.node.validTo),
    serial: leaf.node.serialNumber.toLowerCase(),
  };
}
