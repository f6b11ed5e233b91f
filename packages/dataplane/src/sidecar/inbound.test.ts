// The inbound L7 point with real TLS, real SVIDs from a real CA and a real application, on
// loopback addresses that play the pods' IPs (DESIGN §4.6–7).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, Agent as HttpAgent } from 'node:http';
import { PassThrough } from 'node:stream';
import { connect } from 'node:net';
import { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CertificateAuthority, SvidMaterial } from '@palisade/pki';
import { certificateChainPem, svidClientOptions } from '@palisade/pki';
import { AccessLog } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import { InboundSidecar } from './inbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { bookinfo, echoApp, issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';

const P = loopbackPrefix();
const REVIEWS_IP = `${P}.2`;
const ATTACKER_IP = `${P}.3`;
const RATINGS_IP = `${P}.4`;
const IPS = {
  'default/reviews-v2': REVIEWS_IP,
  'default/attacker': ATTACKER_IP,
  'default/ratings-v1': RATINGS_IP,
};
const TD = 'cluster.local';
const id = (sa: string): string => `spiffe://${TD}/ns/default/sa/${sa}`;
const STRICT = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: default
spec:
  mtls:
    mode: STRICT
`;

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly headers: IncomingHttpHeaders;
  readonly reused: boolean;
  /** SHA-256 fingerprint of the server certificate (TLS only). */
  readonly server?: string;
}

type Svid = SvidMaterial & { readonly bundlePem: string };

function send(opts: {
  readonly port: number;
  readonly from: string;
  readonly svid?: Svid;
  readonly bundle: string;
  readonly method?: string;
  readonly path?: string;
  readonly agent?: HttpsAgent | HttpAgent;
  readonly body?: string;
}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const common = {
      host: RATINGS_IP,
      port: opts.port,
      localAddress: opts.from,
      method: opts.method ?? 'GET',
      path: opts.path ?? '/ratings/1',
      timeout: 10_000,
      ...(opts.agent ? { agent: opts.agent } : { agent: false as const }),
    };
    const req = opts.svid
      ? httpsRequest({
          ...common,
          ...svidClientOptions(opts.svid, {
            trustBundlePem: opts.bundle,
            trustDomain: TD,
            expect: { kind: 'exact', ids: [id('bookinfo-ratings')] },
          }),
        })
      : httpRequest(common);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          headers: res.headers,
          reused: req.reusedSocket,
          ...(res.socket instanceof TLSSocket
            ? { server: res.socket.getPeerCertificate().fingerprint256 }
            : {}),
        }),
      );
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** The TLS-level keys of an agent for one client identity (keep-alive tests). */
function tlsAgent(svid: Svid, bundle: string): HttpsAgent {
  return new HttpsAgent({
    keepAlive: true,
    maxSockets: 1,
    key: svid.keyPem,
    cert: certificateChainPem(svid),
    ca: bundle,
  });
}

describe('inbound sidecar', { timeout: 60_000 }, () => {
  const dir = tempDir('sidecar-in');
  let ca: CertificateAuthority;
  let bundle = '';
  let reviews: Svid;
  let attacker: Svid;
  let app: Awaited<ReturnType<typeof echoApp>>;
  let sidecar: InboundSidecar;
  let holder: PolicyViewHolder;
  let port = 0;
  const lines: string[] = [];
  const out = new PassThrough();
  out.on('data', (c: Buffer) =>
    lines.push(
      ...c
        .toString('utf8')
        .split('\n')
        .filter((l) => l.length > 0),
    ),
  );
  const records = (): AccessRecord[] => lines.map((l) => JSON.parse(l) as AccessRecord);

  before(async () => {
    // Started 4 h ago, so that it can also issue a certificate that has since expired.
    ca = await newCa(join(dir.path, 'ca'), TD, new Date(Date.now() - 4 * 3600_000));
    reviews = await issue(ca, id('bookinfo-reviews'));
    attacker = await issue(ca, id('attacker'));
    const ratings = await issue(ca, id('bookinfo-ratings'));
    bundle = reviews.bundlePem;
    app = await echoApp();
    const v = PolicyView.fromResources(bookinfo(IPS), 'default/ratings-v1', 1);
    assert.ok(v.ok, v.ok ? '' : v.reason);
    holder = new PolicyViewHolder(v.view);
    sidecar = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: app.port,
      podPort: 9080,
      svid: ratings,
      trustBundlePem: bundle,
      policy: holder,
      log: new AccessLog(out),
    });
    port = (await sidecar.start()).port;
  });

  after(async () => {
    await sidecar?.close();
    await new Promise<void>((r) => app?.server.close(() => r()));
    dir.cleanup();
  });

  test('a GET from a ratings-reader identity reaches the application (serviceAccounts match the peer certificate)', async () => {
    const r = await send({ port, from: REVIEWS_IP, svid: reviews, bundle });
    assert.equal(r.status, 200, r.body);
    const echoed = JSON.parse(r.body) as { url: string; xfcc: string; requestId: string };
    assert.equal(echoed.url, '/ratings/1');
    assert.equal(echoed.xfcc, `URI=${id('bookinfo-reviews')}`);
    assert.equal(echoed.requestId, r.headers['x-request-id']);
  });

  test('a POST the policy forbids gets 403 with the deciding rule and is never forwarded', async () => {
    const before = app.requests.length;
    const r = await send({
      port,
      from: REVIEWS_IP,
      svid: reviews,
      bundle,
      method: 'POST',
      body: 'x',
    });
    assert.equal(r.status, 403);
    assert.match(r.body, /^RBAC: access denied \(rule default\/ratings-readers-get-only rule 1/);
    const rid = r.headers['x-request-id'];
    assert.ok(typeof rid === 'string' && rid.length > 0);
    assert.ok(r.body.includes(`request-id ${rid}`));
    assert.equal(app.requests.length, before);
    const rec = records().find((x) => x.requestId === rid);
    assert.ok(rec);
    assert.equal(rec.verdict, 'deny');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.source.identity, id('bookinfo-reviews'));
    assert.equal(rec.source.ip, REVIEWS_IP);
    assert.equal(rec.provenance.policy, 'default/ratings-readers-get-only');
    assert.ok(rec.latencyMs >= 0);
  });

  test('a valid certificate presented from another pod address is refused (stolen certificate)', async () => {
    const before = app.requests.length;
    const r = await send({ port, from: ATTACKER_IP, svid: reviews, bundle });
    assert.equal(r.status, 403);
    assert.match(r.body, /identity-mismatch/);
    assert.equal(app.requests.length, before);
  });

  test('the attacker with its own certificate is not a ratings-reader', async () => {
    const r = await send({ port, from: ATTACKER_IP, svid: attacker, bundle });
    assert.equal(r.status, 403);
  });

  test('keep-alive: each request on one connection is judged on its own', async () => {
    const agent = tlsAgent(reviews, bundle);
    try {
      const o = { port, from: REVIEWS_IP, svid: reviews, bundle, agent };
      const a = await send(o);
      const b = await send({ ...o, method: 'POST' });
      const c = await send({ ...o, path: '/ratings/2' });
      const d = await send({ ...o, path: '/admin' });
      assert.deepEqual([a.status, b.status, c.status, d.status], [200, 403, 200, 403]);
      assert.deepEqual([b.reused, c.reused, d.reused], [true, true, true]);
    } finally {
      agent.destroy();
    }
  });

  test('hostile request paths are refused, not rewritten', async () => {
    for (const path of [
      '/ratings/../admin',
      '/ratings//1',
      '/ratings/%2e%2e/admin',
      '/ratings/%2Fadmin',
      '/ratings/./1',
    ]) {
      const r = await send({ port, from: REVIEWS_IP, svid: reviews, bundle, path });
      assert.equal(r.status, 400, path);
    }
  });

  test('an expired certificate is refused with its reason and the refusal is logged', async () => {
    const old = new Date(Date.now() - 3 * 3600_000);
    const expired = await issue(ca, id('bookinfo-reviews'), { now: old, ttl: '1h' });
    const before = records().filter((x) => x.stage === 'connection').length;
    const r = await send({ port, from: REVIEWS_IP, svid: expired, bundle });
    assert.equal(r.status, 403);
    assert.match(r.body, /PKI_ERR_EXPIRED/);
    const refused = records().filter((x) => x.stage === 'connection');
    assert.ok(refused.length > before);
    assert.match(
      refused.at(-1)?.provenance.reason ?? '',
      /PKI_ERR_EXPIRED: the SVID of .* expired at/,
    );
  });

  test('a certificate from a foreign CA is refused', async () => {
    const foreign = await issue(await newCa(join(dir.path, 'ca-foreign')), id('bookinfo-reviews'));
    const before = records().filter((x) => x.stage === 'connection').length;
    const r = await send({ port, from: REVIEWS_IP, svid: foreign, bundle });
    assert.equal(r.status, 403);
    assert.match(r.body, /PKI_ERR_UNTRUSTED/);
    const refused = records().filter((x) => x.stage === 'connection');
    assert.ok(refused.length > before);
    assert.match(
      refused.at(-1)?.provenance.reason ?? '',
      /not signed by a certificate authority of the trust bundle/,
    );
    if (process.env.SIDECAR_DEBUG) console.log(lines.join('\n'));
  });

  test('the CA certificate itself, used as a client leaf, is refused', async () => {
    const caDir = join(dir.path, 'ca', 'ca');
    const files = readdirSync(caDir);
    const keyFile = files.find((f) => f.endsWith('.key.pem'));
    const certFile = files.find((f) => f.endsWith('.cert.pem'));
    assert.ok(keyFile && certFile, files.join(' '));
    const root: Svid = {
      keyPem: readFileSync(join(caDir, keyFile), 'utf8'),
      certPem: readFileSync(join(caDir, certFile), 'utf8'),
      chainPem: '',
      bundlePem: bundle,
    };
    const r = await send({ port, from: REVIEWS_IP, svid: root, bundle });
    assert.equal(r.status, 403);
    assert.match(r.body, /PKI_ERR_BAD_SVID/);
    const last = records()
      .filter((x) => x.stage === 'connection')
      .at(-1);
    assert.match(last?.provenance.reason ?? '', /CA certificate cannot be used as a leaf/);
  });

  test('a TLS client without a certificate is refused', async () => {
    const before = app.requests.length;
    const r = await new Promise<Reply>((resolve, reject) => {
      const req = httpsRequest({
        host: RATINGS_IP,
        port,
        localAddress: REVIEWS_IP,
        path: '/ratings/1',
        agent: false,
        ca: bundle,
        checkServerIdentity: () => undefined,
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            headers: res.headers,
            reused: false,
          }),
        );
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(r.status, 403);
    assert.match(r.body, /PKI_ERR_BAD_SVID/);
    assert.equal(app.requests.length, before);
  });

  test('garbage and a TLS record that is no handshake never reach the application', async () => {
    const before = app.requests.length;
    for (const bytes of [
      Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]),
      Buffer.from('\x00\x01GARBAGE\r\n\r\n'),
    ]) {
      await new Promise<void>((resolve) => {
        const s = connect({ host: RATINGS_IP, port, localAddress: REVIEWS_IP }, () => s.end(bytes));
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.resume();
      });
    }
    assert.equal(app.requests.length, before);
  });

  test('a renewed SVID is served to new connections; credentials of another identity are refused', async () => {
    const renewed = await issue(ca, id('bookinfo-ratings'));
    const other = await issue(ca, id('attacker'));
    assert.match(
      sidecar.updateCredentials({ svid: other, trustBundlePem: bundle }) ?? '',
      /runs as/,
    );
    assert.match(
      sidecar.updateCredentials({
        svid: { ...renewed, keyPem: other.keyPem },
        trustBundlePem: bundle,
      }) ?? '',
      /do not form a TLS credential/,
    );
    assert.equal(sidecar.updateCredentials({ svid: renewed, trustBundlePem: bundle }), undefined);
    const r = await send({ port, from: REVIEWS_IP, svid: reviews, bundle });
    assert.equal(r.status, 200);
    assert.equal(r.server, new X509Certificate(renewed.certPem).fingerprint256);
    assert.throws(
      () =>
        new InboundSidecar({
          listenHost: RATINGS_IP,
          listenPort: 0,
          appPort: app.port,
          podPort: 9080,
          svid: other,
          trustBundlePem: bundle,
          policy: holder,
        }),
      /runs as spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-ratings/,
    );
  });

  test('the counters count allowed and denied decisions by policy', () => {
    const c = sidecar.counters();
    assert.ok(c.allowed >= 3);
    assert.ok(c.denied >= 3);
    assert.ok((c.deniedBy['default/ratings-readers-get-only'] ?? 0) >= 2);
    assert.ok(c.refusedConnections >= 1);
  });

  test('a plaintext client under PERMISSIVE is judged without an identity (serviceAccounts rules do not match)', async () => {
    const r = await send({ port, from: REVIEWS_IP, bundle });
    assert.equal(r.status, 403);
    assert.match(r.body, /ratings-readers-get-only rule 1/);
  });

  test('a new policy version applies to open connections; a bad one is refused and the last kept (fail static)', async () => {
    const agent = tlsAgent(reviews, bundle);
    try {
      const o = { port, from: REVIEWS_IP, svid: reviews, bundle, agent };
      assert.equal((await send(o)).status, 200);
      assert.equal(
        holder.update(PolicyView.fromResources(bookinfo(IPS), 'default/no-such-pod', 2)),
        false,
      );
      assert.equal(
        holder.update(PolicyView.fromResources(bookinfo(IPS), 'default/ratings-v1', 1)),
        false,
      );
      assert.equal(holder.status().version, 1);
      assert.equal((await send(o)).status, 200);
      // Version 2 moves reviews-v2 to another address: its certificate no longer matches the source.
      const moved = { ...IPS, 'default/reviews-v2': `${P}.9` };
      assert.equal(
        holder.update(PolicyView.fromResources(bookinfo(moved), 'default/ratings-v1', 2)),
        true,
      );
      const r = await send(o);
      assert.equal(r.status, 403);
      assert.equal(r.reused, true);
      assert.match(r.body, /identity-mismatch/);
      assert.equal(
        holder.update(PolicyView.fromResources(bookinfo(IPS), 'default/ratings-v1', 3)),
        true,
      );
      assert.equal((await send(o)).status, 200);
    } finally {
      agent.destroy();
    }
  });
});

describe('inbound sidecar under STRICT PeerAuthentication', { timeout: 60_000 }, () => {
  const dir = tempDir('sidecar-strict');
  let sidecar: InboundSidecar;
  let app: Awaited<ReturnType<typeof echoApp>>;
  let bundle = '';
  let reviews: Svid;
  let port = 0;

  before(async () => {
    const ca = await newCa(join(dir.path, 'ca'));
    reviews = await issue(ca, id('bookinfo-reviews'));
    bundle = reviews.bundlePem;
    const other = await newCa(join(dir.path, 'ca-other'), 'other.example');
    const v = PolicyView.fromResources(bookinfo(IPS, STRICT), 'default/ratings-v1', 1);
    assert.ok(v.ok, v.ok ? '' : v.reason);
    app = await echoApp();
    sidecar = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: app.port,
      podPort: 9080,
      svid: await issue(ca, id('bookinfo-ratings')),
      // Both roots are trusted by OpenSSL; the SPIFFE check must still refuse other.example.
      trustBundlePem: `${bundle}${other.bundle()}`,
      policy: new PolicyViewHolder(v.view),
    });
    port = (await sidecar.start()).port;
    otherSvid = await issue(other, 'spiffe://other.example/ns/default/sa/bookinfo-reviews');
  });
  let otherSvid: Svid;

  after(async () => {
    await sidecar?.close();
    await new Promise<void>((r) => app?.server.close(() => r()));
    dir.cleanup();
  });

  test('a plaintext client is refused under STRICT', async () => {
    const r = await send({ port, from: REVIEWS_IP, bundle });
    assert.equal(r.status, 403);
    assert.match(r.body, /peer-authentication/);
    assert.equal(app.requests.length, 0);
  });

  test('an mTLS client is still allowed under STRICT', async () => {
    const r = await send({ port, from: REVIEWS_IP, svid: reviews, bundle });
    assert.equal(r.status, 200, r.body);
  });

  test('a certificate of another trust domain is refused even when its CA is trusted', async () => {
    const r = await send({
      port,
      from: REVIEWS_IP,
      svid: otherSvid,
      bundle: `${bundle}${otherSvid.bundlePem}`,
    });
    assert.equal(r.status, 403);
    assert.match(r.body, /PKI_ERR_WRONG_TRUST_DOMAIN/);
  });
});
