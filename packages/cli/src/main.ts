// The `palisade` command: dispatch, help, and the mapping of errors to exit codes.
// Exit codes: 0 success (or allow), 1 failure found (errors in input, deny, failed checks),
// 2 usage or input error.

import { flagHelp, parseArgs, UsageError } from './args.js';
import { FLOWS_FLAGS, FLOWS_USAGE } from './flows-flags.js';
import {
  AUTHZ_SERVER_FLAGS,
  AUTHZ_SERVER_USAGE,
  authzServerCommand,
  EXPORT_FLAGS,
  EXPORT_USAGE,
  exportCommand,
} from './authz-flags.js';
import type { Flags } from './args.js';
import { SIDECAR_FLAGS, SIDECAR_USAGE } from './sidecar-flags.js';
import { AGENT_FLOWS_FLAGS, L7_FLOWS_FLAGS } from './node-flows-flags.js';
import {
  ADMIN_SOCKET_FLAG,
  AGENT_FLAGS,
  APPLY_FLAGS,
  AUDIT_FLAGS,
  CA_FLAGS,
  CA_USAGE,
  DELETE_FLAGS,
  DEMO_FLAGS,
  DEMO_USAGE,
  GET_FLAGS,
  INPUT_FLAGS,
  LOGIN_FLAGS,
  OUTPUT_FLAG,
  PROBE_FLAGS,
  SERVER_FLAGS,
  TOKEN_FLAGS,
} from './flags.js';
import { InputError } from './input.js';
import type { Io } from './input.js';

// Implementations are imported when their command runs, so that help, usage errors and light
// commands do not load the server, the CA or the engine.
const offline = () => import('./offline.js');
const online = () => import('./online/commands.js');

export const VERSION = '0.1.0';

interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly flags: Flags;
  readonly run: (p: ReturnType<typeof parseArgs>, io: Io) => Promise<number>;
  /** Takes positional arguments (KIND NAME ...). */
  readonly positionals?: boolean;
}

const HELP_FLAG: Flags = { help: { kind: 'boolean', short: 'h', help: 'show this help' } };

const COMMANDS: Readonly<Record<string, Command>> = {
  validate: {
    summary: 'check resources for errors (file:line:col: error CODE: message)',
    usage: 'palisade validate -f PATH... [-o table|json]',
    flags: { ...INPUT_FLAGS, ...OUTPUT_FLAG, ...HELP_FLAG },
    run: async (p, io) => (await offline()).validateCommand(p, io),
  },
  matrix: {
    summary: 'kernel reachability between every pair of pods',
    usage: 'palisade matrix -f PATH... [--port 80] [--protocol TCP|UDP|SCTP] [-o table|json|yaml]',
    flags: {
      ...INPUT_FLAGS,
      port: { kind: 'string', value: 'N', help: 'destination port (default 80)' },
      protocol: { kind: 'string', value: 'P', help: 'TCP (default), UDP or SCTP' },
      ...OUTPUT_FLAG,
      ...HELP_FLAG,
    },
    run: async (p, io) => (await offline()).matrixCommand(p, io),
  },
  check: {
    summary: 'judge one connection or request (exit 0 allow, 1 deny, 2 error)',
    usage:
      'palisade check -f PATH... --from A --to B --port N [--method M --path P ...] [-o table|json|yaml]\n       palisade check -f PATH... --probes FILE -o json',
    flags: { ...INPUT_FLAGS, ...PROBE_FLAGS, ...OUTPUT_FLAG, ...HELP_FLAG },
    run: async (p, io) => (await offline()).checkCommand(p, io, false),
  },
  explain: {
    summary: 'as check, as a readable trace of every policy consulted',
    usage: 'palisade explain -f PATH... --from A --to B --port N [...]',
    flags: { ...INPUT_FLAGS, ...PROBE_FLAGS, ...OUTPUT_FLAG, ...HELP_FLAG },
    run: async (p, io) => (await offline()).checkCommand(p, io, true),
  },
  selector: {
    summary: 'evaluate or format a Calico selector',
    usage:
      "palisade selector match 'EXPR' --labels '{\"k\":\"v\"}'\n       palisade selector match --jsonl < lines\n       palisade selector fmt 'EXPR'",
    flags: {
      labels: { kind: 'string', value: 'JSON', help: 'labels to match, as a JSON object' },
      jsonl: { kind: 'boolean', help: 'read {"selector","labels"} lines on stdin' },
      ...HELP_FLAG,
    },
    run: async (p, io) => (await offline()).selectorCommand(p, io),
  },
  ca: {
    summary: 'the certificate authority: init, import, inspect, bundle, rotate, issue',
    usage: CA_USAGE,
    flags: { ...CA_FLAGS, ...HELP_FLAG },
    positionals: true,
    run: async (p, io) => (await import('./ca.js')).caCommand(p, io),
  },
  cni: {
    summary: 'the CNI 1.0 plugin (CNI_COMMAND etc. in the environment, config on stdin)',
    usage:
      'CNI_COMMAND=ADD|DEL|CHECK|VERSION CNI_CONTAINERID=... CNI_NETNS=... CNI_IFNAME=... palisade cni < conf.json',
    flags: { ...HELP_FLAG },
    // Loaded on demand: a plugin run should not pay for the policy engine's modules.
    run: async (_p, io) => (await import('@palisade/dataplane/cni')).cniCommand(io),
  },
  agent: {
    summary: "the node agent: API resources to this node's nftables rules, and the CNI socket",
    usage:
      'palisade agent --node NAME --server URL --token-file F [--ca-file F] [--table NAME] [--netns NS] [--socket PATH] [--admin-socket PATH] [--flow-interval S] [--no-flows] [--metrics HOST:PORT]\n       palisade agent status [-o table|json|yaml]\n       palisade agent describe NS/POD|HOSTENDPOINT [-o table|json|yaml]',
    flags: { ...AGENT_FLAGS, ...AGENT_FLOWS_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await import('./agent.js')).agentCommand(p, io),
    positionals: true,
  },
  sidecar: {
    summary:
      'the L7 sidecar of one endpoint: policy and SVID from the agent, inbound mTLS, outbound proxy',
    usage: SIDECAR_USAGE,
    flags: { ...SIDECAR_FLAGS, ...L7_FLOWS_FLAGS, ...HELP_FLAG },
    // Loaded on demand: TLS, the engine and the proxies are not needed by other commands.
    run: async (p, io) => (await import('./sidecar.js')).sidecarCommand(p, io),
  },
  'authz-server': {
    summary: "Envoy's ext_authz v3 over gRPC, judging with the same L7 decision as the sidecar",
    usage: AUTHZ_SERVER_USAGE,
    flags: { ...AUTHZ_SERVER_FLAGS, ...L7_FLOWS_FLAGS, ...HELP_FLAG },
    run: authzServerCommand,
  },
  export: {
    summary: "print an endpoint's L7 policy as Envoy configuration (export envoy-rbac)",
    usage: EXPORT_USAGE,
    flags: { ...EXPORT_FLAGS, ...HELP_FLAG },
    positionals: true,
    run: exportCommand,
  },
  demo: {
    summary: "the source documents' scenarios played for real as root (what npm start runs)",
    usage: DEMO_USAGE,
    flags: { ...DEMO_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await import('./demo/index.js')).demoCommand(p, io),
  },
  server: {
    summary: 'run the API server (HTTPS, tokens and client certificates, RBAC, audit log)',
    usage:
      'palisade server [--listen 127.0.0.1:9443] [--data-dir ./palisade-data] [--store URL] [--insecure-plaintext]',
    flags: { ...SERVER_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).serverCommand(p, io),
  },
  login: {
    summary: 'save a connection context (server, token, CA) for the online commands',
    usage: 'palisade login --server URL --token-file F [--ca-file F] [--name CONTEXT]',
    flags: { ...LOGIN_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).loginCommand(p, io),
  },
  apply: {
    summary: 'apply resources to the server, all or nothing (--dry-run: the connectivity diff)',
    usage: 'palisade apply -f FILE... [--dry-run] [-o json]',
    flags: { ...APPLY_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).applyCommand(p, io),
  },
  get: {
    summary: 'list or read resources on the server',
    usage: 'palisade get KIND [NAME] [-n NS|-A] [-o yaml|json|wide]',
    flags: { ...GET_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).getCommand(p, io),
    positionals: true,
  },
  describe: {
    summary: 'show one resource in detail, with its recent history',
    usage:
      'palisade describe KIND NAME [-n NS]\n       palisade describe endpoint NS/POD|HOSTENDPOINT [-o table|json|yaml]   (asks the local agent)',
    flags: { ...GET_FLAGS, ...ADMIN_SOCKET_FLAG, ...HELP_FLAG },
    run: async (p, io) =>
      p.positionals[0] === 'endpoint'
        ? (await import('./agent-inspect.js')).agentDescribeCommand(p, io, p.positionals[1])
        : (await online()).describeCommand(p, io),
    positionals: true,
  },
  delete: {
    summary: 'delete resources on the server',
    usage: 'palisade delete KIND NAME... [-n NS] [--resource-version N]',
    flags: { ...DELETE_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).deleteCommand(p, io),
    positionals: true,
  },
  label: {
    summary: 'set (k=v) or remove (k-) labels of a resource',
    usage: 'palisade label KIND NAME k=v... [k-] [-n NS] [--resource-version N]',
    flags: { ...DELETE_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).labelCommand(p, io),
    positionals: true,
  },
  audit: {
    summary: 'read the audit log (audit verify: check its hash chain)',
    usage:
      'palisade audit [-o json] [--user U --kind K --name N --since T --refused]\n       palisade audit verify',
    flags: { ...AUDIT_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).auditCommand(p, io),
    positionals: true,
  },
  flows: {
    summary: 'flow records with the rule that decided each (--follow: live)',
    usage: FLOWS_USAGE,
    flags: { ...FLOWS_FLAGS, ...HELP_FLAG },
    positionals: true,
    run: async (p, io) => (await import('./flows.js')).flowsCommand(p, io),
  },
  token: {
    summary: 'mint a bearer token for a user or a node (shown once)',
    usage: 'palisade token create --user U | --node N [--group G]... [--ttl 24h]',
    flags: { ...TOKEN_FLAGS, ...HELP_FLAG },
    run: async (p, io) => (await online()).tokenCommand(p, io),
    positionals: true,
  },
};

// Wide enough for the longest command name and two spaces.
const NAME_WIDTH = Math.max(10, ...Object.keys(COMMANDS).map((n) => n.length + 2));

function mainHelp(): string {
  const rows = Object.entries(COMMANDS)
    .map(([n, c]) => `  ${n.padEnd(NAME_WIDTH)}${c.summary}`)
    .join('\n');
  return `palisade ${VERSION} — one policy from L3 to L7, enforced in the kernel and beside every workload

usage: palisade COMMAND [flags]

commands:
${rows}

Run palisade COMMAND --help for a command's flags. Reference: docs/cli.md
`;
}

function commandHelp(name: string, c: Command): string {
  return `palisade ${name} — ${c.summary}\n\nusage: ${c.usage}\n\nflags:\n${flagHelp(c.flags)}\n`;
}

function defaultIo(): Io {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    },
  };
}

export async function main(argv: readonly string[], io: Io = defaultIo()): Promise<number> {
  const [name, ...rest] = argv;
  // A container runtime runs the plugin by its `type` ("palisade") with no arguments.
  if (name === undefined && process.env['CNI_COMMAND'] !== undefined)
    return (await import('@palisade/dataplane/cni')).cniCommand(io);
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? rest[0] : undefined;
    const c = topic ? COMMANDS[topic] : undefined;
    io.stdout.write(c && topic ? commandHelp(topic, c) : mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === 'version') {
    io.stdout.write(`palisade ${VERSION}\n`);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    const { suggest } = await import('@palisade/core');
    const near = suggest(name, Object.keys(COMMANDS));
    io.stderr.write(
      `error CLI_ERR_USAGE: unknown command ${JSON.stringify(name)}${near ? `; did you mean ${near}?` : ''}\n\n${mainHelp()}`,
    );
    return 2;
  }
  try {
    const parsed = parseArgs(rest, cmd.flags);
    if (parsed.values.help) {
      io.stdout.write(commandHelp(name, cmd));
      return 0;
    }
    if (name !== 'selector' && !cmd.positionals && parsed.positionals.length > 0)
      throw new UsageError(
        `unexpected argument ${JSON.stringify(parsed.positionals[0])} (inputs go after -f)`,
      );
    return await cmd.run(parsed, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`error CLI_ERR_USAGE: ${e.message}\nusage: ${cmd.usage}\n`);
      return 2;
    }
    if (e instanceof InputError) {
      io.stderr.write(`error CLI_ERR_FILE: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
