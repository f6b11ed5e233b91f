// The one error class of the store port. Callers branch on `code` (STYLE 7), never on text.
import type { STORE_ERRORS } from '@palisade/core';

export type StoreErrorCode = keyof typeof STORE_ERRORS;

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  /** For STORE_ERR_COMPACTED: the oldest revision still available. */
  readonly compactRevision: number | undefined;
  /**
   * For STORE_ERR_UNAVAILABLE from a transaction: true when the request may have been applied
   * (the connection failed after it was sent). Re-read before retrying. False: nothing changed.
   */
  readonly maybeApplied: boolean;

  constructor(
    code: StoreErrorCode,
    message: string,
    options?: { compactRevision?: number; cause?: unknown; maybeApplied?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StoreError';
    this.code = code;
    this.compactRevision = options?.compactRevision;
    this.maybeApplied = options?.maybeApplied ?? false;
  }
}
