// The one place the live demo starts sidecars. Each pod's sidecar is a real `palisade sidecar`
// process, started in the pod's namespace under the sidecar uid (as a sidecar container runs):
// its policy view and its X.509-SVID come from the agent's socket for that endpoint (policy
// sync: only what the endpoint needs, pushed on change), so the demo hands it no key and no
// policy; it announces its listeners on the same socket and the agent installs the pod's
// interception rules, so the services call each other by address and port and know nothing of
// the mesh. The demo itself requests one SVID from the API with the node token: the copy of
// reviews v2's identity the attacker "stole".
// Owns: sidecar start-up and the demo's view of each sidecar (views installed, link, access log).
// Must never: report a sidecar ready before its redirects are installed.

import { fileURLToPath } from 'node:url';
import { createKeyAndCsr } from '@palisade/pki';
import type { DemoApi } from './api.js';
import { short } from './api.js';
import { LineChild } from './child.js';

const BIN = fileURLToPath(new URL('../../bin/palisade.js', import.meta.url));
/** The uid the sidecars run under (the agent exempts it from the pods' redirects). */
export const SIDECAR_UID = 1337;

/** What one sidecar needs (no secrets: the SVID comes through the agent). */
export interface SidecarConfig {
  /** `namespace/name` of the pod. */
  readonly endpoint: string;
  /** The agent's policy-sync, SVID and interception socket for this endpoint. */
  readonly agentSocket: string;
  /** The pod's port as policies name it; the service listens on it on the pod's loopback. */
  readonly podPort: number;
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
  /** Whether the agent has installed the redirects it announced. */
  intercepted = false;
  /** The view whose listeners the agent last installed redirects for. */
  interceptedVersion = -1;
  failed: string | undefined;

  constructor(
    readonly pod: string,
    readonly child: LineChild,
  ) {
    child.onLine((m) => {
      if (typeof m.side === 'string' && typeof m.verdict === 'string') {
        this.access.push(m as unknown as AccessLine);
        if (this.access.length > 2000) {
          this.access.splice(0, 1000);
          this.accessBase += 1000;
        }
      }
    });
    // Progress lines of `palisade sidecar` (stderr).
    child.onStderr((line) => {
      const v = /^policy view (\d+) (installed|for )/.exec(line);
      if (v) {
        this.#applied = Math.max(this.#applied, Number(v[1]));
        this.lastInstall = Date.now();
      } else if (/^policy sync: connected to the agent/.test(line)) this.linked = true;
      else if (/^policy sync: (the agent closed|agent unreachable)/.test(line)) this.linked = false;
      else if (/^interception installed by the agent/.test(line)) {
        this.intercepted = true;
        const n = /\(view (\d+)\)/.exec(line);
        if (n) this.interceptedVersion = Math.max(this.interceptedVersion, Number(n[1]));
      } else if (/^error /.test(line)) this.failed = line;
    });
  }

  /** The version of the view it runs (the API revision the agent computed it at). */
  get appliedVersion(): number {
    return this.#applied;
  }
}

/**
 * Starts `palisade sidecar` for one pod inside its namespace, under the sidecar uid (it listens
 * once the agent has given it a view and an SVID, and is ready once the agent has installed its
 * redirects: `sidecarReady`). The caller records `child` for cleanup.
 */
export function spawnSidecar(o: {
  readonly netns: string;
  readonly config: SidecarConfig;
}): Sidecar {
  const c = o.config;
  const child = new LineChild(`sidecar of ${c.endpoint}`, 'ip', [
    'netns',
    'exec',
    o.netns,
    'setpriv',
    `--reuid=${SIDECAR_UID}`,
    `--regid=${SIDECAR_UID}`,
    '--clear-groups',
    process.execPath,
    // A small young generation: the sidecar's garbage is short-lived (docs/design/sidecar.md).
    '--max-semi-space-size=1',
    BIN,
    'sidecar',
    '--endpoint',
    c.endpoint,
    '--agent-socket',
    c.agentSocket,
    '--app-port',
    String(c.podPort),
    '--admin-port',
    String(c.adminPort),
    '--start-timeout',
    '120',
    '--drain-seconds',
    '1',
  ]);
  return new Sidecar(c.endpoint, child);
}

export async function sidecarReady(s: Sidecar, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!s.intercepted) {
    if (s.failed) throw new Error(`the sidecar of ${s.pod} failed: ${s.failed}`);
    if (!s.child.running) throw new Error(`the sidecar of ${s.pod} exited: ${s.child.stderrTail}`);
    if (Date.now() > deadline)
      throw new Error(`the sidecar of ${s.pod}: no interception within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
/**
 * Resolves once the sidecars' views have stopped changing for `quietMs` (the agent sends a view
 * only when its content changes, so "every sidecar runs revision R" cannot be waited for).
 */
export async function viewsQuiet(
  sidecars: readonly Sidecar[],
  sent: ReadonlyMap<string, number> = new Map(),
  quietMs = 300,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = Math.max(0, ...sidecars.map((s) => s.lastInstall));
    // Each sidecar runs the last view the agent sent it (a view still in flight when the agent
    // is killed would be lost, and the sidecar would rightly keep enforcing the one before), and
    // its redirects follow that view (it announced the view's listeners, and the agent installed
    // them) only once its latest view is the one the agent answered for.
    const following = sidecars.every(
      (s) =>
        !s.child.running ||
        (s.appliedVersion >= (sent.get(s.pod) ?? -1) && s.interceptedVersion >= s.appliedVersion),
    );
    if (following && Date.now() - last >= quietMs) return;
    if (Date.now() > deadline) throw new Error("the sidecars' views kept changing");
    await new Promise((r) => setTimeout(r, 25));
  }
}
