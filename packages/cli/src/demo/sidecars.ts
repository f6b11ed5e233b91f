// The one place the live demo starts sidecars and feeds them policy. Until `palisade sidecar`
// and the agent's policy-sync socket are in main, each pod's sidecar is `sidecar-child.ts`
// (the sidecar core library: inbound mTLS + L7 checks on the pod's address, outbound proxy on
// loopback) run in the pod's namespace, with an X.509-SVID the demo requests from the API
// server's certificates endpoint with the node's token (as the agent will), and a
// `PolicyRelay` standing in for policy sync: it watches the API with the node token and pushes
// every change to every sidecar (debounced), each of which builds a new policy view.
// Switching to the agent-fed `palisade sidecar` is a change of this file only.
// Owns: sidecar start-up, SVIDs, policy distribution. Must never: write key material anywhere
// but a 0600 file in the demo's 0700 directory, or report a sidecar ready before it listens.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasErrors, loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { createKeyAndCsr } from '@palisade/pki';
import { ApiClient } from '@palisade/dataplane/agent';
import type { ApiObject } from '@palisade/dataplane/agent';
import type { DemoApi } from './api.js';
import { short } from './api.js';
import { LineChild } from './child.js';

const CHILD = fileURLToPath(new URL('./sidecar-child.ts', import.meta.url));

/** What one sidecar child needs (written to a 0600 file; holds the private key). */
export interface SidecarChildConfig {
  /** `namespace/name` of the pod. */
  readonly endpoint: string;
  readonly podIp: string;
  /** The pod's port as policies name it; the sidecar listens on it (no interception yet). */
  readonly podPort: number;
  /** The application, on the pod's loopback. */
  readonly appPort: number;
  /** The outbound proxy, on the pod's loopback. */
  readonly outboundPort: number;
  readonly trustDomain: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
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
  readonly access: AccessLine[] = [];
  #applied = -1;
  #refused = '';
  readonly #waiters: { version: number; resolve: () => void }[] = [];

  constructor(
    readonly pod: string,
    readonly child: LineChild,
  ) {
    child.onLine((m) => {
      if (typeof m.applied === 'number') {
        this.#applied = Math.max(this.#applied, m.applied);
        for (const w of [...this.#waiters])
          if (w.version <= this.#applied) {
            this.#waiters.splice(this.#waiters.indexOf(w), 1);
            w.resolve();
          }
      } else if (typeof m.refused === 'number') {
        this.#refused = `version ${m.refused}: ${String(m.reason)}`;
      } else if (typeof m.side === 'string' && typeof m.verdict === 'string') {
        this.access.push(m as unknown as AccessLine);
        if (this.access.length > 2000) this.access.splice(0, 1000);
      }
    });
  }

  get appliedVersion(): number {
    return this.#applied;
  }

  /** Resolves once the sidecar runs a view of `version` or later. */
  applied(version: number, timeoutMs: number): Promise<void> {
    if (this.#applied >= version) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(
            new Error(
              `the sidecar of ${this.pod} did not take policy version ${version} (it runs ${this.#applied}${this.#refused ? `; last refused ${this.#refused}` : ''}${this.child.running ? '' : '; it exited'})`,
            ),
          ),
        timeoutMs,
      );
      this.#waiters.push({
        version,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
    });
  }
}

/**
 * Starts the sidecar of one pod inside its namespace; resolves once it listens (which needs the
 * first policy view, so the relay must be running). The caller records `child` for cleanup.
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
  await s.child.waitFor((m) => m.ready === true, timeoutMs, 'ready line');
}

/** Kinds an L7 point judges with; access control and tokens never reach a sidecar. */
function forSidecars(o: ApiObject): boolean {
  return !o.apiVersion.startsWith('palisade.dev/');
}

/**
 * Stand-in for the agent's policy sync: one watch of the API (node token), a mirror, and a push
 * of the whole policy state to every sidecar after each change (debounced 20 ms). The version
 * a sidecar gets is the API revision, so "the sidecars run revision R" can be waited for.
 */
export class PolicyRelay {
  readonly #client: ApiClient;
  /** Each object loaded once by the core loader, as the agent does, when it arrives. */
  readonly #mirror = new Map<string, Resource>();
  readonly #sidecars: Sidecar[] = [];
  readonly #stop = new AbortController();
  #revision = -1;
  #pushed = -1;
  #timer: NodeJS.Timeout | undefined;
  #synced = false;
  #loop: Promise<void> | undefined;

  constructor(server: string, token: string, ca: string) {
    this.#client = new ApiClient({ server, token, ca, watchIdleMs: 45_000 });
  }

  add(s: Sidecar): void {
    this.#sidecars.push(s);
    if (this.#synced) this.#sendTo(s);
  }

  remove(s: Sidecar): void {
    const i = this.#sidecars.indexOf(s);
    if (i >= 0) this.#sidecars.splice(i, 1);
  }

  get revision(): number {
    return this.#revision;
  }

  start(): void {
    this.#loop = (async () => {
      let from: string | undefined;
      while (!this.#stop.signal.aborted) {
        try {
          await this.#client.watchOnce(
            from,
            {
              onReset: (objects, rv) => {
                this.#mirror.clear();
                for (const o of objects) this.#put(o);
                this.#revision = Number(rv);
                from = rv;
                this.#synced = true;
                this.#schedule();
              },
              onEvent: (type, o, rv) => {
                from = rv;
                this.#revision = Number(rv);
                if (type === 'DELETED') this.#mirror.delete(key(o));
                else this.#put(o);
                this.#schedule();
              },
              onRevision: (rv) => {
                from = rv;
              },
            },
            this.#stop.signal,
          );
        } catch {
          if (this.#stop.signal.aborted) return;
          // A lost watch resumes from the last revision; a 410 (or anything odd) relists.
          await new Promise((r) => setTimeout(r, 200));
          from = undefined;
        }
      }
    })();
  }

  #put(o: ApiObject): void {
    if (!forSidecars(o)) return;
    const r = loadText(JSON.stringify(o), `api:${key(o)}`);
    // The server validated it on write; anything that does not load is left out (fail closed:
    // a missing policy's endpoints fall to their tier's default deny, a missing pod matches
    // nothing).
    if (hasErrors(r.diagnostics) || r.resources.length !== 1) this.#mirror.delete(key(o));
    else this.#mirror.set(key(o), r.resources[0] as Resource);
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#revision <= this.#pushed) return;
      this.#pushed = this.#revision;
      for (const s of this.#sidecars) this.#sendTo(s);
    }, 20);
  }

  #sendTo(s: Sidecar): void {
    s.child.send({ version: this.#revision, resources: [...this.#mirror.values()] });
  }

  /** Resolves once every sidecar runs revision `rv` or later. */
  async settled(rv: number, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#revision < rv) {
      if (Date.now() > deadline) throw new Error(`the policy relay did not see revision ${rv}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(
      this.#sidecars.map((s) => s.applied(rv, Math.max(1000, deadline - Date.now()))),
    );
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    await this.#loop?.catch(() => undefined);
  }
}

function key(o: ApiObject): string {
  return `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
