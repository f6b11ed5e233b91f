// `palisade sidecar` on its own: the entry point of the bundled sidecar (scripts/command-bundle.mjs
// builds it into plain JavaScript, bin/palisade.js runs it), so a sidecar process loads neither
// tsx nor the rest of the CLI (docs/design/sidecar.md, "Running from a bundle"). Parses the same
// flag table as `main` does for the command and reports usage errors the same way; help goes
// through `main` (the bin never sends `--help` here).

import { parseArgs, UsageError } from './args.js';
import type { Flags } from './args.js';
import type { Io } from './input.js';
import { L7_FLOWS_FLAGS } from './node-flows-flags.js';
import { SIDECAR_FLAGS, SIDECAR_USAGE } from './sidecar-flags.js';
import { sidecarCommand } from './sidecar.js';

const FLAGS: Flags = {
  ...SIDECAR_FLAGS,
  ...L7_FLOWS_FLAGS,
  help: { kind: 'boolean', short: 'h', help: 'show this help' },
};

/** Runs `palisade sidecar ARGS` (argv without the command name); resolves with the exit code. */
export async function sidecarMain(argv: readonly string[]): Promise<number> {
  const io: Io = {
    stdout: process.stdout,
    stderr: process.stderr,
    readStdin: () => Promise.resolve(''),
  };
  try {
    const parsed = parseArgs(argv, FLAGS);
    if (parsed.values['help']) {
      io.stdout.write(`usage: ${SIDECAR_USAGE}\n(palisade help sidecar lists the flags)\n`);
      return 0;
    }
    if (parsed.positionals.length > 0)
      throw new UsageError(
        `unexpected argument ${JSON.stringify(parsed.positionals[0])} (inputs go after -f)`,
      );
    return await sidecarCommand(parsed, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`error CLI_ERR_USAGE: ${e.message}\nusage: ${SIDECAR_USAGE}\n`);
      return 2;
    }
    throw e;
  }
}
