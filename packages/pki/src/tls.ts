// Node `tls` options for peers holding SVIDs, as the sidecar uses them: our key and chain, the
// trust bundle as the only CAs, client certificates required, and the peer judged by its SPIFFE
// ID instead of a host name. OpenSSL checks the chain during the handshake; verifySvid then checks
// the SPIFFE rules on the same chain, so both must accept.

import type {
  ConnectionOptions,
  DetailedPeerCertificate,
  PeerCertificate,
  TLSSocket,
  TlsOptions,
} from 'node:tls';
import { PkiError, fail } from './errors.js';
import type { SpiffeId } from './spiffe-id.js';
import { pemCertificates, pemEncode } from './crypto.js';
import { X509Certificate as NodeCertificate } from 'node:crypto';
import { verifySvid } from './verify.js';
import type { VerifyResult } from './verify.js';

export interface SvidMaterial {
  readonly keyPem: string;
  /** The leaf. */
  readonly certPem: string;
  /** CA certificates above the leaf (as issued; self-signed roots are not sent). */
  readonly chainPem: string;
}

/** Which peer identities are acceptable. */
export type PeerMatcher =
  | { readonly kind: 'any-in-trust-domain' }
  | { readonly kind: 'exact'; readonly ids: readonly string[] }
  | { readonly kind: 'predicate'; readonly test: (id: SpiffeId) => boolean };

export interface PeerCheckOptions {
  readonly trustBundlePem: string;
  readonly trustDomain: string;
  readonly expect: PeerMatcher;
  /** Defaults to the wall clock. */
  readonly now?: () => Date;
}

function isSelfSigned(der: Buffer): boolean {
  try {
    const c = new NodeCertificate(der);
    return c.checkIssued(c) && c.verify(c.publicKey);
  } catch {
    return false;
  }
}

/** Leaf followed by the intermediates; roots stay out (the peer has them in its bundle). */
export function certificateChainPem(svid: Pick<SvidMaterial, 'certPem' | 'chainPem'>): string {
  const inter = pemCertificates(svid.chainPem)
    .filter((d) => !isSelfSigned(d))
    .map((d) => pemEncode('CERTIFICATE', d));
  return [svid.certPem.endsWith('\n') ? svid.certPem : `${svid.certPem}\n`, ...inter].join('');
}

function matches(m: PeerMatcher, id: SpiffeId): boolean {
  switch (m.kind) {
    case 'any-in-trust-domain':
      return true;
    case 'exact':
      return m.ids.includes(id.uri);
    case 'predicate':
      return m.test(id);
  }
}

/** verifySvid plus the caller's expectation of who the peer is. */
export function checkPeerChain(chain: readonly Buffer[], opts: PeerCheckOptions): VerifyResult {
  const r = verifySvid(chain, opts.trustBundlePem, {
    trustDomain: opts.trustDomain,
    now: (opts.now ?? (() => new Date()))(),
  });
  if (!r.ok) return r;
  if (!matches(opts.expect, r.id))
    return fail('PKI_ERR_PEER_MISMATCH', `peer ${r.spiffeId} is not an identity this side accepts`);
  return r;
}

/** The peer's chain (leaf first) as Node's TLS layer reports it. */
export function peerChainFromCertificate(
  cert: PeerCertificate | DetailedPeerCertificate,
): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<string>();
  let cur: PeerCertificate | DetailedPeerCertificate | undefined = cert;
  while (cur && cur.raw && out.length < 10) {
    const key = cur.raw.toString('base64');
    if (seen.has(key)) break;
    seen.add(key);
    out.push(cur.raw);
    cur = 'issuerCertificate' in cur ? cur.issuerCertificate : undefined;
  }
  return out;
}

/** Reads and checks the SVID of the peer of an established TLS connection. */
export function verifyPeer(socket: TLSSocket, opts: PeerCheckOptions): VerifyResult {
  const cert = socket.getPeerCertificate(true);
  if (!cert || !cert.raw) return fail('PKI_ERR_BAD_SVID', 'the peer presented no certificate');
  return checkPeerChain(peerChainFromCertificate(cert), opts);
}

/**
 * Options for a `tls.createServer` that requires an SVID from every client. The handshake
 * already refuses certificates that do not chain to the bundle; call verifyPeer on each
 * `secureConnection` for the SPIFFE rules and the expected identities.
 */
export function svidServerOptions(svid: SvidMaterial, trustBundlePem: string): TlsOptions {
  return {
    key: svid.keyPem,
    cert: certificateChainPem(svid),
    ca: trustBundlePem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
  };
}

/**
 * Options for a `tls.connect` with an SVID: the server is judged by its SPIFFE ID
 * (`checkServerIdentity`), not by a host name; a refusal aborts the handshake with a PkiError
 * carrying the code.
 */
export function svidClientOptions(svid: SvidMaterial, opts: PeerCheckOptions): ConnectionOptions {
  return {
    key: svid.keyPem,
    cert: certificateChainPem(svid),
    ca: opts.trustBundlePem,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    checkServerIdentity: (_host, cert) => {
      const r = checkPeerChain(peerChainFromCertificate(cert), opts);
      return r.ok ? undefined : new PkiError(r.code, r.message);
    },
  };
}
