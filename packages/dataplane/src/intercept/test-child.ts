// Test support (not part of the public surface): one pod's processes for netns.test.ts, run
// inside the pod's network namespace. Role `server`: an unmodified HTTP application on
// 0.0.0.0:<appPort> (root) and the inbound sidecar on <sidecarPort>; role `client`: the outbound
// proxy with one loopback listener per redirected destination. The sidecar switches to the
// sidecar uid before it opens any socket, as a real sidecar container would run. Prints
// `{"ready":true}` and then one access log record per line; stops when stdin closes.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { InboundSidecar } from '../sidecar/inbound.js';
import { OutboundProxy } from '../sidecar/outbound.js';
import { AccessLog } from '../sidecar/access-log.js';
import { PolicyView, PolicyViewHolder } from '../sidecar/policy-view.js';
import { bookinfo } from '../sidecar/test-fixtures.js';

interface ChildConfig {
  readonly role: 'server' | 'client';
  readonly uid: number;
  readonly ips: Record<string, string>;
  readonly endpoint: string;
  readonly appPort: number;
  readonly sidecarPort: number;
  readonly destinations: readonly { ip: string; port: number; listenPort: number }[];
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
}

const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ChildConfig;
const v = PolicyView.fromResources(bookinfo(cfg.ips), cfg.endpoint, 1);
if (!v.ok) throw new Error(v.reason);
const policy = new PolicyViewHolder(v.view);
const svid = { keyPem: cfg.keyPem, certPem: cfg.certPem, chainPem: cfg.chainPem };
const log = new AccessLog(process.stdout);
const stops: (() => Promise<void>)[] = [];

if (cfg.role === 'server') {
  // The application knows nothing about the mesh: it answers with what it received.
  const app = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          app: true,
          method: req.method,
          url: req.url,
          xfcc: req.headers['x-forwarded-client-cert'] ?? null,
          from: req.socket.remoteAddress,
        }),
      );
    });
  });
  await new Promise<void>((resolve) => app.listen(cfg.appPort, '0.0.0.0', resolve));
  stops.push(() => new Promise((resolve) => app.close(() => resolve())));
}

process.setgid?.(cfg.uid);
process.setuid?.(cfg.uid);

if (cfg.role === 'server') {
  const inbound = new InboundSidecar({
    listenHost: '0.0.0.0',
    listenPort: cfg.sidecarPort,
    appPort: cfg.appPort,
    podPort: cfg.appPort,
    svid,
    trustBundlePem: cfg.bundlePem,
    policy,
    log,
  });
  await inbound.start();
  stops.push(() => inbound.close());
} else {
  const outbound = new OutboundProxy({
    listenPort: 0,
    svid,
    trustBundlePem: cfg.bundlePem,
    policy,
    destinations: cfg.destinations,
    log,
  });
  await outbound.start();
  stops.push(() => outbound.close());
}

process.stdout.write(`${JSON.stringify({ ready: true, uid: process.getuid?.() })}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void Promise.all(stops.map((s) => s())).then(() => process.exit(0));
});
