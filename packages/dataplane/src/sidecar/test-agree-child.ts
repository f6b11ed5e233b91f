// Test support (not part of the public surface): an echo application and the inbound sidecar in
// front of it inside a pod network namespace, for agreement-netns.test.ts. Reads its
// configuration (JSON) from argv[2] and prints `{"ready":true,"port":N}` once listening. Each
// stdin line `{"version":N,"yaml":"..."}` installs a new policy view built from those resources
// (the same text the test gives `palisade check`) and answers `{"installed":N}` or
// `{"refused":N,"reason":"..."}`. Stops when stdin closes.

import { readFileSync } from 'node:fs';
import readline from 'node:readline';
import { loadText } from '@palisade/core';
import { InboundSidecar } from './inbound.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import type { ViewResult } from './policy-view.js';
import { echoApp } from './test-fixtures.js';

interface ChildConfig {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly endpoint: string;
  readonly yaml: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
}

const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

function view(yaml: string, endpoint: string, version: number): ViewResult {
  const loaded = loadText(yaml, `v${version}.yaml`);
  const e = loaded.diagnostics.find((d) => d.severity === 'error');
  if (e) return { ok: false, reason: `resources do not load: ${e.message}` };
  return PolicyView.fromResources(loaded.resources, endpoint, version);
}

const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ChildConfig;
const first = view(cfg.yaml, cfg.endpoint, 1);
if (!first.ok) throw new Error(first.reason);
const holder = new PolicyViewHolder(first.view);
const app = await echoApp();
// The application keeps idle connections longer than the test runs: a POST or PATCH that meets
// a connection the application is closing is a 502 by design (not replayed; see
// inbound-upstream.test.ts), which is not the policy disagreement this test looks for.
app.server.keepAliveTimeout = 120_000;
const sidecar = new InboundSidecar({
  listenHost: cfg.listenHost,
  listenPort: cfg.listenPort,
  appPort: app.port,
  podPort: cfg.listenPort,
  svid: { keyPem: cfg.keyPem, certPem: cfg.certPem, chainPem: cfg.chainPem },
  trustBundlePem: cfg.bundlePem,
  policy: holder,
});
const { port } = await sidecar.start();
out({ ready: true, port });
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = JSON.parse(line) as { version: number; yaml: string };
  const ok = holder.update(view(m.yaml, cfg.endpoint, m.version));
  out(ok ? { installed: m.version } : { refused: m.version, reason: holder.status().lastError });
});
rl.on('close', () => {
  void sidecar.close().then(() => app.server.close(() => process.exit(0)));
});
