// Public surface of @palisade/pki: the certificate authority, SPIFFE IDs, SVID verification,
// attestation policy, renewal timing, TLS helpers and issuance metrics.
export * from './errors.js';
export * from './spiffe-id.js';
export * from './duration.js';
export { DEFAULT_KEY, MAX_RSA_BITS, MIN_RSA_BITS, describeKey, generateKey } from './crypto.js';
export type { KeyKind, KeyKindResult } from './crypto.js';
export { MAX_CSR_BYTES, readCsr } from './certificates.js';
export type { CsrResult } from './certificates.js';
export * from './verify.js';
export * from './attest.js';
export * from './renewal.js';
export * from './metrics.js';
export * from './workload.js';
export * from './tls.js';
export * from './ca.js';
