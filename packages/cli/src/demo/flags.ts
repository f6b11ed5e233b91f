// The `palisade demo` flags: a light module (no engine, server or TLS imports), so the CLI's
// command table loads fast; the implementations are imported when the command runs.

import type { Flags } from '../args.js';

export const DEMO_FLAGS: Flags = {
  json: {
    kind: 'boolean',
    help: 'print the checks as JSON (last line); exits after the checks, as --no-wait',
  },
  simulate: {
    kind: 'boolean',
    help: 'play the story on the decision engine alone (no root needed, nothing is started)',
  },
  'no-wait': {
    kind: 'boolean',
    help: 'exit after the report instead of keeping the control plane running',
  },
};

export const DEMO_USAGE = 'palisade demo [--json] [--no-wait] [--simulate]';
