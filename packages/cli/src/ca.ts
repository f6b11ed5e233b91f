// `palisade ca init | import | inspect | bundle | rotate | issue` (DESIGN §5, §6): the CA of a
// data dir, operated from the command line. Owns: flags → CertificateAuthority calls, output,
// files written by `ca issue`. Must never: print a private key, or write one readable by others.
// Exit codes: 0 ok, 1 the CA refused or failed (error CODE: message), 2 usage.

import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CertificateAuthority,
  DEFAULT_DATA_DIR,
  PkiError,
  allowAnyIdentityForDevelopment,
  createKeyAndCsr,
  formatDuration,
  parseDuration,
  parseSpiffeId,
  trustDomainProblem,
} from '@palisade/pki';
import type { AuditSink, CaInspection, IssuanceEvent } from '@palisade/pki';
import type { Parsed } from './args.js';
import { UsageError } from './args.js';
import type { Io } from './input.js';
import { InputError } from './input.js';

const COMMON = ['data-dir', 'passphrase-file', 'help'];
const SUBCOMMANDS: Readonly<Record<string, readonly string[]>> = {
  init: ['trust-domain'],
  import: ['cert', 'key', 'chain', 'key-passphrase-file', 'trust-domain', 'overlap'],
  inspect: ['output'],
  bundle: [],
  rotate: ['overlap', 'activate-after'],
  issue: ['id', 'out-dir', 'ttl'],
};

function str(p: Parsed, name: string): string | undefined {
  return p.values[name] as string | undefined;
}

function need(p: Parsed, name: string, sub: string): string {
  const v = str(p, name);
  if (v === undefined || v === '') throw new UsageError(`ca ${sub} needs --${name}`);
  return v;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    throw new InputError(`cannot read ${what} ${path}`);
  }
}

/** A passphrase file: its content without one trailing newline. */
/** The CA key's passphrase from a file (the file's last newline is not part of it). */
export function readPassphrase(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  const text = readText(path, 'passphrase file').replace(/\r?\n$/, '');
  if (text.length === 0) throw new UsageError(`passphrase file ${path} is empty`);
  return text;
}

function duration(p: Parsed, name: string): number | undefined {
  const v = str(p, name);
  if (v === undefined) return undefined;
  const d = parseDuration(v);
  if (!d.ok) throw new UsageError(`--${name}: ${d.message}`);
  return d.ms;
}

/** The CLI's audit trail: one JSON line per issuance or refusal, beside the CA. */
function fileAudit(dataDir: string): AuditSink {
  return (e: IssuanceEvent) => {
    appendFileSync(join(dataDir, 'ca-audit.jsonl'), `${JSON.stringify(e)}\n`, { mode: 0o600 });
  };
}

function writeFile(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

function inspectTable(i: CaInspection): string {
  const lines = [
    `trust domain   ${i.trustDomain}`,
    `mode           ${i.mode}`,
    `data dir       ${i.dataDir}`,
    `keys at rest   ${i.keyEncrypted ? 'encrypted (passphrase)' : 'plain PKCS#8, mode 0600'}`,
    `workload certs default ${i.defaultTtl}, at most ${i.maxTtl}`,
    `issued         ${i.issuance.issued} (this process)`,
    '',
    'authorities:',
  ];
  for (const a of i.authorities) {
    lines.push(`  ${a.id}  ${a.status}${a.imported ? ' (imported)' : ''}  ${a.key}`);
    lines.push(`    subject     ${a.subject}`);
    lines.push(`    valid       ${a.notBefore} to ${a.notAfter}`);
    lines.push(`    signs from  ${a.activatesAt}`);
    if (a.trustedUntil) lines.push(`    trusted to  ${a.trustedUntil}`);
    for (const c of a.chain) lines.push(`    under       ${c}`);
    lines.push(`    sha256      ${a.sha256Fingerprint}`);
  }
  return `${lines.join('\n')}\n`;
}

export async function caCommand(p: Parsed, io: Io): Promise<number> {
  const [sub, ...extra] = p.positionals;
  if (sub === undefined)
    throw new UsageError(`ca needs a subcommand: ${Object.keys(SUBCOMMANDS).join(', ')}`);
  const allowed = SUBCOMMANDS[sub];
  if (!allowed)
    throw new UsageError(
      `unknown ca subcommand ${JSON.stringify(sub)}; use ${Object.keys(SUBCOMMANDS).join(', ')}`,
    );
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  for (const [name, v] of Object.entries(p.values))
    if (v !== undefined && !COMMON.includes(name) && !allowed.includes(name))
      throw new UsageError(`--${name} does not apply to ca ${sub}`);
  const dataDir = str(p, 'data-dir') ?? DEFAULT_DATA_DIR;
  const passphrase = readPassphrase(str(p, 'passphrase-file'));
  const runtime = {
    ...(passphrase !== undefined ? { passphrase } : {}),
    audit: fileAudit(dataDir),
  };
  try {
    switch (sub) {
      case 'init': {
        const trustDomain = str(p, 'trust-domain') ?? 'cluster.local';
        const tdp = trustDomainProblem(trustDomain);
        if (tdp) throw new UsageError(`--trust-domain ${JSON.stringify(trustDomain)}: ${tdp}`);
        const ca = await CertificateAuthority.init(dataDir, { ...runtime, trustDomain });
        const a = ca.inspect().authorities[0];
        io.stdout.write(
          `initialised the CA of trust domain ${trustDomain} in ${dataDir}\n` +
            `root ${a?.subject ?? ''}, ${a?.key ?? ''}, valid to ${a?.notAfter ?? ''}\n` +
            `sha256 ${a?.sha256Fingerprint ?? ''}\ntrust bundle: ${join(dataDir, 'ca.pem')}\n`,
        );
        return 0;
      }
      case 'import': {
        const certPem = readText(need(p, 'cert', sub), 'certificate');
        const keyPem = readText(need(p, 'key', sub), 'key');
        const chainPem = readText(need(p, 'chain', sub), 'chain');
        const keyPassphrase = readPassphrase(str(p, 'key-passphrase-file'));
        const td = str(p, 'trust-domain');
        const overlapMs = duration(p, 'overlap');
        const rotating = CertificateAuthority.exists(dataDir);
        const ca = await CertificateAuthority.importIntermediate(dataDir, {
          ...runtime,
          certPem,
          keyPem,
          chainPem,
          ...(keyPassphrase !== undefined ? { keyPassphrase } : {}),
          ...(td !== undefined ? { trustDomain: td } : {}),
          ...(overlapMs !== undefined ? { overlapMs } : {}),
        });
        const a = ca.inspect().authorities.at(-1);
        io.stdout.write(
          `${rotating ? 'rotation started: imported' : 'imported'} intermediate ${a?.subject ?? ''} (trust domain ${ca.trustDomain})\n` +
            `signs from ${a?.activatesAt ?? ''}, valid to ${a?.notAfter ?? ''}\n` +
            `under ${(a?.chain ?? []).join(' <- ')}\ntrust bundle: ${join(dataDir, 'ca.pem')}\n`,
        );
        return 0;
      }
      case 'inspect': {
        const o = str(p, 'output') ?? 'table';
        if (o !== 'table' && o !== 'json') throw new UsageError(`-o ${o}: use table or json`);
        const ca = await CertificateAuthority.load(dataDir, runtime);
        const i = ca.inspect();
        io.stdout.write(o === 'json' ? `${JSON.stringify(i, null, 2)}\n` : inspectTable(i));
        return 0;
      }
      case 'bundle': {
        const ca = await CertificateAuthority.load(dataDir, runtime);
        io.stdout.write(ca.bundle());
        return 0;
      }
      case 'rotate': {
        const overlapMs = duration(p, 'overlap');
        const activateAfterMs = duration(p, 'activate-after');
        const ca = await CertificateAuthority.load(dataDir, runtime);
        const a = await ca.rotate({
          ...(overlapMs !== undefined ? { overlapMs } : {}),
          ...(activateAfterMs !== undefined ? { activateAfterMs } : {}),
        });
        const old = ca.inspect().authorities.filter((x) => x.id !== a.id && x.trustedUntil);
        io.stdout.write(
          `rotation started: new root ${a.id} is in the trust bundle now and signs from ${a.activatesAt}\n` +
            old
              .map((x) => `old root ${x.id} stays trusted until ${x.trustedUntil ?? ''}\n`)
              .join('') +
            `trust bundle: ${join(dataDir, 'ca.pem')} (${ca.bundleCertificates().length} certificates)\n`,
        );
        return 0;
      }
      case 'issue': {
        const id = need(p, 'id', sub);
        const outDir = need(p, 'out-dir', sub);
        const parsed = parseSpiffeId(id);
        if (!parsed.ok) throw new UsageError(`--id: ${parsed.message}`);
        const ttlMs = duration(p, 'ttl');
        const ca = await CertificateAuthority.load(dataDir, runtime);
        // The same path as the node agent: the key is made here, only the CSR goes to the CA.
        const { keyPem, csrPem } = await createKeyAndCsr();
        const r = await ca.issueFromCsr(csrPem, {
          spiffeId: id,
          ...(ttlMs !== undefined ? { ttl: ttlMs } : {}),
          requester: 'cli',
          authorize: allowAnyIdentityForDevelopment,
        });
        if (!r.ok) {
          io.stderr.write(`error ${r.code}: ${r.message}\n`);
          return 1;
        }
        mkdirSync(outDir, { recursive: true });
        writeFile(join(outDir, 'key.pem'), keyPem, 0o600);
        writeFile(join(outDir, 'cert.pem'), r.svid.certPem, 0o644);
        writeFile(join(outDir, 'chain.pem'), r.svid.chainPem, 0o644);
        io.stdout.write(
          `issued ${r.svid.spiffeId}\nserial ${r.svid.serial}\nvalid ${r.svid.notBefore.toISOString()} to ${r.svid.notAfter.toISOString()} (${formatDuration(r.svid.notAfter.getTime() - r.svid.notBefore.getTime())})\n` +
            `wrote ${join(outDir, 'cert.pem')}, ${join(outDir, 'key.pem')} (0600), ${join(outDir, 'chain.pem')}\n`,
        );
        return 0;
      }
      default:
        throw new UsageError(`unknown ca subcommand ${JSON.stringify(sub)}`);
    }
  } catch (e) {
    if (e instanceof PkiError) {
      io.stderr.write(`error ${e.code}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
