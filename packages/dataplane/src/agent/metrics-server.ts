// A Prometheus text endpoint: `GET /metrics` on a TCP address (the agent's --metrics). Owns:
// that one route. Must never: change state, serve anything but the metrics text, or report
// secrets (the text is counters with bounded labels).

import { createServer } from 'node:http';
import { listenTcp } from '../listen-tcp.js';

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(
  host: string,
  port: number,
  text: () => string,
): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    req.resume();
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('GET /metrics only\n');
      return;
    }
    let body: string;
    try {
      body = text();
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`metrics failed: ${e instanceof Error ? e.message : String(e)}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(body);
  });
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  const bound = await listenTcp(server, port, host);
  return {
    port: bound.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
