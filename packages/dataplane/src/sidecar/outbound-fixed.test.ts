// The outbound proxy's per-destination loopback listeners (transparent interception): a
// connection redirected there goes to exactly that destination, whatever the request says.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { connect as h2connect, createServer as createH2Server } from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders as H2Headers } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { InboundSidecar } from './inbound.js';
import { OutboundProxy } from './outbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { bookinfo, echoApp, issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';

const P = loopbackPrefix();
const REVIEWS_IP = `${P}.42`;
const RATINGS_IP = `${P}.44`;
const IPS = {
  'default/reviews-v2': REVIEWS_IP,
  'default/ratings-v1': RATINGS_IP,
  'default/attacker': `${P}.43`,
};
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers, agent: false });
    req.on('response', (res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('outbound proxy: redirected destinations', { timeout: 60_000 }, () => {
  const dir = tempDir('sidecar-out-fixed');
  const closers: (() => Promise<void>)[] = [];
  let proxy: OutboundProxy;
  let fixedPort = 0;
  let h2Port = 0;
  let imposterPort = 0;
  let imposterFixed = 0;
  const sessions: ClientHttp2Session[] = [];

  before(async () => {
    const ca = await newCa(join(dir.path, 'ca'));
    const reviews = await issue(ca, id('bookinfo-reviews'));
    const ratings = await issue(ca, id('bookinfo-ratings'));
    const resources = bookinfo(IPS);
    const view = (ep: string): PolicyViewHolder => {
      const v = PolicyView.fromResources(resources, ep, 1);
      assert.ok(v.ok, v.ok ? '' : v.reason);
      return new PolicyViewHolder(v.view);
    };
    const app = await echoApp();
    closers.push(() => new Promise((r) => app.server.close(() => r())));
    const inbound = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: app.port,
      podPort: 9080,
      svid: ratings,
      trustBundlePem: ratings.bundlePem,
      policy: view('default/ratings-v1'),
    });
    const inboundPort = (await inbound.start()).port;
    closers.push(() => inbound.close());
    // The same destination pod serving an h2c application (gRPC) on port 9090.
    const h2app = createH2Server((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            h2c: true,
            path: req.url,
            xfcc: req.headers['x-forwarded-client-cert'] ?? null,
          }),
        );
      });
    });
    await new Promise<void>((r) => h2app.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => h2app.close(() => r())));
    const inboundH2 = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: (h2app.address() as AddressInfo).port,
      appProtocol: 'h2c',
      podPort: 9080,
      svid: ratings,
      trustBundlePem: ratings.bundlePem,
      policy: view('default/ratings-v1'),
    });
    const inboundH2Port = (await inboundH2.start()).port;
    closers.push(() => inboundH2.close());
    // Someone else's valid certificate at the ratings address (secure naming must refuse it).
    const imposter = new InboundSidecar({
      listenHost: RATINGS_IP,
      listenPort: 0,
      appPort: (h2app.address() as AddressInfo).port,
      podPort: 9080,
      svid: await issue(ca, id('attacker')),
      trustBundlePem: ratings.bundlePem,
      policy: view('default/attacker'),
    });
    imposterPort = (await imposter.start()).port;
    closers.push(() => imposter.close());
    proxy = new OutboundProxy({
      listenPort: 0,
      svid: reviews,
      trustBundlePem: reviews.bundlePem,
      policy: view('default/reviews-v2'),
      sourceAddress: REVIEWS_IP,
      upstream: (ip, port) =>
        ip !== RATINGS_IP
          ? { host: ip, port }
          : port === 9080
            ? { host: RATINGS_IP, port: inboundPort }
            : port === 9090
              ? { host: RATINGS_IP, port: inboundH2Port }
              : { host: RATINGS_IP, port: imposterPort },
    });
    await proxy.start();
    closers.push(() => proxy.close());
    fixedPort = (await proxy.addDestination({ ip: RATINGS_IP, port: 9080, listenPort: 0 })).port;
    h2Port = (await proxy.addDestination({ ip: RATINGS_IP, port: 9090, listenPort: 0 })).port;
    imposterFixed = (await proxy.addDestination({ ip: RATINGS_IP, port: 9091, listenPort: 0 }))
      .port;
  });

  const h2open = (port: number): ClientHttp2Session => {
    const s = h2connect(`http://127.0.0.1:${port}`);
    s.on('error', () => undefined);
    sessions.push(s);
    return s;
  };
  const h2get = (
    s: ClientHttp2Session,
    headers: Record<string, string>,
    body?: Buffer,
  ): Promise<{ h: H2Headers; t: H2Headers | undefined; body: string }> =>
    new Promise((resolve, reject) => {
      const st = s.request(headers, { endStream: body === undefined });
      let h: H2Headers = {};
      let t: H2Headers | undefined;
      let b = '';
      st.on('response', (x) => (h = x));
      st.on('trailers', (x: H2Headers) => (t = x));
      st.on('data', (c: Buffer) => (b += c.toString()));
      st.on('end', () => resolve({ h, t, body: b }));
      st.on('error', reject);
      if (body !== undefined) st.end(body);
    });

  after(async () => {
    for (const s of sessions) s.destroy();
    for (const c of closers.reverse()) await c();
    dir.cleanup();
  });

  test('an origin-form request on the listener goes to its destination with mTLS, whatever the Host header names', async () => {
    const r = await get(fixedPort, '/ratings/1', { host: '10.9.9.9:80' });
    assert.equal(r.status, 200, r.body);
    assert.match(
      r.body,
      /"xfcc":"URI=spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-reviews"/,
    );
  });

  test('the destination egress policy still applies on the listener', async () => {
    // reviews may only GET ratings (the destination's rule, judged by the ratings sidecar).
    const r = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({
        host: '127.0.0.1',
        port: fixedPort,
        path: '/ratings/1',
        method: 'DELETE',
        agent: false,
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(r, 403);
  });

  test('a proxy-form target on a redirected listener is refused (no second destination on one connection)', async () => {
    const r = await get(fixedPort, `http://10.9.9.9:9080/ratings/1`);
    assert.equal(r.status, 400);
    assert.match(r.body, /origin-form/);
  });

  test('a listener on a routable address, and a port used twice, are refused', async () => {
    await assert.rejects(
      proxy.addDestination({ ip: RATINGS_IP, port: 9080, listenPort: 0, listenHost: '0.0.0.0' }),
      /loopback only/,
    );
    await assert.rejects(
      proxy.addDestination({ ip: RATINGS_IP, port: 9081, listenPort: fixedPort }),
      /already serves/,
    );
    await assert.rejects(
      proxy.addDestination({ ip: 'ratings.default', port: 9080, listenPort: 0 }),
      /not an IP address/,
    );
  });

  test('cleartext HTTP/2 from the application (a gRPC client) is recognised, judged and sent over mTLS HTTP/2 to the destination sidecar', async () => {
    const s = h2open(h2Port);
    const r = await h2get(s, {
      ':method': 'GET',
      ':path': '/ratings/1',
      ':authority': 'ratings:9090',
    });
    assert.equal(r.h[':status'], 200, r.body);
    assert.deepEqual(JSON.parse(r.body), {
      h2c: true,
      path: '/ratings/1',
      xfcc: `URI=${id('bookinfo-reviews')}`,
    });
  });

  test("the destination's gRPC refusal is relayed to the application as it was answered (grpc-status 7)", async () => {
    const s = h2open(h2Port);
    const head = Buffer.alloc(5);
    const r = await h2get(
      s,
      {
        ':method': 'POST',
        ':path': '/palisade.test.Ratings/Get',
        'content-type': 'application/grpc',
        te: 'trailers',
      },
      head,
    );
    assert.equal(r.h[':status'], 200);
    assert.equal(r.h['grpc-status'], '7');
    assert.match(decodeURIComponent(String(r.h['grpc-message'])), /RBAC: access denied/);
  });

  test('over HTTP/2 a server presenting another identity is refused before anything is sent (secure naming)', async () => {
    const s = h2open(imposterFixed);
    const r = await h2get(s, { ':method': 'GET', ':path': '/ratings/1' });
    assert.equal(r.h[':status'], 502);
    assert.match(r.body, /upstream identity refused \(PKI_ERR_/);
    const g = await h2get(
      s,
      { ':method': 'POST', ':path': '/x.Y/Z', 'content-type': 'application/grpc' },
      Buffer.alloc(5),
    );
    assert.equal(g.h['grpc-status'], '14');
  });

  test('a removed destination no longer accepts connections', async () => {
    const port = (await proxy.addDestination({ ip: RATINGS_IP, port: 9080, listenPort: 0 })).port;
    await proxy.removeDestination(port);
    const refused = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.on('error', () => resolve(true));
    });
    assert.equal(refused, true);
  });
});
