#!/usr/bin/env node
// Entry point of the palisade CLI. The sources are TypeScript run through tsx's loader, so a
// fresh `npm ci` is all that is needed before `npx palisade` works. `palisade sidecar` (one per
// pod, long-running) runs instead from a bundle of plain JavaScript that scripts/sidecar-bundle.mjs
// builds from the same sources on demand: no tsx loader thread or transpiler in its memory.
import { pathToFileURL } from 'node:url';

// Output piped into `head` or a pager that exits early is not an error of ours.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

const argv = process.argv.slice(2);

/** The bundled sidecar's `sidecarMain`, or undefined (then the sources run; help always does). */
async function bundledSidecar() {
  if (argv[0] !== 'sidecar' || argv.includes('--help') || argv.includes('-h')) return undefined;
  const { sidecarBundle } = await import('../../../scripts/sidecar-bundle.mjs');
  const b = await sidecarBundle();
  if (b.path) return (await import(pathToFileURL(b.path).href)).sidecarMain;
  process.stderr.write(`palisade sidecar: running from the sources (no bundle: ${b.reason})\n`);
  return undefined;
}

const sidecarMain = await bundledSidecar();
if (sidecarMain) {
  process.exitCode = await sidecarMain(argv.slice(1));
} else {
  const { register } = await import('tsx/esm/api');
  register();
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
}
