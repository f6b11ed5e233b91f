// The flag tables and usage texts of every command, apart from their implementations, so that
// `palisade --help` and argument parsing load no server, engine, TLS or X.509 module (main.ts
// imports each command's implementation only when that command runs).
// Owns: flag names, value names and help lines. Must never: import a heavy module.

import type { Flags } from './args.js';

/** The CA's default data directory; `@palisade/pki` exports the same value (a test checks). */
export const CA_DEFAULT_DATA_DIR = './palisade-data';

export const INPUT_FLAGS: Flags = {
  file: {
    kind: 'list',
    short: 'f',
    value: 'PATH',
    help: 'file, directory or - (stdin); repeatable',
  },
  'istio-root-namespace': {
    kind: 'string',
    value: 'NS',
    help: 'Istio root namespace (default istio-system)',
  },
};

export const OUTPUT_FLAG: Flags = {
  output: { kind: 'string', short: 'o', value: 'FORMAT', help: 'table (default), json or yaml' },
};

export const PROBE_FLAGS: Flags = {
  from: { kind: 'string', value: 'A', help: 'source: namespace/name, host endpoint name or IP' },
  to: { kind: 'string', value: 'B', help: 'destination: namespace/name, host endpoint name or IP' },
  port: { kind: 'string', value: 'N', help: 'destination port' },
  protocol: {
    kind: 'string',
    value: 'P',
    help: 'TCP (default), UDP, SCTP, ICMP, ICMPv6 or a number',
  },
  'icmp-type': { kind: 'string', value: 'T', help: 'ICMP type' },
  'icmp-code': { kind: 'string', value: 'C', help: 'ICMP code' },
  method: { kind: 'string', value: 'M', help: 'HTTP method (makes the probe an HTTP request)' },
  path: { kind: 'string', value: 'P', help: 'HTTP path' },
  host: { kind: 'string', value: 'H', help: 'HTTP host (authority)' },
  header: { kind: 'list', value: 'K:V', help: 'HTTP header; repeatable' },
  principal: {
    kind: 'string',
    value: 'SPIFFE-ID',
    help: 'simulate a presented certificate (e.g. a stolen one)',
  },
  'no-mtls': { kind: 'boolean', help: 'a plaintext client' },
  sni: { kind: 'string', value: 'NAME', help: 'TLS server name' },
  'remote-ip': { kind: 'string', value: 'IP', help: 'original client address (X-Forwarded-For)' },
  http2: { kind: 'boolean', help: 'an HTTP/2 request' },
  'via-in': {
    kind: 'string',
    value: 'HEP',
    help: 'host endpoint the traffic is forwarded in through (destination node)',
  },
  'via-out': {
    kind: 'string',
    value: 'HEP',
    help: 'host endpoint the traffic is forwarded out through (source node)',
  },
  probes: {
    kind: 'string',
    value: 'FILE',
    help: 'many probes, one JSON object a line (- for stdin)',
  },
};

export const CONNECTION_FLAGS: Flags = {
  server: {
    kind: 'string',
    value: 'URL',
    help: 'API server, e.g. https://127.0.0.1:9443 (or PALISADE_SERVER)',
  },
  'token-file': {
    kind: 'string',
    value: 'FILE',
    help: 'file holding a bearer token (or PALISADE_TOKEN)',
  },
  'ca-file': {
    kind: 'string',
    value: 'FILE',
    help: "CA bundle of the server's certificate (or PALISADE_CA_FILE)",
  },
  context: {
    kind: 'string',
    value: 'NAME',
    help: 'saved context to use (default: the current one)',
  },
};

export const NS_FLAGS: Flags = {
  namespace: { kind: 'string', short: 'n', value: 'NS', help: 'namespace (default: default)' },
  'all-namespaces': { kind: 'boolean', short: 'A', help: 'every namespace' },
};

export const GET_FLAGS: Flags = {
  ...CONNECTION_FLAGS,
  ...NS_FLAGS,
  output: {
    kind: 'string',
    short: 'o',
    value: 'FORMAT',
    help: 'table (default), wide, yaml or json',
  },
};

export const LOGIN_FLAGS: Flags = {
  server: CONNECTION_FLAGS.server as Flags[string],
  'token-file': CONNECTION_FLAGS['token-file'] as Flags[string],
  'ca-file': CONNECTION_FLAGS['ca-file'] as Flags[string],
  name: { kind: 'string', value: 'NAME', help: 'context name (default: default)' },
};

export const APPLY_FLAGS: Flags = {
  ...CONNECTION_FLAGS,
  file: {
    kind: 'list',
    short: 'f',
    value: 'PATH',
    help: 'file, directory or - (stdin); repeatable; applied as one all-or-nothing change',
  },
  'dry-run': { kind: 'boolean', help: 'validate and show the connectivity diff; write nothing' },
  output: { kind: 'string', short: 'o', value: 'FORMAT', help: 'table (default) or json' },
};

export const DELETE_FLAGS: Flags = {
  ...CONNECTION_FLAGS,
  namespace: NS_FLAGS.namespace as Flags[string],
  'resource-version': {
    kind: 'string',
    value: 'N',
    help: 'only if the object is still at this resourceVersion',
  },
};

export const AUDIT_FLAGS: Flags = {
  ...CONNECTION_FLAGS,
  user: { kind: 'string', value: 'U', help: 'only entries by this user or node name' },
  kind: { kind: 'string', value: 'K', help: 'only entries about this kind' },
  name: { kind: 'string', value: 'N', help: 'only entries about this object name' },
  since: {
    kind: 'string',
    value: 'T',
    help: 'only entries since T (ISO time, or a duration like 30m, 2h, 7d)',
  },
  refused: { kind: 'boolean', help: 'only refused attempts' },
  limit: { kind: 'string', value: 'N', help: 'at most the N newest entries (default 1000)' },
  output: { kind: 'string', short: 'o', value: 'FORMAT', help: 'table (default) or json' },
};

export const TOKEN_FLAGS: Flags = {
  ...CONNECTION_FLAGS,
  user: { kind: 'string', value: 'U', help: 'a token for this user' },
  node: {
    kind: 'string',
    value: 'N',
    help: 'a node credential for this node (palisade agent --node N)',
  },
  group: { kind: 'list', value: 'G', help: 'group of the token; repeatable' },
  ttl: { kind: 'string', value: 'DURATION', help: 'expiry, e.g. 24h or 30d (default: none)' },
  output: {
    kind: 'string',
    short: 'o',
    value: 'FORMAT',
    help: 'token (default: just the token) or json',
  },
};

export const SERVER_FLAGS: Flags = {
  listen: { kind: 'string', value: 'HOST:PORT', help: 'listen address (default 127.0.0.1:9443)' },
  'data-dir': { kind: 'string', value: 'DIR', help: 'data directory (default ./palisade-data)' },
  store: { kind: 'string', value: 'URL', help: 'store: memory:, sqlite:PATH or etcd://H:P[,H:P]' },
  'insecure-plaintext': { kind: 'boolean', help: 'serve plain HTTP (loopback addresses only)' },
  'ca-passphrase-file': {
    kind: 'string',
    value: 'FILE',
    help: 'passphrase of an encrypted CA key (palisade ca init --passphrase-file)',
  },
};

export const AGENT_FLAGS: Flags = {
  node: { kind: 'string', value: 'NAME', help: "this node's name (or PALISADE_NODE)" },
  server: { kind: 'string', value: 'URL', help: 'API server (or PALISADE_SERVER)' },
  'token-file': {
    kind: 'string',
    value: 'FILE',
    help: 'node token file, from palisade token create --node NAME (or PALISADE_TOKEN)',
  },
  'ca-file': {
    kind: 'string',
    value: 'FILE',
    help: "CA bundle of the server's certificate (or PALISADE_CA_FILE)",
  },
  table: {
    kind: 'string',
    value: 'NAME',
    help: 'owned nftables table, family inet (default palisade)',
  },
  netns: { kind: 'string', value: 'NS', help: 'apply inside this network namespace' },
  socket: {
    kind: 'string',
    value: 'PATH',
    help: 'CNI socket (default /run/palisade/agent.sock; "none" to not serve it)',
  },
  'endpoint-sockets': {
    kind: 'string',
    value: 'DIR',
    help: 'policy sync and SVID sockets, one per local endpoint (default /run/palisade/endpoints; "none")',
  },
  'trust-domain': {
    kind: 'string',
    value: 'TD',
    help: 'SPIFFE trust domain of the identities (default cluster.local)',
  },
  'admin-socket': {
    kind: 'string',
    value: 'PATH',
    help: 'read-only admin socket for status/describe (default /run/palisade/agent-admin.sock; "none" to not serve it)',
  },
  'endpoint-record': {
    kind: 'string',
    value: 'FILE',
    help: 'local record of CNI attachments, re-asserted in the API after an outage (default /var/lib/palisade/endpoints.json; "none": registration needs the API)',
  },
  output: {
    kind: 'string',
    short: 'o',
    value: 'FORMAT',
    help: 'agent status / describe: table (default), json or yaml',
  },
  'iface-prefix': {
    kind: 'string',
    value: 'P',
    help: 'workload interface prefix: unprogrammed ones are dropped (default: the CNI plugin prefix)',
  },
  'sidecar-uid': {
    kind: 'string',
    value: 'UID',
    help: 'uid the sidecars run under: their sockets are exempt from interception (default 1337; "none": no interception)',
  },
  'intercept-other': {
    kind: 'string',
    value: 'pass|reject',
    help: 'intercepted pods: outbound TCP to destinations not redirected goes to the kernel policy (pass, default) or is reset (reject)',
  },
};

/** Flags of `palisade describe endpoint` added to the online describe's. */
export const ADMIN_SOCKET_FLAG: Flags = {
  'admin-socket': {
    kind: 'string',
    value: 'PATH',
    help: "describe endpoint: the local agent's admin socket (default /run/palisade/agent-admin.sock)",
  },
};

export const CA_USAGE = `palisade ca init [--trust-domain cluster.local] [--passphrase-file F] [--data-dir D]
       palisade ca import --cert inter.pem --key inter.key --chain root.pem [--key-passphrase-file F] [--overlap 24h]
       palisade ca inspect [-o table|json]
       palisade ca bundle
       palisade ca rotate [--overlap 24h] [--activate-after DURATION]
       palisade ca issue --id spiffe://TD/ns/N/sa/S --out-dir D [--ttl 24h]
       (every subcommand takes --data-dir DIR, default ./palisade-data, and --passphrase-file F)`;

export const CA_FLAGS: Flags = {
  'data-dir': {
    kind: 'string',
    value: 'DIR',
    help: `data directory (default ${CA_DEFAULT_DATA_DIR})`,
  },
  'passphrase-file': {
    kind: 'string',
    value: 'F',
    help: 'file holding the passphrase of the CA keys (encrypts them at init/import)',
  },
  'trust-domain': {
    kind: 'string',
    value: 'TD',
    help: 'trust domain (init, import; default cluster.local)',
  },
  cert: { kind: 'string', value: 'FILE', help: 'import: the intermediate certificate (PEM)' },
  key: { kind: 'string', value: 'FILE', help: 'import: the intermediate private key (PEM)' },
  chain: {
    kind: 'string',
    value: 'FILE',
    help: 'import: the certificates above it, root last (PEM)',
  },
  'key-passphrase-file': {
    kind: 'string',
    value: 'F',
    help: 'import: passphrase of the imported key, when encrypted',
  },
  overlap: {
    kind: 'string',
    value: 'DURATION',
    help: 'rotate, import: old and new trusted together (default 24h)',
  },
  'activate-after': {
    kind: 'string',
    value: 'DURATION',
    help: 'rotate: when the new root starts signing (default half the overlap)',
  },
  id: { kind: 'string', value: 'SPIFFE-ID', help: 'issue: spiffe://TD/ns/N/sa/S' },
  'out-dir': {
    kind: 'string',
    value: 'DIR',
    help: 'issue: where cert.pem, key.pem and chain.pem go',
  },
  ttl: {
    kind: 'string',
    value: 'DURATION',
    help: 'issue: certificate lifetime (default 24h, at most 90d)',
  },
  output: { kind: 'string', short: 'o', value: 'FORMAT', help: 'inspect: table (default) or json' },
};

export const DEMO_FLAGS: Flags = {
  json: {
    kind: 'boolean',
    help: 'print the checks as JSON (last line); exits after the checks, as --no-wait',
  },
  simulate: {
    kind: 'boolean',
    help: 'play the story on the decision engine alone (no root needed, nothing is started)',
  },
  'no-wait': {
    kind: 'boolean',
    help: 'exit after the report instead of keeping the control plane running',
  },
  serve: {
    kind: 'boolean',
    help: 'with --json: keep serving after the checks (a {"console":…} line follows them)',
  },
};

export const DEMO_USAGE = 'palisade demo [--json [--serve]] [--no-wait] [--simulate]';
