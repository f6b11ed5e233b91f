// Serving the handler on a socket: HTTPS with client-certificate verification by Node's TLS (or
// plaintext on loopback when explicitly asked), the body size limit enforced while reading,
// watch streams ended when the client goes, and a graceful close.
// Owns: node:http(s) plumbing. Must never: buffer an oversized body or log request headers.

import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ApiServer } from './api.js';
import type { ApiRequest } from './http-types.js';
import type { ServerCredentials } from './tls.js';
import { tlsInfo } from './tls.js';

export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  /** HTTPS with these credentials; absent means plaintext (the caller checks it is allowed). */
  readonly credentials?: ServerCredentials;
}

export interface Listening {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  /** Swaps the HTTPS key, certificate and client CA for new connections (renewal, rotation). */
  updateCredentials(c: ServerCredentials): void;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(`${JSON.stringify(body)}\n`);
}

export async function listen(api: ApiServer, options: ListenOptions): Promise<Listening> {
  const active = new Set<AbortController>();
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const ac = new AbortController();
    active.add(ac);
    res.on('close', () => {
      ac.abort();
      active.delete(ac);
    });
    const limit = api.maxBody;
    const declared = Number(req.headers['content-length'] ?? '0');
    if (Number.isFinite(declared) && declared > limit) {
      send(res, 413, {
        code: 'API_ERR_TOO_LARGE',
        message: `the body is ${declared} bytes; the limit is ${limit}`,
        hint: 'split the input into several applies',
      });
      req.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      if (tooBig) return;
      size += c.length;
      if (size > limit) {
        tooBig = true;
        send(res, 413, {
          code: 'API_ERR_TOO_LARGE',
          message: `the body exceeds the limit of ${limit} bytes`,
          hint: 'split the input into several applies',
        });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => ac.abort());
    req.on('end', () => {
      if (tooBig) return;
      const headers: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(req.headers))
        headers[k] = Array.isArray(v) ? v.join(', ') : v;
      const socket = req.socket as TLSSocket;
      const apiReq: ApiRequest = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers,
        body: Buffer.concat(chunks),
        remoteAddress: req.socket.remoteAddress ?? 'unknown',
        ...(options.credentials ? { tls: tlsInfo(socket) } : {}),
        signal: ac.signal,
      };
      void respond(api, apiReq, res);
    });
  };
  const https = options.credentials
    ? createHttpsServer(
        {
          key: options.credentials.key,
          cert: options.credentials.certChain,
          ca: options.credentials.clientCa,
          requestCert: true,
          // Verified by Node against `ca`; the handler answers 401 with the reason instead of
          // dropping the handshake, so clients learn what is wrong with their certificate.
          rejectUnauthorized: false,
          minVersion: 'TLSv1.2',
        },
        onRequest,
      )
    : undefined;
  const server: Server = https ?? createHttpServer(onRequest);
  server.headersTimeout = 30_000;
  server.requestTimeout = 120_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const hostPart = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    server,
    port,
    url: `${options.credentials ? 'https' : 'http'}://${hostPart}:${port}`,
    updateCredentials: (c) => {
      if (!https) throw new Error('a plaintext listener has no credentials to update');
      https.setSecureContext({
        key: c.key,
        cert: c.certChain,
        ca: c.clientCa,
        minVersion: 'TLSv1.2',
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const ac of active) ac.abort();
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      }),
  };
}

async function respond(api: ApiServer, req: ApiRequest, res: ServerResponse): Promise<void> {
  const out = await api.handle(req);
  if ('body' in out) {
    res.writeHead(out.status, {
      ...out.headers,
      'content-length': String(Buffer.byteLength(out.body)),
    });
    res.end(out.body);
    return;
  }
  res.writeHead(out.status, out.headers);
  res.flushHeaders();
  try {
    for await (const chunk of out.stream) {
      if (res.destroyed) break;
      res.write(chunk);
    }
  } catch {
    // the stream reports its own errors as ERROR events; a failure here means the client left
  }
  res.end();
}
