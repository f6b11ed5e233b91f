// The shapes of the certificates Palisade signs, exactly as the X.509-SVID standard wants them
// (spiffe/spiffe standards/X509-SVID.md §3, §4), and CSR intake. Owns: extensions, serials,
// validity windows. Must never: copy anything from a CSR except its public key.

import { randomBytes, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  describeKey,
  pemEncode,
  publicKeyFromSpki,
  signingAlgorithm,
  spkiDer,
  x509,
} from './crypto.js';
import { readCsrParts, readSubjectName } from './der.js';
import { encodeLeaf, keyIdentifier } from './leaf-encoder.js';
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

export interface EncodedCertificate {
  readonly der: Buffer;
  readonly pem: string;
  /** Lowercase hex, as openssl prints it without separators. */
  readonly serial: string;
}

/**
 * A leaf X.509-SVID: empty subject, so the SAN is critical (§3.1); exactly one URI SAN (§2);
 * CA:false (§4.1); key usage critical with digitalSignature, plus keyEncipherment for RSA keys
 * (§4.3); serverAuth and clientAuth (§4.4); SKI and AKI.
 */
export function buildLeaf(p: LeafParams): EncodedCertificate {
  const signerDer = Buffer.from(p.signer.cert.rawData);
  const issuerName = readSubjectName(signerDer);
  if (!issuerName) throw new Error('the signing certificate has no readable subject');
  const ski = p.signer.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const issuerKeyId = ski
    ? Buffer.from(ski.keyId, 'hex')
    : keyIdentifier(Buffer.from(p.signer.cert.publicKey.rawData));
  if (!issuerKeyId) throw new Error('the signing certificate key identifier cannot be computed');
  const serial = randomSerial();
  const der = encodeLeaf({
    serialHex: serial,
    issuerName,
    issuerKeyId,
    signerKind: p.signer.kind,
    signerKey: p.signer.key,
    spki: spkiDer(p.publicKey),
    rsaSubject: p.publicKind.type === 'rsa',
    spiffeId: p.spiffeId,
    dnsNames: p.dnsNames ?? [],
    ips: p.ips ?? [],
    notBefore: p.notBefore,
    notAfter: p.notAfter,
  });
  return { der, pem: pemEncode('CERTIFICATE', der), serial };
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

/** Signature algorithms accepted on a CSR: OID content bytes (hex) → key type and hash. */
const CSR_SIGNATURES: Readonly<
  Record<string, { readonly key: 'ec' | 'rsa'; readonly hash: string }>
> = {
  '2a8648ce3d040302': { key: 'ec', hash: 'sha256' }, // ecdsa-with-SHA256
  '2a8648ce3d040303': { key: 'ec', hash: 'sha384' },
  '2a8648ce3d040304': { key: 'ec', hash: 'sha512' },
  '2a864886f70d01010b': { key: 'rsa', hash: 'sha256' }, // sha256WithRSAEncryption
  '2a864886f70d01010c': { key: 'rsa', hash: 'sha384' },
  '2a864886f70d01010d': { key: 'rsa', hash: 'sha512' },
};

/**
 * Reads a PKCS#10 request and checks its self-signature (proof that the requester holds the
 * private key). Only the public key is used; subject, SANs and extensions asked for are ignored.
 * Never throws on input.
 */
export function readCsr(pem: unknown): CsrResult {
  if (typeof pem !== 'string' || pem.length === 0)
    return fail('PKI_ERR_BAD_CSR', 'the CSR must be a PEM text');
  if (pem.length > MAX_CSR_BYTES)
    return fail('PKI_ERR_BAD_CSR', `the CSR is larger than ${MAX_CSR_BYTES} bytes`);
  const m =
    /-----BEGIN (NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]*)-----END (NEW )?CERTIFICATE REQUEST-----/.exec(
      pem,
    );
  if (!m) return fail('PKI_ERR_BAD_CSR', 'the CSR must be a PEM "CERTIFICATE REQUEST" block');
  const parts = readCsrParts(Buffer.from((m[2] ?? '').replace(/\s+/g, ''), 'base64'));
  if (!parts) return fail('PKI_ERR_BAD_CSR', 'the CSR is not a well-formed PKCS#10 request');
  const publicKey = publicKeyFromSpki(parts.spki);
  if (!publicKey) return fail('PKI_ERR_BAD_CSR', 'the CSR public key cannot be read');
  const kind = describeKey(publicKey);
  if (!kind.ok) return kind;
  const alg = CSR_SIGNATURES[parts.signatureOid];
  if (!alg || alg.key !== kind.kind.type)
    return fail(
      'PKI_ERR_BAD_CSR',
      'the CSR signature algorithm is not ECDSA or RSA PKCS#1 v1.5 with SHA-2 for its key',
    );
  let verified = false;
  try {
    verified = verify(
      alg.hash,
      parts.info,
      { key: publicKey, dsaEncoding: 'der' },
      parts.signature,
    );
  } catch {
    verified = false;
  }
  if (!verified)
    return fail('PKI_ERR_BAD_CSR', 'the CSR self-signature does not verify with its public key');
  return { ok: true, publicKey, kind: kind.kind };
}
