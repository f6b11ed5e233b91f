// Error codes of the CNI plugin and the agent's CNI socket (a file of its own so that parallel work
// on the rest of the dataplane does not collide; errors.ts merges every area into one catalogue).
// Each code also maps to a numeric CNI error code in packages/dataplane/src/cni/cni-error.ts.
import type { ErrorSpec } from '../errors.js';

export const CNI_ERRORS = {
  CNI_ERR_VERSION: {
    status: 400,
    summary:
      'The CNI configuration asks for a spec version the plugin does not support (CNI code 1).',
  },
  CNI_ERR_UNSUPPORTED_FIELD: {
    status: 400,
    summary: 'The network configuration has a field the plugin does not support (CNI code 2).',
  },
  CNI_ERR_NETNS_MISSING: {
    status: 404,
    summary: 'The container network namespace named by CNI_NETNS does not exist (CNI code 3).',
  },
  CNI_ERR_ENV: {
    status: 400,
    summary:
      'A CNI_* environment variable is missing or malformed, CNI_ARGS included (CNI code 4).',
  },
  CNI_ERR_IO: {
    status: 500,
    summary: 'The network configuration could not be read from standard input (CNI code 5).',
  },
  CNI_ERR_DECODE: {
    status: 400,
    summary: 'The network configuration is not a JSON object (CNI code 6).',
  },
  CNI_ERR_CONFIG: {
    status: 400,
    summary:
      'The network configuration is invalid: missing field, wrong type, bad subnet (CNI code 7).',
  },
  CNI_ERR_AGENT_UNAVAILABLE: {
    status: 503,
    summary: 'The local agent socket does not answer; nothing was left applied (CNI code 11).',
  },
  CNI_ERR_IPAM_BUSY: {
    status: 503,
    summary:
      'The address database stayed locked by other plugin runs past the timeout (CNI code 11).',
  },
  CNI_ERR_POD_UNKNOWN: {
    status: 404,
    summary:
      'The agent knows no pod of that namespace and name, and CNI_ARGS give no labels (CNI code 11).',
  },
  CNI_ERR_NETLINK: {
    status: 500,
    summary:
      'An `ip` command failed while wiring the interface; the attempt was rolled back (CNI code 100).',
  },
  CNI_ERR_ADDRESS_UNAVAILABLE: {
    status: 409,
    summary:
      'The requested address is outside the pool, reserved, or held by another container (CNI code 101).',
  },
  CNI_ERR_POOL_EXHAUSTED: {
    status: 503,
    summary: 'Every usable address of the pool is allocated (CNI code 102).',
  },
  CNI_ERR_REGISTRATION: {
    status: 409,
    summary:
      'The agent refused to register the endpoint (wrong node, address registered to another endpoint) (CNI code 103).',
  },
  CNI_ERR_CHECK_FAILED: {
    status: 500,
    summary:
      'CHECK found an interface, address, route, reservation or registration missing (CNI code 104).',
  },
  CNI_ERR_NOT_REGISTERED: {
    status: 404,
    summary:
      'The agent has no endpoint registered for that container and interface (CNI code 104 in CHECK).',
  },
  CNI_ERR_INTERNAL: {
    status: 500,
    summary: 'A bug in the plugin or the agent socket; the attempt was rolled back (CNI code 999).',
  },
  CNI_ERR_BAD_REQUEST: {
    status: 400,
    summary: 'A request on the agent CNI socket is malformed: bad JSON, missing or invalid field.',
  },
} as const satisfies Record<string, ErrorSpec>;
