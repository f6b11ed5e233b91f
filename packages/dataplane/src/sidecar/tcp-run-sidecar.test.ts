// `runSidecar` with a `tcp` application port, fed by a real agent (a real API server with its
// SQLite store and CA, the agent with a fake nft, its per-endpoint socket): the L4 listener is
// started beside the HTTP one with the agent's view and SVID, a policy applied through the API
// reaches it, and its per-connection decisions are the view's `decideInboundConnection`.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { svidClientOptions } from '@palisade/pki';
import { FakeNft } from '../nft/fake.js';
import { endpointSocketPath } from '../agent-socket/protocol.js';
import { issue, loopbackPrefix } from './test-fixtures.js';
import { SyncWorld, until } from './test-sync-fixture.js';
import { runSidecar } from './run-sidecar.js';
import type { RunningSidecar } from './run-sidecar.js';
import { lineApp } from './tcp-world.js';

const NODE = `tcp${process.pid}`;
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

describe('runSidecar with a tcp port, fed by the agent (loopback)', { timeout: 90_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-tcprun-${process.pid}-`));
  const socketDir = join(dir, 'endpoints');
  const world = new SyncWorld(join(dir, 'server'), NODE, socketDir);
  const prefix = loopbackPrefix();
  const ip = { ratings: `${prefix}.32`, reviews: `${prefix}.33`, productpage: `${prefix}.34` };
  let sidecar: RunningSidecar | undefined;
  let app: Awaited<ReturnType<typeof lineApp>> | undefined;

  before(async () => {
    await world.startServer();
    await world.applyBookinfo([
      { pod: 'default/ratings-v1', ip: ip.ratings, iface: 'lo1' },
      { pod: 'default/reviews-v2', ip: ip.reviews, iface: 'lo2' },
      { pod: 'default/productpage-v1', ip: ip.productpage, iface: 'lo3' },
    ]);
    await world.startAgent({ runner: new FakeNft().runner });
    const sock = endpointSocketPath(socketDir, 'default', 'ratings-v1');
    await until('the endpoint socket', () => existsSync(sock));
    app = await lineApp(ip.ratings);
    sidecar = await runSidecar({
      endpoint: 'default/ratings-v1',
      agentSocket: sock,
      appPorts: [9080, app.port],
      appProtocols: { [app.port]: 'tcp' },
      appHost: ip.ratings,
      inboundHost: ip.ratings,
      inboundPort: 0,
      outboundPort: 0,
      adminPort: 0,
      accessLog: false,
    });
  });

  after(async () => {
    await sidecar?.close(200);
    app?.server.close();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** `ping`, half-close, what came back before the close. */
  const talk = (from: string, cert: Awaited<ReturnType<typeof issue>>): Promise<string> =>
    new Promise((resolve) => {
      const port = sidecar?.inbound[1]?.port ?? 0;
      const raw = netConnect({ host: ip.ratings, port, localAddress: from, allowHalfOpen: true });
      const s = tlsConnect(
        {
          socket: raw,
          ...svidClientOptions(cert, {
            trustBundlePem: cert.bundlePem,
            trustDomain: 'cluster.local',
            expect: { kind: 'exact', ids: [id('bookinfo-ratings')] },
          }),
        },
        () => {
          s.write('ping\n');
          s.end();
        },
      );
      let data = '';
      s.setEncoding('utf8');
      s.setTimeout(10_000, () => s.destroy());
      s.on('data', (d: string) => (data += d));
      s.on('end', () => {
        if (!s.writableEnded) s.end();
      });
      s.on('error', () => undefined);
      s.on('close', () => resolve(data));
    });

  test("the tcp port gets the L4 listener: bookinfo's ratings policy (an http rule on port http, then Deny) refuses reviews there; an L4 rule applied through the API then admits reviews, and a stolen certificate from productpage's address stays refused — each as the view's decideInboundConnection", async () => {
    assert.ok(sidecar && app && world.server);
    const tcpPort = app.port;
    const reviews = await issue(world.server.ca, id('bookinfo-reviews'));
    const decide = (from: string): string =>
      sidecar?.policy.current.decideInboundConnection({
        sourceIp: from,
        principal: id('bookinfo-reviews'),
        port: tcpPort,
      }).verdict ?? 'none';
    assert.equal(decide(ip.reviews), 'deny');
    assert.equal(await talk(ip.reviews, reviews), '');
    assert.equal(app.connections.length, 0);

    const before = sidecar.policy.current.version;
    await world.apply([
      {
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: 'ratings-l4', namespace: 'default' },
        spec: {
          order: 100,
          selector: "app == 'ratings'",
          types: ['Ingress'],
          ingress: [
            {
              action: 'Allow',
              protocol: 'TCP',
              source: { serviceAccounts: { names: ['bookinfo-reviews'] } },
              destination: { ports: [tcpPort] },
            },
          ],
        },
      },
    ]);
    await until('the new view', () => (sidecar?.policy.current.version ?? 0) > before, 20_000);
    assert.equal(decide(ip.reviews), 'allow');
    assert.equal(await talk(ip.reviews, reviews), 'hello ping\nbye\n');
    assert.equal(app.connections.length, 1);
    assert.equal(decide(ip.productpage), 'deny');
    assert.equal(await talk(ip.productpage, reviews), '');
    assert.equal(app.connections.length, 1, 'the stolen certificate reached nothing');
    const inbound = sidecar.status().inbound;
    assert.ok(inbound.allowed >= 1 && inbound.refusedConnections >= 2, JSON.stringify(inbound));
  });
});
