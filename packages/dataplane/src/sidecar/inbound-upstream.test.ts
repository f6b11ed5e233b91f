// The inbound sidecar's hop to the application: an idle kept-alive connection that the
// application closes just as the sidecar reuses it (the keep-alive race of HTTP/1.1) is retried
// once on a new connection only where a client may retry on its own (RFC 9110 §9.2.2), and is
// otherwise a 502. Found by agreement-netns.test.ts, where it showed as a 502 after an allow.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { createServer as createHttpServer } from 'node:http';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { loadText } from '@palisade/core';
import { svidClientOptions } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import { InboundSidecar } from './inbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';

const P = loopbackPrefix();
const CLIENT_IP = `${P}.11`;
const SERVER_IP = `${P}.12`;
const TD = 'cluster.local';
const id = (sa: string): string => `spiffe://${TD}/ns/up/sa/${sa}`;
const YAML = `apiVersion: v1
kind: Namespace
metadata: {name: up}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: up}
spec: {serviceAccountName: client, containers: [{name: c}]}
status: {podIP: ${CLIENT_IP}}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: up}
spec: {serviceAccountName: server, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: ${SERVER_IP}}
`;

const dir = tempDir('inbound-upstream');
let app: HttpServer | undefined;
let sidecar: InboundSidecar | undefined;
let port = 0;
let clientSvid: (SvidMaterial & { readonly bundlePem: string }) | undefined;
/** Requests the application saw, by method. */
const seen: string[] = [];

before(async () => {
  // The application answers the first request of every connection and drops the connection
  // when a second one arrives on it: each reuse by the sidecar meets a closed connection.
  const perSocket = new WeakMap<Socket, number>();
  app = createHttpServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    if (n > 1) {
      req.socket.destroy();
      return;
    }
    seen.push(req.method ?? '');
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => app?.listen(0, '127.0.0.1', resolve));
  const ca = await newCa(join(dir.path, 'ca'));
  const serverSvid = await issue(ca, id('server'));
  clientSvid = await issue(ca, id('client'));
  const loaded = loadText(YAML, 'upstream.yaml');
  const v = PolicyView.fromResources(loaded.resources, 'up/server', 1);
  if (!v.ok) throw new Error(v.reason);
  sidecar = new InboundSidecar({
    listenHost: SERVER_IP,
    listenPort: 0,
    appPort: (app.address() as AddressInfo).port,
    podPort: 8080,
    svid: serverSvid,
    trustBundlePem: serverSvid.bundlePem,
    policy: new PolicyViewHolder(v.view),
  });
  port = (await sidecar.start()).port;
});

after(async () => {
  await sidecar?.close();
  app?.close();
  dir.cleanup();
});

function send(method: string, body?: string): Promise<number> {
  const svid = clientSvid;
  assert.ok(svid);
  return new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: SERVER_IP,
      port,
      localAddress: CLIENT_IP,
      method,
      path: '/x',
      agent: false,
      timeout: 10_000,
      ...svidClientOptions(svid, {
        trustBundlePem: svid.bundlePem,
        trustDomain: TD,
        expect: { kind: 'exact', ids: [id('server')] },
      }),
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

// Each retry leaves the sidecar's pool empty; a request on a new connection leaves one idle
// connection in it, which the next request reuses (and meets closed).
test('upstream keep-alive race: a GET or a bodiless DELETE meeting a connection the application closed is retried once on a new connection (200)', async () => {
  assert.equal(await send('GET'), 200); // new connection, kept
  assert.equal(await send('GET'), 200); // reuses it: closed, retried
  assert.equal(await send('GET'), 200); // new connection, kept
  assert.equal(await send('DELETE'), 200); // reuses it: closed, retried
  assert.deepEqual(seen, ['GET', 'GET', 'GET', 'DELETE']);
});

test('upstream keep-alive race: a POST, or a PUT with a body, is not replayed (502)', async () => {
  const from = seen.length;
  assert.equal(await send('GET'), 200); // new connection, kept
  assert.equal(await send('POST'), 502); // reuses it: closed, not replayed
  assert.equal(await send('GET'), 200);
  assert.equal(await send('PUT', 'payload'), 502);
  assert.deepEqual(seen.slice(from), ['GET', 'GET']);
});
