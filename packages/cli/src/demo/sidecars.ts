// The one place the live demo starts sidecars. Each pod's sidecar is `sidecar-child.ts`, which
// runs the sidecar package's `runSidecar` (what `palisade sidecar` runs) in the pod's namespace:
// its policy view and its X.509-SVID come from the agent's socket for that endpoint (policy
// sync: only what the endpoint needs, pushed on change), so the demo hands it no key and no
// policy. The demo itself requests one SVID from the API with the node token: the copy of
// reviews v2's identity the attacker "stole".
// Owns: sidecar start-up and the demo's view of each sidecar (views installed, access log).
// Must never: report a sidecar ready before it listens.

import { fileURLToPath } from 'node:url';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createKeyAndCsr } from '@palisade/pki';
import type { DemoApi } from './api.js';
import { short } from './api.js';
import { LineChild } from './child.js';

const CHILD = fileURLToPath(new URL('./sidecar-child.ts', import.meta.url));

/** What one sidecar child needs (no secrets: the SVID comes through the agent). */
export interface SidecarChildConfig {
  /** `namespace/name` of the pod. */
  readonly endpoint: string;
  /** The agent's policy-sync and SVID socket for this endpoint. */
  readonly agentSocket: string;
  readonly podIp: string;
  /** The pod's port as policies name it; the service listens on it on the pod's loopback. */
  readonly podPort: number;
  /** The outbound proxy, on the pod's loopback. */
  readonly outboundPort: number;
  readonly adminPort: number;
}

export interface Svid {
  readonly spiffeId: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
}

/** An SVID for `spiffeId` from the API server's CA, requested with the node credential. */
export async function requestSvid(nodeApi: DemoApi, spiffeId: string): Promise<Svid> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const r = await nodeApi.call('POST', '/api/v1/certificates', { csr: csrPem, spiffeId });
  if (r.status !== 201)
    throw new Error(`certificate for ${spiffeId}: HTTP ${r.status} ${short(r.body)}`);
  const b = r.body as { certPem: string; chainPem: string; bundlePem: string };
  return { spiffeId, keyPem, certPem: b.certPem, chainPem: b.chainPem, bundlePem: b.bundlePem };
}

/** An access-log record as the sidecar prints it (the fields the demo reads). */
export interface AccessLine {
  readonly side: 'inbound' | 'outbound';
  readonly stage: 'request' | 'connection';
  readonly verdict: 'allow' | 'deny' | 'error';
  readonly status: number | null;
  readonly method: string | null;
  readonly path: string | null;
  readonly source: { readonly ip: string; readonly identity: string | null };
  readonly destination: { readonly endpoint: string; readonly port: number };
  readonly provenance: {
    readonly kind: string;
    readonly tier?: string;
    readonly policy?: string;
    readonly rule?: number;
    readonly reason: string;
  };
}

export class Sidecar {
  /** The recent access-log records (the oldest are dropped past 2000). */
  readonly access: AccessLine[] = [];
  /** How many records were dropped from the front of `access`. */
  accessBase = 0;
  #applied = -1;
  /** When the last view was installed (ms since the epoch). */
  lastInstall = 0;
  /** Whether its policy-sync stream to the agent is up. */
  linked = true;

  constructor(
    readonly pod: string,
    readonly child: LineChild,
  ) {
    child.onLine((m) => {
      if (typeof m.applied === 'number') {
        this.#applied = Math.max(this.#applied, m.applied);
        this.lastInstall = Date.now();
      } else if (typeof m.link === 'boolean') {
        this.linked = m.link;
      } else if (typeof m.side === 'string' && typeof m.verdict === 'string') {
        this.access.push(m as unknown as AccessLine);
        if (this.access.length > 2000) {
          this.access.splice(0, 1000);
          this.accessBase += 1000;
        }
      }
    });
  }

  /** The version of the view it runs (the API revision the agent computed it at). */
  get appliedVersion(): number {
    return this.#applied;
  }
}

/**
 * Starts the sidecar of one pod inside its namespace (it listens once the agent has given it a
 * view and an SVID: `sidecarReady`). The caller records `child` for cleanup.
 */
export function spawnSidecar(o: {
  readonly netns: string;
  readonly dir: string;
  readonly config: SidecarChildConfig;
}): Sidecar {
  const file = join(o.dir, `sidecar-${o.config.endpoint.replace('/', '_')}.json`);
  writeFileSync(file, JSON.stringify(o.config), { mode: 0o600 });
  const child = new LineChild(`sidecar of ${o.config.endpoint}`, 'ip', [
    'netns',
    'exec',
    o.netns,
    process.execPath,
    '--import',
    'tsx',
    CHILD,
    file,
  ]);
  return new Sidecar(o.config.endpoint, child);
}

export async function sidecarReady(s: Sidecar, timeoutMs: number): Promise<void> {
  const m = await s.child.waitFor(
    (x) => x.ready === true || typeof x.failed === 'string',
    timeoutMs,
    'ready line',
  );
  if (m.ready !== true) throw new Error(`the sidecar of ${s.pod} failed: ${String(m.failed)}`);
}

/**
 * Resolves once the sidecars' views have stopped changing for `quietMs` (the agent sends a view
 * only when its content changes, so "every sidecar runs revision R" cannot be waited for).
 */
export async function viewsQuiet(
  sidecars: readonly Sidecar[],
  quietMs = 300,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = Math.max(0, ...sidecars.map((s) => s.lastInstall));
    if (Date.now() - last >= quietMs) return;
    if (Date.now() > deadline) throw new Error("the sidecars' views kept changing");
    await new Promise((r) => setTimeout(r, 25));
  }
}
