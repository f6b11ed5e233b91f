// HTTP/2 and gRPC through the inbound sidecar with real TLS (ALPN h2), real SVIDs from a real CA,
// a real node:http2 client and real applications speaking HTTP/1.1 and h2c, on loopback
// addresses that play the pods' IPs. Every stream is judged as an HTTP/1.1 request would be.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as h2connect, createServer as createH2Server } from 'node:http2';
import type {
  ClientHttp2Session,
  Http2Server,
  IncomingHttpHeaders as H2Headers,
  OutgoingHttpHeaders as H2Out,
} from 'node:http2';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { PassThrough } from 'node:stream';
import { join } from 'node:path';
import type { SvidMaterial } from '@palisade/pki';
import { svidClientOptions } from '@palisade/pki';
import { AccessLog } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import { InboundSidecar } from './inbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { appProtocolFor, grpcMessage, grpcStatusForHttp, isGrpc } from './h2.js';
import { bookinfo, echoApp, issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';

const P = loopbackPrefix();
const REVIEWS_IP = `${P}.12`;
const ATTACKER_IP = `${P}.13`;
const RATINGS_IP = `${P}.14`;
const IPS = {
  'default/reviews-v2': REVIEWS_IP,
  'default/attacker': ATTACKER_IP,
  'default/ratings-v1': RATINGS_IP,
};
const TD = 'cluster.local';
const id = (sa: string): string => `spiffe://${TD}/ns/default/sa/${sa}`;

// gRPC on the ratings endpoint: Calico allows POST to the Ratings service for ratings readers
// (before the bookinfo policy, which allows only GET /ratings*); Istio allows only the Get
// method of it (and the REST paths). Both layers must allow.
const GRPC_POLICIES = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: ratings-grpc
  namespace: default
spec:
  order: 400
  selector: app == 'ratings'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        serviceAccounts:
          selector: ratings-reader == 'true'
      destination:
        ports: [http]
      http:
        methods: [POST]
        paths:
          - prefix: /palisade.test.Ratings/
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-grpc-methods
  namespace: default
spec:
  selector:
    matchLabels:
      app: ratings
  action: ALLOW
  rules:
    - to:
        - operation:
            paths: ["/ratings/*", "/palisade.test.Ratings/Get"]
            methods: ["GET", "POST"]
`;

type Svid = SvidMaterial & { readonly bundlePem: string };

/** A gRPC message frame: compressed flag 0, 4-byte big-endian length, the message. */
function frame(msg: string): Buffer {
  const body = Buffer.from(msg, 'utf8');
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

function unframe(buf: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i + 5 <= buf.length) {
    const n = buf.readUInt32BE(i + 1);
    out.push(buf.subarray(i + 5, i + 5 + n).toString('utf8'));
    i += 5 + n;
  }
  return out;
}

interface H2Reply {
  readonly headers: H2Headers;
  readonly trailers: H2Headers | undefined;
  readonly body: Buffer;
  /** The response ended with its HEADERS frame (a trailers-only response). */
  readonly headersOnly: boolean;
}

function h2send(session: ClientHttp2Session, headers: H2Out, body?: Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const s = session.request(headers, { endStream: body === undefined });
    let head: H2Headers = {};
    let trailers: H2Headers | undefined;
    const chunks: Buffer[] = [];
    let headersOnly = false;
    s.on('response', (h, flags) => {
      head = h;
      headersOnly = (flags & 1) === 1; // END_STREAM on the HEADERS frame
    });
    s.on('trailers', (t: H2Headers) => (trailers = t));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () =>
      resolve({ headers: head, trailers, body: Buffer.concat(chunks), headersOnly }),
    );
    s.on('error', reject);
    s.setTimeout(10_000, () => s.close());
    if (body !== undefined) s.end(body);
  });
}

function grpcCall(session: ClientHttp2Session, method: string, msg: string): Promise<H2Reply> {
  return h2send(
    session,
    {
      ':method': 'POST',
      ':path': method,
      'content-type': 'application/grpc+proto',
      te: 'trailers',
    },
    frame(msg),
  );
}

/** The gRPC status of a reply: from the trailers, or from the headers of a trailers-only reply. */
function grpcStatus(r: H2Reply): { code: number; message: string } {
  const src = r.trailers?.['grpc-status'] !== undefined ? r.trailers : r.headers;
  return {
    code: Number(src['grpc-status']),
    message: decodeURIComponent(String(src['grpc-message'] ?? '')),
  };
}

/** An h2c application: gRPC calls get a reply frame and grpc-status 0, others an echo. */
async function h2cApp(): Promise<{ port: number; server: Http2Server; seen: H2Headers[] }> {
  const seen: H2Headers[] = [];
  const server = createH2Server();
  server.on('stream', (stream, headers) => {
    seen.push(headers);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      if (isGrpc(headers['content-type'])) {
        const [msg] = unframe(Buffer.concat(chunks));
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc+proto' },
          { waitForTrailers: true },
        );
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(
          frame(
            JSON.stringify({
              reply: `hello ${msg ?? ''}`,
              path: headers[':path'],
              xfcc: headers['x-forwarded-client-cert'] ?? null,
              te: headers['te'] ?? null,
            }),
          ),
        );
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(
        JSON.stringify({
          h2c: true,
          method: headers[':method'],
          path: headers[':path'],
          xfcc: headers['x-forwarded-client-cert'] ?? null,
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server, seen };
}

describe('inbound sidecar over HTTP/2 and gRPC', { timeout: 60_000 }, () => {
  const dir = tempDir('sidecar-h2');
  let bundle = '';
  let reviews: Svid;
  let h1app: Awaited<ReturnType<typeof echoApp>>;
  let h2app: Awaited<ReturnType<typeof h2cApp>>;
  let toH1: InboundSidecar;
  let toH2: InboundSidecar;
  let portH1 = 0;
  let portH2 = 0;
  const sessions: ClientHttp2Session[] = [];
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

  const open = async (
    port: number,
    svid = reviews,
    from = REVIEWS_IP,
  ): Promise<ClientHttp2Session> => {
    const s = h2connect(`https://${RATINGS_IP}:${port}`, {
      ...svidClientOptions(svid, {
        trustBundlePem: bundle,
        trustDomain: TD,
        expect: { kind: 'exact', ids: [id('bookinfo-ratings')] },
      }),
      // Passed on to tls.connect (the types of http2.connect omit it).
      ...({ localAddress: from } as object),
    });
    sessions.push(s);
    s.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('error', reject);
    });
    return s;
  };

  before(async () => {
    const ca = await newCa(join(dir.path, 'ca'), TD);
    reviews = await issue(ca, id('bookinfo-reviews'));
    const ratings = await issue(ca, id('bookinfo-ratings'));
    bundle = reviews.bundlePem;
    h1app = await echoApp();
    h2app = await h2cApp();
    const v = PolicyView.fromResources(bookinfo(IPS, GRPC_POLICIES), 'default/ratings-v1', 1);
    assert.ok(v.ok, v.ok ? '' : v.reason);
    const holder = new PolicyViewHolder(v.view);
    const common = {
      listenHost: RATINGS_IP,
      listenPort: 0,
      podPort: 9080,
      svid: ratings,
      trustBundlePem: bundle,
      policy: holder,
      log: new AccessLog(out),
    };
    toH1 = new InboundSidecar({ ...common, appPort: h1app.port });
    toH2 = new InboundSidecar({ ...common, appPort: h2app.port, appProtocol: 'h2c' });
    portH1 = (await toH1.start()).port;
    portH2 = (await toH2.start()).port;
  });

  after(async () => {
    for (const s of sessions) s.destroy();
    await toH1?.close();
    await toH2?.close();
    await new Promise<void>((r) => h1app?.server.close(() => r()));
    await new Promise<void>((r) => h2app?.server.close(() => r()));
    dir.cleanup();
  });

  test('the TLS listener negotiates h2 by ALPN and an allowed GET stream reaches an HTTP/1.1 application', async () => {
    const s = await open(portH1);
    assert.equal(s.alpnProtocol, 'h2');
    const r = await h2send(s, { ':method': 'GET', ':path': '/ratings/1' });
    assert.equal(r.headers[':status'], 200, r.body.toString());
    const body = JSON.parse(r.body.toString()) as { url: string; xfcc: string; method: string };
    assert.equal(body.url, '/ratings/1');
    assert.equal(body.method, 'GET');
    assert.equal(body.xfcc, `URI=${id('bookinfo-reviews')}`);
    assert.equal(typeof r.headers['x-request-id'], 'string');
  });

  test('an allowed GET stream reaches an h2c application over HTTP/2', async () => {
    const s = await open(portH2);
    const r = await h2send(s, { ':method': 'GET', ':path': '/ratings/7?x=1' });
    assert.equal(r.headers[':status'], 200, r.body.toString());
    const body = JSON.parse(r.body.toString()) as { h2c: boolean; path: string; xfcc: string };
    assert.deepEqual(body, {
      h2c: true,
      method: 'GET',
      path: '/ratings/7?x=1',
      xfcc: `URI=${id('bookinfo-reviews')}`,
    });
  });

  test('an HTTP/1.1 client still works and reaches the h2c application (translated to HTTP/2)', async () => {
    const r = await new Promise<{ status: number; body: string; alpn: string | false }>(
      (resolve, reject) => {
        const req = httpsRequest({
          host: RATINGS_IP,
          port: portH2,
          localAddress: REVIEWS_IP,
          path: '/ratings/2',
          agent: false,
          ...svidClientOptions(reviews, {
            trustBundlePem: bundle,
            trustDomain: TD,
            expect: { kind: 'exact', ids: [id('bookinfo-ratings')] },
          }),
        });
        req.on('response', (res) => {
          let b = '';
          res.on('data', (c: Buffer) => (b += c.toString()));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: b,
              alpn: (res.socket as TLSSocket).alpnProtocol ?? false,
            }),
          );
        });
        req.on('error', reject);
        req.end();
      },
    );
    assert.equal(r.status, 200, r.body);
    assert.match(r.body, /"h2c":true/);
    assert.notEqual(r.alpn, 'h2');
  });

  test('a POST stream the Calico http rule forbids gets 403 with the deciding rule and is never forwarded', async () => {
    const s = await open(portH1);
    const before = h1app.requests.length;
    const r = await h2send(s, { ':method': 'POST', ':path': '/ratings/1' }, Buffer.from('x'));
    assert.equal(r.headers[':status'], 403);
    assert.match(
      r.body.toString(),
      /RBAC: access denied \(.*ratings-readers-get-only rule 1.*\) request-id /,
    );
    assert.equal(h1app.requests.length, before);
    const rec = records().find((x) => x.requestId === r.headers['x-request-id']);
    assert.equal(rec?.verdict, 'deny');
    assert.equal(rec?.source.identity, id('bookinfo-reviews'));
  });

  test('a gRPC call /package.Service/Method allowed by the Calico http path and the Istio paths/methods is forwarded with its frames and trailers', async () => {
    const s = await open(portH2);
    const r = await grpcCall(s, '/palisade.test.Ratings/Get', 'world');
    assert.equal(r.headers[':status'], 200);
    assert.deepEqual(grpcStatus(r), { code: 0, message: '' });
    assert.equal(r.trailers?.['grpc-status'], '0');
    const [msg] = unframe(r.body);
    assert.deepEqual(JSON.parse(msg ?? '{}'), {
      reply: 'hello world',
      path: '/palisade.test.Ratings/Get',
      xfcc: `URI=${id('bookinfo-reviews')}`,
      te: 'trailers',
    });
  });

  test('a gRPC call the Istio methods deny gets HTTP 200 trailers-only with grpc-status 7 PERMISSION_DENIED, the reason and the request id (as Envoy RBAC answers gRPC local replies)', async () => {
    const s = await open(portH2);
    const before = h2app.seen.length;
    const r = await grpcCall(s, '/palisade.test.Ratings/Delete', 'x');
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.headers['content-type'], 'application/grpc');
    assert.equal(r.headersOnly, true, 'trailers-only response');
    assert.equal(r.body.length, 0);
    const g = grpcStatus(r);
    assert.equal(g.code, 7);
    const rid = String(r.headers['x-request-id']);
    assert.match(g.message, /^RBAC: access denied \(.*istio.*\) request-id /i);
    assert.ok(g.message.endsWith(`request-id ${rid}`), g.message);
    assert.equal(h2app.seen.length, before);
    const rec = records().find((x) => x.requestId === rid);
    assert.equal(rec?.verdict, 'deny');
    assert.equal(rec?.path, '/palisade.test.Ratings/Delete');
  });

  test('a gRPC call outside the Calico http paths is denied by Calico with grpc-status 7', async () => {
    const s = await open(portH2);
    const r = await grpcCall(s, '/palisade.test.Admin/Reset', 'x');
    const g = grpcStatus(r);
    assert.equal(g.code, 7);
    assert.match(g.message, /ratings-readers-get-only/);
  });

  test('the gRPC method path with GET instead of POST is not the allowed call (Calico methods)', async () => {
    const s = await open(portH2);
    const r = await h2send(s, { ':method': 'GET', ':path': '/palisade.test.Ratings/Get' });
    assert.equal(r.headers[':status'], 403);
  });

  test('a denied gRPC call over HTTP/1.1 also gets the gRPC form of the refusal', async () => {
    const r = await new Promise<{ status: number; headers: Record<string, unknown> }>(
      (resolve, reject) => {
        const req = httpsRequest({
          host: RATINGS_IP,
          port: portH1,
          localAddress: REVIEWS_IP,
          method: 'POST',
          path: '/palisade.test.Ratings/Delete',
          headers: { 'content-type': 'application/grpc' },
          agent: false,
          ...svidClientOptions(reviews, {
            trustBundlePem: bundle,
            trustDomain: TD,
            expect: { kind: 'exact', ids: [id('bookinfo-ratings')] },
          }),
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
        });
        req.on('error', reject);
        req.end(frame('x'));
      },
    );
    assert.equal(r.status, 200);
    assert.equal(r.headers['grpc-status'], '7');
  });

  test('many concurrent streams on one connection are each judged on their own', async () => {
    const s = await open(portH2);
    const N = 60;
    const calls = Array.from({ length: N }, (_, i) =>
      i % 3 === 0
        ? grpcCall(s, '/palisade.test.Ratings/Delete', `n${i}`)
        : i % 3 === 1
          ? grpcCall(s, '/palisade.test.Ratings/Get', `n${i}`)
          : h2send(s, { ':method': 'GET', ':path': `/ratings/${i}` }),
    );
    const replies = await Promise.all(calls);
    replies.forEach((r, i) => {
      if (i % 3 === 0) assert.equal(grpcStatus(r).code, 7, `stream ${i}`);
      else if (i % 3 === 1) {
        assert.equal(grpcStatus(r).code, 0, `stream ${i}`);
        assert.match(unframe(r.body)[0] ?? '', new RegExp(`hello n${i}"`));
      } else {
        assert.equal(r.headers[':status'], 200, `stream ${i}`);
        assert.match(r.body.toString(), new RegExp(`"path":"/ratings/${i}"`));
      }
    });
    // Still one connection: the same session answers afterwards.
    const again = await h2send(s, { ':method': 'GET', ':path': '/ratings/1' });
    assert.equal(again.headers[':status'], 200);
  });

  test('hostile :path values are refused with 400 exactly as on HTTP/1.1 (or reset by the HTTP/2 layer), never forwarded', async () => {
    const s = await open(portH1);
    const before = h1app.requests.length;
    const outcome: Record<string, string> = {};
    for (const path of [
      '/ratings/../admin',
      '/ratings/./1',
      '/ratings/%2e%2e/admin',
      '/ratings/..%2Fadmin',
      '/ratings/..%5cadmin',
      '//ratings/1',
      '/ratings\\..\\admin',
      '/ratings/1#frag',
      '/ratings/%zz',
      '/ratings/\u00e9',
      '*',
      'http://evil/ratings/1',
    ]) {
      try {
        const r = await h2send(s, { ':method': 'GET', ':path': path });
        outcome[path] = String(r.headers[':status']);
        if (Number(r.headers[':status']) === 400) assert.match(r.body.toString(), /^bad request: /);
      } catch (e) {
        // nghttp2 itself refuses some :path values (RST_STREAM PROTOCOL_ERROR): also refused.
        assert.equal((e as { code?: string }).code, 'ERR_HTTP2_STREAM_ERROR', String(e));
        outcome[path] = 'reset';
      }
    }
    for (const [path, o] of Object.entries(outcome))
      assert.ok(o === '400' || o === 'reset', `${path}: ${o}`);
    // The normalisation attacks reach the sidecar's own check (they are valid HTTP/2).
    for (const p of ['/ratings/../admin', '/ratings/%2e%2e/admin', '//ratings/1', '/ratings/%zz'])
      assert.equal(outcome[p], '400', p);
    assert.equal(h1app.requests.length, before);
    // The session survives a refused stream.
    const ok = await h2send(s, { ':method': 'GET', ':path': '/ratings/1' });
    assert.equal(ok.headers[':status'], 200);
  });

  test('a Host header that differs from :authority is refused (RFC 9113 §8.3.1)', async () => {
    const s = await open(portH1);
    const r = await h2send(s, {
      ':method': 'GET',
      ':path': '/ratings/1',
      ':authority': 'ratings',
      host: 'admin.internal',
    });
    assert.equal(r.headers[':status'], 400);
  });

  test('client-supplied identity headers are replaced by the verified identity on HTTP/2 too', async () => {
    const s = await open(portH1);
    const r = await h2send(s, {
      ':method': 'GET',
      ':path': '/ratings/1',
      'x-forwarded-client-cert': 'URI=spiffe://cluster.local/ns/default/sa/admin',
    });
    assert.equal(
      (JSON.parse(r.body.toString()) as { xfcc: string }).xfcc,
      `URI=${id('bookinfo-reviews')}`,
    );
  });

  test('the reviews certificate presented from the attacker address over HTTP/2 is refused (stolen certificate)', async () => {
    const s = await open(portH2, reviews, ATTACKER_IP);
    const before = h2app.seen.length;
    const r = await grpcCall(s, '/palisade.test.Ratings/Get', 'x');
    const g = grpcStatus(r);
    assert.equal(g.code, 7);
    assert.match(g.message, /identity-mismatch|presented from/);
    assert.equal(h2app.seen.length, before);
  });

  test('a cleartext HTTP/2 client (prior knowledge, as plaintext gRPC connects) is recognised and judged without an identity under PERMISSIVE', async () => {
    const s = h2connect(`http://${RATINGS_IP}:${portH2}`, {
      ...({ localAddress: REVIEWS_IP } as object),
    });
    sessions.push(s);
    s.on('error', () => undefined);
    const before = h2app.seen.length;
    const g = await grpcCall(s, '/palisade.test.Ratings/Get', 'x');
    assert.equal(g.headers[':status'], 200);
    assert.equal(grpcStatus(g).code, 7, grpcStatus(g).message);
    const r = await h2send(s, { ':method': 'GET', ':path': '/ratings/1' });
    assert.equal(r.headers[':status'], 403);
    assert.equal(h2app.seen.length, before);
    const rec = records().find((x) => x.requestId === r.headers['x-request-id']);
    assert.equal(rec?.source.identity, null);
    assert.equal(rec?.source.ip, REVIEWS_IP);
  });

  test('the gRPC status mapping and message encoding follow the gRPC HTTP mapping Envoy uses', () => {
    assert.deepEqual(
      [400, 401, 403, 404, 429, 500, 502, 503, 504].map(grpcStatusForHttp),
      [13, 16, 7, 12, 14, 2, 14, 14, 14],
    );
    assert.equal(grpcMessage('a b%c\nü'), 'a b%25c%0A%C3%BC');
    assert.equal(isGrpc('application/grpc'), true);
    assert.equal(isGrpc('application/grpc+proto; charset=x'), true);
    assert.equal(isGrpc('application/grpc-web'), false);
    assert.equal(isGrpc(undefined), false);
  });

  test('the application protocol of a port follows appProtocol, then Istio port-name prefixes', () => {
    assert.equal(appProtocolFor({ name: 'grpc' }), 'h2c');
    assert.equal(appProtocolFor({ name: 'grpc-ratings' }), 'h2c');
    assert.equal(appProtocolFor({ name: 'http2-x' }), 'h2c');
    assert.equal(appProtocolFor({ name: 'grpc-web' }), 'http/1.1');
    assert.equal(appProtocolFor({ name: 'http' }), 'http/1.1');
    assert.equal(appProtocolFor({ name: 'grpcx' }), 'http/1.1');
    assert.equal(appProtocolFor({ name: 'grpc', appProtocol: 'http' }), 'http/1.1');
    assert.equal(appProtocolFor({ name: 'web', appProtocol: 'kubernetes.io/h2c' }), 'h2c');
    assert.equal(appProtocolFor({}), 'http/1.1');
  });
});
