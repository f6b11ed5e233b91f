// The Palisade CA wired into the API server, over real HTTPS with a real CA in a temp data dir
// and real CSRs: the server's own certificate verifies with <data-dir>/ca.pem, node agents get
// SVIDs only for identities registered on their node, every issuance and refusal lands in the
// chained audit log (which still verifies), and client certificates of our CA authenticate.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { connect, createServer as createTlsServer } from 'node:tls';
import type { SvidMaterial } from '@palisade/pki';
import {
  allowAnyIdentityForDevelopment,
  createKeyAndCsr,
  svidClientOptions,
  svidServerOptions,
  verifyPeer,
} from '@palisade/pki';
import type { AuditEntry } from '../audit/audit-log.js';
import { runServer } from './run-server.js';
import type { RunningServer } from './run-server.js';

const TD = 'cluster.local';
const ID = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly serverSerial?: string;
  readonly serverId?: string;
}

function call(
  url: string,
  path: string,
  o: { ca: string; token?: string; cert?: string; key?: string; method?: string; body?: unknown },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      {
        method: o.method ?? 'GET',
        ca: o.ca,
        agent: false,
        ...(o.cert ? { cert: o.cert, key: o.key } : {}),
        headers: {
          ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
          'content-type': 'application/json',
        },
        timeout: 10_000,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const peer = verifyPeer(socket, {
          trustBundlePem: o.ca,
          trustDomain: TD,
          expect: { kind: 'exact', ids: [`spiffe://${TD}/palisade/server`] },
        });
        const serverSerial = socket.getPeerCertificate().serialNumber;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            serverSerial,
            ...(peer.ok ? { serverId: peer.spiffeId } : {}),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(
      o.body === undefined
        ? undefined
        : typeof o.body === 'string'
          ? o.body
          : JSON.stringify(o.body),
    );
  });
}

interface Issued {
  spiffeId: string;
  serial: string;
  certPem: string;
  chainPem: string;
  notBefore: string;
  notAfter: string;
  renewAt: string;
  code?: string;
  message?: string;
}

async function mtls(a: SvidMaterial, b: SvidMaterial, bundle: string): Promise<[string, string]> {
  const expect = { kind: 'any-in-trust-domain' } as const;
  const srv = createTlsServer(svidServerOptions(a, bundle));
  let seenByServer = '';
  srv.on('secureConnection', (s) => {
    const r = verifyPeer(s, { trustBundlePem: bundle, trustDomain: TD, expect });
    seenByServer = r.ok ? r.spiffeId : r.code;
    s.end('ok');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    return await new Promise<[string, string]>((resolve, reject) => {
      const c = connect({
        ...svidClientOptions(b, { trustBundlePem: bundle, trustDomain: TD, expect }),
        host: '127.0.0.1',
        port: (srv.address() as AddressInfo).port,
        timeout: 5000,
      });
      c.on('secureConnect', () => {
        const r = verifyPeer(c, { trustBundlePem: bundle, trustDomain: TD, expect });
        c.on('data', () => undefined);
        c.on('end', () => resolve([seenByServer, r.ok ? r.spiffeId : r.code]));
      });
      c.on('error', reject);
    });
  } finally {
    await new Promise<void>((r) => srv.close(() => r()));
  }
}

describe('the API server with the Palisade CA', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-cawire-${process.pid}-`));
  const data = join(dir, 'data');
  let server: RunningServer;
  let ca: string;
  let admin: string;
  let n1: string;
  let n2: string;
  let viewer: string;
  const start = () =>
    runServer({
      listen: '127.0.0.1:0',
      dataDir: data,
      insecurePlaintext: false,
      log: () => undefined,
      say: () => undefined,
      rateLimit: false,
    });
  const as = (token: string) => ({ ca, token });

  async function mint(body: unknown): Promise<string> {
    const r = await call(server.url, '/api/v1/tokens', { ...as(admin), method: 'POST', body });
    assert.equal(r.status, 201, r.body);
    return (JSON.parse(r.body) as { token: string }).token;
  }

  async function apply(yaml: string): Promise<void> {
    const r = await call(server.url, '/api/v1/apply', { ...as(admin), method: 'POST', body: yaml });
    assert.equal(r.status, 200, r.body);
  }

  async function ask(
    token: string,
    spiffeId: string,
    csr?: string,
    extra: Record<string, unknown> = {},
  ): Promise<{ status: number; j: Issued; keyPem: string }> {
    const k = csr === undefined ? await createKeyAndCsr() : { keyPem: '', csrPem: csr };
    const r = await call(server.url, '/api/v1/certificates', {
      ...as(token),
      method: 'POST',
      body: { csr: k.csrPem, spiffeId, ...extra },
    });
    return { status: r.status, j: JSON.parse(r.body) as Issued, keyPem: k.keyPem };
  }

  async function certificateAudit(): Promise<AuditEntry[]> {
    const r = await call(server.url, '/api/v1/audit?kind=Certificate', as(admin));
    assert.equal(r.status, 200, r.body);
    return (JSON.parse(r.body) as { entries: AuditEntry[] }).entries;
  }

  before(async () => {
    server = await start();
    ca = readFileSync(join(data, 'ca.pem'), 'utf8');
    admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    n1 = await mint({ node: 'n1' });
    n2 = await mint({ node: 'n2' });
    viewer = await mint({ user: 'vera', groups: ['system:viewers'] });
    await apply(`apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: reviews-1, namespace: prod}
spec: {node: n1, pod: reviews-1, serviceAccountName: reviews, ipNetworks: [10.0.0.5/32]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: ratings-1, namespace: prod}
spec: {node: n2, pod: ratings-1, serviceAccountName: ratings, ipNetworks: [10.0.0.6/32]}
---
apiVersion: v1
kind: Pod
metadata: {name: details-1, namespace: prod}
spec: {nodeName: n1, serviceAccountName: details}
`);
  });

  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('started without credentials, it serves HTTPS verifiable with <data-dir>/ca.pem, as spiffe://TD/palisade/server', async () => {
    const r = await call(server.url, '/healthz', { ca });
    assert.equal(r.status, 200);
    assert.equal(r.serverId, `spiffe://${TD}/palisade/server`);
    const root = new X509Certificate(ca);
    assert.ok(root.ca, 'ca.pem holds the CA root');
    // CA key files are 0600 in a 0700 directory; the openssl dev CA is gone.
    const caDir = join(data, 'ca');
    assert.equal(statSync(caDir).mode & 0o777, 0o700);
    const keys = readdirSync(caDir).filter((f) => f.endsWith('.key.pem'));
    assert.ok(keys.length >= 1);
    for (const k of keys) assert.equal(statSync(join(caDir, k)).mode & 0o777, 0o600);
    assert.throws(() => statSync(join(data, 'tls')), 'no openssl development CA directory');
    // A certificate from a CA that is not ours does not verify the server.
    const other = mkdtempSync(join(dir, 'other-'));
    const { CertificateAuthority } = await import('@palisade/pki');
    const foreign = await CertificateAuthority.init(other);
    await assert.rejects(call(server.url, '/healthz', { ca: foreign.bundle() }));
  });

  test('a node gets an SVID for an identity with an endpoint on its node (WorkloadEndpoint and Pod), and two SVIDs complete mTLS', async () => {
    const reviews = await ask(n1, ID('prod', 'reviews'));
    assert.equal(reviews.status, 201, JSON.stringify(reviews.j));
    const details = await ask(n1, ID('prod', 'details'));
    assert.equal(details.status, 201, JSON.stringify(details.j));
    const nb = Date.parse(reviews.j.notBefore);
    const na = Date.parse(reviews.j.notAfter);
    const life = na - nb;
    assert.ok(Math.abs(life - 24 * 3600_000 - 60_000) < 5000, `default lifetime 24 h, got ${life}`);
    const f = (Date.parse(reviews.j.renewAt) - nb) / life;
    assert.ok(f >= 0.4 && f <= 0.6, `renewAt at ${f} of the lifetime`);
    assert.match(
      new X509Certificate(reviews.j.certPem).subjectAltName ?? '',
      /URI:spiffe:\/\/cluster.local\/ns\/prod\/sa\/reviews/,
    );
    const bundle = (await call(server.url, '/api/v1/trust-bundle', as(n1))).body;
    assert.deepEqual(
      await mtls(
        { ...reviews.j, keyPem: reviews.keyPem },
        { ...details.j, keyPem: details.keyPem },
        bundle,
      ),
      [ID('prod', 'details'), ID('prod', 'reviews')],
    );
    const issued = (await certificateAudit()).filter(
      (e) => e.verb === 'certificate.issue' && e.outcome === 'allowed',
    );
    const last = issued.at(-1);
    assert.equal(last?.principal?.name, 'n1');
    assert.equal(last?.principal?.kind, 'Node');
    assert.equal(last?.name, ID('prod', 'details'));
    assert.match(last?.remote ?? '', /127\.0\.0\.1/);
    assert.ok(last?.message?.includes(details.j.serial), 'the serial is in the audit entry');
    assert.ok(last?.message?.includes(details.j.notAfter), 'not-after is in the audit entry');
  });

  test('a node is refused, with the catalogue status, audited, for identities not running on it and for bad CSRs', async () => {
    const before = (await certificateAudit()).length;
    const otherNode = await ask(n1, ID('prod', 'ratings'));
    assert.deepEqual([otherNode.status, otherNode.j.code], [403, 'PKI_ERR_NOT_ATTESTED']);
    assert.match(otherNode.j.message ?? '', /registered on other nodes/);
    const nowhere = await ask(n1, ID('prod', 'ghost'));
    assert.deepEqual([nowhere.status, nowhere.j.code], [403, 'PKI_ERR_NOT_ATTESTED']);
    const garbage = await ask(
      n1,
      ID('prod', 'reviews'),
      '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
    );
    assert.deepEqual([garbage.status, garbage.j.code], [400, 'PKI_ERR_BAD_CSR']);
    const weak = await ask(
      n1,
      ID('prod', 'reviews'),
      (await createKeyAndCsr({ type: 'rsa', bits: 1024 })).csrPem,
    );
    assert.deepEqual([weak.status, weak.j.code], [400, 'PKI_ERR_WEAK_KEY']);
    const long = await ask(n1, ID('prod', 'reviews'), undefined, { ttlSeconds: 91 * 86400 });
    assert.deepEqual([long.status, long.j.code], [400, 'PKI_ERR_BAD_TTL']);
    const reserved = await ask(n1, `spiffe://${TD}/palisade/server`);
    assert.deepEqual([reserved.status, reserved.j.code], [400, 'PKI_ERR_BAD_SPIFFE_ID']);
    const foreignTd = await ask(n1, 'spiffe://evil.org/ns/prod/sa/reviews');
    assert.deepEqual([foreignTd.status, foreignTd.j.code], [403, 'PKI_ERR_WRONG_TRUST_DOMAIN']);
    // The endpoint goes away: no new certificate for an identity whose endpoints are gone.
    const del = await call(
      server.url,
      '/api/v1/projectcalico.org/WorkloadEndpoint/prod/reviews-1',
      {
        ...as(admin),
        method: 'DELETE',
      },
    );
    assert.equal(del.status, 200, del.body);
    const gone = await ask(n1, ID('prod', 'reviews'));
    assert.deepEqual([gone.status, gone.j.code], [403, 'PKI_ERR_NOT_ATTESTED']);
    assert.match(gone.j.message ?? '', /no endpoint runs as prod\/reviews anywhere/);
    const refusals = (await certificateAudit()).slice(before);
    assert.deepEqual(
      refusals.map((e) => [e.outcome, e.status, e.code, e.principal?.name, e.name]),
      [
        ['refused', 403, 'PKI_ERR_NOT_ATTESTED', 'n1', ID('prod', 'ratings')],
        ['refused', 403, 'PKI_ERR_NOT_ATTESTED', 'n1', ID('prod', 'ghost')],
        ['refused', 400, 'PKI_ERR_BAD_CSR', 'n1', ID('prod', 'reviews')],
        ['refused', 400, 'PKI_ERR_WEAK_KEY', 'n1', ID('prod', 'reviews')],
        ['refused', 400, 'PKI_ERR_BAD_TTL', 'n1', ID('prod', 'reviews')],
        ['refused', 400, 'PKI_ERR_BAD_SPIFFE_ID', 'n1', `spiffe://${TD}/palisade/server`],
        [
          'refused',
          403,
          'PKI_ERR_WRONG_TRUST_DOMAIN',
          'n1',
          'spiffe://evil.org/ns/prod/sa/reviews',
        ],
        ['refused', 403, 'PKI_ERR_NOT_ATTESTED', 'n1', ID('prod', 'reviews')],
      ],
    );
    const v = await call(server.url, '/api/v1/audit/verify', as(admin));
    assert.equal((JSON.parse(v.body) as { ok: boolean }).ok, true, v.body);
    const m = await call(server.url, '/metrics', { ca });
    assert.match(m.body, /palisade_ca_certificates_refused_total\{code="PKI_ERR_NOT_ATTESTED"\} 3/);
    assert.match(m.body, /palisade_ca_certificates_refused_total\{code="PKI_ERR_WEAK_KEY"\} 1/);
    assert.match(m.body, /^palisade_ca_certificates_issued_total [1-9]\d*$/m);
  });

  test('users (viewer and admin) may not request workload certificates; the refusal is audited', async () => {
    for (const token of [viewer, admin]) {
      const r = await ask(token, ID('prod', 'details'));
      assert.deepEqual([r.status, r.j.code], [403, 'AUTH_ERR_FORBIDDEN']);
    }
    const last = (await certificateAudit()).slice(-2);
    assert.deepEqual(
      last.map((e) => [e.outcome, e.code, e.principal?.name]),
      [
        ['refused', 'AUTH_ERR_FORBIDDEN', 'vera'],
        ['refused', 'AUTH_ERR_FORBIDDEN', 'admin'],
      ],
    );
    const anon = await call(server.url, '/api/v1/certificates', { ca, method: 'POST', body: {} });
    assert.equal(anon.status, 401);
  });

  test('malformed certificate requests are 400 and audited too', async () => {
    const bodies = [
      'not json',
      '[1]',
      { csr: 'x', spiffeId: ID('prod', 'details'), admin: true },
      { csr: 1, spiffeId: 2 },
      { csr: 'x', spiffeId: ID('prod', 'details'), ttlSeconds: 1.5 },
    ];
    for (const body of bodies) {
      const r = await call(server.url, '/api/v1/certificates', { ...as(n1), method: 'POST', body });
      assert.equal(r.status, 400, r.body);
      assert.equal((JSON.parse(r.body) as { code: string }).code, 'API_ERR_BAD_REQUEST');
    }
    const last = (await certificateAudit()).slice(-bodies.length);
    assert.deepEqual(
      last.map((e) => [e.outcome, e.status, e.code, e.principal?.name]),
      bodies.map(() => ['refused', 400, 'API_ERR_BAD_REQUEST', 'n1']),
    );
  });

  test('the trust bundle is readable by any authenticated principal, as PEM and as a SPIFFE JWKS', async () => {
    for (const token of [n2, viewer]) {
      const r = await call(server.url, '/api/v1/trust-bundle', as(token));
      assert.equal(r.status, 200);
      assert.equal(r.body, ca, 'the served bundle is <data-dir>/ca.pem');
    }
    const j = await call(server.url, '/api/v1/trust-bundle?format=jwks', as(n2));
    const jwks = JSON.parse(j.body) as { keys: { use: string; x5c: string[] }[] };
    assert.equal(jwks.keys[0]?.use, 'x509-svid');
    assert.equal(
      new X509Certificate(Buffer.from(jwks.keys[0]?.x5c[0] ?? '', 'base64')).fingerprint256,
      new X509Certificate(ca).fingerprint256,
    );
    assert.equal((await call(server.url, '/api/v1/trust-bundle', { ca })).status, 401);
    const doc = JSON.parse((await call(server.url, '/openapi.json', { ca })).body) as {
      paths: Record<string, Record<string, unknown>>;
    };
    assert.ok(doc.paths['/api/v1/certificates']?.post, 'the CSR endpoint is described');
    assert.ok(doc.paths['/api/v1/trust-bundle']?.get, 'the trust bundle is described');
  });

  test('client certificates issued by our CA authenticate: a node SVID is that node, a workload SVID a user', async () => {
    const k = await createKeyAndCsr();
    const r = await server.ca.issueFromCsr(k.csrPem, {
      spiffeId: `spiffe://${TD}/node/n2`,
      requester: 'test (as palisade ca issue)',
      authorize: allowAnyIdentityForDevelopment,
    });
    assert.ok(r.ok);
    const nodeCert = { cert: r.svid.certPem + r.svid.chainPem, key: k.keyPem };
    const who = await call(server.url, '/api/v1/whoami', { ca, ...nodeCert });
    assert.deepEqual(JSON.parse(who.body), {
      kind: 'Node',
      name: 'n2',
      groups: [],
      via: 'certificate',
    });
    // The node, authenticated by its certificate, gets an SVID for its own workload.
    const c = await createKeyAndCsr();
    const svid = await call(server.url, '/api/v1/certificates', {
      ca,
      ...nodeCert,
      method: 'POST',
      body: { csr: c.csrPem, spiffeId: ID('prod', 'ratings'), ttlSeconds: 3600 },
    });
    assert.equal(svid.status, 201, svid.body);
    const s = JSON.parse(svid.body) as Issued;
    assert.ok(
      Math.abs(Date.parse(s.notAfter) - Date.now() - 3600_000) < 10_000,
      'ttlSeconds honoured',
    );
    const asWorkload = await call(server.url, '/api/v1/whoami', {
      ca,
      cert: s.certPem + s.chainPem,
      key: c.keyPem,
    });
    assert.equal(
      (JSON.parse(asWorkload.body) as { kind: string; name: string }).name,
      ID('prod', 'ratings'),
    );
  });

  test('measured: issuance latency through the API (new TLS connection per request)', async (t) => {
    await apply(`apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: bench-1, namespace: prod}
spec: {node: n1, pod: bench-1, serviceAccountName: bench, ipNetworks: [10.0.0.9/32]}
`);
    const csrs = await Promise.all(Array.from({ length: 30 }, () => createKeyAndCsr()));
    const times: number[] = [];
    for (const k of csrs) {
      const t0 = performance.now();
      const r = await ask(n1, ID('prod', 'bench'), k.csrPem);
      times.push(performance.now() - t0);
      assert.equal(r.status, 201);
    }
    times.sort((a, b) => a - b);
    t.diagnostic(
      `issuance via HTTPS: median ${times[15]?.toFixed(1)} ms, p90 ${times[27]?.toFixed(1)} ms, max ${times[29]?.toFixed(1)} ms`,
    );
    assert.ok((times[15] ?? Infinity) < 1000);
  });

  test('the server certificate is renewed in place, and a restart loads the same CA with a fresh server certificate', async () => {
    const first = server.serverCertificate();
    assert.ok(first);
    assert.ok(first.renewAt > new Date() && first.renewAt < first.notAfter);
    const seen1 = (await call(server.url, '/healthz', { ca })).serverSerial;
    await server.renewServerCertificate();
    const second = server.serverCertificate();
    assert.notEqual(second?.serial, first.serial);
    const seen2 = (await call(server.url, '/healthz', { ca })).serverSerial;
    assert.notEqual(seen2, seen1, 'new connections see the renewed certificate');
    await server.stop();
    server = await start();
    assert.equal(readFileSync(join(data, 'ca.pem'), 'utf8'), ca, 'same CA after the restart');
    const seen3 = await call(server.url, '/api/v1/whoami', as(n1));
    assert.equal(seen3.status, 200);
    assert.notEqual(seen3.serverSerial, seen2);
    const entries = (await certificateAudit()).filter((e) => e.verb === 'certificate.server');
    assert.ok(entries.length >= 3, 'every server certificate is audited');
    const v = await call(server.url, '/api/v1/audit/verify', as(admin));
    assert.equal((JSON.parse(v.body) as { ok: boolean }).ok, true);
  });

  test('a root rotation through the API is admin-only and audited, and keeps old-root and new-root workloads talking', async () => {
    const oldBundle = (await call(server.url, '/api/v1/trust-bundle', as(n1))).body;
    const before = await ask(n1, ID('prod', 'details'));
    assert.equal(before.status, 201, JSON.stringify(before.j));
    const refused = await call(server.url, '/api/v1/ca/rotate', {
      ...as(n1),
      method: 'POST',
      body: {},
    });
    assert.equal(refused.status, 403, refused.body);
    const r = await call(server.url, '/api/v1/ca/rotate', {
      ...as(admin),
      method: 'POST',
      body: { overlapSeconds: 7200, activateAfterSeconds: 0 },
    });
    assert.equal(r.status, 200, r.body);
    // Activated at once (activateAfterSeconds 0), the server's own certificate now comes from the
    // new root: clients must hold the new bundle, which is why the default waits half the overlap.
    ca = readFileSync(join(data, 'ca.pem'), 'utf8');
    const bundle = (await call(server.url, '/api/v1/trust-bundle', as(n1))).body;
    assert.equal(ca, bundle, 'ca.pem is the new bundle');
    const count = (pem: string) => pem.split('BEGIN CERTIFICATE').length - 1;
    assert.equal(count(bundle), count(oldBundle) + 1, 'the new root joins, the old one stays');
    const after = await ask(n1, ID('prod', 'details'));
    assert.equal(after.status, 201, JSON.stringify(after.j));
    assert.notEqual(
      new X509Certificate(after.j.certPem).issuer,
      new X509Certificate(before.j.certPem).issuer,
      'issued by the new root',
    );
    assert.deepEqual(
      await mtls(
        { ...before.j, keyPem: before.keyPem },
        { ...after.j, keyPem: after.keyPem },
        bundle,
      ),
      [ID('prod', 'details'), ID('prod', 'details')],
      'an old-root and a new-root SVID complete mTLS with the bundle',
    );
    // The server trusts client certificates of the new root too (its client CA was refreshed).
    const client = await call(server.url, '/api/v1/whoami', {
      ca: bundle,
      cert: after.j.certPem + after.j.chainPem,
      key: after.keyPem,
    });
    assert.equal(client.status, 200, client.body);
    const audit = await call(server.url, '/api/v1/audit?kind=CertificateAuthority', as(admin));
    const entries = (JSON.parse(audit.body) as { entries: AuditEntry[] }).entries;
    assert.deepEqual(
      entries.map((e) => [e.verb, e.outcome]),
      [
        ['ca.rotate', 'refused'],
        ['ca.rotate', 'allowed'],
      ],
    );
    const v = await call(server.url, '/api/v1/audit/verify', as(admin));
    assert.equal((JSON.parse(v.body) as { ok: boolean }).ok, true);
  });
});
