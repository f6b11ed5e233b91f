// TLS for the API server: the credentials it serves with (a key, a certificate chain and the
// bundle client certificates are verified against), and — until the Palisade CA is wired in — a
// development CA made with the `openssl` CLI in the data dir. Node's TLS verifies client
// certificates (chain and validity dates); the handler maps the result to 401 or a principal.
// Owns: credential files and the TLS options. Must never: log or return a private key.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
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

export interface OpensslCa {
  readonly certFile: string;
  readonly keyFile: string;
}

function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A self-signed P-256 root (10 years) at `<dir>/<name>.pem` and `<dir>/<name>-key.pem`. */
export function opensslCreateCa(dir: string, name: string, subject = `/CN=${name}`): OpensslCa {
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '3650',
    '-subj',
    subject,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}

export interface IssueOptions {
  readonly subject: string;
  readonly dnsNames?: readonly string[];
  readonly ips?: readonly string[];
  readonly uris?: readonly string[];
  /** Validity in days; negative gives an already expired certificate (tests). */
  readonly days: number;
  readonly usage: 'server' | 'client';
}

/** A P-256 leaf signed by `ca`, at `<dir>/<name>.pem` and `<dir>/<name>-key.pem`. */
export function opensslIssue(
  ca: OpensslCa,
  dir: string,
  name: string,
  o: IssueOptions,
): { certFile: string; keyFile: string } {
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const san = [
    ...(o.dnsNames ?? []).map((d) => `DNS:${d}`),
    ...(o.ips ?? []).map((i) => `IP:${i}`),
    ...(o.uris ?? []).map((u) => `URI:${u}`),
  ];
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      `extendedKeyUsage=${o.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
      ...(san.length > 0 ? [`subjectAltName=${san.join(',')}`] : []),
    ].join('\n') + '\n',
  );
  try {
    openssl([
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      csr,
      '-subj',
      o.subject,
    ]);
    chmodSync(keyFile, 0o600);
    openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      '-set_serial',
      `0x${Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex')}`,
      '-out',
      certFile,
      '-days',
      String(o.days),
      '-extfile',
      ext,
    ]);
  } finally {
    rmSync(csr, { force: true });
    rmSync(ext, { force: true });
  }
  return { certFile, keyFile };
}

/**
 * Development credentials in the data dir, created on first start: `dev-ca.pem` (+ key) and a
 * server certificate for the listen address, localhost and 127.0.0.1. `ca.pem` is the bundle
 * clients trust. Replaced by certificates from the Palisade CA when packages/pki is wired in.
 */
export function devServerCredentials(
  dataDir: string,
  host: string,
): ServerCredentials & { caFile: string } {
  const tlsDir = join(dataDir, 'tls');
  const caFile = join(dataDir, 'ca.pem');
  let ca: OpensslCa = {
    certFile: join(tlsDir, 'dev-ca.pem'),
    keyFile: join(tlsDir, 'dev-ca-key.pem'),
  };
  if (!existsSync(ca.certFile) || !existsSync(ca.keyFile))
    ca = opensslCreateCa(tlsDir, 'dev-ca', '/CN=palisade development CA');
  const serverCert = join(tlsDir, 'server.pem');
  const serverKey = join(tlsDir, 'server-key.pem');
  const hostFile = join(tlsDir, 'server.host');
  const ipLike = /^[\d.]+$|:/.test(host);
  if (
    !existsSync(serverCert) ||
    !existsSync(serverKey) ||
    (existsSync(hostFile) ? readFileSync(hostFile, 'utf8') : '') !== host
  ) {
    opensslIssue(ca, tlsDir, 'server', {
      subject: '/CN=palisade-server',
      dnsNames: ['localhost', ...(ipLike ? [] : [host])],
      ips: [
        '127.0.0.1',
        '::1',
        ...(ipLike && host !== '127.0.0.1' && host !== '::1' ? [host] : []),
      ],
      days: 365,
      usage: 'server',
    });
    writeFileSync(hostFile, host);
  }
  const caPem = readFileSync(ca.certFile, 'utf8');
  writeFileSync(caFile, caPem);
  return {
    key: readFileSync(serverKey, 'utf8'),
    certChain: readFileSync(serverCert, 'utf8'),
    clientCa: caPem,
    caFile,
  };
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
