// Listening on a TCP address as a promise: resolves with the bound address once the server
// listens, rejects with the listen error (address in use, not permitted) and leaves no error
// listener behind. Shared by the sidecar's listeners and the agent's metrics server.

import type { AddressInfo, Server } from 'node:net';

/** Listens on `host:port` (port 0: any free one); resolves with the bound address. */
export async function listenTcp(server: Server, port: number, host: string): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}
