#!/usr/bin/env node
// Entry point of the palisade CLI. The sources are TypeScript run through tsx's loader, so a
// fresh `npm ci` is all that is needed before `npx palisade` works.
import { register } from 'tsx/esm/api';

// Output piped into `head` or a pager that exits early is not an error of ours.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

register();
const argv = process.argv.slice(2);
// A container runtime runs the CNI plugin once per pod event: load only the plugin's modules
// (no policy engine, no server code), since start-up time is most of an ADD.
if (
  process.env.CNI_COMMAND !== undefined &&
  (argv.length === 0 || (argv.length === 1 && argv[0] === 'cni'))
) {
  const { cniCommand } = await import('@palisade/dataplane/cni');
  process.exitCode = await cniCommand({
    stdout: process.stdout,
    stderr: process.stderr,
    readStdin: async () => {
      const chunks = [];
      for await (const c of process.stdin) chunks.push(c);
      return Buffer.concat(chunks).toString('utf8');
    },
  });
} else {
  const { main } = await import('../src/main.ts');
  process.exitCode = await main(argv);
}
