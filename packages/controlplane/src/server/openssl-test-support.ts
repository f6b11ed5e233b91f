// Test support (not used by the server): certificates made with the openssl CLI, for what the
// Palisade CA would never issue — foreign roots, expired leaves, CN/O-named client certificates.

import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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
