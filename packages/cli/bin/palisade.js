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
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2));
