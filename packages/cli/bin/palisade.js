#!/usr/bin/env node
// Entry point of the palisade CLI. The sources are TypeScript run through tsx's loader, so a
// fresh `npm ci` is all that is needed before `npx palisade` works. Two commands run instead from
// a bundle of plain JavaScript that scripts/command-bundle.mjs builds from the same sources on
// demand: `palisade sidecar` (one per pod, long-running: no tsx loader thread or transpiler in its
// memory) and the CNI plugin (started by the container runtime once per pod event: start-up time
// is most of an ADD).
import { pathToFileURL } from 'node:url';

// Output piped into `head` or a pager that exits early is not an error of ours.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

const argv = process.argv.slice(2);

/** Which bundled command this run is, if any (help always goes through the sources). */
function bundledCommand() {
  if (
    process.env.CNI_COMMAND !== undefined &&
    (argv.length === 0 || (argv.length === 1 && argv[0] === 'cni'))
  )
    return 'cni';
  if (argv[0] === 'sidecar' && !argv.includes('--help') && !argv.includes('-h')) return 'sidecar';
  return undefined;
}

/** The bundle's entry function, or undefined (then the sources run). */
async function fromBundle(name) {
  const { commandBundle } = await import('../../../scripts/command-bundle.mjs');
  const b = await commandBundle(name);
  if (b.path) return (await import(pathToFileURL(b.path).href))[`${name}Main`];
  process.stderr.write(`palisade ${name}: running from the sources (no bundle: ${b.reason})\n`);
  return undefined;
}

const name = bundledCommand();
const entry = name ? await fromBundle(name) : undefined;
if (entry) {
  process.exitCode = await entry(argv.slice(1));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  if (name === 'cni') {
    const { cniMain } = await import('../src/cni-main.ts');
    process.exitCode = await cniMain();
  } else {
    const { main } = await import('../src/main.ts');
    process.exitCode = await main(argv);
  }
}
