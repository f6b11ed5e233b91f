// Server side of `npm run bench -- authz`, run as its own process so the load generator does not
// share its event loop: `palisade` (the ext_authz server with the bookinfo policy, chosen by
// destination address) or `noop` (the same proto and gRPC stack, answering OK at once). Prints
// `PORT n` when listening; exits when its stdin closes.

import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { AuthzServer, FileSource, authorizationService } from '@palisade/dataplane/authz';

const mode = process.argv[2];
const BOOKINFO = join(import.meta.dirname, '..', 'examples', 'bookinfo');

async function start(): Promise<{ port: number; stop: () => Promise<void> }> {
  if (mode === 'palisade') {
    const s = new AuthzServer({
      source: new FileSource({ paths: [BOOKINFO], intervalMs: 0 }),
      listener: { kind: 'plaintext' },
    });
    const port = await s.start('127.0.0.1:0');
    return { port, stop: () => s.close(1000) };
  }
  if (mode !== 'noop') throw new Error(`mode ${String(mode)}: expected palisade or noop`);
  const server = new grpc.Server({ 'grpc.max_concurrent_streams': 1000 });
  server.addService(authorizationService(), {
    Check: (_c: unknown, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, { status: { code: 0, message: '' } }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { port, stop: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

const { port, stop } = await start();
process.stdout.write(`PORT ${port}\n`);
process.stdin.resume();
process.stdin.on('end', () => void stop().then(() => process.exit(0)));
