// The one error the API answers with: a stable code from the catalogue (its HTTP status comes
// from there), a message, a hint that says what to do, and diagnostics for invalid resources.

import { ERRORS } from '@palisade/core';
import type { API_ERRORS, Diagnostic, STORE_ERRORS } from '@palisade/core';

export type ApiErrorCode = keyof typeof API_ERRORS | keyof typeof STORE_ERRORS;

export interface ApiErrorBody {
  readonly code: string;
  readonly message: string;
  readonly hint?: string;
  readonly diagnostics?: readonly Diagnostic[];
}

export class ApiError extends Error {
  readonly code: ApiErrorCode;
  readonly status: number;
  readonly hint: string | undefined;
  readonly diagnostics: readonly Diagnostic[] | undefined;
  /** Extra response headers (Retry-After). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: ApiErrorCode,
    message: string,
    options: {
      hint?: string;
      diagnostics?: readonly Diagnostic[];
      headers?: Record<string, string>;
    } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = ERRORS[code]?.status ?? 500;
    this.hint = options.hint;
    this.diagnostics = options.diagnostics;
    this.headers = options.headers ?? {};
  }

  body(): ApiErrorBody {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint !== undefined ? { hint: this.hint } : {}),
      ...(this.diagnostics !== undefined ? { diagnostics: this.diagnostics } : {}),
    };
  }
}
