// Error codes of the store port and its adapters (one file per area so parallel work does not
// collide; errors.ts merges every area into the one catalogue).
import type { ErrorSpec } from '../errors.js';

export const STORE_ERRORS = {
  STORE_ERR_CONFLICT: {
    status: 409,
    summary: 'A compare-and-swap failed: the resource changed since the revision the caller read.',
  },
  STORE_ERR_COMPACTED: {
    status: 410,
    summary: 'A watch or read asked for a revision older than the compacted history: relist.',
  },
  STORE_ERR_FUTURE_REVISION: {
    status: 400,
    summary: 'A read or watch asked for a revision the store has not reached yet.',
  },
  STORE_ERR_UNAVAILABLE: {
    status: 503,
    summary: 'The store cannot be reached or has no quorum; the operation was not applied.',
  },
  STORE_ERR_CLOSED: {
    status: 503,
    summary: 'The store adapter was closed; no further operations are accepted.',
  },
  STORE_ERR_TOO_LARGE: {
    status: 413,
    summary:
      'A value or a transaction exceeds the store limits (value size, operations per transaction).',
  },
  STORE_ERR_INVALID: {
    status: 400,
    summary:
      'A store request or store URL is malformed: empty or ill-formed key, the same key twice in one transaction, a bad revision or limit, an unknown URL scheme.',
  },
  STORE_ERR_CORRUPT: {
    status: 500,
    summary:
      'The store file is not a Palisade SQLite database, has an unknown schema or failed its integrity check; nothing was changed.',
  },
} as const satisfies Record<string, ErrorSpec>;
