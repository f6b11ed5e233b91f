// Test support (not part of the public surface): an application and `runSidecar` inside a pod
// network namespace, for policysync-netns.test.ts. Reads its configuration (JSON) from argv[2];
// prints `{"ready":true,...}` once serving, `{"say":LINE,"t":MS}` for every progress line (the
// test times view installations by them) and stops (draining) when stdin closes.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { runSidecar } from './run-sidecar.js';

interface ChildConfig {
  readonly endpoint: string;
  readonly agentSocket: string;
  readonly podIp: string;
  readonly appPort: number;
  readonly upstreamPort: number;
}

const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ChildConfig;
const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const app = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        app: cfg.endpoint,
        method: req.method,
        url: req.url,
        xfcc: req.headers['x-forwarded-client-cert'] ?? null,
      }),
    );
  });
});
await new Promise<void>((resolve) => app.listen(cfg.appPort, '127.0.0.1', resolve));
const sidecar = await runSidecar({
  endpoint: cfg.endpoint,
  agentSocket: cfg.agentSocket,
  appPorts: [cfg.appPort],
  inboundHost: cfg.podIp,
  inboundPort: cfg.appPort,
  outboundPort: 15001,
  adminPort: 15000,
  upstream: (ip) => ({ host: ip, port: cfg.upstreamPort }),
  accessLog: false,
  say: (line) => out({ say: line, t: Date.now() }),
});
out({ ready: true, identity: sidecar.identity, version: sidecar.policy.current.version });
process.stdin.resume();
process.stdin.on('end', () => {
  void sidecar.close(1_000).then(() => app.close(() => process.exit(0)));
});
