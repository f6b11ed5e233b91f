// The outbound proxy end to end: application → outbound proxy (reviews-v2) → mTLS → inbound
// sidecar (ratings-v1) → application, with secure naming checked against the policy view.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { SvidMaterial } from '@palisade/pki';
import { AccessLog } from './access-log.js';
import { AdminServer } from './admin.js';
import { InboundSidecar } from './inbound.js';
import { OutboundProxy } from './outbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { bookinfo, echoApp, issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';

const P = loopbackPrefix();
const REVIEWS_IP = `${P}.12`;
const RATINGS_IP = `${P}.14`;
const IPS = {
  'default/reviews-v2': REVIEWS_IP,
  'default/ratings-v1': RATINGS_IP,
  'default/attacker': `${P}.13`,
};
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

function viaProxy(
  proxyPort: number,
  target: string,
  method = 'GET',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxyPort,
      method,
      path: target,
      agent: false,
      timeout: 10_000,
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe('outbound proxy', { timeout: 60_000 }, () => {
  const dir = tempDir('sidecar-out');
  const closers: (() => Promise<void>)[] = [];
  let proxyPort = 0;
  let inboundPort = 0;
  let imposterPort = 0;
  let imposterApp: Awaited<ReturnType<typeof echoApp>>;
  let proxy: OutboundProxy;
  let upstreamPort = 0;
  let ca: Awaited<ReturnType<typeof newCa>>;
  let bundlePem = '';
  let holder: PolicyViewHolder;

  before(async () => {
    ca = await newCa(join(dir.path, 'ca'));
    const reviews = await issue(ca, id('bookinfo-reviews'));
    const ratings = await issue(ca, id('bookinfo-ratings'));
    const attacker: SvidMaterial = await issue(ca, id('attacker'));
    const bundle = reviews.bundlePem;
    bundlePem = bundle;
    const resources = bookinfo(IPS);
    const view = (ep: string): PolicyViewHolder => {
      const v = PolicyView.fromResources(resources, ep, 1);
      assert.ok(v.ok, v.ok ? '' : v.reason);
      return new PolicyViewHolder(v.view);
    };
    const app = await echoApp();
    imposterApp = await echoApp();
    closers.push(() => new Promise((r) => app.server.close(() => r())));
    closers.push(() => new Promise((r) => imposterApp.server.close(() => r())));
    const inbound = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: app.port,
      podPort: 9080,
      svid: ratings,
      trustBundlePem: bundle,
      policy: view('default/ratings-v1'),
    });
    inboundPort = (await inbound.start()).port;
    closers.push(() => inbound.close());
    // A server at the ratings address holding a valid certificate of another identity.
    const imposter = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: imposterApp.port,
      podPort: 9080,
      svid: attacker,
      trustBundlePem: bundle,
      // The attacker's own sidecar, listening on the ratings address (an address takeover).
      policy: view('default/attacker'),
    });
    imposterPort = (await imposter.start()).port;
    closers.push(() => imposter.close());
    upstreamPort = inboundPort;
    proxy = new OutboundProxy({
      listenPort: 0,
      svid: reviews,
      trustBundlePem: bundle,
      policy: (holder = view('default/reviews-v2')),
      sourceAddress: REVIEWS_IP,
      upstream: (ip, port) =>
        ip === RATINGS_IP && port === 9080
          ? { host: RATINGS_IP, port: upstreamPort }
          : { host: ip, port },
      log: new AccessLog(undefined),
    });
    proxyPort = (await proxy.start()).port;
    closers.push(() => proxy.close());
  });

  after(async () => {
    for (const c of closers.reverse()) await c();
    dir.cleanup();
  });

  test('a request is carried over mTLS with the local SVID and judged by the destination sidecar', async () => {
    const r = await viaProxy(proxyPort, `http://${RATINGS_IP}:9080/ratings/7`);
    assert.equal(r.status, 200, r.body);
    const echoed = JSON.parse(r.body) as { url: string; xfcc: string };
    assert.equal(echoed.url, '/ratings/7');
    assert.equal(echoed.xfcc, `URI=${id('bookinfo-reviews')}`);
    const d = await viaProxy(proxyPort, `http://${RATINGS_IP}:9080/ratings/7`, 'POST');
    assert.equal(d.status, 403);
    assert.match(d.body, /ratings-readers-get-only rule 1/);
  });

  test('secure naming: a server presenting another identity at the destination is refused', async () => {
    upstreamPort = imposterPort;
    try {
      const r = await viaProxy(proxyPort, `http://${RATINGS_IP}:9080/ratings/7`);
      assert.equal(r.status, 502);
      assert.match(r.body, /upstream identity refused \(PKI_ERR_PEER_MISMATCH\)/);
      assert.equal(imposterApp.requests.length, 0);
      assert.ok((proxy.counters().deniedBy['identity-mismatch'] ?? 0) >= 1);
    } finally {
      upstreamPort = inboundPort;
    }
    // The pool of the real destination is unaffected.
    assert.equal((await viaProxy(proxyPort, `http://${RATINGS_IP}:9080/ratings/8`)).status, 200);
  });

  test('a destination with no known identity, or named by host name, is refused (fail closed)', async () => {
    const a = await viaProxy(proxyPort, `http://${P}.99:9080/x`);
    assert.equal(a.status, 502);
    const b = await viaProxy(proxyPort, 'http://ratings.default.svc:9080/x');
    assert.equal(b.status, 400);
    const c = await viaProxy(proxyPort, `http://${RATINGS_IP}:9080/ratings/../admin`);
    assert.equal(c.status, 400);
  });

  test('a renewed SVID is used for new upstream connections; one of another identity is refused', async () => {
    const renewed = await issue(ca, id('bookinfo-reviews'));
    const other = await issue(ca, id('attacker'));
    assert.match(
      proxy.updateCredentials({ svid: other, trustBundlePem: bundlePem }) ?? '',
      /runs as/,
    );
    assert.equal(proxy.updateCredentials({ svid: renewed, trustBundlePem: bundlePem }), undefined);
    const r = await viaProxy(proxyPort, `http://${RATINGS_IP}:9080/ratings/9`);
    assert.equal(r.status, 200, r.body);
    assert.match(r.body, /bookinfo-reviews/);
  });

  test('the admin endpoint reports the counters and the policy version on loopback only', async () => {
    assert.throws(() => new AdminServer('0.0.0.0', 0, { policy: holder }), /loopback only/);
    const admin = new AdminServer('127.0.0.1', 0, { policy: holder, outbound: proxy });
    const { port } = await admin.start();
    try {
      const stats = await new Promise<string>((resolve, reject) => {
        const req = httpRequest(
          { host: '127.0.0.1', port, path: '/stats', agent: false },
          (res) => {
            let b = '';
            res.on('data', (c: Buffer) => (b += c.toString()));
            res.on('end', () => resolve(b));
          },
        );
        req.on('error', reject);
        req.end();
      });
      const s = JSON.parse(stats) as {
        policy: { version: number; endpoint: string };
        outbound: { allowed: number; denied: number };
        inbound: null;
      };
      assert.equal(s.policy.version, 1);
      assert.equal(s.policy.endpoint, 'default/reviews-v2');
      assert.equal(s.outbound.allowed, proxy.counters().allowed);
      assert.ok(s.outbound.allowed >= 3);
      assert.equal(s.inbound, null);
    } finally {
      await admin.close();
    }
  });
});
