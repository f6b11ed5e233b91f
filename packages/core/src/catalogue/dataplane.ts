// Error codes of the dataplane area (one file per area so parallel work does not collide; errors.ts
// merges every area into the one catalogue).
import type { ErrorSpec } from '../errors.js';

export const DATAPLANE_ERRORS = {
  DATAPLANE_ERR_NFT: {
    status: 500,
    summary:
      'An nft command failed (the transaction was refused as a whole, so the previous ruleset stays in force).',
  },
  DATAPLANE_ERR_FOREIGN: {
    status: 409,
    summary:
      'An operation named a table the agent does not own; it was refused before reaching the kernel.',
  },
  DATAPLANE_ERR_INVALID_NAME: {
    status: 400,
    summary:
      'A table, interface or namespace name is not safe to pass to nft (characters or length); nothing was rendered.',
  },
  DATAPLANE_ERR_INTERCEPT_SPEC: {
    status: 400,
    summary:
      'A transparent interception specification is not valid (a port, address or uid, or a sidecar port that would loop or shadow an application port); nothing was applied.',
  },
} as const satisfies Record<string, ErrorSpec>;
