// Listening on a unix socket that only root can connect to, shared by every socket the agent
// serves (the CNI socket, the admin socket, the per-endpoint sockets).
// Owns: claiming the path (refusing a non-socket or a live server there) and binding under a
// tight umask. Must never: replace a file that is not a socket, take over a socket another
// process still serves, or leave the socket connectable by others even for an instant.

import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Server } from 'node:net';

/** Whether a process accepts connections on the unix socket at `path`. */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * Removes a stale socket at `path` so it can be bound again. Throws when the path is something
 * other than a socket, or when a live process serves it (`who` names it in the message).
 */
export async function claimSocketPath(path: string, who = 'another process'): Promise<void> {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket())
    throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  if (await socketAnswers(path)) throw new Error(`${path} is served by ${who}`);
  unlinkSync(path);
}

/**
 * Binds `server` to `path`. bind(2) happens inside listen(): the umask 0177 around it means the
 * socket is never, even for an instant, connectable by anyone but its owner (root); `mode`
 * (default 0600) is set once it exists.
 */
export async function listenRootOnly(server: Server, path: string, mode = 0o600): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const umask = process.umask(0o177);
    try {
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      process.umask(umask);
    }
  });
  chmodSync(path, mode);
}
