// Verification of a presented X.509-SVID against a trust bundle: RFC 5280 path building to a
// bundle certificate plus the SPIFFE leaf rules (spiffe/spiffe standards/X509-SVID.md §5).
// Owns: the refusal codes a peer check answers with. Must never: accept on a parse error, or
// trust a certificate because it is in the peer's own chain.

import { X509Certificate as NodeCertificate } from 'node:crypto';
import { pemCertificates } from './crypto.js';
import { KU_CRL_SIGN, KU_DIGITAL_SIGNATURE, KU_KEY_CERT_SIGN, readLeafExtensions } from './der.js';
import type { LeafExtensions } from './der.js';
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
  readonly ext: LeafExtensions;
}

/**
 * Parsed certificates by their exact DER bytes. Bundle certificates (and returning peers) are
 * seen on every handshake; content-addressed entries cannot go stale. Bounded.
 */
const CACHE = new Map<string, Parsed>();
const CACHE_MAX = 512;

function parse(der: Buffer): Parsed | undefined {
  const key = der.toString('base64');
  const hit = CACHE.get(key);
  if (hit) return hit;
  let node: NodeCertificate;
  try {
    node = new NodeCertificate(der);
  } catch {
    return undefined;
  }
  const ext = readLeafExtensions(der);
  if (!ext) return undefined;
  const p: Parsed = { der, node, ext };
  if (CACHE.size >= CACHE_MAX) {
    const oldest = CACHE.keys().next();
    if (!oldest.done) CACHE.delete(oldest.value);
  }
  CACHE.set(key, p);
  return p;
}

function describe(c: Parsed): string {
  return c.node.subject
    ? `CA certificate "${c.node.subject.replace(/\n/g, ', ')}"`
    : 'a certificate';
}

/**
 * Whether a certificate on the path may sign, and sign for this trust domain: a signing
 * certificate that names its own trust domain (X509-SVID §3.2, a SPIFFE ID without a path) only
 * vouches for IDs of that trust domain, so a bundle holding several domains' roots cannot let one
 * domain mint the other's identities.
 */
function signingProblem(c: Parsed, trustDomain: string): string | undefined {
  if (c.ext.ca !== true) return `${describe(c)} in the chain is not a CA certificate`;
  if (c.ext.keyUsage && !c.ext.keyUsage.has(KU_KEY_CERT_SIGN))
    return `${describe(c)} in the chain may not sign certificates (no keyCertSign)`;
  for (const uri of c.ext.uris ?? []) {
    if (!uri.startsWith('spiffe://')) continue;
    const id = parseSpiffeId(uri);
    if (id.ok && id.id.path === '' && id.id.trustDomain !== trustDomain)
      return `${describe(c)} is the authority of trust domain ${id.id.trustDomain}, not ${trustDomain}`;
  }
  return undefined;
}

type LeafCheck = { readonly ok: true; readonly id: SpiffeId } | PkiFailure;

/** X509-SVID §2, §4.1, §4.3, §4.4, §5.2: what makes a certificate usable as a leaf SVID. */
function checkLeaf(leaf: Parsed): LeafCheck {
  const bad = (m: string) => fail('PKI_ERR_BAD_SVID', m);
  const e = leaf.ext;
  if (e.duplicate) return bad('the certificate repeats an extension (RFC 5280 §4.2)');
  if (e.ca === true)
    return bad('a CA certificate cannot be used as a leaf SVID (basic constraints CA:true)');
  if (!e.keyUsage) return bad('a leaf SVID must carry a key usage extension');
  if (e.keyUsage.has(KU_KEY_CERT_SIGN) || e.keyUsage.has(KU_CRL_SIGN))
    return bad('a leaf SVID must not set keyCertSign or cRLSign');
  if (!e.keyUsage.has(KU_DIGITAL_SIGNATURE)) return bad('a leaf SVID must set digitalSignature');
  if (e.eku && !(e.eku.serverAuth && e.eku.clientAuth))
    return bad('a leaf SVID extended key usage must include both serverAuth and clientAuth');
  const uris = e.uris ?? [];
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
      const p = signingProblem(anchor, l.id.trustDomain);
      if (p) return fail('PKI_ERR_UNTRUSTED', p);
      path.push(anchor);
      anchored = true;
      break;
    }
    const next = intermediates.find((c) => !used.has(c) && issues(c, cur));
    if (!next) break;
    const p = signingProblem(next, l.id.trustDomain);
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
