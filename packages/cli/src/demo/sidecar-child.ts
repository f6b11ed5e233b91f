// One pod's sidecar for the live demo: `runSidecar` of the sidecar package (what `palisade
// sidecar` runs), inside the pod's network namespace (`ip netns exec`). Policy views and the
// SVID come from the agent's socket for this endpoint; the key never leaves this process. Until
// transparent interception is wired in, the inbound listener takes the pod's own address and
// port (the service listens on the pod's loopback), and peers are reached on their pod port.
// Configuration (JSON) is argv[2]; stdout carries `{"ready":…}`, `{"applied":N}` at each view
// installed, `{"link":bool}` when the stream to the agent drops or returns, and the access log
// (one JSON record a line). Closing stdin stops it (draining).
// Owns: this wiring only.

import { readFileSync } from 'node:fs';
import { runSidecar } from '@palisade/dataplane/sidecar';
import type { SidecarChildConfig } from './sidecars.js';

const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as SidecarChildConfig;
const out = (v: unknown): void => void process.stdout.write(`${JSON.stringify(v)}\n`);

try {
  const sidecar = await runSidecar({
    endpoint: cfg.endpoint,
    agentSocket: cfg.agentSocket,
    appPorts: [cfg.podPort],
    appHost: '127.0.0.1',
    inboundHost: cfg.podIp,
    inboundPort: cfg.podPort,
    outboundPort: cfg.outboundPort,
    adminPort: cfg.adminPort,
    sourceAddress: cfg.podIp,
    upstream: (ip, port) => ({ host: ip, port }),
    accessLog: process.stdout,
    startTimeoutMs: 60_000,
    say: (line) => {
      const m = /^policy view (\d+) installed/.exec(line);
      if (m) out({ applied: Number(m[1]) });
    },
  });
  out({ applied: sidecar.policy.current.version });
  out({ ready: true, identity: sidecar.identity, version: sidecar.policy.current.version });
  // The link to the agent, as it changes (the demo waits for reconnection after an agent restart).
  let linked = true;
  setInterval(() => {
    const now = sidecar.status().agent.connected;
    if (now !== linked) out({ link: (linked = now) });
  }, 50).unref();
  process.stdin.resume();
  process.stdin.on('end', () => {
    void sidecar.close(1_000).then(() => process.exit(0));
  });
} catch (e) {
  out({ failed: e instanceof Error ? e.message : String(e) });
  process.exit(1);
}
