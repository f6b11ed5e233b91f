// Processes of `npm run bench -- l7`, each on its own event loop: `app` (the application: a small
// JSON answer on HOST:PORT) and `sidecar` (`runSidecar` for one endpoint, fed by the bench's
// agent over its endpoint socket). Configuration as JSON in argv[3] (argv[4]: where SIGUSR2
// writes the memory figures); prints one JSON line
// `{"ready":...}` when serving; exits when stdin closes.

import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { getHeapSpaceStatistics } from 'node:v8';
import { runSidecar } from '../packages/dataplane/src/sidecar/run-sidecar.js';

interface AppConfig {
  readonly host: string;
  readonly port: number;
}

interface SidecarConfig {
  readonly endpoint: string;
  readonly agentSocket: string;
  readonly appHost: string;
  readonly appPort: number;
  readonly inboundHost: string;
  readonly inboundPort: number;
  readonly outboundHost: string;
  readonly sourceAddress: string;
  /** Where a destination's inbound sidecar listens: the destination address, this port. */
  readonly upstreamPort: number;
}

const mode = process.argv[2];
const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
let stop: () => Promise<void>;

if (mode === 'app') {
  const cfg = JSON.parse(process.argv[3] ?? '{}') as AppConfig;
  const body = JSON.stringify({ id: 1, ratings: { Reviewer1: 5, Reviewer2: 4 } });
  const app = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    });
  });
  app.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => app.listen(cfg.port, cfg.host, 4096, r));
  out({ ready: true, pid: process.pid });
  stop = () => new Promise<void>((r) => app.close(() => r()));
} else if (mode === 'sidecar') {
  const cfg = JSON.parse(process.argv[3] ?? '{}') as SidecarConfig;
  const sc = await runSidecar({
    endpoint: cfg.endpoint,
    agentSocket: cfg.agentSocket,
    appPorts: [cfg.appPort],
    appHost: cfg.appHost,
    inboundHost: cfg.inboundHost,
    inboundPort: cfg.inboundPort,
    outboundHost: cfg.outboundHost,
    outboundPort: 0,
    adminPort: 0,
    sourceAddress: cfg.sourceAddress,
    upstream: (ip) => ({ host: ip, port: cfg.upstreamPort }),
    accessLog: false,
    // PALISADE_L7_NO_FLOWS=1: no flow records to the agent (isolates their cost).
    flows: process.env['PALISADE_L7_NO_FLOWS'] !== '1',
    say: () => undefined,
  });
  out({
    ready: true,
    pid: process.pid,
    identity: sc.identity,
    outboundPort: sc.outboundPort,
    inbound: sc.inbound,
    version: sc.policy.current.version,
  });
  stop = () => sc.close(1000);
} else {
  throw new Error(`mode ${String(mode)}: expected app or sidecar`);
}

let stopping: Promise<void> | undefined;
const quit = (): void => {
  // process.exit (not the signal's default) so that --cpu-prof writes its profile.
  stopping ??= stop().then(() => process.exit(0));
};
// SIGUSR2: write this process's memory figures to MEMFILE (the bench reads them after load).
process.on('SIGUSR2', () => {
  const m = process.memoryUsage();
  const mb = (x: number): number => Math.round(x / 104857.6) / 10;
  writeFileSync(
    `${process.argv[4] ?? '/dev/null'}`,
    JSON.stringify({
      rss: mb(m.rss),
      heapTotal: mb(m.heapTotal),
      heapUsed: mb(m.heapUsed),
      external: mb(m.external),
      arrayBuffers: mb(m.arrayBuffers),
      spaces: Object.fromEntries(
        getHeapSpaceStatistics().map((x) => [x.space_name, mb(x.space_size)]),
      ),
    }),
  );
});
process.stdin.resume();
process.stdin.on('end', quit);
process.on('SIGTERM', quit);
