// Test support (not part of the public surface): runs an application and the inbound sidecar in
// front of it inside a pod network namespace, for netns.test.ts. Reads its configuration (JSON)
// from argv[2], prints `{"ready":true,"port":N}` once listening, and stops when stdin closes.

import { readFileSync } from 'node:fs';
import { InboundSidecar } from './inbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { bookinfo, echoApp } from './test-fixtures.js';

interface ChildConfig {
  readonly listenHost: string;
  readonly ips: Record<string, string>;
  readonly endpoint: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
}

const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ChildConfig;
const v = PolicyView.fromResources(bookinfo(cfg.ips), cfg.endpoint, 1);
if (!v.ok) throw new Error(v.reason);
const app = await echoApp();
const sidecar = new InboundSidecar({
  listenHost: cfg.listenHost,
  listenPort: 0,
  appPort: app.port,
  podPort: 9080,
  svid: { keyPem: cfg.keyPem, certPem: cfg.certPem, chainPem: cfg.chainPem },
  trustBundlePem: cfg.bundlePem,
  policy: new PolicyViewHolder(v.view),
});
const { port } = await sidecar.start();
process.stdout.write(`${JSON.stringify({ ready: true, port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void sidecar.close().then(() => app.server.close(() => process.exit(0)));
});
