// The one error catalogue (STYLE 7): every stable code Palisade emits, with its HTTP status and a
// one-line summary. Callers branch on codes, never on message text. `docs/errors.md` is kept in
// sync by a test.

import { LOAD_ERRORS } from './load/codes.js';
import { API_ERRORS } from './catalogue/api.js';
import { CNI_ERRORS } from './catalogue/cni.js';
import { DATAPLANE_ERRORS } from './catalogue/dataplane.js';
import { PKI_ERRORS } from './catalogue/pki.js';
import { STORE_ERRORS } from './catalogue/store.js';

export { API_ERRORS, DATAPLANE_ERRORS, PKI_ERRORS, STORE_ERRORS };
export { CNI_ERRORS };

export interface ErrorSpec {
  /** HTTP status the API answers with when this error is returned. */
  readonly status: number;
  readonly summary: string;
}

export const ENGINE_ERRORS = {
  ENGINE_ERR_UNKNOWN_ENDPOINT: {
    status: 404,
    summary: 'A probe names a pod, workload endpoint or host endpoint that is not loaded.',
  },
  ENGINE_ERR_BAD_PROBE: {
    status: 400,
    summary: 'A probe is malformed: unknown protocol, port out of range, missing field.',
  },
  POLICY_ERR_UNKNOWN_TIER: {
    status: 422,
    summary: 'A policy names a tier that no Tier resource defines (warning: ordered last, Deny).',
  },
} as const satisfies Record<string, ErrorSpec>;

export const CLI_ERRORS = {
  CLI_ERR_USAGE: {
    status: 400,
    summary: 'The command line is wrong: unknown command or flag, missing or invalid value.',
  },
  CLI_ERR_FILE: {
    status: 400,
    summary: 'An input file or directory cannot be read, or is larger than the limit.',
  },
} as const satisfies Record<string, ErrorSpec>;

/** Every code, in one table. */
const ALL_ERRORS = {
  ...LOAD_ERRORS,
  ...ENGINE_ERRORS,
  ...CLI_ERRORS,
  ...STORE_ERRORS,
  ...API_ERRORS,
  ...PKI_ERRORS,
  ...DATAPLANE_ERRORS,
  ...CNI_ERRORS,
} as const;

export const ERRORS: Readonly<Record<string, ErrorSpec>> = ALL_ERRORS;

export type ErrorCode = keyof typeof ALL_ERRORS;

/** The catalogue as the Markdown table of docs/errors.md. */
export function renderErrorCatalogue(): string {
  const rows = Object.entries(ERRORS)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([code, e]) => `| \`${code}\` | ${e.status} | ${e.summary} |`);
  return [
    '# Error codes',
    '',
    'Every stable code Palisade emits. Callers branch on the code, never on the message. This',
    'file is generated from `packages/core/src/errors.ts`; a test keeps them in sync',
    '(`PALISADE_WRITE_DOCS=1 node --import tsx --test packages/core/src/errors.test.ts` rewrites it).',
    '',
    '| code | HTTP status | meaning |',
    '|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
