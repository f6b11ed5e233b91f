// The CLI's side of the agent's admin socket: one GET, with a deadline, and errors that say what
// to do. Light on purpose (node:http only): `palisade agent status` must not load the engine.
// Owns: the call. Must never: wait without a deadline.

import { request } from 'node:http';

export const DEFAULT_ADMIN_SOCKET = '/run/palisade/agent-admin.sock';

export class AdminCallError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
  ) {
    super(message);
    this.name = 'AdminCallError';
  }
}

const MAX_REPLY_BYTES = 64 * 1024 * 1024;

export function adminGet(socketPath: string, path: string, timeoutMs = 20_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_REPLY_BYTES) {
          req.destroy(new Error('reply too large'));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          reject(new AdminCallError('the agent sent a reply that is not JSON', res.statusCode));
          return;
        }
        if (res.statusCode === 200) resolve(body);
        else {
          const m = (body as { message?: unknown } | null)?.message;
          reject(
            new AdminCallError(
              typeof m === 'string' ? m : `the agent answered ${res.statusCode}`,
              res.statusCode,
            ),
          );
        }
      });
    });
    req.setTimeout(timeoutMs, () =>
      req.destroy(new Error(`no answer from the agent within ${timeoutMs} ms`)),
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e instanceof AdminCallError) return reject(e);
      const why =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? `no agent answers on ${socketPath}: is palisade agent running on this node (--admin-socket)?`
          : e.code === 'EACCES'
            ? `permission denied on ${socketPath}: the admin socket is root-only; run as root`
            : `agent admin socket ${socketPath}: ${e.message}`;
      reject(new AdminCallError(why, undefined));
    });
    req.end();
  });
}
