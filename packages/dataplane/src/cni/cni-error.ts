// The plugin's one error class and its mapping to the CNI spec's error result. Owns: which numeric
// CNI code each Palisade code is reported with. Must never: put secrets or stack traces in `details`.
import type { CNI_ERRORS } from '@palisade/core';

export type CniErrorCode = keyof typeof CNI_ERRORS;

/**
 * CNI 1.0 §5 "Error": codes 0-99 are the spec's well-known errors, 100+ are the plugin's own.
 * 11 ("try again later") marks conditions that clear up by themselves: the agent restarting, the
 * address database locked, the orchestrator's view of the pod lagging.
 */
export const CNI_NUMERIC_CODES: Readonly<Record<CniErrorCode, number>> = {
  CNI_ERR_VERSION: 1,
  CNI_ERR_UNSUPPORTED_FIELD: 2,
  CNI_ERR_NETNS_MISSING: 3,
  CNI_ERR_ENV: 4,
  CNI_ERR_IO: 5,
  CNI_ERR_DECODE: 6,
  CNI_ERR_CONFIG: 7,
  CNI_ERR_AGENT_UNAVAILABLE: 11,
  CNI_ERR_IPAM_BUSY: 11,
  CNI_ERR_POD_UNKNOWN: 11,
  CNI_ERR_NETLINK: 100,
  CNI_ERR_ADDRESS_UNAVAILABLE: 101,
  CNI_ERR_POOL_EXHAUSTED: 102,
  CNI_ERR_REGISTRATION: 103,
  CNI_ERR_CHECK_FAILED: 104,
  CNI_ERR_NOT_REGISTERED: 104,
  CNI_ERR_INTERNAL: 999,
  CNI_ERR_BAD_REQUEST: 7,
};

/** Short messages, one per numeric code, for the error result's `msg`. */
const SHORT: Readonly<Record<CniErrorCode, string>> = {
  CNI_ERR_VERSION: 'Incompatible CNI version',
  CNI_ERR_UNSUPPORTED_FIELD: 'Unsupported field in network configuration',
  CNI_ERR_NETNS_MISSING: 'Container unknown or does not exist',
  CNI_ERR_ENV: 'Invalid necessary environment variables',
  CNI_ERR_IO: 'I/O failure',
  CNI_ERR_DECODE: 'Failed to decode content',
  CNI_ERR_CONFIG: 'Invalid network config',
  CNI_ERR_AGENT_UNAVAILABLE: 'Try again later: the Palisade agent is unavailable',
  CNI_ERR_IPAM_BUSY: 'Try again later: the address database is busy',
  CNI_ERR_POD_UNKNOWN: 'Try again later: the pod is not known to the Palisade agent',
  CNI_ERR_NETLINK: 'Failed to configure the interface',
  CNI_ERR_ADDRESS_UNAVAILABLE: 'Requested address unavailable',
  CNI_ERR_POOL_EXHAUSTED: 'Address pool exhausted',
  CNI_ERR_REGISTRATION: 'Endpoint registration refused',
  CNI_ERR_CHECK_FAILED: 'Container networking is not as expected',
  CNI_ERR_NOT_REGISTERED: 'Container networking is not as expected',
  CNI_ERR_INTERNAL: 'Internal error',
  CNI_ERR_BAD_REQUEST: 'Bad request',
};

export class CniError extends Error {
  readonly code: CniErrorCode;

  constructor(code: CniErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CniError';
    this.code = code;
  }
}

/** The spec's error result: `{cniVersion, code, msg, details}`. */
export interface CniErrorResult {
  readonly cniVersion: string;
  readonly code: number;
  readonly msg: string;
  readonly details: string;
}

export function cniErrorResult(e: CniError, cniVersion: string): CniErrorResult {
  return {
    cniVersion,
    code: CNI_NUMERIC_CODES[e.code],
    msg: SHORT[e.code],
    details: `${e.code}: ${e.message}`,
  };
}
