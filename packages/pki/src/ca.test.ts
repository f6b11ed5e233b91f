import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { CertificateAuthority } from './ca.js';
import type { IssuanceEvent, IssuedSvid } from './ca.js';
import { allowAnyIdentityForDevelopment, attestingAuthorizer } from './attest.js';
import { createKeyAndCsr } from './workload.js';
import { verifySvid } from './verify.js';
import { PkiError } from './errors.js';
import {
  CA_EXT,
  openssl,
  opensslKey,
  opensslOk,
  opensslRoot,
  opensslSigned,
  tempDir,
} from './test-helpers.js';

const HOUR = 3600_000;
const ID = 'spiffe://cluster.local/ns/prod/sa/api';

async function issue(
  ca: CertificateAuthority,
  now: Date,
  ttl?: number | string,
): Promise<IssuedSvid> {
  const { csrPem } = await createKeyAndCsr();
  const r = await ca.issueFromCsr(csrPem, {
    spiffeId: ID,
    requester: 'test',
    authorize: allowAnyIdentityForDevelopment,
    now,
    ...(ttl !== undefined ? { ttl } : {}),
  });
  assert.ok(r.ok, r.ok ? '' : r.message);
  return r.svid;
}

function issuerOf(svid: IssuedSvid): string {
  return new X509Certificate(svid.certPem).issuer;
}

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof PkiError && e.code === code);
}

test('ca init: key files mode 0600 in a 0700 directory, trust bundle in <data-dir>/ca.pem', async () => {
  const t = tempDir('ca-init');
  try {
    const ca = await CertificateAuthority.init(t.path, { trustDomain: 'example.org' });
    const dir = join(t.path, 'ca');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    const keys = readdirSync(dir).filter((f) => f.endsWith('.key.pem'));
    assert.equal(keys.length, 1);
    for (const k of keys) assert.equal(statSync(join(dir, k)).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(t.path, 'ca.pem'), 'utf8'), ca.bundle());
    const text = opensslOk(['x509', '-in', join(t.path, 'ca.pem'), '-noout', '-text']);
    assert.match(text, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
    assert.match(text, /URI:spiffe:\/\/example\.org\s/);
    assert.match(text, /ASN1 OID: prime256v1/);
    const i = ca.inspect();
    const years = (Date.parse(i.authorities[0]?.notAfter ?? '') - Date.now()) / (365 * 24 * HOUR);
    assert.ok(years > 9.9 && years < 10.1, `root lasts 10 years, got ${years}`);
    await rejects(CertificateAuthority.init(t.path), 'PKI_ERR_CA_EXISTS');
    await rejects(
      CertificateAuthority.init(join(t.path, 'x'), { trustDomain: 'Bad:TD' }),
      'PKI_ERR_BAD_SPIFFE_ID',
    );
  } finally {
    t.cleanup();
  }
});

test('key protection: no key material in JSON.stringify, inspect(), util.inspect, state.json or errors', async () => {
  const t = tempDir('ca-secret');
  try {
    const ca = await CertificateAuthority.init(t.path);
    const dir = join(t.path, 'ca');
    const keyFile = readdirSync(dir).find((f) => f.endsWith('.key.pem')) ?? '';
    const keyPem = readFileSync(join(dir, keyFile), 'utf8');
    const body = keyPem.split('\n').filter((l) => l && !l.startsWith('-----'));
    const svid = await issue(ca, new Date());
    const outputs = [
      JSON.stringify(ca),
      JSON.stringify(ca.inspect()),
      inspect(ca, { depth: 10, showHidden: true }),
      String(ca),
      readFileSync(join(dir, 'state.json'), 'utf8'),
      JSON.stringify(svid),
      ca.bundle(),
    ];
    for (const o of outputs) {
      assert.doesNotMatch(o, /PRIVATE KEY/);
      for (const line of body) assert.ok(!o.includes(line.slice(8, 40)), 'key bytes leaked');
    }
  } finally {
    t.cleanup();
  }
});

test('key protection: a passphrase encrypts the keys at rest (PKCS#8, openssl-readable); wrong or missing passphrase is PKI_ERR_KEY_LOCKED', async () => {
  const t = tempDir('ca-pass');
  try {
    await CertificateAuthority.init(t.path, { passphrase: 'correct horse' });
    const dir = join(t.path, 'ca');
    const keyPath = join(dir, readdirSync(dir).find((f) => f.endsWith('.key.pem')) ?? '');
    assert.match(readFileSync(keyPath, 'utf8'), /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    assert.equal(
      openssl(['pkey', '-in', keyPath, '-passin', 'pass:correct horse', '-noout']).status,
      0,
    );
    assert.notEqual(openssl(['pkey', '-in', keyPath, '-passin', 'pass:nope', '-noout']).status, 0);
    await rejects(CertificateAuthority.load(t.path), 'PKI_ERR_KEY_LOCKED');
    await rejects(CertificateAuthority.load(t.path, { passphrase: 'wrong' }), 'PKI_ERR_KEY_LOCKED');
    const ca = await CertificateAuthority.load(t.path, { passphrase: 'correct horse' });
    await issue(ca, new Date());
    try {
      await CertificateAuthority.load(t.path, { passphrase: 'zebra-42' });
      assert.fail('a wrong passphrase must not open the CA');
    } catch (e) {
      assert.ok(e instanceof PkiError);
      assert.doesNotMatch(e.message, /correct horse|zebra-42/);
    }
  } finally {
    t.cleanup();
  }
});

test('X509-SVID §6.1: the bundle as a SPIFFE bundle: one JWK per root, use x509-svid, no kid, the DER certificate as x5c', async () => {
  const t = tempDir('ca-jwks');
  try {
    const ca = await CertificateAuthority.init(t.path);
    await ca.rotate({ overlapMs: HOUR });
    const b = ca.bundleJwks();
    assert.equal(b.keys.length, 2);
    const pems = ca.bundleCertificates();
    for (const [i, k] of b.keys.entries()) {
      assert.equal(k.use, 'x509-svid');
      assert.equal(k.kty, 'EC');
      assert.equal(k.crv, 'P-256');
      assert.equal('kid' in k, false);
      assert.equal('d' in k, false, 'public keys only');
      assert.equal(k.x5c.length, 1);
      assert.equal(
        new X509Certificate(Buffer.from(k.x5c[0] ?? '', 'base64')).fingerprint256,
        new X509Certificate(pems[i] ?? '').fingerprint256,
      );
    }
    assert.ok(b.spiffe_refresh_hint > 0);
  } finally {
    t.cleanup();
  }
});

test('passphrases: an empty one is refused; keys added to an unencrypted CA stay unencrypted', async () => {
  const t = tempDir('ca-pass2');
  try {
    await rejects(CertificateAuthority.init(t.path, { passphrase: '' }), 'PKI_ERR_KEY_LOCKED');
    await CertificateAuthority.init(t.path);
    const ca = await CertificateAuthority.load(t.path, { passphrase: 'ignored' });
    await ca.rotate();
    await CertificateAuthority.load(t.path);
  } finally {
    t.cleanup();
  }
});

test('key protection: a CA key file readable by group or others is refused (PKI_ERR_KEY_FILE_MODE)', async () => {
  const t = tempDir('ca-mode');
  try {
    await CertificateAuthority.init(t.path);
    const dir = join(t.path, 'ca');
    const keyPath = join(dir, readdirSync(dir).find((f) => f.endsWith('.key.pem')) ?? '');
    chmodSync(keyPath, 0o644);
    await rejects(CertificateAuthority.load(t.path), 'PKI_ERR_KEY_FILE_MODE');
    chmodSync(keyPath, 0o600);
    await CertificateAuthority.load(t.path);
    await rejects(CertificateAuthority.load(join(t.path, 'none')), 'PKI_ERR_NO_CA');
    writeFileSync(join(dir, 'state.json'), '{"version":1,"trustDomain":"x"}');
    await rejects(CertificateAuthority.load(t.path), 'PKI_ERR_BAD_STATE');
  } finally {
    t.cleanup();
  }
});

test('X509-SVID §2-§4: a leaf has one URI SAN (critical, empty subject), CA:false, digitalSignature, serverAuth+clientAuth; openssl verifies it', async () => {
  const t = tempDir('ca-leaf');
  try {
    const ca = await CertificateAuthority.init(t.path);
    const now = new Date();
    const svid = await issue(ca, now);
    writeFileSync(join(t.path, 'leaf.pem'), svid.certPem);
    writeFileSync(join(t.path, 'chain.pem'), svid.chainPem);
    const text = opensslOk(['x509', '-in', join(t.path, 'leaf.pem'), '-noout', '-text']);
    assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /Key Usage: critical\s+Digital Signature\n/);
    assert.match(
      text,
      /Extended Key Usage: \s*TLS Web Server Authentication, TLS Web Client Authentication/,
    );
    assert.match(
      text,
      /Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/prod\/sa\/api\n/,
    );
    assert.equal(text.match(/URI:/g)?.length, 1);
    assert.match(text, /Subject: \n/);
    assert.match(text, /Authority Key Identifier/);
    const v = opensslOk([
      'verify',
      '-CAfile',
      join(t.path, 'ca.pem'),
      '-untrusted',
      join(t.path, 'chain.pem'),
      join(t.path, 'leaf.pem'),
    ]);
    assert.match(v, /leaf\.pem: OK/);
    // The default lifetime is 24 h (backdated one minute for clock skew).
    assert.equal(svid.notAfter.getTime() - now.getTime(), 24 * HOUR);
    assert.equal(now.getTime() - svid.notBefore.getTime(), 60_000);
    assert.match(svid.serial, /^[0-9a-f]{32}$/);
  } finally {
    t.cleanup();
  }
});

test('CSR intake: only the public key is taken; the subject, SANs and CA:true a CSR asks for are ignored', async () => {
  const t = tempDir('ca-csr');
  try {
    const ca = await CertificateAuthority.init(t.path);
    const key = join(t.path, 'k.pem');
    opensslKey(key);
    const cfg = join(t.path, 'req.cnf');
    writeFileSync(
      cfg,
      '[req]\ndistinguished_name=dn\nprompt=no\nreq_extensions=ext\n[dn]\nCN=admin\n[ext]\nbasicConstraints=critical,CA:true\nkeyUsage=keyCertSign\nsubjectAltName=URI:spiffe://cluster.local/ns/kube-system/sa/admin,DNS:evil.example\n',
    );
    const csrPem = opensslOk(['req', '-new', '-key', key, '-config', cfg]);
    const r = await ca.issueFromCsr(csrPem, {
      spiffeId: ID,
      requester: 't',
      authorize: allowAnyIdentityForDevelopment,
    });
    assert.ok(r.ok);
    writeFileSync(join(t.path, 'leaf.pem'), r.svid.certPem);
    const text = opensslOk(['x509', '-in', join(t.path, 'leaf.pem'), '-noout', '-text']);
    assert.doesNotMatch(text, /admin|evil|CA:TRUE|Certificate Sign/);
    assert.match(text, /URI:spiffe:\/\/cluster\.local\/ns\/prod\/sa\/api/);
    // The certificate is for the CSR's key.
    const pubFromCert = opensslOk(['x509', '-in', join(t.path, 'leaf.pem'), '-noout', '-pubkey']);
    const pubFromKey = opensslOk(['pkey', '-in', key, '-pubout']);
    assert.equal(pubFromCert, pubFromKey);
  } finally {
    t.cleanup();
  }
});

test('CSR intake: RSA 2048 gets keyEncipherment; RSA 1024, secp256k1 and Ed25519 are PKI_ERR_WEAK_KEY; forged or garbage CSRs are PKI_ERR_BAD_CSR', async () => {
  const t = tempDir('ca-keys');
  try {
    const ca = await CertificateAuthority.init(t.path);
    const csrFor = (name: string, alg: string[]) => {
      const k = join(t.path, `${name}.key`);
      opensslKey(k, alg);
      return opensslOk(['req', '-new', '-key', k, '-subj', '/CN=x']);
    };
    const req = (csrPem: string) =>
      ca.issueFromCsr(csrPem, {
        spiffeId: ID,
        requester: 't',
        authorize: allowAnyIdentityForDevelopment,
      });
    const rsa = await req(
      csrFor('rsa2048', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']),
    );
    assert.ok(rsa.ok);
    writeFileSync(join(t.path, 'rsa.pem'), rsa.svid.certPem);
    assert.match(
      opensslOk(['x509', '-in', join(t.path, 'rsa.pem'), '-noout', '-text']),
      /Digital Signature, Key Encipherment/,
    );
    for (const [name, alg] of [
      ['rsa1024', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']],
      ['k1', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1']],
      ['ed', ['-algorithm', 'ED25519']],
    ] as const) {
      const r = await req(csrFor(name, [...alg]));
      assert.equal(r.ok, false, name);
      if (!r.ok) assert.equal(r.code, 'PKI_ERR_WEAK_KEY', name);
    }
    // A CSR whose signature was made by another key: the requester does not hold the key.
    const good = csrFor('p256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']);
    const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0xff;
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    for (const bad of [
      forged,
      'garbage',
      '',
      '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----',
      'x'.repeat(70_000),
    ]) {
      const r = await req(bad);
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.code, 'PKI_ERR_BAD_CSR', bad.slice(0, 30));
    }
  } finally {
    t.cleanup();
  }
});

test('issuance policy: only attested identities are signed; every issuance and refusal is audited and counted', async () => {
  const t = tempDir('ca-attest');
  try {
    const events: IssuanceEvent[] = [];
    const ca = await CertificateAuthority.init(t.path, { audit: (e) => void events.push(e) });
    const registry = [
      { node: 'node-a', namespace: 'prod', serviceAccount: 'api', name: 'prod/api-1' },
    ];
    const { csrPem } = await createKeyAndCsr();
    const asNode = (node: string, spiffeId: string, ttl?: string) =>
      ca.issueFromCsr(csrPem, {
        spiffeId,
        requester: `node:${node}`,
        authorize: attestingAuthorizer(node, 'cluster.local', registry),
        ...(ttl ? { ttl } : {}),
      });
    const ok = await asNode('node-a', ID);
    assert.ok(ok.ok);
    const refusals: [string, string, string | undefined, string][] = [
      ['node-b', ID, undefined, 'PKI_ERR_NOT_ATTESTED'],
      ['node-a', 'spiffe://cluster.local/ns/prod/sa/db', undefined, 'PKI_ERR_NOT_ATTESTED'],
      ['node-a', 'spiffe://other.org/ns/prod/sa/api', undefined, 'PKI_ERR_WRONG_TRUST_DOMAIN'],
      ['node-a', 'spiffe://cluster.local/ns/prod/sa/api/', undefined, 'PKI_ERR_BAD_SPIFFE_ID'],
      ['node-a', 'spiffe://cluster.local/palisade/server', undefined, 'PKI_ERR_BAD_SPIFFE_ID'],
      ['node-a', ID, '91d', 'PKI_ERR_BAD_TTL'],
      ['node-a', ID, 'soon', 'PKI_ERR_BAD_TTL'],
    ];
    for (const [node, id, ttl, code] of refusals) {
      const r = await asNode(node, id, ttl);
      assert.equal(r.ok, false, `${node} ${id}`);
      if (!r.ok) assert.equal(r.code, code, `${node} ${id} ${ttl ?? ''}`);
    }
    assert.equal(events.length, 1 + refusals.length);
    const issued = events[0];
    assert.equal(issued?.outcome, 'issued');
    assert.equal(issued?.requester, 'node:node-a');
    assert.equal(issued?.spiffeId, ID);
    assert.equal(issued?.serial, ok.svid.serial);
    assert.equal(issued?.notAfter, ok.svid.notAfter.toISOString());
    for (const [i, e] of events.slice(1).entries()) {
      assert.equal(e.outcome, 'refused');
      assert.equal(e.code, refusals[i]?.[3]);
      assert.equal(e.requester, `node:${refusals[i]?.[0] ?? ''}`);
      assert.ok(e.reason.length > 10);
    }
    assert.deepEqual(ca.metrics.snapshot(), {
      issued: 1,
      refused: {
        PKI_ERR_BAD_SPIFFE_ID: 2,
        PKI_ERR_BAD_TTL: 2,
        PKI_ERR_NOT_ATTESTED: 2,
        PKI_ERR_WRONG_TRUST_DOMAIN: 1,
      },
    });
    const prom = ca.metrics.toPrometheus();
    assert.match(prom, /^palisade_ca_certificates_issued_total 1$/m);
    assert.match(
      prom,
      /^palisade_ca_certificates_refused_total\{code="PKI_ERR_NOT_ATTESTED"\} 2$/m,
    );
    // An authorizer that throws refuses (fail closed).
    const boom = await ca.issueFromCsr(csrPem, {
      spiffeId: ID,
      requester: 'x',
      authorize: () => {
        throw new Error('store down');
      },
    });
    assert.equal(boom.ok, false);
  } finally {
    t.cleanup();
  }
});

test('audit is part of issuance: when the audit sink fails, no certificate is handed out', async () => {
  const t = tempDir('ca-audit');
  try {
    await CertificateAuthority.init(t.path);
    const ca = await CertificateAuthority.load(t.path, {
      audit: () => Promise.reject(new Error('audit log unavailable')),
    });
    const { csrPem } = await createKeyAndCsr();
    await assert.rejects(
      ca.issueFromCsr(csrPem, {
        spiffeId: ID,
        requester: 't',
        authorize: allowAnyIdentityForDevelopment,
      }),
      /audit log unavailable/,
    );
  } finally {
    t.cleanup();
  }
});

test('lifetimes: configurable up to 90 days, clamped to the signing certificate; an expired CA refuses (PKI_ERR_CA_EXPIRED)', async () => {
  const t = tempDir('ca-ttl');
  try {
    const now = new Date();
    const ca = await CertificateAuthority.init(t.path, { rootTtlMs: 48 * HOUR, now });
    const s = await issue(ca, now, '1h');
    assert.equal(s.notAfter.getTime() - now.getTime(), HOUR);
    const long = await issue(ca, now, '90d');
    assert.ok(long.notAfter.getTime() <= now.getTime() + 48 * HOUR, 'never outlives its issuer');
    const { csrPem } = await createKeyAndCsr();
    const late = await ca.issueFromCsr(csrPem, {
      spiffeId: ID,
      requester: 't',
      authorize: allowAnyIdentityForDevelopment,
      now: new Date(now.getTime() + 49 * HOUR),
    });
    assert.equal(late.ok, false);
    if (!late.ok) assert.equal(late.code, 'PKI_ERR_CA_EXPIRED');
  } finally {
    t.cleanup();
  }
});

test('rotation: the new root is published at once, signs from half the overlap, the old root stays trusted until the overlap ends and its certificates expire', async () => {
  const t = tempDir('ca-rotate');
  try {
    const t0 = new Date();
    const at = (h: number) => new Date(t0.getTime() + h * HOUR);
    const ca = await CertificateAuthority.init(t.path, { now: t0 });
    const oldRoot = ca.bundle(t0);
    const before = await issue(ca, t0, '1h');
    const info = await ca.rotate({ overlapMs: 4 * HOUR, now: at(1) });
    assert.equal(info.status, 'pending');
    assert.equal(ca.bundleCertificates(at(1)).length, 2, 'both roots in the bundle from the start');
    assert.ok(ca.bundle(at(1)).startsWith(oldRoot));
    await rejects(ca.rotate({ now: at(1.5) }), 'PKI_ERR_ROTATION');
    const during = await issue(ca, at(2), '2h');
    assert.equal(issuerOf(during), issuerOf(before), 'the old root still signs before activation');
    const after = await issue(ca, at(3.01), '2h');
    assert.notEqual(issuerOf(after), issuerOf(before), 'the new root signs after half the overlap');
    // A peer holding the bundle fetched at rotation time trusts both generations.
    const bundleAtRotation = ca.bundle(at(1));
    for (const s of [during, after])
      assert.ok(verifySvid([s.certPem], bundleAtRotation, { now: at(3.5) }).ok);
    // The overlap ends at +5h, but the old root signed a certificate valid to +4h... and
    // `during` to +4h: the old root leaves once both are past.
    assert.equal(ca.bundleCertificates(at(4.9)).length, 2);
    assert.equal(ca.bundleCertificates(at(5.01)).length, 1);
    const statuses = ca.inspect(at(2)).authorities.map((a) => a.status);
    assert.deepEqual(statuses, ['active', 'pending']);
    assert.deepEqual(
      ca.inspect(at(4)).authorities.map((a) => a.status),
      ['trusted', 'active'],
    );
    // The same timeline after a reload from disk.
    const again = await CertificateAuthority.load(t.path);
    assert.deepEqual(
      again.inspect(at(4)).authorities.map((a) => a.status),
      ['trusted', 'active'],
    );
    assert.equal(again.bundle(at(2)), ca.bundle(at(2)));
    // The next rotation, after the old root retired, deletes its key file.
    const keysBefore = readdirSync(join(t.path, 'ca')).filter((f) => f.endsWith('.key.pem')).length;
    await again.rotate({ overlapMs: HOUR, now: at(6) });
    const keysAfter = readdirSync(join(t.path, 'ca')).filter((f) => f.endsWith('.key.pem')).length;
    assert.equal(keysBefore, 2);
    assert.equal(keysAfter, 2, 'retired key removed, new key added');
    assert.equal(readFileSync(join(t.path, 'ca.pem'), 'utf8'), again.bundle(at(6)));
  } finally {
    t.cleanup();
  }
});

test('rotation keeps an old root while a long-lived certificate it signed is valid', async () => {
  const t = tempDir('ca-rotate-long');
  try {
    const t0 = new Date();
    const ca = await CertificateAuthority.init(t.path, { now: t0 });
    const long = await issue(ca, t0, '48h');
    await ca.rotate({ overlapMs: HOUR, activateAfterMs: 0, now: t0 });
    const t1 = new Date(t0.getTime() + 47 * HOUR);
    assert.ok(verifySvid([long.certPem], ca.bundle(t1), { now: t1 }).ok);
    // It leaves once that certificate is past, plus the high-water slack (HIGH_WATER_SLACK_MS).
    assert.equal(ca.bundleCertificates(new Date(t0.getTime() + 48.9 * HOUR)).length, 2);
    const t2 = new Date(t0.getTime() + 49 * HOUR + 1000);
    assert.equal(ca.bundleCertificates(t2).length, 1);
  } finally {
    t.cleanup();
  }
});

test('imported intermediate: made with openssl under an organisation root; the chain is served with every certificate and openssl verifies it', async () => {
  const t = tempDir('ca-import');
  try {
    const root = opensslRoot(t.path, 'org-root', CA_EXT);
    const inter = opensslSigned(
      t.path,
      'inter',
      root,
      'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectAltName=URI:spiffe://corp.example\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid',
    );
    const dataDir = join(t.path, 'data');
    const ca = await CertificateAuthority.importIntermediate(dataDir, {
      certPem: inter.certPem,
      keyPem: inter.keyPem,
      chainPem: root.certPem,
    });
    assert.equal(ca.trustDomain, 'corp.example', 'trust domain from the intermediate SPIFFE ID');
    assert.equal(ca.mode, 'intermediate');
    assert.equal(ca.bundle().trim(), root.certPem.trim(), 'relying parties anchor on the org root');
    const { csrPem } = await createKeyAndCsr();
    const r = await ca.issueFromCsr(csrPem, {
      spiffeId: 'spiffe://corp.example/ns/a/sa/b',
      requester: 't',
      authorize: allowAnyIdentityForDevelopment,
    });
    assert.ok(r.ok);
    assert.equal(r.svid.chainPem.match(/BEGIN CERTIFICATE/g)?.length, 2, 'intermediate and root');
    writeFileSync(join(t.path, 'leaf.pem'), r.svid.certPem);
    writeFileSync(join(t.path, 'chain.pem'), r.svid.chainPem);
    const v = opensslOk([
      'verify',
      '-CAfile',
      root.certPath,
      '-untrusted',
      join(t.path, 'chain.pem'),
      join(t.path, 'leaf.pem'),
    ]);
    assert.match(v, /OK/);
    assert.ok(
      verifySvid([r.svid.certPem, r.svid.chainPem], ca.bundle(), {
        now: new Date(),
        trustDomain: 'corp.example',
      }).ok,
    );
    await rejects(ca.rotate(), 'PKI_ERR_ROTATION');
    const keyFile = readdirSync(join(dataDir, 'ca')).find((f) => f.endsWith('.key.pem')) ?? '';
    assert.equal(statSync(join(dataDir, 'ca', keyFile)).mode & 0o777, 0o600);
  } finally {
    t.cleanup();
  }
});

test('imported intermediate: a key that does not match, a non-CA certificate, a foreign chain or a path are PKI_ERR_BAD_IMPORT', async () => {
  const t = tempDir('ca-import-bad');
  try {
    const root = opensslRoot(t.path, 'root', CA_EXT);
    const other = opensslRoot(t.path, 'other', CA_EXT);
    const inter = opensslSigned(t.path, 'inter', root, CA_EXT);
    const leaf = opensslSigned(
      t.path,
      'leaf',
      root,
      'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature',
    );
    const pathy = opensslSigned(
      t.path,
      'pathy',
      root,
      `${CA_EXT}\nsubjectAltName=URI:spiffe://cluster.local/ns/x`,
    );
    const cases: [string, { certPem: string; keyPem: string; chainPem: string }][] = [
      ['key mismatch', { certPem: inter.certPem, keyPem: other.keyPem, chainPem: root.certPem }],
      ['not a CA', { certPem: leaf.certPem, keyPem: leaf.keyPem, chainPem: root.certPem }],
      ['foreign chain', { certPem: inter.certPem, keyPem: inter.keyPem, chainPem: other.certPem }],
      ['no root', { certPem: inter.certPem, keyPem: inter.keyPem, chainPem: inter.certPem }],
      ['spiffe path', { certPem: pathy.certPem, keyPem: pathy.keyPem, chainPem: root.certPem }],
      ['garbage key', { certPem: inter.certPem, keyPem: 'nope', chainPem: root.certPem }],
    ];
    for (const [name, c] of cases)
      await assert.rejects(
        CertificateAuthority.importIntermediate(join(t.path, name.replace(/ /g, '-')), c),
        (e: unknown) => e instanceof PkiError && e.code === 'PKI_ERR_BAD_IMPORT',
        name,
      );
  } finally {
    t.cleanup();
  }
});

test('imported intermediate over an existing CA is a rotation with overlap', async () => {
  const t = tempDir('ca-import-rotate');
  try {
    const root = opensslRoot(t.path, 'org', CA_EXT);
    const inter = opensslSigned(t.path, 'inter', root, CA_EXT);
    // openssl starts validity at the current second; the clock must not be read before that.
    const t0 = new Date(Date.now() + 1000);
    const ca = await CertificateAuthority.init(join(t.path, 'd'), { now: t0 });
    const rotated = await CertificateAuthority.importIntermediate(join(t.path, 'd'), {
      certPem: inter.certPem,
      keyPem: inter.keyPem,
      chainPem: root.certPem,
      overlapMs: 2 * HOUR,
      now: t0,
    });
    assert.equal(rotated.bundleCertificates(t0).length, 2, 'self-signed root and org root');
    assert.ok(ca.bundle(t0).length > 0);
    const s = await issue(rotated, new Date(t0.getTime() + 1.01 * HOUR));
    assert.equal(issuerOf(s), new X509Certificate(inter.certPem).subject);
  } finally {
    t.cleanup();
  }
});

test("issueServerCert: the API server's certificate for its own key, with DNS and IP SANs, usable for TLS server auth", async () => {
  const t = tempDir('ca-server');
  try {
    const ca = await CertificateAuthority.init(t.path);
    const { csrPem } = await createKeyAndCsr();
    const r = await ca.issueServerCert(csrPem, {
      dnsNames: ['localhost', 'palisade.example'],
      ips: ['127.0.0.1', '::1', 'fd00::ffff:10.1.2.3'],
    });
    assert.ok(r.ok);
    writeFileSync(join(t.path, 's.pem'), r.svid.certPem);
    const text = opensslOk(['x509', '-in', join(t.path, 's.pem'), '-noout', '-text']);
    assert.match(
      text,
      /URI:spiffe:\/\/cluster\.local\/palisade\/server, DNS:localhost, DNS:palisade\.example, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, IP Address:FD00:0:0:0:0:FFFF:A01:203/,
    );
    const v = opensslOk([
      'verify',
      '-purpose',
      'sslserver',
      '-CAfile',
      join(t.path, 'ca.pem'),
      join(t.path, 's.pem'),
    ]);
    assert.match(v, /OK/);
    for (const bad of [{ dnsNames: ['bad name'] }, { ips: ['300.1.1.1'] }]) {
      const b = await ca.issueServerCert(csrPem, bad);
      assert.equal(b.ok, false);
    }
  } finally {
    t.cleanup();
  }
});
