// The agent's read-only admin socket: JSON over HTTP on a unix socket (default
// /run/palisade/agent-admin.sock, mode 0600, so only root reaches it), serving what
// `palisade agent status` and `palisade describe endpoint` print. Separate from the CNI socket so
// the two can have different permissions and neither route set can reach the other.
// Routes: GET /v1/status, GET /v1/endpoints/<ref> (ref URL-encoded: `ns%2Fpod` or a host
// endpoint name). Owns: the routes and the socket's life cycle. Must never: change anything, or
// take over a socket file another process still serves.

import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { dirname } from 'node:path';
import { endpointReport, statusReport } from './introspect.js';
import type { AgentView } from './introspect.js';
import { claimSocketPath, listenRootOnly } from '../agent-socket/root-socket.js';

export const DEFAULT_ADMIN_SOCKET_PATH = '/run/palisade/agent-admin.sock';

export interface AdminReply {
  readonly status: number;
  readonly body: unknown;
}

/** One request, without HTTP (tests call it directly too). */
export async function handleAdminRequest(
  view: AgentView,
  method: string,
  url: string,
): Promise<AdminReply> {
  if (method !== 'GET')
    return {
      status: 405,
      body: { error: 'ADMIN_METHOD', message: 'the admin socket is read-only' },
    };
  const path = url.split('?')[0] ?? '';
  if (path === '/v1/status') return { status: 200, body: statusReport(view) };
  const m = /^\/v1\/endpoints\/([^/]{1,600})$/.exec(path);
  if (m) {
    let ref: string;
    try {
      ref = decodeURIComponent(m[1] ?? '');
    } catch {
      return { status: 400, body: { error: 'ADMIN_BAD_REF', message: 'bad endpoint reference' } };
    }
    if (!/^[A-Za-z0-9_.:@/-]{1,300}$/.test(ref))
      return { status: 400, body: { error: 'ADMIN_BAD_REF', message: 'bad endpoint reference' } };
    const r = await endpointReport(view, ref);
    if (!r)
      return {
        status: 404,
        body: {
          error: 'ADMIN_NO_ENDPOINT',
          message: `no local endpoint ${JSON.stringify(ref)} on node ${view.node}; local: ${
            view
              .locals()
              .map((l) => l.ref)
              .slice(0, 20)
              .join(', ') || 'none'
          }`,
        },
      };
    return { status: 200, body: r };
  }
  return { status: 404, body: { error: 'ADMIN_NO_ROUTE', message: `no route ${path}` } };
}

export interface AdminSocket {
  readonly path: string;
  close(): Promise<void>;
}

export async function startAdminSocket(
  view: AgentView,
  socketPath: string = DEFAULT_ADMIN_SOCKET_PATH,
): Promise<AdminSocket> {
  const dir = dirname(socketPath);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  await claimSocketPath(socketPath, 'another process (another agent?)');
  const server: Server = createServer((req, res) => {
    // No request body is read: every route is a GET.
    req.resume();
    handleAdminRequest(view, req.method ?? 'GET', req.url ?? '/')
      .catch((e: unknown) => ({
        status: 500,
        body: { error: 'ADMIN_FAILED', message: e instanceof Error ? e.message : String(e) },
      }))
      .then((reply) => {
        const text = JSON.stringify(reply.body);
        res.writeHead(reply.status, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
      })
      .catch(() => res.destroy());
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 5_000;
  await listenRootOnly(server, socketPath);
  return {
    path: socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
