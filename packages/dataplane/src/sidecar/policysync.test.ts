// Policy sync and SVIDs through the agent, on loopback addresses: a real API server (SQLite file,
// its CA), a real agent (a fake nft: the kernel side is proven in policysync-netns.test.ts), its
// per-endpoint unix sockets and two `runSidecar` sidecars in this process. What each endpoint's
// socket refuses, what a view holds, SVID rotation without dropping connections, and a CA
// rotation reaching the sidecar's trust bundle.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { createKeyAndCsr } from '@palisade/pki';
import { FakeNft } from '../nft/fake.js';
import { endpointSocketPath, parsePolicySyncMessage } from '../agent-socket/protocol.js';
import { issue, loopbackPrefix } from './test-fixtures.js';
import { SyncWorld, until } from './test-sync-fixture.js';
import { runSidecar } from './run-sidecar.js';
import type { RunningSidecar } from './run-sidecar.js';

const NODE = `psl${process.pid}`;
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

function sockCall(
  socketPath: string,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        socketPath,
        method,
        path,
        headers: body !== undefined ? { 'content-type': 'application/json' } : {},
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The first line of a policy sync stream, then the stream is closed. */
function firstLine(socketPath: string, path: string): Promise<{ status: number; line: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, method: 'GET', path, timeout: 10_000 }, (res) => {
      let buf = '';
      res.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        const i = buf.indexOf('\n');
        if (i >= 0 || res.statusCode !== 200) {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, line: i >= 0 ? buf.slice(0, i) : buf });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, line: buf }));
    });
    req.on('error', reject);
    req.end();
  });
}

const code = (text: string): string =>
  (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? '';

async function app(host: string, name: string): Promise<Server> {
  const s = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ app: name, method: req.method, url: req.url }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(9080, host, resolve);
  });
  return s;
}

describe('policy sync and SVIDs through the agent (loopback)', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-psl-${process.pid}-`));
  const socketDir = join(dir, 'endpoints');
  const world = new SyncWorld(join(dir, 'server'), NODE, socketDir);
  const prefix = loopbackPrefix();
  const ip = { ratings: `${prefix}.2`, reviews: `${prefix}.3`, productpage: `${prefix}.4` };
  const sock = (name: string) => endpointSocketPath(socketDir, 'default', name);
  const apps: Server[] = [];
  let ratings: RunningSidecar | undefined;
  let reviews: RunningSidecar | undefined;
  let reviewsCert: Awaited<ReturnType<typeof issue>>;

  before(async () => {
    await world.startServer();
    await world.applyBookinfo([
      { pod: 'default/ratings-v1', ip: ip.ratings, iface: 'lo1' },
      { pod: 'default/reviews-v2', ip: ip.reviews, iface: 'lo2' },
      { pod: 'default/productpage-v1', ip: ip.productpage, iface: 'lo3' },
    ]);
    await world.startAgent({ runner: new FakeNft().runner });
    await until('the endpoint sockets', () =>
      ['ratings-v1', 'reviews-v2', 'productpage-v1'].every((n) => existsSync(sock(n))),
    );
    apps.push(await app(ip.ratings, 'ratings'), await app(ip.reviews, 'reviews'));
    ratings = await runSidecar({
      endpoint: 'default/ratings-v1',
      agentSocket: sock('ratings-v1'),
      appPorts: [9080],
      appHost: ip.ratings,
      inboundHost: ip.ratings,
      inboundPort: 0,
      outboundPort: 0,
      adminPort: 0,
      accessLog: false,
      svidTtlSeconds: 60,
      renewalFraction: 0.05,
    });
    const ratingsPort = ratings.inbound[0]?.port ?? 0;
    reviews = await runSidecar({
      endpoint: 'default/reviews-v2',
      agentSocket: sock('reviews-v2'),
      appPorts: [9080],
      appHost: ip.reviews,
      inboundHost: ip.reviews,
      inboundPort: 0,
      outboundPort: 0,
      adminPort: 0,
      sourceAddress: ip.reviews,
      upstream: (dst) => ({ host: dst, port: ratingsPort }),
      accessLog: false,
    });
    if (!world.server) throw new Error('no server');
    reviewsCert = await issue(world.server.ca, id('bookinfo-reviews'));
  });

  after(async () => {
    await ratings?.close(200);
    await reviews?.close(200);
    for (const s of apps) await new Promise((r) => s.close(r));
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request through reviews' outbound proxy to ratings. */
  const viaReviews = (method: string, path: string): Promise<{ status: number; text: string }> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: reviews?.outboundPort,
          method,
          path: `http://${ip.ratings}:9080${path}`,
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });

  test('reviews → ratings through both sidecars: GET allowed, POST 403', async () => {
    const get = await viaReviews('GET', '/ratings/1');
    assert.equal(get.status, 200, get.text);
    const post = await viaReviews('POST', '/ratings/1');
    assert.equal(post.status, 403, post.text);
    assert.match(post.text, /ratings-readers-get-only rule 1/);
  });

  test('each sidecar counts its decisions per policy on its admin /metrics (issue 8 §4)', async () => {
    await viaReviews('GET', '/ratings/1');
    await viaReviews('POST', '/ratings/1');
    const metrics = (port: number): Promise<string> =>
      new Promise((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port, path: '/metrics', timeout: 10_000 }, (res) => {
          let t = '';
          res.on('data', (c: Buffer) => (t += c.toString()));
          res.on('end', () => resolve(t));
        })
          .on('error', reject)
          .end();
      });
    const inbound = await metrics(ratings?.adminPort ?? 0);
    assert.match(
      inbound,
      /palisade_sidecar_flows_total\{point="l7",verdict="allow",policy="[^"]+"\} [1-9]/,
    );
    assert.match(
      inbound,
      /palisade_sidecar_flows_total\{point="l7",verdict="deny",policy="[^"]+"\} [1-9]/,
    );
    const outbound = await metrics(reviews?.adminPort ?? 0);
    assert.match(outbound, /palisade_sidecar_flows_total\{point="l7",verdict="allow",/);
  });

  test('a stream gets a snapshot, then an update only for changes of its own view, with increasing versions', async () => {
    const msgs: string[] = [];
    const req = httpRequest({
      socketPath: sock('ratings-v1'),
      path: '/v1/policysync/endpoints/default/ratings-v1?ports=9080',
    });
    req.on('response', (res) => {
      let buf = '';
      res.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          msgs.push(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    });
    req.end();
    try {
      const parsed = () =>
        msgs.map((l) => parsePolicySyncMessage(l)).flatMap((m) => (m.ok ? [m.value] : []));
      await until('the snapshot', () => parsed().some((m) => m.type === 'snapshot'));
      const snap = parsed().find((m) => m.type === 'snapshot');
      assert.ok(snap && snap.type === 'snapshot');
      // A change that does not concern ratings (details' Istio policy) sends nothing ...
      const unrelated = await world.apply([
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'details-viewer', namespace: 'default' },
          spec: { selector: { matchLabels: { app: 'details' } }, action: 'ALLOW', rules: [{}] },
        },
      ]);
      // ... one that does (an Istio policy selecting ratings) sends its version.
      const relevant = await world.apply([
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'ratings-deny-delete', namespace: 'default' },
          spec: {
            selector: { matchLabels: { app: 'ratings' } },
            action: 'DENY',
            rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }],
          },
        },
      ]);
      await until('the update', () => parsed().some((m) => m.type === 'update'));
      const updates = parsed().filter((m) => m.type === 'update');
      assert.equal(
        updates.length,
        1,
        JSON.stringify(updates.map((u) => u.type === 'update' && u.version)),
      );
      const u = updates[0];
      assert.ok(u && u.type === 'update');
      assert.ok(u.version >= relevant && relevant > unrelated && u.version > snap.version);
      assert.ok(
        u.view.resources.some(
          (r) => (r as { metadata: { name: string } }).metadata.name === 'ratings-deny-delete',
        ),
      );
      // The sidecar enforces it.
      await until(
        'the view in the sidecar',
        () => (ratings?.policy.current.version ?? 0) >= relevant,
      );
    } finally {
      req.destroy();
    }
  });

  test("an endpoint's socket refuses a policy stream for another endpoint (403)", async () => {
    const r = await firstLine(
      sock('ratings-v1'),
      '/v1/policysync/endpoints/default/reviews-v2?ports=9080',
    );
    assert.equal(r.status, 403);
    assert.equal(code(r.line), 'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN');
    const own = await firstLine(
      sock('ratings-v1'),
      '/v1/policysync/endpoints/default/ratings-v1?ports=9080',
    );
    assert.equal(own.status, 200);
    const m = parsePolicySyncMessage(own.line);
    assert.ok(m.ok && m.value.type === 'snapshot', own.line.slice(0, 200));
  });

  test("an SVID for another identity is refused: another endpoint's path, or another SPIFFE ID", async () => {
    const { csrPem } = await createKeyAndCsr();
    const other = await sockCall(
      sock('ratings-v1'),
      'POST',
      '/v1/svid/endpoints/default/reviews-v2',
      JSON.stringify({ csr: csrPem }),
    );
    assert.equal(other.status, 403, other.text);
    assert.equal(code(other.text), 'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN');
    const named = await sockCall(
      sock('ratings-v1'),
      'POST',
      '/v1/svid/endpoints/default/ratings-v1',
      JSON.stringify({ csr: csrPem, spiffeId: id('bookinfo-reviews') }),
    );
    assert.equal(named.status, 403, named.text);
    assert.match(named.text, /runs as spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-ratings/);
    const ok = await sockCall(
      sock('ratings-v1'),
      'POST',
      '/v1/svid/endpoints/default/ratings-v1',
      JSON.stringify({ csr: csrPem }),
    );
    assert.equal(ok.status, 201, ok.text);
    assert.equal((JSON.parse(ok.text) as { spiffeId: string }).spiffeId, id('bookinfo-ratings'));
  });

  test('hostile requests on an endpoint socket are refused with 400 and nothing is done', async () => {
    const s = sock('ratings-v1');
    const base = '/v1/policysync/endpoints/default/ratings-v1';
    for (const q of [
      '',
      '?ports=',
      '?ports=0',
      '?ports=70000',
      '?ports=a',
      `?ports=${Array.from({ length: 17 }, (_, i) => 1000 + i).join(',')}`,
    ]) {
      const r = await firstLine(s, `${base}${q}`);
      assert.equal(r.status, 400, `${q}: ${r.line}`);
    }
    for (const p of [
      '/v1/policysync/endpoints/default/ratings-v1/../reviews-v2?ports=1',
      '/v1/policysync/endpoints/default%2Fratings-v1?ports=1',
      '/v1/policysync/endpoints/Default/Ratings?ports=1',
      '/v1/policysync/endpoints/%ZZ?ports=1',
      '/v1/nothing',
    ]) {
      const r = await firstLine(s, p);
      assert.ok(r.status === 400 || r.status === 403, `${p}: ${r.status} ${r.line}`);
    }
    const svid = '/v1/svid/endpoints/default/ratings-v1';
    for (const body of [
      'not json',
      '[]',
      JSON.stringify({ csr: 'x' }),
      JSON.stringify({ csr: '-----BEGIN CERTIFICATE REQUEST-----', extra: 1 }),
      JSON.stringify({ csr: '-----BEGIN CERTIFICATE REQUEST-----', ttlSeconds: 5 }),
    ]) {
      const r = await sockCall(s, 'POST', svid, body);
      assert.equal(r.status, 400, `${body}: ${r.text}`);
    }
    const big = await sockCall(s, 'POST', svid, 'x'.repeat(200 * 1024)).catch(() => ({
      status: 400,
      text: '',
    }));
    assert.equal(big.status, 400);
    const get = await sockCall(s, 'GET', svid);
    assert.equal(get.status, 400);
  });

  test('the view holds what ratings needs and nothing else', () => {
    const v = world.sync?.viewOf('default/ratings-v1', [9080]);
    assert.ok(v);
    assert.equal(v.identity, id('bookinfo-ratings'));
    const names = v.resources.map((r) => {
      const o = r as { kind: string; metadata: { name: string } };
      return `${o.kind}/${o.metadata.name}`;
    });
    // Its own pod and endpoint, the caller reviews-v2, the policy that selects it.
    for (const want of [
      'Pod/ratings-v1',
      'Pod/reviews-v2',
      `WorkloadEndpoint/${NODE}-k8s-ratings-v1-eth0`,
      'NetworkPolicy/ratings-readers-get-only',
      'ServiceAccount/bookinfo-reviews',
      'Namespace/default',
    ])
      assert.ok(names.includes(want), `${want} missing from ${names.join(', ')}`);
    // productpage may not reach ratings in the kernel (nor ratings it): not in the view; the
    // details policies and AuthorizationPolicy select details only.
    for (const not of [
      'Pod/productpage-v1',
      'Pod/details-v1',
      'AuthorizationPolicy/details-viewer',
    ])
      assert.ok(!names.includes(not), `${not} should not be in the view`);
    assert.ok(
      !JSON.stringify(v.resources).includes('palisade.dev/netns'),
      'node-private annotations stay on the node',
    );
  });

  test('a stolen certificate presented from another address is refused as identity-mismatch', async () => {
    const r = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: ip.ratings,
          port: ratings?.inbound[0]?.port,
          localAddress: ip.productpage,
          path: '/ratings/1',
          key: reviewsCert.keyPem,
          cert: reviewsCert.certPem + reviewsCert.chainPem,
          ca: reviewsCert.bundlePem,
          checkServerIdentity: () => undefined,
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal(r.status, 403);
    assert.match(r.text, /identity-mismatch/);
  });

  test('the SVID is renewed on schedule (at the configured fraction of its lifetime)', async () => {
    const s = ratings?.status().svid;
    assert.ok(s?.notAfter && s.renewAt);
    // 60 s lifetime from issuance (the CA backdates notBefore by a minute, which must not
    // count), renewal at 5 %: 57 s before expiry.
    const before = s.notAfter.getTime() - s.renewAt.getTime();
    assert.ok(Math.abs(before - 57_000) < 1_500, `renewal ${before} ms before expiry`);
    const r0 = s.rotations;
    await until('a scheduled renewal', () => (ratings?.status().svid.rotations ?? 0) > r0, 20_000);
    assert.equal(ratings?.status().svid.lastError, undefined);
  });

  test('rotation keeps a keep-alive connection open; new connections get the new certificate', async () => {
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
    const get = (a: HttpsAgent) =>
      new Promise<{ status: number; serial: string; reused: boolean; socket: TLSSocket }>(
        (resolve, reject) => {
          const req = httpsRequest(
            {
              host: ip.ratings,
              port: ratings?.inbound[0]?.port,
              localAddress: ip.reviews,
              path: '/ratings/1',
              key: reviewsCert.keyPem,
              cert: reviewsCert.certPem + reviewsCert.chainPem,
              ca: reviewsCert.bundlePem,
              checkServerIdentity: () => undefined,
              agent: a,
              timeout: 10_000,
            },
            (res: IncomingMessage) => {
              const socket = res.socket as TLSSocket;
              const serial = socket.getPeerCertificate().serialNumber;
              res.resume();
              res.on('end', () =>
                resolve({ status: res.statusCode ?? 0, serial, reused: req.reusedSocket, socket }),
              );
            },
          );
          req.on('error', reject);
          req.end();
        },
      );
    try {
      const first = await get(agent);
      assert.equal(first.status, 200);
      const before = ratings?.status().svid.rotations ?? 0;
      await ratings?.rotateNow();
      assert.ok((ratings?.status().svid.rotations ?? 0) > before);
      const again = await get(agent);
      assert.equal(again.status, 200);
      assert.ok(again.reused, 'the keep-alive connection survived the rotation');
      assert.equal(again.socket, first.socket);
      assert.equal(again.serial, first.serial, 'an open connection keeps its certificate');
      const fresh = new HttpsAgent({ keepAlive: false });
      const next = await get(fresh);
      assert.equal(next.status, 200);
      assert.notEqual(next.serial, first.serial, 'a new connection gets the renewed certificate');
      fresh.destroy();
    } finally {
      agent.destroy();
    }
  });

  test('a CA rotation reaches the sidecar: the new root joins its trust bundle', async () => {
    const before = ratings?.status().svid.bundleCertificates ?? 0;
    const r = await world.admin.call('POST', '/api/v1/ca/rotate', {});
    assert.equal(r.status < 300, true, JSON.stringify(r.body));
    await until(
      'the new bundle in the sidecar',
      () => (ratings?.status().svid.bundleCertificates ?? 0) > before,
      15_000,
    );
    const get = await viaReviews('GET', '/ratings/1');
    assert.equal(get.status, 200, get.text);
  });

  test('legacy Istio RBAC applied through the API reaches the sidecar: ON_WITH_INCLUSION for ratings allows only what a bound ServiceRole grants (Istio v1alpha1: default deny once RBAC is on for a service; an AuthorizationPolicy on the workload replaces it)', async () => {
    const rbac = (mode: string): unknown => ({
      apiVersion: 'rbac.istio.io/v1alpha1',
      kind: 'ClusterRbacConfig',
      metadata: { name: 'default' },
      spec: { mode, inclusion: { services: ['ratings.default.svc.cluster.local'] } },
    });
    await world.apply([
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'ratings', namespace: 'default' },
        spec: { selector: { app: 'ratings' }, ports: [{ port: 9080, targetPort: 9080 }] },
      },
      {
        apiVersion: 'rbac.istio.io/v1alpha1',
        kind: 'ServiceRole',
        metadata: { name: 'ratings-two-only', namespace: 'default' },
        spec: {
          rules: [
            {
              services: ['ratings.default.svc.cluster.local'],
              methods: ['GET'],
              paths: ['/ratings/2'],
            },
          ],
        },
      },
      {
        apiVersion: 'rbac.istio.io/v1alpha1',
        kind: 'ServiceRoleBinding',
        metadata: { name: 'reviews-ratings-two', namespace: 'default' },
        spec: {
          subjects: [{ user: 'cluster.local/ns/default/sa/bookinfo-reviews' }],
          roleRef: { kind: 'ServiceRole', name: 'ratings-two-only' },
        },
      },
      rbac('ON_WITH_INCLUSION'),
    ]);
    const kinds = (): string[] =>
      (world.sync?.viewOf('default/ratings-v1', [9080])?.resources ?? []).map(
        (r) => (r as { kind: string }).kind,
      );
    const wanted = ['ServiceRole', 'ServiceRoleBinding', 'ClusterRbacConfig', 'Service'];
    await until('the legacy RBAC kinds in the view of ratings', () =>
      wanted.every((k) => kinds().includes(k)),
    );
    // An AuthorizationPolicy selecting ratings (the DENY of DELETE applied above) replaces legacy
    // RBAC there, as in Istio 1.4/1.5: the request still passes.
    const shadowed = await viaReviews('GET', '/ratings/1');
    assert.equal(shadowed.status, 200, shadowed.text);
    const del = await world.admin.call(
      'DELETE',
      '/api/v1/security.istio.io/AuthorizationPolicy/default/ratings-deny-delete',
    );
    assert.equal(del.status, 200, JSON.stringify(del.body));
    let denied = { status: 0, text: '' };
    await until('the RBAC view in the sidecar', async () => {
      denied = await viaReviews('GET', '/ratings/1');
      return denied.status === 403;
    });
    assert.match(denied.text, /RBAC: access denied/);
    const granted = await viaReviews('GET', '/ratings/2');
    assert.equal(granted.status, 200, granted.text);
    await world.apply([rbac('OFF')]);
    await until(
      'RBAC off again',
      async () => (await viaReviews('GET', '/ratings/1')).status === 200,
    );
  });
});
