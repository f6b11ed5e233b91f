// Test support (not part of the public surface): temporary directories named after the pid, and
// real openssl for certificates Palisade would never issue itself.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function tempDir(name: string): { readonly path: string; readonly cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), `palisade-${name}-${process.pid}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export interface OpensslResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function openssl(args: readonly string[], input?: string): OpensslResult {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function opensslOk(args: readonly string[], input?: string): string {
  const r = openssl(args, input);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export interface OpensslCert {
  readonly certPath: string;
  readonly keyPath: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** An EC P-256 key made by openssl. */
export function opensslKey(
  path: string,
  algorithm = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
): string {
  opensslOk(['genpkey', ...algorithm, '-out', path]);
  return readFileSync(path, 'utf8');
}

/** A self-signed CA certificate, extensions given as openssl config lines. */
export function opensslRoot(dir: string, name: string, ext: string): OpensslCert {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.pem`);
  const cfg = join(dir, `${name}.cnf`);
  writeFileSync(
    cfg,
    `[req]\ndistinguished_name=dn\nprompt=no\nx509_extensions=ext\n[dn]\nO=Test\nCN=${name}\n[ext]\n${ext}\n`,
  );
  const keyPem = opensslKey(keyPath);
  opensslOk([
    'req',
    '-new',
    '-x509',
    '-key',
    keyPath,
    '-out',
    certPath,
    '-days',
    '30',
    '-config',
    cfg,
  ]);
  return { certPath, keyPath, certPem: readFileSync(certPath, 'utf8'), keyPem };
}

/** A certificate for a fresh key, signed by `issuer`, with the given extensions. */
export function opensslSigned(
  dir: string,
  name: string,
  issuer: OpensslCert,
  ext: string,
  subject = `/O=Test/CN=${name}`,
): OpensslCert {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.pem`);
  const csrPath = join(dir, `${name}.csr`);
  const extPath = join(dir, `${name}.ext`);
  const keyPem = opensslKey(keyPath);
  writeFileSync(extPath, `${ext}\n`);
  opensslOk(['req', '-new', '-key', keyPath, '-subj', subject, '-out', csrPath]);
  opensslOk([
    'x509',
    '-req',
    '-in',
    csrPath,
    '-CA',
    issuer.certPath,
    '-CAkey',
    issuer.keyPath,
    '-CAcreateserial',
    '-out',
    certPath,
    '-days',
    '2',
    '-extfile',
    extPath,
  ]);
  return { certPath, keyPath, certPem: readFileSync(certPath, 'utf8'), keyPem };
}

export const CA_EXT =
  'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash';
export const LEAF_EXT =
  'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth';
