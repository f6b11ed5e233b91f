// The outbound proxy's per-destination loopback listeners (transparent interception): a
// connection redirected there goes to exactly that destination, whatever the request says.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { InboundSidecar } from './inbound.js';
import { OutboundProxy } from './outbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { bookinfo, echoApp, issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';

const P = loopbackPrefix();
const REVIEWS_IP = `${P}.42`;
const RATINGS_IP = `${P}.44`;
const IPS = { 'default/reviews-v2': REVIEWS_IP, 'default/ratings-v1': RATINGS_IP };
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
    proxy = new OutboundProxy({
      listenPort: 0,
      svid: reviews,
      trustBundlePem: reviews.bundlePem,
      policy: view('default/reviews-v2'),
      sourceAddress: REVIEWS_IP,
      upstream: (ip, port) =>
        ip === RATINGS_IP && port === 9080
          ? { host: RATINGS_IP, port: inboundPort }
          : { host: ip, port },
    });
    await proxy.start();
    closers.push(() => proxy.close());
    fixedPort = (await proxy.addDestination({ ip: RATINGS_IP, port: 9080, listenPort: 0 })).port;
  });

  after(async () => {
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
