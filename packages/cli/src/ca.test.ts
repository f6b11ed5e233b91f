import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from './main.js';

const BIN = fileURLToPath(new URL('../bin/palisade.js', import.meta.url));

async function run(argv: string[]) {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    readStdin: () => Promise.resolve(''),
  });
  return { code, out, err };
}

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

function withDir(name: string, f: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-cli-${name}-${process.pid}-`));
    try {
      await f(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'palisade ca init, issue, inspect, bundle, rotate: files, modes, openssl-verifiable output, audit trail',
  withDir('ca', async (dir) => {
    const d = join(dir, 'data');
    const init = await run(['ca', 'init', '--data-dir', d, '--trust-domain', 'example.org']);
    assert.equal(init.code, 0, init.err);
    assert.match(init.out, /trust domain example\.org/);
    const again = await run(['ca', 'init', '--data-dir', d]);
    assert.equal(again.code, 1);
    assert.match(again.err, /^error PKI_ERR_CA_EXISTS: /);

    const out = join(dir, 'svid');
    const issue = await run([
      'ca',
      'issue',
      '--data-dir',
      d,
      '--id',
      'spiffe://example.org/ns/prod/sa/api',
      '--out-dir',
      out,
      '--ttl',
      '2h',
    ]);
    assert.equal(issue.code, 0, issue.err);
    assert.equal(statSync(join(out, 'key.pem')).mode & 0o777, 0o600);
    assert.match(readFileSync(join(out, 'key.pem'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.doesNotMatch(issue.out + issue.err, /PRIVATE KEY/);
    const v = openssl([
      'verify',
      '-CAfile',
      join(d, 'ca.pem'),
      '-untrusted',
      join(out, 'chain.pem'),
      join(out, 'cert.pem'),
    ]);
    assert.equal(v.status, 0, v.out);
    const text = openssl(['x509', '-in', join(out, 'cert.pem'), '-noout', '-text']).out;
    assert.match(text, /URI:spiffe:\/\/example\.org\/ns\/prod\/sa\/api/);
    // The key written is the key the certificate is for.
    assert.equal(
      openssl(['x509', '-in', join(out, 'cert.pem'), '-noout', '-pubkey']).out,
      openssl(['pkey', '-in', join(out, 'key.pem'), '-pubout']).out,
    );

    const refused = await run([
      'ca',
      'issue',
      '--data-dir',
      d,
      '--id',
      'spiffe://cluster.local/ns/a/sa/b',
      '--out-dir',
      join(dir, 'x'),
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.err, /^error PKI_ERR_WRONG_TRUST_DOMAIN: /);
    const audit = readFileSync(join(d, 'ca-audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      audit.map((e) => [e.outcome, e.requester, e.code ?? null]),
      [
        ['issued', 'cli', null],
        ['refused', 'cli', 'PKI_ERR_WRONG_TRUST_DOMAIN'],
      ],
    );

    const inspect = await run(['ca', 'inspect', '--data-dir', d, '-o', 'json']);
    assert.equal(inspect.code, 0, inspect.err);
    const j = JSON.parse(inspect.out) as { trustDomain: string; authorities: { status: string }[] };
    assert.equal(j.trustDomain, 'example.org');
    assert.deepEqual(
      j.authorities.map((a) => a.status),
      ['active'],
    );
    assert.doesNotMatch(inspect.out, /PRIVATE/);
    const table = await run(['ca', 'inspect', '--data-dir', d]);
    assert.match(table.out, /trust domain\s+example\.org/);

    const bundle = await run(['ca', 'bundle', '--data-dir', d]);
    assert.equal(bundle.out, readFileSync(join(d, 'ca.pem'), 'utf8'));
    const rotate = await run(['ca', 'rotate', '--data-dir', d, '--overlap', '2h']);
    assert.equal(rotate.code, 0, rotate.err);
    assert.match(rotate.out, /signs from .*\nold root .* stays trusted until/);
    const after = await run(['ca', 'bundle', '--data-dir', d]);
    assert.equal(after.out.match(/BEGIN CERTIFICATE/g)?.length, 2);
    const twice = await run(['ca', 'rotate', '--data-dir', d]);
    assert.equal(twice.code, 1);
    assert.match(twice.err, /PKI_ERR_ROTATION: a rotation is in progress/);
  }),
);

test(
  'palisade ca init --passphrase-file: keys encrypted at rest; commands without the passphrase fail with PKI_ERR_KEY_LOCKED',
  withDir('pass', async (dir) => {
    const d = join(dir, 'data');
    const pf = join(dir, 'pass');
    writeFileSync(pf, 's3cret passphrase\n', { mode: 0o600 });
    assert.equal((await run(['ca', 'init', '--data-dir', d, '--passphrase-file', pf])).code, 0);
    const locked = await run([
      'ca',
      'issue',
      '--data-dir',
      d,
      '--id',
      'spiffe://cluster.local/ns/a/sa/b',
      '--out-dir',
      join(dir, 'o'),
    ]);
    assert.equal(locked.code, 1);
    assert.match(locked.err, /PKI_ERR_KEY_LOCKED/);
    const ok = await run([
      'ca',
      'issue',
      '--data-dir',
      d,
      '--passphrase-file',
      pf,
      '--id',
      'spiffe://cluster.local/ns/a/sa/b',
      '--out-dir',
      join(dir, 'o'),
    ]);
    assert.equal(ok.code, 0, ok.err);
    const insp = await run([
      'ca',
      'inspect',
      '--data-dir',
      d,
      '--passphrase-file',
      pf,
      '-o',
      'json',
    ]);
    assert.doesNotMatch(insp.out, /s3cret/);
    assert.equal((JSON.parse(insp.out) as { keyEncrypted: boolean }).keyEncrypted, true);
  }),
);

test(
  'palisade ca import: an intermediate made with openssl under an organisation root; issued chains verify with openssl against the root',
  withDir('import', async (dir) => {
    const sh = (args: string[]) => {
      const r = openssl(args);
      assert.equal(r.status, 0, r.out);
    };
    const p = (f: string) => join(dir, f);
    writeFileSync(
      p('root.ext'),
      'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n',
    );
    writeFileSync(
      p('inter.ext'),
      'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectAltName=URI:spiffe://corp.example\n',
    );
    sh([
      'genpkey',
      '-algorithm',
      'EC',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-out',
      p('root.key'),
    ]);
    sh([
      'req',
      '-new',
      '-x509',
      '-key',
      p('root.key'),
      '-subj',
      '/O=Corp/CN=Corp Root',
      '-days',
      '30',
      '-addext',
      'basicConstraints=critical,CA:true',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      p('root.pem'),
    ]);
    sh([
      'genpkey',
      '-algorithm',
      'EC',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-out',
      p('inter.key'),
    ]);
    sh([
      'req',
      '-new',
      '-key',
      p('inter.key'),
      '-subj',
      '/O=Corp/CN=Palisade Intermediate',
      '-out',
      p('inter.csr'),
    ]);
    sh([
      'x509',
      '-req',
      '-in',
      p('inter.csr'),
      '-CA',
      p('root.pem'),
      '-CAkey',
      p('root.key'),
      '-CAcreateserial',
      '-days',
      '10',
      '-extfile',
      p('inter.ext'),
      '-out',
      p('inter.pem'),
    ]);
    const d = p('data');
    const imp = await run([
      'ca',
      'import',
      '--data-dir',
      d,
      '--cert',
      p('inter.pem'),
      '--key',
      p('inter.key'),
      '--chain',
      p('root.pem'),
    ]);
    assert.equal(imp.code, 0, imp.err);
    assert.match(imp.out, /trust domain corp\.example/);
    const issue = await run([
      'ca',
      'issue',
      '--data-dir',
      d,
      '--id',
      'spiffe://corp.example/ns/a/sa/b',
      '--out-dir',
      p('svid'),
    ]);
    assert.equal(issue.code, 0, issue.err);
    const v = openssl([
      'verify',
      '-CAfile',
      p('root.pem'),
      '-untrusted',
      p('svid/chain.pem'),
      p('svid/cert.pem'),
    ]);
    assert.equal(v.status, 0, v.out);
    const bundle = await run(['ca', 'bundle', '--data-dir', d]);
    assert.equal(bundle.out.trim(), readFileSync(p('root.pem'), 'utf8').trim());
    const rot = await run(['ca', 'rotate', '--data-dir', d]);
    assert.equal(rot.code, 1);
    assert.match(rot.err, /PKI_ERR_ROTATION: .*palisade ca import/);
    const wrong = await run([
      'ca',
      'import',
      '--data-dir',
      p('d2'),
      '--cert',
      p('inter.pem'),
      '--key',
      p('root.key'),
      '--chain',
      p('root.pem'),
    ]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.err, /PKI_ERR_BAD_IMPORT: the key does not belong/);
  }),
);

test('palisade ca: usage errors exit 2 with the usage text', async () => {
  const cases: [string[], RegExp][] = [
    [['ca'], /needs a subcommand/],
    [['ca', 'frob'], /unknown ca subcommand "frob"/],
    [['ca', 'issue', '--out-dir', 'x'], /needs --id/],
    [['ca', 'issue', '--id', 'spiffe://td/ns/a/sa/b'], /needs --out-dir/],
    [['ca', 'issue', '--id', 'http://x', '--out-dir', 'x'], /--id: a SPIFFE ID must start/],
    [['ca', 'issue', '--id', 'spiffe://td/ns/a/sa/b', '--out-dir', 'x', '--ttl', '5y'], /--ttl/],
    [['ca', 'init', '--ttl', '1h'], /--ttl does not apply to ca init/],
    [['ca', 'init', '--trust-domain', 'Bad_Upper'], /lowercase/],
    [['ca', 'rotate', '--overlap', 'forever'], /--overlap/],
    [['ca', 'inspect', '-o', 'yaml'], /use table or json/],
    [['ca', 'init', 'extra'], /unexpected argument/],
    [
      ['ca', 'init', '--passphrase-file', '/nonexistent/palisade-pass'],
      /cannot read passphrase file/,
    ],
  ];
  for (const [argv, why] of cases) {
    const r = await run(argv);
    assert.equal(r.code, 2, argv.join(' '));
    assert.match(r.err, why, argv.join(' '));
  }
  const help = await run(['ca', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.out, /palisade ca issue --id spiffe:\/\/TD\/ns\/N\/sa\/S --out-dir D/);
});

test(
  'npx palisade ca: the installed bin runs ca init and ca bundle end to end',
  withDir('bin', (dir) => {
    const d = join(dir, 'data');
    const init = spawnSync(process.execPath, [BIN, 'ca', 'init', '--data-dir', d], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(init.status, 0, init.stderr);
    const b = spawnSync(process.execPath, [BIN, 'ca', 'bundle', '--data-dir', d], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stdout, /^-----BEGIN CERTIFICATE-----/);
    return Promise.resolve();
  }),
);
