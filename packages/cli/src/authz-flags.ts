// The Envoy commands' flag tables, usage and lazy entry points: `palisade authz-server` and
// `palisade export envoy-rbac`. Owns: nothing heavy. Must never: import a server, the engine,
// gRPC or TLS at load time (the CLI must stay fast for every other command); the implementations
// are imported when the command runs.

import type { Flags, Parsed } from './args.js';
import type { Io } from './input.js';

export const AUTHZ_SERVER_USAGE =
  'palisade authz-server [--listen 127.0.0.1:9191|unix:PATH] (--tls-cert FILE --tls-key FILE [--client-ca FILE [--client-id SPIFFE_ID]...] | --plaintext) (-f PATH... [--endpoint NS/NAME] | --endpoint NS/NAME --agent-socket PATH --port N...) [--access-log FILE|-|none]';

export const AUTHZ_SERVER_FLAGS: Flags = {
  listen: {
    kind: 'string',
    value: 'ADDR',
    help: 'host:port or unix:/path for the gRPC service (default 127.0.0.1:9191)',
  },
  'tls-cert': {
    kind: 'string',
    value: 'FILE',
    help: 'PEM server certificate (then intermediates) for TLS on the listener',
  },
  'tls-key': { kind: 'string', value: 'FILE', help: 'PEM private key of --tls-cert' },
  'client-ca': {
    kind: 'string',
    value: 'FILE',
    help: 'PEM CA(s): require client certificates they issued (mutual TLS from Envoy)',
  },
  'client-id': {
    kind: 'list',
    value: 'SPIFFE_ID',
    help: 'with --client-ca: only this client URI SAN may ask (repeatable)',
  },
  plaintext: {
    kind: 'boolean',
    help: 'serve TCP without TLS (a unix socket is plaintext without this flag)',
  },
  endpoint: {
    kind: 'string',
    value: 'NS/NAME',
    help: 'judge every request for this endpoint (default: by destination address)',
  },
  file: {
    kind: 'list',
    short: 'f',
    value: 'PATH',
    help: 'policy file or directory, watched for changes; repeatable',
  },
  'agent-socket': {
    kind: 'string',
    value: 'PATH',
    help: "the agent's policy-sync socket for --endpoint (instead of -f)",
  },
  port: {
    kind: 'list',
    value: 'N',
    help: "with --agent-socket: the endpoint's ports Envoy fronts (repeatable)",
  },
  'watch-interval': {
    kind: 'string',
    value: 'MS',
    help: 'how often -f inputs are checked for changes (default 1000; 0: never)',
  },
  'access-log': {
    kind: 'string',
    value: 'FILE',
    help: 'one JSON line per decision: a file, - (stdout, default) or none',
  },
  'drain-timeout': {
    kind: 'string',
    value: 'MS',
    help: 'on SIGTERM, time for Checks in flight to finish (default 5000)',
  },
  'trust-domain': {
    kind: 'string',
    value: 'TD',
    help: 'SPIFFE trust domain (default cluster.local)',
  },
  'istio-root-namespace': {
    kind: 'string',
    value: 'NS',
    help: 'Istio root namespace (default istio-system)',
  },
};

export const EXPORT_USAGE =
  'palisade export envoy-rbac --endpoint NS/NAME -f PATH... [--port N]... [-o yaml|json]';

export const EXPORT_FLAGS: Flags = {
  endpoint: { kind: 'string', value: 'NS/NAME', help: 'the endpoint Envoy stands in front of' },
  file: {
    kind: 'list',
    short: 'f',
    value: 'PATH',
    help: 'file, directory or - (stdin); repeatable',
  },
  port: {
    kind: 'list',
    value: 'N',
    help: "the endpoint's port Envoy serves (repeatable; default: its declared container ports)",
  },
  output: { kind: 'string', short: 'o', value: 'FORMAT', help: 'yaml (default) or json' },
  'trust-domain': {
    kind: 'string',
    value: 'TD',
    help: 'SPIFFE trust domain (default cluster.local)',
  },
  'istio-root-namespace': {
    kind: 'string',
    value: 'NS',
    help: 'Istio root namespace (default istio-system)',
  },
};

export async function authzServerCommand(p: Parsed, io: Io): Promise<number> {
  return (await import('./authz-server.js')).runAuthzServer(p, io);
}

export async function exportCommand(p: Parsed, io: Io): Promise<number> {
  return (await import('./export-envoy-rbac.js')).runExport(p, io);
}
