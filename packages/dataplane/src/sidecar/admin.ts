// The sidecar's admin endpoint on loopback (DESIGN §6): `GET /stats` (counters of both sides and
// the policy view's version and last update error, JSON), `GET /ready` (200 once the view and
// credentials are installed), `GET /metrics` (Prometheus text: judged requests per policy). Owns: nothing but reporting. Must never: listen on a non-loopback
// address, change state, or report secrets.

import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { SidecarCounters } from './access-log.js';
import type { PolicyViewHolder } from './policy-view.js';
import { listenTcp } from '../listen-tcp.js';

export interface AdminSources {
  readonly policy: PolicyViewHolder;
  readonly inbound?: { counters(): SidecarCounters };
  readonly outbound?: { counters(): SidecarCounters };
  /** More sections of `/stats` (the agent link, the SVID schedule); never secrets. */
  readonly extra?: () => Readonly<Record<string, unknown>>;
  /** Prometheus text for `GET /metrics` (flow counters per policy); absent: 404. */
  readonly metrics?: () => string;
}

function isLoopback(host: string): boolean {
  if (host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

export class AdminServer {
  readonly #server: Server;

  constructor(
    private readonly host: string,
    private readonly port: number,
    sources: AdminSources,
  ) {
    if (!isLoopback(host))
      throw new Error(`the admin endpoint listens on loopback only, not ${host}`);
    this.#server = createServer((req, res) => {
      const json = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(body)}\n`);
      };
      if (req.method !== 'GET') return json(405, { error: 'GET only' });
      switch (req.url) {
        case '/stats':
          return json(200, {
            policy: sources.policy.status(),
            inbound: sources.inbound?.counters() ?? null,
            outbound: sources.outbound?.counters() ?? null,
            ...(sources.extra?.() ?? {}),
          });
        case '/metrics':
          if (!sources.metrics) return json(404, { error: 'not found' });
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
          res.end(sources.metrics());
          return;
        case '/ready':
          return json(200, { ready: true, version: sources.policy.current.version });
        default:
          return json(404, { error: 'not found' });
      }
    });
  }

  async start(): Promise<AddressInfo> {
    return listenTcp(this.#server, this.port, this.host);
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
