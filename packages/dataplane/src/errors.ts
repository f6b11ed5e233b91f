// The dataplane's error class: a stable code from the catalogue (`DATAPLANE_ERRORS` in the core)
// and a message for people. Callers branch on `code`, never on the message.
import type { DATAPLANE_ERRORS } from '@palisade/core';

export type DataplaneErrorCode = keyof typeof DATAPLANE_ERRORS;

export class DataplaneError extends Error {
  constructor(
    readonly code: DataplaneErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DataplaneError';
  }
}
