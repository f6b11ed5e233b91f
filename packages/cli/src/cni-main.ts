// `palisade cni` on its own: the entry point of the bundled CNI plugin (scripts/command-bundle.mjs
// builds it into plain JavaScript, bin/palisade.js runs it when the container runtime calls the
// plugin: CNI_COMMAND set, no argument or just `cni`). The runtime starts the plugin once per pod
// event, so start-up time is most of an ADD: only the plugin's modules load, without tsx.

import { cniCommand } from '@palisade/dataplane/cni';

/** Runs the plugin on this process's stdin, stdout and CNI_* environment; resolves with the exit code. */
export function cniMain(): Promise<number> {
  return cniCommand({
    stdout: process.stdout,
    stderr: process.stderr,
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    },
  });
}
