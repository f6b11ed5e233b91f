// The shapes of the certificates Palisade signs, exactly as the X.509-SVID standard wants them
// (spiffe/spiffe standards/X509-SVID.md §3, §4), and CSR intake. Owns: extensions, serials,
// validity windows. Must never: copy anything from a CSR except its public key.

import { randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { describeKey, publicKeyFromSpki, signingAlgorithm, spkiDer, x509 } from './crypto.js';
import type { KeyKind, SigningKey } from './crypto.js';
import type { PkiFailure } from './errors.js';
import { fail } from './errors.js';

/** A CSR larger than this is refused before parsing. */
export const MAX_CSR_BYTES = 64 * 1024;

export interface Signer {
  readonly cert: x509.X509Certificate;
  readonly key: SigningKey;
  readonly kind: KeyKind;
}

/** 128 random bits, positive, no leading zero byte: unique and unguessable (RFC 5280 §4.1.2.2). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x7f) | 0x01;
  return b.toString('hex');
}

async function keyIdentifiers(
  subjectSpki: Uint8Array,
  issuer: x509.X509Certificate | undefined,
): Promise<x509.Extension[]> {
  const ski = await x509.SubjectKeyIdentifierExtension.create(subjectSpki);
  if (!issuer) return [ski, new x509.AuthorityKeyIdentifierExtension(ski.keyId)];
  const issuerSki = issuer.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = issuerSki
    ? new x509.AuthorityKeyIdentifierExtension(issuerSki.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey);
  return [ski, aki];
}

export interface LeafParams {
  readonly signer: Signer;
  readonly publicKey: KeyObject;
  readonly publicKind: KeyKind;
  readonly spiffeId: string;
  readonly dnsNames?: readonly string[];
  readonly ips?: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * A leaf X.509-SVID: empty subject, so the SAN is critical (§3.1); exactly one URI SAN (§2);
 * CA:false (§4.1); key usage critical with digitalSignature, plus keyEncipherment for RSA keys
 * (§4.3); serverAuth and clientAuth (§4.4).
 */
export async function buildLeaf(p: LeafParams): Promise<x509.X509Certificate> {
  const spki = spkiDer(p.publicKey);
  const usage =
    x509.KeyUsageFlags.digitalSignature |
    (p.publicKind.type === 'rsa' ? x509.KeyUsageFlags.keyEncipherment : 0);
  const names: x509.JsonGeneralName[] = [
    { type: 'url', value: p.spiffeId },
    ...(p.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(p.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  return x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: '',
    issuer: p.signer.cert.subjectName,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    signingAlgorithm: signingAlgorithm(p.signer.kind),
    publicKey: spki,
    signingKey: p.signer.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(usage, true),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      new x509.SubjectAlternativeNameExtension(names, true),
      ...(await keyIdentifiers(spki, p.signer.cert)),
    ],
  });
}

export interface RootParams {
  readonly key: SigningKey;
  readonly publicKey: KeyObject;
  readonly kind: KeyKind;
  readonly trustDomain: string;
  readonly name: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * A self-signed signing certificate: CA:true with pathLen 0 (it signs leaves only), key usage
 * critical keyCertSign and cRLSign (§4.3), and the trust domain's own SPIFFE ID as its one URI
 * SAN, without a path (§3.2).
 */
export async function buildRoot(p: RootParams): Promise<x509.X509Certificate> {
  const spki = spkiDer(p.publicKey);
  const subject = `O=Palisade, OU=${p.trustDomain}, CN=${p.name}`;
  return x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject,
    issuer: subject,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    signingAlgorithm: signingAlgorithm(p.kind),
    publicKey: spki,
    signingKey: p.key,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: `spiffe://${p.trustDomain}` },
      ]),
      ...(await keyIdentifiers(spki, undefined)),
    ],
  });
}

export type CsrResult =
  { readonly ok: true; readonly publicKey: KeyObject; readonly kind: KeyKind } | PkiFailure;

/**
 * Reads a PKCS#10 request and checks its self-signature (proof that the requester holds the
 * private key). Only the public key is used; subject, SANs and extensions asked for are ignored.
 * Never throws on input.
 */
export async function readCsr(pem: unknown): Promise<CsrResult> {
  if (typeof pem !== 'string' || pem.length === 0)
    return fail('PKI_ERR_BAD_CSR', 'the CSR must be a PEM text');
  if (pem.length > MAX_CSR_BYTES)
    return fail('PKI_ERR_BAD_CSR', `the CSR is larger than ${MAX_CSR_BYTES} bytes`);
  if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(pem))
    return fail('PKI_ERR_BAD_CSR', 'the CSR must be a PEM "CERTIFICATE REQUEST" block');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    return fail('PKI_ERR_BAD_CSR', 'the CSR is not a well-formed PKCS#10 request');
  }
  const publicKey = publicKeyFromSpki(new Uint8Array(csr.publicKey.rawData));
  if (!publicKey) return fail('PKI_ERR_BAD_CSR', 'the CSR public key cannot be read');
  const kind = describeKey(publicKey);
  if (!kind.ok) return kind;
  let verified = false;
  try {
    verified = await csr.verify();
  } catch {
    verified = false;
  }
  if (!verified)
    return fail('PKI_ERR_BAD_CSR', 'the CSR self-signature does not verify with its public key');
  return { ok: true, publicKey, kind: kind.kind };
}
