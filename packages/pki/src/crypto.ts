// Key handling and the one configured instance of @peculiar/x509. Owns: key generation, key
// strength rules, private-key encoding at rest, conversion to non-extractable WebCrypto signing
// keys. Must never: log, stringify or return private key material.
//
// @peculiar/x509 resolves its services through tsyringe, which needs a Reflect metadata polyfill
// loaded before the library is evaluated; ESM evaluates imports in order, so it comes first here
// and every other module of this package imports x509 through this file.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { PkiError } from './errors.js';
import type { PkiFailure } from './errors.js';
import { fail } from './errors.js';

// Node's own WebCrypto, not a polyfill: the library otherwise picks globalThis.crypto.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };

/**
 * Node's WebCrypto key. @peculiar/x509 declares the DOM's CryptoKey, which this workspace (no DOM
 * types) cannot name; the runtime objects are the same.
 */
export type SigningKey = webcrypto.CryptoKey;

export type KeyKind =
  | { readonly type: 'ec'; readonly curve: 'P-256' | 'P-384' }
  | { readonly type: 'rsa'; readonly bits: number };

export type KeyKindResult = { readonly ok: true; readonly kind: KeyKind } | PkiFailure;

export const DEFAULT_KEY: KeyKind = { type: 'ec', curve: 'P-256' };
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 8192;

const NODE_CURVES: Readonly<Record<string, 'P-256' | 'P-384'>> = {
  prime256v1: 'P-256',
  secp384r1: 'P-384',
};

/** What a key is, and whether Palisade accepts it: EC P-256/P-384 or RSA 2048..8192. */
export function describeKey(key: KeyObject): KeyKindResult {
  const d = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = NODE_CURVES[d?.namedCurve ?? ''];
      if (!curve)
        return fail(
          'PKI_ERR_WEAK_KEY',
          `EC curve ${d?.namedCurve ?? '(unnamed)'} is not accepted (use P-256 or P-384)`,
        );
      return { ok: true, kind: { type: 'ec', curve } };
    }
    case 'rsa': {
      const bits = d?.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS)
        return fail('PKI_ERR_WEAK_KEY', `RSA key of ${bits} bits is too weak (at least 2048)`);
      if (bits > MAX_RSA_BITS)
        return fail('PKI_ERR_WEAK_KEY', `RSA key of ${bits} bits is too large (at most 8192)`);
      return { ok: true, kind: { type: 'rsa', bits } };
    }
    default:
      return fail(
        'PKI_ERR_WEAK_KEY',
        `key type ${key.asymmetricKeyType ?? 'unknown'} is not accepted (use EC P-256 or RSA 2048+)`,
      );
  }
}

/** Reads a DER SubjectPublicKeyInfo; a failure (not a throw) on garbage. */
export function publicKeyFromSpki(spki: Uint8Array): KeyObject | undefined {
  try {
    return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch {
    return undefined;
  }
}

export function spkiDer(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'der' });
}

/** WebCrypto algorithm used to sign with a key of this kind. */
export function signingAlgorithm(kind: KeyKind): { name: string; hash: string } {
  switch (kind.type) {
    case 'ec':
      return { name: 'ECDSA', hash: kind.curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
    case 'rsa':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

function importAlgorithm(
  kind: KeyKind,
): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  switch (kind.type) {
    case 'ec':
      return { name: 'ECDSA', namedCurve: kind.curve };
    case 'rsa':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

export function generateKey(kind: KeyKind = DEFAULT_KEY): KeyObject {
  switch (kind.type) {
    case 'ec':
      return generateKeyPairSync('ec', {
        namedCurve: kind.curve === 'P-384' ? 'secp384r1' : 'prime256v1',
      }).privateKey;
    case 'rsa':
      return generateKeyPairSync('rsa', { modulusLength: kind.bits }).privateKey;
  }
}

/**
 * A WebCrypto signing key that cannot be exported: once imported, the key material is reachable
 * only through `subtle.sign`. The transient DER copy is wiped.
 */
export async function toSigningKey(key: KeyObject, kind: KeyKind): Promise<SigningKey> {
  const der = key.export({ type: 'pkcs8', format: 'der' });
  try {
    return await webcrypto.subtle.importKey('pkcs8', der, importAlgorithm(kind), false, ['sign']);
  } finally {
    der.fill(0);
  }
}

/** PKCS#8 PEM, encrypted with AES-256-CBC under the passphrase when one is given. */
export function encodePrivateKey(key: KeyObject, passphrase?: string): string {
  if (passphrase === undefined) return key.export({ type: 'pkcs8', format: 'pem' }) as string;
  return key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }) as string;
}

export function isEncryptedPem(pem: string): boolean {
  return (
    pem.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----') || pem.includes('Proc-Type: 4,ENCRYPTED')
  );
}

/** Reads a private key PEM (PKCS#8, SEC1 or PKCS#1; encrypted or not). Throws PkiError. */
export function decodePrivateKey(
  pem: string,
  passphrase: string | undefined,
  what: string,
): KeyObject {
  const encrypted = isEncryptedPem(pem);
  if (encrypted && passphrase === undefined)
    throw new PkiError('PKI_ERR_KEY_LOCKED', `${what} is encrypted; give its passphrase`);
  try {
    return createPrivateKey(
      encrypted ? { key: pem, format: 'pem', passphrase: passphrase ?? '' } : pem,
    );
  } catch {
    // The library's message may quote parts of the input; never pass it on.
    if (encrypted)
      throw new PkiError('PKI_ERR_KEY_LOCKED', `${what}: wrong passphrase or damaged key`);
    throw new PkiError('PKI_ERR_BAD_STATE', `${what} is not a readable private key`);
  }
}

export function pemEncode(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Every `CERTIFICATE` block of a PEM text, as DER. Other blocks are ignored. */
export function pemCertificates(pem: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of pem.matchAll(
    /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----/g,
  ))
    out.push(Buffer.from((m[1] ?? '').replace(/\s+/g, ''), 'base64'));
  return out;
}
