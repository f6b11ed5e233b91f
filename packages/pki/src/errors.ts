// The pki package's error type. Codes come from the one catalogue (`@palisade/core`,
// `catalogue/pki.ts`); callers branch on `code`, never on the message. Messages never carry key
// material.

import type { PKI_ERRORS } from '@palisade/core';

export type PkiErrorCode = keyof typeof PKI_ERRORS;

export class PkiError extends Error {
  readonly code: PkiErrorCode;
  constructor(code: PkiErrorCode, message: string) {
    super(message);
    this.name = 'PkiError';
    this.code = code;
  }
}

/** A refusal as data: what validators and the verifier return instead of throwing. */
export interface PkiFailure {
  readonly ok: false;
  readonly code: PkiErrorCode;
  readonly message: string;
}

export function fail(code: PkiErrorCode, message: string): PkiFailure {
  return { ok: false, code, message };
}
