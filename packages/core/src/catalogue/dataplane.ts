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
  AUTHZ_ERR_LISTEN: {
    status: 500,
    summary:
      'The ext_authz server cannot listen on the address given (in use, not permitted, or a unix socket path that cannot be created).',
  },
  AUTHZ_ERR_TLS: {
    status: 400,
    summary:
      'The ext_authz listener refused to start: its TLS material is unusable (unparsable, a key that does not match the certificate, an expired or not yet valid certificate, a client CA that is not a CA), or plaintext on TCP was not chosen explicitly.',
  },
  EXPORT_ERR_INPUT: {
    status: 400,
    summary:
      'An export names an endpoint that is not loaded, has no service account or no L7 point, or has no port to export; nothing was printed.',
  },
  EXPORT_ERR_UNSUPPORTED: {
    status: 422,
    summary:
      "The endpoint's policy uses a construct the Envoy RBAC export cannot express exactly (named in the message); nothing was printed rather than a configuration that allows more.",
  },
  DATAPLANE_ERR_INTERCEPT_SPEC: {
    status: 400,
    summary:
      'A transparent interception specification is not valid (a port, address or uid, or a sidecar port that would loop or shadow an application port); nothing was applied.',
  },
  DATAPLANE_ERR_INTERCEPT_UNAVAILABLE: {
    status: 503,
    summary:
      "The agent could not install an endpoint's interception rules now (no network namespace recorded for it, or nft failed); rules already in the pod stay, and the sidecar announces again.",
  },
  DATAPLANE_ERR_POLICYSYNC_FORBIDDEN: {
    status: 403,
    summary:
      "A sidecar asked the agent for another endpoint's policy or for an SVID of another identity; each endpoint's socket answers for that endpoint only.",
  },
  DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST: {
    status: 400,
    summary:
      'A policy sync or SVID request on an endpoint socket was malformed (path, query or body); nothing was done.',
  },
  DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE: {
    status: 503,
    summary:
      'The agent cannot serve the request yet (no complete snapshot from the API, or the API server is unreachable); the sidecar keeps its last state and retries.',
  },
  DATAPLANE_ERR_POLICYSYNC_STREAM: {
    status: 502,
    summary:
      'The policy sync stream from the agent carried a malformed message; the sidecar dropped the stream, kept its last view and reconnects.',
  },
  DATAPLANE_ERR_SIDECAR_START: {
    status: 503,
    summary:
      'The sidecar did not get a usable policy view and SVID from the agent in time, so it did not start its listeners (fail closed).',
  },
} as const satisfies Record<string, ErrorSpec>;
