// The flag table of `palisade sidecar` (light: no imports of servers, TLS or the engine; the
// command itself is loaded on demand from sidecar.ts).
import type { Flags } from './args.js';

export const SIDECAR_FLAGS: Flags = {
  endpoint: {
    kind: 'string',
    value: 'NS/NAME',
    help: 'the endpoint this sidecar stands beside (or PALISADE_ENDPOINT)',
  },
  'agent-socket': {
    kind: 'string',
    value: 'PATH',
    help: "the agent's socket for this endpoint (default /run/palisade/endpoints/NS/NAME/agent.sock)",
  },
  'app-port': {
    kind: 'string',
    value: 'N[,N]',
    help: "the application's ports on 127.0.0.1, as policies name them",
  },
  'inbound-port': {
    kind: 'string',
    value: 'N',
    help: 'inbound mTLS listener of the first app port; the i-th gets N+i (default 15006)',
  },
  'outbound-port': {
    kind: 'string',
    value: 'N',
    help: 'outbound proxy on 127.0.0.1 (default 15001)',
  },
  'admin-port': { kind: 'string', value: 'N', help: 'admin endpoint on 127.0.0.1 (default 15000)' },
  'inbound-host': {
    kind: 'string',
    value: 'ADDR',
    help: 'address of the inbound listeners (default 0.0.0.0)',
  },
  'upstream-port': {
    kind: 'string',
    value: 'N',
    help: "port of the destination sidecars' inbound listener (default 15006)",
  },
  'no-access-log': { kind: 'boolean', help: 'do not print the JSON access lines' },
  'start-timeout': {
    kind: 'string',
    value: 'S',
    help: 'seconds to wait for the first policy view and SVID before giving up (default 30)',
  },
  'drain-seconds': {
    kind: 'string',
    value: 'S',
    help: 'on SIGTERM, how long requests in flight may finish (default 5)',
  },
};

export const SIDECAR_USAGE =
  'palisade sidecar --endpoint NS/NAME --app-port N[,N] [--agent-socket PATH] [--inbound-port 15006] [--outbound-port 15001] [--admin-port 15000]';
