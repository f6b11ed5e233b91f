// The nft session worker: a long-lived process started once inside a network namespace
// (`ip netns exec NS node --import tsx session-worker.ts [libnftables path]`), because a Node
// process cannot enter another namespace itself. It holds one libnftables context and answers
// framed requests on stdin with framed results on stdout (session.ts speaks the other side), one
// at a time. It exits when its stdin closes (the agent is gone) or on a malformed frame.
// Owns: nothing but relaying. Must never: run anything but the two request shapes of
// libraryRequest (a script as one batch, or a listing).

import { LibNft, libraryRequest } from './libnft.js';
import { FrameReader, writeFrame } from './frames.js';

function fail(message: string): never {
  process.stderr.write(`palisade nft worker: ${message}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const path = process.argv[2];
  let lib: LibNft;
  try {
    lib = await LibNft.open(path);
  } catch (e) {
    // The parent falls back to one nft process per change and says so.
    writeFrame(process.stdout, {
      hello: 'unavailable',
      error: e instanceof Error ? e.message : String(e),
    });
    process.exit(0);
  }
  writeFrame(process.stdout, { hello: 'library', pid: process.pid });
  const reader = new FrameReader((msg) => {
    if (!msg || typeof msg !== 'object') return fail('request is not an object');
    const { id, args, stdin } = msg as { id?: unknown; args?: unknown; stdin?: unknown };
    if (typeof id !== 'number' || !Number.isSafeInteger(id)) return fail('request without id');
    if (!Array.isArray(args) || !args.every((a): a is string => typeof a === 'string'))
      return fail('request args are not strings');
    if (stdin !== undefined && typeof stdin !== 'string') return fail('request stdin not text');
    const req = libraryRequest(args, stdin);
    const c0 = process.cpuUsage();
    const result =
      req === undefined
        ? { code: 2, stdout: '', stderr: `unsupported nft request ${JSON.stringify(args)}` }
        : lib.runSync(req);
    // This process does nothing else: its CPU time is nft's (parse, cache, netlink, kernel).
    const c = process.cpuUsage(c0);
    writeFrame(process.stdout, { id, ...result, cpuMs: (c.user + c.system) / 1000 });
  }, fail);
  process.stdin.on('data', (d: Buffer) => reader.push(d));
  process.stdin.on('end', () => {
    lib.close();
    process.exit(0);
  });
}

void main();
