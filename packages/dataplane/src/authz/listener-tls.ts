// How the ext_authz gRPC listener is secured: TLS with a server certificate, optionally mutual
// (client certificates verified against a CA, optionally limited to named SPIFFE IDs), or
// plaintext — which a TCP listener gets only when asked for explicitly; a unix socket (protected
// by file permissions) may be plaintext by default.
// Owns: validating the key material before anything listens, the gRPC server credentials, and
// the per-call client check. Must never: listen on TCP in plaintext without an explicit choice,
// accept a key that does not belong to its certificate, or start with an expired certificate.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';

/** The listener's security, as `AuthzServerOptions.listener`. */
export type ListenerSecurity =
  | {
      readonly kind: 'tls';
      /** PEM private key of the server certificate. */
      readonly keyPem: string;
      /** PEM server certificate, then its intermediates. */
      readonly certChainPem: string;
      /** PEM CA certificate(s): when given, clients must present a certificate they issued. */
      readonly clientCaPem?: string;
      /** With `clientCaPem`: only these URI SANs (SPIFFE IDs) may call Check. */
      readonly clientIds?: readonly string[];
    }
  | { readonly kind: 'plaintext' };

export type ListenerResult =
  | {
      readonly ok: true;
      readonly credentials: grpc.ServerCredentials;
      /** One line for the operator: what the listener requires. */
      readonly describe: string;
    }
  | { readonly ok: false; readonly code: 'AUTHZ_ERR_TLS'; readonly message: string };

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificates(pem: string, what: string): X509Certificate[] | string {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) return `${what}: no PEM certificate`;
  if (blocks.length > 64) return `${what}: more than 64 certificates`;
  const out: X509Certificate[] = [];
  for (const [i, b] of blocks.entries()) {
    try {
      out.push(new X509Certificate(b));
    } catch (e) {
      return `${what}: certificate ${i + 1} does not parse (${(e as Error).message})`;
    }
  }
  return out;
}

function fail(message: string): ListenerResult {
  return { ok: false, code: 'AUTHZ_ERR_TLS', message };
}

/** The URI SANs of a certificate (`subjectaltname` is `URI:a, DNS:b, ...`). */
export function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

/**
 * The credentials for `address` (`host:port` or `unix:/path`) under `security`, after checking
 * the key material at `now`. `undefined` security: plaintext on a unix socket, refused on TCP.
 */
export function listenerCredentials(
  address: string,
  security: ListenerSecurity | undefined,
  now: Date = new Date(),
): ListenerResult {
  const unix = address.startsWith('unix:');
  if (security === undefined) {
    if (!unix)
      return fail(
        `refusing a plaintext ext_authz listener on ${address}: give a server certificate (TLS), or choose plaintext explicitly`,
      );
    return {
      ok: true,
      credentials: grpc.ServerCredentials.createInsecure(),
      describe: 'plaintext (unix socket)',
    };
  }
  if (security.kind === 'plaintext')
    return {
      ok: true,
      credentials: grpc.ServerCredentials.createInsecure(),
      describe: unix ? 'plaintext (unix socket)' : 'PLAINTEXT (chosen explicitly)',
    };
  const chain = certificates(security.certChainPem, 'server certificate');
  if (typeof chain === 'string') return fail(chain);
  const leaf = chain[0] as X509Certificate;
  let key;
  try {
    key = createPrivateKey(security.keyPem);
  } catch (e) {
    return fail(`server key does not parse (${(e as Error).message})`);
  }
  if (key.type !== 'private') return fail('server key is not a private key');
  if (!leaf.checkPrivateKey(key))
    return fail('server key does not belong to the server certificate');
  const t = now.getTime();
  if (t < Date.parse(leaf.validFrom))
    return fail(`server certificate is not valid before ${leaf.validFrom}`);
  if (t >= Date.parse(leaf.validTo)) return fail(`server certificate expired at ${leaf.validTo}`);
  let ca: Buffer | null = null;
  if (security.clientCaPem !== undefined) {
    const cas = certificates(security.clientCaPem, 'client CA');
    if (typeof cas === 'string') return fail(cas);
    const notCa = cas.findIndex((c) => !c.ca);
    if (notCa >= 0) return fail(`client CA certificate ${notCa + 1} is not a CA certificate`);
    ca = Buffer.from(cas.map((c) => c.toString()).join('\n'));
  }
  const ids = security.clientIds ?? [];
  if (ids.length > 0 && ca === null)
    return fail('client identities need a client CA (mutual TLS) to be verified against');
  for (const id of ids)
    if (!/^spiffe:\/\/[^/\s]+\/\S+$/.test(id))
      return fail(`client identity ${JSON.stringify(id)} is not a SPIFFE ID`);
  const sans = uriSans(leaf.subjectAltName);
  return {
    ok: true,
    // With a client CA, Node's TLS server requests and verifies the client certificate and
    // closes the handshake without a valid one (chain to the CA, validity dates).
    credentials: grpc.ServerCredentials.createSsl(
      ca,
      [
        {
          private_key: Buffer.from(security.keyPem),
          cert_chain: Buffer.from(security.certChainPem),
        },
      ],
      ca !== null,
    ),
    describe: `TLS as ${sans[0] ?? leaf.subject.replace(/\n/g, ', ')} (valid until ${leaf.validTo})${ca !== null ? `, client certificates required${ids.length > 0 ? ` and limited to ${ids.length} identit${ids.length === 1 ? 'y' : 'ies'}` : ''}` : ', no client certificate'}`,
  };
}

/**
 * Whether the caller of one RPC may be answered: always, unless `clientIds` limits it to
 * certificates naming one of them. Returns the refusal reason otherwise.
 */
export function clientRefusal(
  security: ListenerSecurity | undefined,
  /** The peer certificate's `subjectaltname` as Node's TLS reports it. */
  peerSubjectAltName: string | undefined,
): string | undefined {
  if (security?.kind !== 'tls' || !security.clientIds || security.clientIds.length === 0)
    return undefined;
  const sans = uriSans(peerSubjectAltName);
  if (sans.some((s) => security.clientIds?.includes(s))) return undefined;
  return `the caller's certificate (${sans.length > 0 ? sans.join(', ') : 'no URI SAN'}) is not among the ${security.clientIds.length} client identit${security.clientIds.length === 1 ? 'y' : 'ies'} allowed to ask`;
}
