// The sidecar's own credentials: its SVID and the trust bundle. Owns: the check that a
// credential set is usable by this endpoint. Must never: accept an SVID of another identity, one
// that does not chain to the bundle it comes with, or a key that does not match the certificate.

import { createSecureContext } from 'node:tls';
import type { Server as TlsServer } from 'node:tls';
import { certificateChainPem, svidServerOptions, verifySvid } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';

export interface Credentials {
  readonly svid: SvidMaterial;
  readonly trustBundlePem: string;
}

/** Undefined when usable; otherwise why not. */
export function credentialProblem(
  c: Credentials,
  identity: string,
  trustDomain: string,
  now: Date,
): string | undefined {
  const r = verifySvid(certificateChainPem(c.svid), c.trustBundlePem, { trustDomain, now });
  if (!r.ok) return `own SVID refused: ${r.code}: ${r.message}`;
  if (r.spiffeId !== identity)
    return `own SVID is for ${r.spiffeId}, but this endpoint runs as ${identity}`;
  try {
    createSecureContext({ key: c.svid.keyPem, cert: certificateChainPem(c.svid) });
  } catch (e) {
    return `own key and certificate do not form a TLS credential: ${(e as Error).message}`;
  }
  return undefined;
}

/**
 * Installs renewed credentials on an inbound TLS server for new connections (open ones keep
 * theirs; client certificate handling stays as configured); returns why not when they are not
 * usable by the endpoint, keeping the current ones.
 */
export function renewServerCredentials(
  tls: TlsServer,
  c: Credentials,
  view: { readonly identity: string; readonly trustDomain: string },
  now: Date,
): string | undefined {
  const problem = credentialProblem(c, view.identity, view.trustDomain, now);
  if (problem) return problem;
  tls.setSecureContext(svidServerOptions(c.svid, c.trustBundlePem));
  return undefined;
}
