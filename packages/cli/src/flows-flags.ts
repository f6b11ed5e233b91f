// The flag table of `palisade flows` (light: main.ts imports it at start-up; the implementation,
// flows.ts, is loaded only when the command runs).

import type { Flags } from './args.js';
import { CONNECTION_FLAGS } from './flags.js';

export const FLOWS_USAGE =
  'palisade flows [--since 15m] [--until T] [--endpoint NS/NAME] [-n NS] [--policy P] [--verdict allow|deny] [--point kernel|l7] [--node N] [--limit N] [--follow] [-o table|json]\n       palisade flows stats [-o json]';

export const FLOWS_FLAGS: Flags = {
  ...CONNECTION_FLAGS,
  since: {
    kind: 'string',
    value: 'T',
    help: 'from this time: ISO 8601 or a duration before now (15m, 2h)',
  },
  until: { kind: 'string', value: 'T', help: 'up to this time' },
  endpoint: { kind: 'string', value: 'NS/NAME', help: 'flows from or to this endpoint' },
  namespace: { kind: 'string', short: 'n', value: 'NS', help: 'flows from or to this namespace' },
  policy: { kind: 'string', value: 'P', help: 'flows decided by this policy (qualified name)' },
  verdict: { kind: 'string', value: 'V', help: 'allow or deny' },
  point: { kind: 'string', value: 'P', help: 'enforcement point: kernel or l7' },
  node: { kind: 'string', value: 'N', help: 'flows reported by this node' },
  limit: { kind: 'string', value: 'N', help: 'most records (default 100)' },
  follow: {
    kind: 'boolean',
    short: 'f',
    help: 'keep printing new records as the nodes report them',
  },
  output: {
    kind: 'string',
    short: 'o',
    value: 'FMT',
    help: 'table (default) or json (one record a line)',
  },
};
