// One pod's sidecar for the live demo, until `palisade sidecar` with policy sync from the agent
// exists: run inside the pod's network namespace (`ip netns exec`), it puts the sidecar core
// library's inbound mTLS enforcement point on the pod's address and port and its outbound proxy
// on loopback. Configuration (JSON file, mode 0600) is argv[2]; policy snapshots arrive on stdin,
// one JSON line each (`{"version":N,"resources":[...]}`, resources the relay loaded with the
// core loader — the agent's job once policy sync exists), and each becomes a new immutable view (refused ones leave the last view in place: fail
// static). stdout carries `{"ready":…}`, `{"applied":N}` / `{"refused":N,"reason":…}` and the
// access log (one JSON record a line). Closing stdin stops it.
// Owns: this wiring only. Must never: start listening before a policy view exists, or print key
// material.

import { readFileSync } from 'node:fs';
import readline from 'node:readline';
import type { Resource } from '@palisade/core';
import {
  AccessLog,
  InboundSidecar,
  OutboundProxy,
  PolicyView,
  PolicyViewHolder,
} from '@palisade/dataplane/sidecar';
import type { SidecarChildConfig } from './sidecars.js';

const cfg = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as SidecarChildConfig;
const out = (v: unknown): void => void process.stdout.write(`${JSON.stringify(v)}\n`);

let holder: PolicyViewHolder | undefined;
let started = false;
const log = new AccessLog(process.stdout);

async function start(h: PolicyViewHolder): Promise<void> {
  const svid = { keyPem: cfg.keyPem, certPem: cfg.certPem, chainPem: cfg.chainPem };
  const inbound = new InboundSidecar({
    listenHost: cfg.podIp,
    listenPort: cfg.podPort,
    appPort: cfg.appPort,
    podPort: cfg.podPort,
    svid,
    trustBundlePem: cfg.bundlePem,
    policy: h,
    log,
  });
  const outbound = new OutboundProxy({
    listenHost: '127.0.0.1',
    listenPort: cfg.outboundPort,
    svid,
    trustBundlePem: cfg.bundlePem,
    policy: h,
    sourceAddress: cfg.podIp,
    log,
  });
  await inbound.start();
  await outbound.start();
  process.stdin.on('end', () => {
    void Promise.all([inbound.close(), outbound.close()]).then(() => process.exit(0));
  });
  out({ ready: true, version: h.current.version });
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let msg: { version: number; resources: Resource[] };
  try {
    msg = JSON.parse(line) as { version: number; resources: Resource[] };
    if (!Number.isSafeInteger(msg.version) || !Array.isArray(msg.resources))
      throw new Error('not a policy snapshot');
  } catch {
    out({ refused: -1, reason: 'not a policy snapshot' });
    return;
  }
  const view = PolicyView.fromResources(msg.resources, cfg.endpoint, msg.version, {
    trustDomain: cfg.trustDomain,
  });
  if (!holder) {
    if (!view.ok) {
      out({ refused: msg.version, reason: view.reason });
      return;
    }
    holder = new PolicyViewHolder(view.view);
  } else if (!holder.update(view)) {
    out({ refused: msg.version, reason: holder.status().lastError ?? 'refused' });
    return;
  }
  out({ applied: msg.version });
  if (!started) {
    started = true;
    start(holder).catch((e: unknown) => {
      out({ failed: e instanceof Error ? e.message : String(e) });
      process.exit(1);
    });
  }
});
process.stdin.on('end', () => {
  if (!started) process.exit(0);
});
