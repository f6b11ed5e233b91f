// The workload side of issuance, as the CLI (`palisade ca issue`) and the node agent do it: the
// key is generated where it will be used and only a CSR leaves. Owns: key + CSR generation.

import { webcrypto } from 'node:crypto';
import { DEFAULT_KEY, pemEncode, signingAlgorithm, x509 } from './crypto.js';
import type { KeyKind } from './crypto.js';

export interface KeyAndCsr {
  /** PKCS#8 PEM of the new private key: write it with mode 0600, never send it. */
  readonly keyPem: string;
  readonly csrPem: string;
}

function generationParams(
  kind: KeyKind,
): webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams {
  switch (kind.type) {
    case 'ec':
      return { name: 'ECDSA', namedCurve: kind.curve };
    case 'rsa':
      return {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: kind.bits,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      };
  }
}

/**
 * A fresh key pair and a CSR signed with it. The CSR carries no name: the CA decides the SPIFFE
 * ID and ignores whatever a CSR asks for.
 */
export async function createKeyAndCsr(kind: KeyKind = DEFAULT_KEY): Promise<KeyAndCsr> {
  const keys = await webcrypto.subtle.generateKey(generationParams(kind), true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: signingAlgorithm(kind),
  });
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = pemEncode('PRIVATE KEY', pkcs8);
  pkcs8.fill(0);
  return { keyPem, csrPem: csr.toString('pem') };
}
