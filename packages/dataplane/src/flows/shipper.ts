// Ships flow batches to the API server (POST /api/v1/flows) with the node's credential.
// Owns: that one request. Must never: log the token; follow a redirect; wait without a timeout.

import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { WireBatch } from './observation.js';

export interface ShipperOptions {
  /** `https://host:port` of the API server. */
  readonly server: string;
  readonly token: string;
  /** PEM bundle the server's certificate chains to. */
  readonly ca?: string;
  readonly timeoutMs?: number;
}

export function flowShipper(o: ShipperOptions): (batch: WireBatch) => Promise<void> {
  const url = `${o.server.replace(/\/$/, '')}/api/v1/flows`;
  return (batch) =>
    new Promise<void>((resolve, reject) => {
      const body = JSON.stringify(batch);
      const headers = {
        authorization: `Bearer ${o.token}`,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
      };
      const onRes = (res: IncomingMessage) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (text.length < 4096) text += d;
        });
        res.on('end', () =>
          (res.statusCode ?? 0) === 200
            ? resolve()
            : reject(
                new Error(`the server answered ${res.statusCode ?? 0}: ${text.slice(0, 300)}`),
              ),
        );
      };
      const req = url.startsWith('https:')
        ? httpsRequest(
            url,
            {
              method: 'POST',
              headers,
              timeout: o.timeoutMs ?? 15_000,
              ...(o.ca ? { ca: o.ca } : {}),
            },
            onRes,
          )
        : httpRequest(url, { method: 'POST', headers, timeout: o.timeoutMs ?? 15_000 }, onRes);
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', reject);
      req.end(body);
    });
}
