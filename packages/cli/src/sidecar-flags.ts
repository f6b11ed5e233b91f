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
    help: "port of the destination sidecars' inbound listener (default: the destination's own port with interception, else 15006)",
  },
  'app-protocol': {
    kind: 'list',
    value: 'PORT=PROTO',
    help: 'what the application speaks on an app port: http (default), http2 or grpc (h2c), or tcp (any other protocol: one L4 decision per connection, bytes relayed) (repeatable)',
  },
  'no-intercept': {
    kind: 'boolean',
    help: 'do not announce listeners to the agent (no transparent interception: the application calls the outbound proxy)',
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
  'palisade sidecar --endpoint NS/NAME --app-port N[,N] [--app-protocol N=http|http2|grpc|tcp]... [--agent-socket PATH] [--inbound-port 15006] [--outbound-port 15001] [--admin-port 15000] [--no-intercept]';

/** `--app-protocol 9090=grpc` values → port → protocol, or a usage problem. */
export function parseAppProtocols(
  values: readonly string[],
  appPorts: readonly number[],
): Record<number, 'http' | 'http2' | 'grpc' | 'tcp'> | string {
  const out: Record<number, 'http' | 'http2' | 'grpc' | 'tcp'> = {};
  for (const v of values) {
    const m = /^([0-9]{1,5})=(http|http2|grpc|tcp)$/.exec(v);
    if (!m) return `--app-protocol ${JSON.stringify(v)}: expected PORT=http|http2|grpc|tcp`;
    const port = Number(m[1]);
    if (!appPorts.includes(port)) return `--app-protocol ${v}: ${port} is not one of --app-port`;
    if (out[port] !== undefined) return `--app-protocol: port ${port} is given twice`;
    out[port] = m[2] as 'http' | 'http2' | 'grpc' | 'tcp';
  }
  return out;
}
