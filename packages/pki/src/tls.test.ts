import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { connect, createServer } from 'node:tls';
import type { ConnectionOptions, TLSSocket, TlsOptions } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CertificateAuthority } from './ca.js';
import type { IssuedSvid } from './ca.js';
import { allowAnyIdentityForDevelopment } from './attest.js';
import { createKeyAndCsr } from './workload.js';
import { verifySvid } from './verify.js';
import { checkPeerChain, svidClientOptions, svidServerOptions, verifyPeer } from './tls.js';
import type { PeerCheckOptions, SvidMaterial } from './tls.js';
import { pemCertificates } from './crypto.js';
import { CA_EXT, LEAF_EXT, opensslRoot, opensslSigned, tempDir } from './test-helpers.js';

const HOUR = 3600_000;
const TD = 'cluster.local';
const SERVER_ID = 'spiffe://cluster.local/ns/prod/sa/reviews';
const CLIENT_ID = 'spiffe://cluster.local/ns/prod/sa/productpage';

let dir: ReturnType<typeof tempDir>;
let ca: CertificateAuthority;
let foreign: CertificateAuthority;
let otherDomain: CertificateAuthority;

before(async () => {
  dir = tempDir('tls');
  // Initialised a day ago, so the tests can ask it for certificates that are already expired.
  ca = await CertificateAuthority.init(join(dir.path, 'ca'), {
    now: new Date(Date.now() - 24 * HOUR),
  });
  foreign = await CertificateAuthority.init(join(dir.path, 'foreign'));
  otherDomain = await CertificateAuthority.init(join(dir.path, 'other'), {
    trustDomain: 'other.org',
  });
});
after(() => dir.cleanup());

async function svid(
  authority: CertificateAuthority,
  spiffeId: string,
  opts: { now?: Date; ttl?: string } = {},
): Promise<SvidMaterial & { issued: IssuedSvid }> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const r = await authority.issueFromCsr(csrPem, {
    spiffeId,
    requester: 'test',
    authorize: allowAnyIdentityForDevelopment,
    ...opts,
  });
  assert.ok(r.ok, r.ok ? '' : r.message);
  return { keyPem, certPem: r.svid.certPem, chainPem: r.svid.chainPem, issued: r.svid };
}

function code(r: ReturnType<typeof verifySvid>): string {
  return r.ok ? 'ok' : r.code;
}

interface Handshake {
  readonly serverSaw?: ReturnType<typeof verifyPeer>;
  readonly clientSaw?: ReturnType<typeof verifyPeer>;
  readonly clientError?: Error & { code?: string };
  /** What the server wrote after accepting; empty when it never accepted. */
  readonly greeting?: string;
  /** The server-side handshake failure (OpenSSL's verdict on the client certificate). */
  readonly serverError?: Error & { code?: string };
}

/** A real TLS server and client on 127.0.0.1, one connection, bounded in time. */
async function handshake(
  serverOpts: TlsOptions,
  clientOpts: ConnectionOptions,
  serverCheck: PeerCheckOptions,
): Promise<Handshake> {
  let serverSaw: ReturnType<typeof verifyPeer> | undefined;
  let serverError: (Error & { code?: string }) | undefined;
  const server = createServer(serverOpts, (s: TLSSocket) => {
    serverSaw = verifyPeer(s, serverCheck);
    s.end(serverSaw.ok ? `hello ${serverSaw.spiffeId}\n` : '');
  });
  server.on('tlsClientError', (e: Error & { code?: string }) => (serverError = e));
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise<Handshake>((resolve) => {
      const timer = setTimeout(() => resolve({ clientError: new Error('timeout') }), 5000);
      const c = connect({ ...clientOpts, host: '127.0.0.1', port });
      c.on('secureConnect', () => {
        // The client reads the server's ID; whether it was acceptable, checkServerIdentity decided.
        const clientSaw = verifyPeer(c, {
          ...serverCheck,
          expect: { kind: 'any-in-trust-domain' },
        });
        let data = '';
        c.on('data', (d: Buffer) => (data += d.toString()));
        c.on('end', () => {
          clearTimeout(timer);
          resolve({
            clientSaw,
            ...(serverSaw ? { serverSaw } : {}),
            ...(serverError ? { serverError } : {}),
          });
        });
      });
      c.on('error', (e: Error & { code?: string }) => {
        clearTimeout(timer);
        resolve({
          clientError: e,
          ...(serverSaw ? { serverSaw } : {}),
          ...(serverError ? { serverError } : {}),
        });
      });
    });
  } finally {
    await new Promise<void>((res) => server.close(() => res()));
  }
}

type Expect = PeerCheckOptions['expect'];

/**
 * handshake() between two SVID holders that both trust `bundle`: the client expects the server
 * to be `clientExpects` and the server the client to be `serverExpects` (any identity of the
 * trust domain where not given).
 */
function svidHandshake(
  server: SvidMaterial,
  client: SvidMaterial,
  bundle: string,
  expects: { readonly clientExpects?: Expect; readonly serverExpects?: Expect } = {},
): Promise<Handshake> {
  const check = (expect: Expect = { kind: 'any-in-trust-domain' }): PeerCheckOptions => ({
    trustBundlePem: bundle,
    trustDomain: TD,
    expect,
  });
  return handshake(
    svidServerOptions(server, bundle),
    svidClientOptions(client, check(expects.clientExpects)),
    check(expects.serverExpects),
  );
}

test('mutual TLS: a Node server and client holding SVIDs complete the handshake and each reads the other SPIFFE ID', async () => {
  const s = await svid(ca, SERVER_ID);
  const c = await svid(ca, CLIENT_ID);
  const bundle = ca.bundle();
  const h = await svidHandshake(s, c, bundle, {
    clientExpects: { kind: 'exact', ids: [SERVER_ID] },
    serverExpects: { kind: 'exact', ids: [CLIENT_ID] },
  });
  assert.equal(h.clientError, undefined);
  assert.ok(h.serverSaw?.ok);
  assert.equal(h.serverSaw.spiffeId, CLIENT_ID);
  assert.ok(h.clientSaw?.ok);
  assert.equal(h.clientSaw.spiffeId, SERVER_ID);
});

test('mutual TLS with an imported intermediate: the chain travels in the handshake, peers anchor on the org root', async () => {
  const t = tempDir('tls-inter');
  try {
    const root = opensslRoot(t.path, 'org', CA_EXT);
    const inter = opensslSigned(t.path, 'inter', root, `${CA_EXT}\nauthorityKeyIdentifier=keyid`);
    const ica = await CertificateAuthority.importIntermediate(join(t.path, 'd'), {
      certPem: inter.certPem,
      keyPem: inter.keyPem,
      chainPem: root.certPem,
    });
    const s = await svid(ica, SERVER_ID);
    const c = await svid(ica, CLIENT_ID);
    const bundle = ica.bundle();
    assert.equal(pemCertificates(bundle).length, 1);
    const h = await svidHandshake(s, c, bundle, {
      clientExpects: { kind: 'exact', ids: [SERVER_ID] },
    });
    assert.equal(h.clientError, undefined);
    assert.equal(h.serverSaw?.ok && h.serverSaw.spiffeId, CLIENT_ID);
  } finally {
    t.cleanup();
  }
});

test('mutual TLS during a rotation: a peer signed by the old root and one signed by the new root trust each other', async () => {
  const t = tempDir('tls-rotate');
  try {
    const rca = await CertificateAuthority.init(t.path);
    const oldSvid = await svid(rca, SERVER_ID);
    await rca.rotate({ overlapMs: 2 * HOUR, activateAfterMs: 0 });
    const newSvid = await svid(rca, CLIENT_ID);
    assert.notEqual(oldSvid.chainPem, newSvid.chainPem, 'signed by different roots');
    const bundle = rca.bundle();
    const h = await svidHandshake(oldSvid, newSvid, bundle, {
      clientExpects: { kind: 'exact', ids: [SERVER_ID] },
      serverExpects: { kind: 'exact', ids: [CLIENT_ID] },
    });
    assert.equal(h.clientError, undefined);
    assert.equal(h.serverSaw?.ok && h.serverSaw.spiffeId, CLIENT_ID);
  } finally {
    t.cleanup();
  }
});

test('TLS refusal: a client certificate from a foreign CA fails the handshake', async () => {
  const s = await svid(ca, SERVER_ID);
  const c = await svid(foreign, CLIENT_ID);
  const bundle = ca.bundle();
  const h = await svidHandshake(s, c, bundle);
  // OpenSSL on the server refuses the client certificate; with TLS 1.3 the client may already
  // have finished its side, so the refusal shows as a server-side error and no data.
  assert.equal(h.serverSaw, undefined, 'the server never accepted the connection');
  assert.ok(h.serverError ?? h.clientError, 'a handshake error was reported');
  assert.ok(!h.greeting, 'no application data was exchanged');
});

test('TLS refusal: a server presenting a CA certificate as its leaf is refused (OpenSSL purpose check, then PKI_ERR_BAD_SVID)', async () => {
  const t = tempDir('tls-caleaf');
  try {
    // A CA certificate carrying a workload SPIFFE ID and every usage a TLS server needs.
    const root = opensslRoot(
      t.path,
      'root',
      'basicConstraints=critical,CA:true\nkeyUsage=critical,digitalSignature,keyCertSign\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://cluster.local/ns/prod/sa/reviews',
    );
    const c = await svid(ca, CLIENT_ID);
    const bundle = `${ca.bundle()}${root.certPem}`;
    const check: PeerCheckOptions = {
      trustBundlePem: bundle,
      trustDomain: TD,
      expect: { kind: 'any-in-trust-domain' },
    };
    const h = await handshake(
      {
        key: root.keyPem,
        cert: root.certPem,
        ca: bundle,
        requestCert: true,
        rejectUnauthorized: true,
      },
      svidClientOptions(c, check),
      check,
    );
    // OpenSSL already refuses a CA certificate as a TLS server's end entity; the SPIFFE check
    // behind it (checkServerIdentity) refuses the same chain on its own.
    assert.ok(
      ['INVALID_PURPOSE', 'PKI_ERR_BAD_SVID'].includes(String(h.clientError?.code)),
      String(h.clientError),
    );
    const own = checkPeerChain(pemCertificates(root.certPem), check);
    assert.equal(own.ok ? 'ok' : own.code, 'PKI_ERR_BAD_SVID');
    assert.match(own.ok ? '' : own.message, /CA certificate cannot be used as a leaf/);
  } finally {
    t.cleanup();
  }
});

test('TLS refusal: a valid SVID for an identity the client did not expect is PKI_ERR_PEER_MISMATCH', async () => {
  const s = await svid(ca, 'spiffe://cluster.local/ns/prod/sa/impostor');
  const c = await svid(ca, CLIENT_ID);
  const bundle = ca.bundle();
  const h = await svidHandshake(s, c, bundle, {
    clientExpects: { kind: 'exact', ids: [SERVER_ID] },
  });
  assert.equal(h.clientError?.code, 'PKI_ERR_PEER_MISMATCH');
});

test('TLS refusal: an expired client certificate fails the handshake', async () => {
  const s = await svid(ca, SERVER_ID);
  const c = await svid(ca, CLIENT_ID, { now: new Date(Date.now() - 3 * HOUR), ttl: '1h' });
  const bundle = ca.bundle();
  const h = await svidHandshake(s, c, bundle);
  assert.equal(h.serverSaw, undefined, 'the server never accepted the connection');
  assert.ok(h.serverError ?? h.clientError, 'a handshake error was reported');
  assert.ok(!h.greeting, 'no application data was exchanged');
});

test('X509-SVID §5: expired and not-yet-valid SVIDs are PKI_ERR_EXPIRED and PKI_ERR_NOT_YET_VALID', async () => {
  const now = new Date();
  const old = await svid(ca, CLIENT_ID, { now: new Date(now.getTime() - 3 * HOUR), ttl: '1h' });
  const future = await svid(ca, CLIENT_ID, { now: new Date(now.getTime() + 3 * HOUR) });
  const bundle = ca.bundle();
  const e = verifySvid([old.certPem], bundle, { now });
  assert.equal(code(e), 'PKI_ERR_EXPIRED');
  assert.match(e.ok ? '' : e.message, /expired at/);
  assert.equal(code(verifySvid([future.certPem], bundle, { now })), 'PKI_ERR_NOT_YET_VALID');
  assert.equal(
    code(verifySvid([future.certPem], bundle, { now: new Date(now.getTime() + 4 * HOUR) })),
    'ok',
  );
});

test('X509-SVID §5.1: a certificate from a foreign CA is PKI_ERR_UNTRUSTED, even with its own root in the chain it sends', async () => {
  const f = await svid(foreign, CLIENT_ID);
  const bundle = ca.bundle();
  assert.equal(code(verifySvid([f.certPem], bundle, { now: new Date() })), 'PKI_ERR_UNTRUSTED');
  assert.equal(
    code(verifySvid([f.certPem, f.chainPem], bundle, { now: new Date() })),
    'PKI_ERR_UNTRUSTED',
  );
  assert.equal(code(verifySvid([f.certPem], '', { now: new Date() })), 'PKI_ERR_UNTRUSTED');
});

test('SPIFFE-ID §2.1: an SVID of another trust domain is PKI_ERR_WRONG_TRUST_DOMAIN', async () => {
  const o = await svid(otherDomain, 'spiffe://other.org/ns/prod/sa/api');
  const bundle = `${ca.bundle()}${otherDomain.bundle()}`;
  assert.equal(
    code(verifySvid([o.certPem], bundle, { now: new Date(), trustDomain: TD })),
    'PKI_ERR_WRONG_TRUST_DOMAIN',
  );
  assert.equal(
    code(verifySvid([o.certPem], bundle, { now: new Date(), trustDomain: 'other.org' })),
    'ok',
  );
});

test('X509-SVID §2, §4, §5.2: two URI SANs, no URI SAN, a CA certificate as leaf, missing clientAuth, keyCertSign on a leaf, no key usage are PKI_ERR_BAD_SVID', () => {
  const t = tempDir('tls-bad');
  try {
    const root = opensslRoot(t.path, 'root', CA_EXT);
    const inter = opensslSigned(
      t.path,
      'inter',
      root,
      `${CA_EXT}\nsubjectAltName=URI:spiffe://cluster.local`,
    );
    const cases: [string, string, RegExp][] = [
      [
        'two-uris',
        `${LEAF_EXT}\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b,URI:spiffe://cluster.local/ns/kube-system/sa/admin`,
        /exactly one URI SAN, found 2/,
      ],
      ['no-uri', `${LEAF_EXT}\nsubjectAltName=DNS:reviews.prod`, /exactly one URI SAN, found 0/],
      [
        'http-uri',
        `${LEAF_EXT}\nsubjectAltName=URI:https://cluster.local/ns/a/sa/b`,
        /not a valid SPIFFE ID/,
      ],
      ['no-path', `${LEAF_EXT}\nsubjectAltName=URI:spiffe://cluster.local`, /must have a path/],
      [
        'server-only',
        'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b',
        /serverAuth and clientAuth/,
      ],
      [
        'cert-sign',
        'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyCertSign\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b',
        /keyCertSign/,
      ],
      [
        'no-ku',
        'basicConstraints=critical,CA:false\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b',
        /key usage/,
      ],
      [
        'no-digsig',
        'basicConstraints=critical,CA:false\nkeyUsage=critical,keyEncipherment\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b',
        /digitalSignature/,
      ],
    ];
    for (const [name, ext, why] of cases) {
      const leaf = opensslSigned(t.path, name, root, ext);
      const r = verifySvid([leaf.certPem], root.certPem, { now: new Date() });
      assert.equal(code(r), 'PKI_ERR_BAD_SVID', name);
      assert.match(r.ok ? '' : r.message, why, name);
    }
    // The CA certificate itself, and an intermediate presented as a leaf.
    for (const c of [root, inter]) {
      const r = verifySvid([c.certPem], root.certPem, { now: new Date() });
      assert.equal(code(r), 'PKI_ERR_BAD_SVID');
      assert.match(r.ok ? '' : r.message, /CA certificate cannot be used as a leaf/);
    }
    // The control: a well-formed openssl leaf under the same root passes.
    const good = opensslSigned(
      t.path,
      'good',
      root,
      `${LEAF_EXT}\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b`,
    );
    assert.equal(code(verifySvid([good.certPem], root.certPem, { now: new Date() })), 'ok');
    // A leaf signed by a certificate that is not a CA does not chain.
    const notCa = opensslSigned(
      t.path,
      'notca',
      root,
      `${LEAF_EXT}\nsubjectAltName=URI:spiffe://cluster.local/ns/x/sa/y`,
    );
    const under = opensslSigned(
      t.path,
      'under',
      notCa,
      `${LEAF_EXT}\nsubjectAltName=URI:spiffe://cluster.local/ns/a/sa/b`,
    );
    assert.equal(
      code(verifySvid([under.certPem, notCa.certPem], root.certPem, { now: new Date() })),
      'PKI_ERR_UNTRUSTED',
    );
  } finally {
    t.cleanup();
  }
});

test('X509-SVID §3.2: a root that names its trust domain cannot vouch for another domain, even when both roots share one bundle', () => {
  const t = tempDir('tls-cross');
  try {
    const evil = opensslRoot(t.path, 'evil', `${CA_EXT}\nsubjectAltName=URI:spiffe://other.org`);
    const minted = opensslSigned(
      t.path,
      'minted',
      evil,
      `${LEAF_EXT}\nsubjectAltName=URI:spiffe://cluster.local/ns/prod/sa/admin`,
    );
    const bundle = `${ca.bundle()}${evil.certPem}`;
    const r = verifySvid([minted.certPem], bundle, { now: new Date(), trustDomain: TD });
    assert.equal(code(r), 'PKI_ERR_UNTRUSTED');
    assert.match(r.ok ? '' : r.message, /authority of trust domain other\.org, not cluster\.local/);
  } finally {
    t.cleanup();
  }
});

test('verifySvid: no single-byte change to a valid SVID is accepted', async () => {
  const good = await svid(ca, CLIENT_ID);
  const bundle = ca.bundle();
  const der = pemCertificates(good.certPem)[0] ?? Buffer.alloc(0);
  assert.equal(code(verifySvid([der], bundle, { now: new Date() })), 'ok');
  fc.assert(
    fc.property(fc.nat(der.length - 1), fc.integer({ min: 1, max: 255 }), (i, x) => {
      const copy = Buffer.from(der);
      copy[i] = (copy[i] ?? 0) ^ x;
      assert.notEqual(code(verifySvid([copy], bundle, { now: new Date() })), 'ok', `byte ${i}`);
    }),
    { numRuns: 1500 },
  );
});

test('verifySvid never throws on garbage and refuses it', () => {
  for (const chain of [
    '',
    'garbage',
    '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
    [new Uint8Array([1, 2, 3])],
    [],
  ])
    assert.equal(verifySvid(chain, ca.bundle(), { now: new Date() }).ok, false);
});

test('checkPeerChain: the exact and predicate matchers accept only the named identities', async () => {
  const c = await svid(ca, CLIENT_ID);
  const chain = pemCertificates(c.certPem);
  const base = { trustBundlePem: ca.bundle(), trustDomain: TD };
  assert.ok(checkPeerChain(chain, { ...base, expect: { kind: 'exact', ids: [CLIENT_ID] } }).ok);
  assert.equal(
    checkPeerChain(chain, { ...base, expect: { kind: 'exact', ids: [SERVER_ID] } }).ok,
    false,
  );
  assert.ok(
    checkPeerChain(chain, {
      ...base,
      expect: { kind: 'predicate', test: (id) => id.segments[1] === 'prod' },
    }).ok,
  );
});
