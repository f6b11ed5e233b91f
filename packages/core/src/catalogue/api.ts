// Error codes of the api area: the API server, its authentication and authorization, and the
// online CLI (one file per area so parallel work does not collide; errors.ts merges every area
// into the one catalogue).
import type { ErrorSpec } from '../errors.js';

export const API_ERRORS = {
  API_ERR_BAD_REQUEST: {
    status: 400,
    summary:
      'The request is malformed: invalid JSON or YAML, a wrong field, a bad query parameter.',
  },
  API_ERR_INVALID: {
    status: 422,
    summary:
      'The resources do not validate; the answer carries the same diagnostics as palisade validate.',
  },
  API_ERR_INVALID_NAME: {
    status: 400,
    summary:
      'A name or namespace is not a DNS-1123 name (path characters, "..", NUL, upper case, too long).',
  },
  API_ERR_UNKNOWN_KIND: {
    status: 404,
    summary: 'The path or body names a kind the server does not serve.',
  },
  API_ERR_NOT_FOUND: {
    status: 404,
    summary: 'The resource, path or audit entry does not exist.',
  },
  API_ERR_ALREADY_EXISTS: {
    status: 409,
    summary: 'A create named a resource that already exists; update it or apply instead.',
  },
  API_ERR_CONFLICT: {
    status: 409,
    summary:
      'The resourceVersion given is not the current one: someone else changed the resource; read it again and retry.',
  },
  API_ERR_GONE: {
    status: 410,
    summary: 'A watch asked for a resourceVersion older than the kept history: list again.',
  },
  API_ERR_METHOD_NOT_ALLOWED: {
    status: 405,
    summary: 'The HTTP method is not served on this path.',
  },
  API_ERR_UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    summary: 'The body is neither JSON nor YAML.',
  },
  API_ERR_TOO_LARGE: {
    status: 413,
    summary: 'The request body, or the number of documents in one apply, exceeds the limit.',
  },
  API_ERR_RATE_LIMITED: {
    status: 429,
    summary: 'Too many requests from this principal; wait for the time in Retry-After.',
  },
  API_ERR_UNAVAILABLE: {
    status: 503,
    summary: 'The store cannot be reached; nothing was written. Retry later.',
  },
  API_ERR_INTERNAL: {
    status: 500,
    summary: 'A bug in the server; nothing was written. The server log has the details.',
  },
  API_ERR_AUDIT_BROKEN: {
    status: 500,
    summary:
      'audit verify found an edited, removed or reordered entry: the log was changed outside the API.',
  },
  API_ERR_CONNECTION: {
    status: 503,
    summary: 'The CLI cannot reach the server (refused, timed out, TLS failure).',
  },
  API_ERR_NO_SERVER: {
    status: 400,
    summary: 'The CLI has no server to talk to: give --server, set PALISADE_SERVER or log in.',
  },
  AUTH_ERR_UNAUTHENTICATED: {
    status: 401,
    summary: 'The request carries no credential: a bearer token or a client certificate.',
  },
  AUTH_ERR_INVALID_TOKEN: {
    status: 401,
    summary: 'The bearer token is unknown, revoked, expired or malformed.',
  },
  AUTH_ERR_BAD_CERTIFICATE: {
    status: 401,
    summary:
      'The client certificate is not valid: expired, not yet valid, or not issued by our CA.',
  },
  AUTH_ERR_FORBIDDEN: {
    status: 403,
    summary:
      'The principal is authenticated but no role allows this verb on this kind, namespace or tier; the attempt is audited.',
  },
} as const satisfies Record<string, ErrorSpec>;
