// TLS for the API server: the credentials it serves with (a key, a certificate chain and the
// bundle client certificates are verified against) and what the handler learns about a client
// certificate. The credentials come from the Palisade CA (ca/server-ca.ts) unless a caller
// passes its own. Node's TLS verifies client certificates (chain and validity dates); the
// handler maps the result to 401 or a principal.
// Owns: the credential shape and the peer summary. Must never: log or return a private key.

import type { TLSSocket } from 'node:tls';
import type { PeerCertificateInfo } from '../auth/principal.js';
import type { TlsInfo } from './http-types.js';

export interface ServerCredentials {
  /** PEM private key of the server certificate. */
  readonly key: string;
  /** PEM server certificate followed by its intermediates. */
  readonly certChain: string;
  /** PEM bundle of CAs whose client certificates are accepted. */
  readonly clientCa: string;
}

/** What the handler needs to know about the client's certificate. */
export function tlsInfo(socket: TLSSocket): TlsInfo {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return { presented: false, authorized: false };
  const err = socket.authorizationError as Error | string | null | undefined;
  const uris = (cert.subjectaltname ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  const o = cert.subject?.O;
  const cn = cert.subject?.CN;
  const peer: PeerCertificateInfo = {
    ...(cn !== undefined ? { subjectCN: Array.isArray(cn) ? (cn[0] ?? '') : cn } : {}),
    ...(o !== undefined ? { subjectO: Array.isArray(o) ? o : [o] } : {}),
    uris,
  };
  return {
    presented: true,
    authorized: socket.authorized,
    ...(err
      ? {
          authorizationError:
            typeof err === 'string' ? err : ((err as NodeJS.ErrnoException).code ?? err.message),
        }
      : {}),
    peer,
  };
}
