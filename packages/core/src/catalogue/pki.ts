// Error codes of the pki area (one file per area so parallel work does not collide; errors.ts
// merges every area into the one catalogue).
import type { ErrorSpec } from '../errors.js';

export const PKI_ERRORS = {
  PKI_ERR_BAD_SPIFFE_ID: {
    status: 400,
    summary:
      'A SPIFFE ID breaks the SPIFFE ID standard (scheme, trust domain, path segments, length) or is not a workload identity.',
  },
  PKI_ERR_BAD_CSR: {
    status: 400,
    summary:
      'A certificate signing request cannot be parsed or its self-signature does not verify.',
  },
  PKI_ERR_WEAK_KEY: {
    status: 400,
    summary: 'A key is not EC P-256/P-384 or RSA of 2048 to 8192 bits.',
  },
  PKI_ERR_BAD_TTL: {
    status: 400,
    summary: 'A requested certificate lifetime is not a duration between 1 minute and 90 days.',
  },
  PKI_ERR_NOT_ATTESTED: {
    status: 403,
    summary:
      'Certificate refused: no endpoint running as that namespace/service account is registered on the requesting node.',
  },
  PKI_ERR_WRONG_TRUST_DOMAIN: {
    status: 403,
    summary: 'A SPIFFE ID (requested or presented) belongs to another trust domain.',
  },
  PKI_ERR_EXPIRED: {
    status: 401,
    summary: 'A presented certificate, or a CA certificate in its chain, has expired.',
  },
  PKI_ERR_NOT_YET_VALID: {
    status: 401,
    summary: 'A presented certificate, or a CA certificate in its chain, is not valid yet.',
  },
  PKI_ERR_UNTRUSTED: {
    status: 401,
    summary: 'A presented certificate does not chain to any certificate of the trust bundle.',
  },
  PKI_ERR_BAD_SVID: {
    status: 401,
    summary:
      'A presented certificate is not a valid X.509-SVID leaf (URI SAN count, CA flag, key usage, extended key usage).',
  },
  PKI_ERR_PEER_MISMATCH: {
    status: 403,
    summary: 'A peer presented a valid SVID, but not for the SPIFFE ID the caller expected.',
  },
  PKI_ERR_NO_CA: {
    status: 503,
    summary: 'No certificate authority in the data directory (run palisade ca init or ca import).',
  },
  PKI_ERR_CA_EXISTS: {
    status: 409,
    summary: 'The data directory already holds a certificate authority.',
  },
  PKI_ERR_CA_EXPIRED: {
    status: 503,
    summary: 'No signing certificate of the authority is valid now; rotate or import a new one.',
  },
  PKI_ERR_ROTATION: {
    status: 409,
    summary:
      'A rotation cannot start: one is already in progress, the overlap is out of bounds, or an imported intermediate must be rotated by import.',
  },
  PKI_ERR_KEY_LOCKED: {
    status: 500,
    summary: 'A CA key file is encrypted and the passphrase is missing or wrong.',
  },
  PKI_ERR_KEY_FILE_MODE: {
    status: 500,
    summary:
      'A CA key file is readable by group or others (must be mode 0600); refusing to use it.',
  },
  PKI_ERR_BAD_IMPORT: {
    status: 400,
    summary:
      'An imported intermediate is not a CA certificate, does not match its key, or does not chain to the given root.',
  },
  PKI_ERR_BAD_STATE: {
    status: 500,
    summary: 'The CA files in the data directory are damaged or inconsistent.',
  },
} as const satisfies Record<string, ErrorSpec>;
