// `palisade agent`: the node agent (DESIGN §5). Connects to the API server with the node's token,
// mirrors the resources, programs this node's endpoints into its nftables table, and serves the
// CNI socket. SIGTERM/SIGINT stop it and leave the rules in the kernel (the table is only
// removed by an explicit uninstall). Owns: flags, environment and signals. Must never: print the
// token or remove the table on exit.

import { readFileSync } from 'node:fs';
import type { Parsed } from './args.js';
import { UsageError } from './args.js';
import type { Io } from './input.js';
import { agentFlowFlags } from './node-flows-flags.js';

export async function agentCommand(p: Parsed, io: Io): Promise<number> {
  const sub = p.positionals[0];
  if (sub === 'status' || sub === 'describe') {
    const inspect = await import('./agent-inspect.js');
    if (sub === 'status') {
      if (p.positionals.length > 1)
        throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[1])}`);
      return inspect.agentStatusCommand(p, io);
    }
    if (p.positionals.length > 2)
      throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[2])}`);
    return inspect.agentDescribeCommand(p, io, p.positionals[1]);
  }
  if (sub !== undefined)
    throw new UsageError(`unknown agent subcommand ${JSON.stringify(sub)} (status, describe)`);
  const v = p.values;
  const env = process.env;
  const str = (k: string): string | undefined => v[k] as string | undefined;
  const node = str('node') ?? env.PALISADE_NODE;
  if (!node) throw new UsageError('agent needs --node NAME (or PALISADE_NODE)');
  const server = str('server') ?? env.PALISADE_SERVER;
  if (!server) throw new UsageError('agent needs --server URL (or PALISADE_SERVER)');
  const tokenFile = str('token-file');
  const token = tokenFile ? readFileSync(tokenFile, 'utf8').trim() : env.PALISADE_TOKEN;
  if (!token) throw new UsageError('agent needs --token-file FILE (or PALISADE_TOKEN)');
  const caFile = str('ca-file') ?? env.PALISADE_CA_FILE;
  const ca = caFile ? readFileSync(caFile, 'utf8') : undefined;
  if (new URL(server).protocol === 'https:' && ca === undefined)
    io.stderr.write(
      'warning: no --ca-file: the server certificate is checked against system CAs\n',
    );

  const flowFlags = agentFlowFlags(p);

  const dp = await import('@palisade/dataplane/agent');
  const table = str('table');
  const netns = str('netns');
  const agent = new dp.Agent({
    server,
    token,
    ...(ca !== undefined ? { ca } : {}),
    node,
    ...(table !== undefined ? { table } : {}),
    ...(netns !== undefined ? { netns } : {}),
    workloadInterfacePrefix: str('iface-prefix') ?? dp.HOST_VETH_PREFIX,
    say: (l) => io.stdout.write(`${l}\n`),
  });
  const socketPath = str('socket') ?? dp.DEFAULT_AGENT_SOCKET_PATH;
  io.stdout.write(
    `palisade agent: node ${node}, table inet ${agent.table}${netns ? ` in netns ${netns}` : ''}, server ${server}\n`,
  );
  const recordPath = str('endpoint-record') ?? dp.DEFAULT_RECORD_PATH;
  const record = recordPath === 'none' ? undefined : new dp.LocalEndpointRecord(recordPath);
  agent.start();
  const flows = flowFlags.enabled
    ? (await import('./agent-flows.js')).startAgentFlows(dp, agent, {
        server,
        token,
        ...(ca !== undefined ? { ca } : {}),
        ...(table !== undefined ? { table } : {}),
        ...(netns !== undefined ? { netns } : {}),
        ...(str('trust-domain') !== undefined ? { trustDomain: str('trust-domain') } : {}),
        recordPath,
        flags: flowFlags,
        io,
      })
    : undefined;
  let sock: Awaited<ReturnType<typeof dp.startAgentSocket>> | undefined;
  if (socketPath !== 'none') {
    sock = await dp.startAgentSocket({
      service: new dp.CniEndpointService({
        node,
        pods: new dp.AgentPodSource(agent),
        registry: new dp.ApiEndpointRegistry(agent, record ? { record } : {}),
      }),
      socketPath,
    });
    io.stdout.write(`CNI socket at ${sock.path}\n`);
  }
  const adminPath = str('admin-socket') ?? dp.DEFAULT_ADMIN_SOCKET_PATH;
  const admin =
    adminPath === 'none' ? undefined : await dp.startAdminSocket(agent.view(), adminPath);
  if (admin) io.stdout.write(`admin socket at ${admin.path}\n`);
  const socketDir = str('endpoint-sockets') ?? dp.DEFAULT_ENDPOINT_SOCKET_DIR;
  const intercept = interceptOptions(str('sidecar-uid'), str('intercept-other'));
  let sync: InstanceType<typeof dp.PolicySync> | undefined;
  let endpointSockets: InstanceType<typeof dp.EndpointSockets> | undefined;
  let stopIntercept: () => Promise<void> = () => Promise.resolve();
  if (socketDir !== 'none') {
    const trustDomain = str('trust-domain');
    sync = new dp.PolicySync(agent, {
      ...(trustDomain !== undefined ? { trustDomain } : {}),
      say: (l) => io.stdout.write(`${l}\n`),
    });
    // Transparent interception: the sidecars announce their listeners on their sockets.
    const ic = intercept
      ? new dp.InterceptionManager(agent, { ...intercept, say: (l) => io.stdout.write(`${l}\n`) })
      : undefined;
    stopIntercept = () => ic?.close() ?? Promise.resolve();
    endpointSockets = new dp.EndpointSockets({
      source: sync,
      dir: socketDir,
      ...(flows ? { flows: (ep: string, body: string) => flows.agentFlows.report(ep, body) } : {}),
      ...(ic ? { intercept: ic, owner: { uid: ic.sidecarUid, gid: ic.sidecarUid } } : {}),
      say: (l) => io.stdout.write(`${l}\n`),
    });
    await endpointSockets.start();
    io.stdout.write(`policy sync sockets under ${socketDir}\n`);
  }
  await new Promise<void>((resolveStop) => {
    const stop = (sig: string) => {
      io.stdout.write(`${sig}: stopping; the rules in table inet ${agent.table} stay in place\n`);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      sync?.close();
      void Promise.all([
        agent.stop(),
        sock?.close(),
        admin?.close(),
        endpointSockets?.close(),
        flows?.stop(),
        stopIntercept(),
      ]).then(() => resolveStop());
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  return 0;
}

/** `--sidecar-uid` and `--intercept-other` → the interception options, or none. */
function interceptOptions(
  uid: string | undefined,
  other: string | undefined,
): { sidecarUid: number; otherOutbound: 'pass' | 'reject' } | undefined {
  if (other !== undefined && other !== 'pass' && other !== 'reject')
    throw new UsageError('--intercept-other must be pass or reject');
  if (uid === 'none') return undefined;
  if (uid !== undefined && (!/^[0-9]{1,10}$/.test(uid) || Number(uid) < 1))
    throw new UsageError('--sidecar-uid must be a non-root uid (or none)');
  return { sidecarUid: uid === undefined ? 1337 : Number(uid), otherOutbound: other ?? 'pass' };
}
