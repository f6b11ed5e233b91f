// Test support (not part of the product): one pod of tcp-netns.test.ts, run inside the pod's
// network namespace. Reads its configuration (JSON) from argv[2]: with `inbound`, the line
// application on loopback and the L4 inbound relay in front of it on the pod's address; with
// `outbound`, the L4 outbound relay's listener for one destination on loopback. Prints
// `{"ready":true,"inbound":N|null,"outbound":N|null}`. Each stdin line
//   {"id":1,"host":"10.9.0.2","port":5432,"cert":PEM|null,"key":PEM|null,"ca":PEM}
// opens a connection (mTLS with that certificate, or plaintext), sends `ping`, half-closes and
// answers {"id":1,"data":"..."} with what came back before the server closed.

import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import readline from 'node:readline';
import { loadText } from '@palisade/core';
import { AccessLog } from './access-log.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { TcpInboundSidecar } from './tcp-inbound.js';
import { TcpOutbound } from './tcp-outbound.js';
import { lineApp } from './tcp-world.js';

interface ChildConfig {
  readonly endpoint: string;
  readonly yaml: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
  readonly podIp: string;
  readonly inbound?: { readonly port: number };
  readonly outbound?: { readonly ip: string; readonly port: number };
}

interface Talk {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly cert: string | null;
  readonly key: string | null;
  readonly ca: string;
}

const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ChildConfig;
const loaded = loadText(cfg.yaml, 'world.yaml');
const r = PolicyView.fromResources(loaded.resources, cfg.endpoint, 1);
if (!r.ok) throw new Error(r.reason);
const holder = new PolicyViewHolder(r.view);
const svid = { keyPem: cfg.keyPem, certPem: cfg.certPem, chainPem: cfg.chainPem };
const log = new AccessLog(process.stderr);
let inboundPort: number | null = null;
let outboundPort: number | null = null;
const closers: (() => Promise<void>)[] = [];
if (cfg.inbound) {
  const app = await lineApp();
  const s = new TcpInboundSidecar({
    listenHost: cfg.podIp,
    listenPort: cfg.inbound.port,
    appPort: app.port,
    podPort: cfg.inbound.port,
    svid,
    trustBundlePem: cfg.bundlePem,
    policy: holder,
    log,
  });
  inboundPort = (await s.start()).port;
  closers.push(
    () => s.close(),
    () => new Promise((res) => app.server.close(() => res())),
  );
}
if (cfg.outbound) {
  const o = new TcpOutbound({
    svid,
    trustBundlePem: cfg.bundlePem,
    policy: holder,
    sourceAddress: cfg.podIp,
    log,
  });
  outboundPort = (await o.addDestination({ ...cfg.outbound, listenPort: 0 })).port;
  closers.push(() => o.close());
}

function talk(t: Talk): void {
  let data = '';
  let s: Socket;
  const go = (): void => {
    s.write('ping\n');
    s.end();
  };
  const raw = netConnect({ host: t.host, port: t.port, allowHalfOpen: true });
  if (t.cert !== null && t.key !== null)
    s = tlsConnect(
      {
        socket: raw,
        cert: t.cert,
        key: t.key,
        ca: t.ca,
        rejectUnauthorized: true,
        // The server's chain is verified; its name is not (the server is under test).
        checkServerIdentity: () => undefined,
      },
      go,
    );
  else {
    s = raw;
    raw.once('connect', go);
  }
  s.setEncoding('utf8');
  s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
  s.on('data', (d: string) => (data += d));
  s.on('end', () => {
    if (!s.writableEnded) s.end();
  });
  let error: string | undefined;
  s.on('error', (e: Error & { code?: string }) => (error = e.code ?? e.message));
  s.on('close', () => out({ id: t.id, data, ...(error !== undefined ? { error } : {}) }));
}

out({ ready: true, inbound: inboundPort, outbound: outboundPort });
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => talk(JSON.parse(line) as Talk));
rl.on('close', () => {
  void Promise.all(closers.map((c) => c())).then(() => process.exit(0));
});
