// `palisade sidecar`: the L7 enforcement point beside one workload, run inside the pod's network
// namespace (DESIGN §6). It gets its policy view and SVID from the agent's socket for the
// endpoint, then serves inbound mTLS, the outbound proxy and the admin endpoint; SIGTERM/SIGINT
// drain and stop. Owns: flags and signals. Must never: start listening without a view and SVID.

import type { Parsed } from './args.js';
import { UsageError } from './args.js';
import type { Io } from './input.js';
import { parseAppProtocols } from './sidecar-flags.js';

function port(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,5}$/.test(v) || Number(v) > 65535)
    throw new UsageError(`--${flag} ${JSON.stringify(v)} is not a port`);
  return Number(v);
}

export async function sidecarCommand(p: Parsed, io: Io): Promise<number> {
  const str = (k: string): string | undefined => p.values[k] as string | undefined;
  const endpoint = str('endpoint') ?? process.env.PALISADE_ENDPOINT;
  if (!endpoint || !/^[a-z0-9][-a-z0-9.]*\/[a-z0-9][-a-z0-9.]*$/.test(endpoint))
    throw new UsageError('sidecar needs --endpoint NAMESPACE/NAME');
  const appPortText = str('app-port');
  if (!appPortText) throw new UsageError('sidecar needs --app-port N[,N]');
  const appPorts = appPortText.split(',').map((x) => port(x, 'app-port') ?? 0);
  if (appPorts.some((x) => x < 1)) throw new UsageError('--app-port: ports are 1 to 65535');
  const drain = str('drain-seconds');
  const startTimeout = str('start-timeout');
  if (startTimeout !== undefined && !/^[0-9]{1,4}$/.test(startTimeout))
    throw new UsageError('--start-timeout must be a whole number of seconds');
  if (drain !== undefined && !/^[0-9]{1,4}$/.test(drain))
    throw new UsageError('--drain-seconds must be a whole number of seconds');
  const inboundPort = port(str('inbound-port'), 'inbound-port');
  const outboundPort = port(str('outbound-port'), 'outbound-port');
  const adminPort = port(str('admin-port'), 'admin-port');
  const upstreamPort = port(str('upstream-port'), 'upstream-port');
  const intercept = p.values['no-intercept'] !== true;
  const listed = p.values['app-protocol'];
  const appProtocols = parseAppProtocols(Array.isArray(listed) ? listed : [], appPorts);
  if (typeof appProtocols === 'string') throw new UsageError(appProtocols);
  const agentSocket = str('agent-socket');
  const inboundHost = str('inbound-host');

  const { DataplaneError, runSidecar } = await import('@palisade/dataplane/sidecar');
  const say = (l: string): void => void io.stderr.write(`${l}\n`);
  let sidecar: Awaited<ReturnType<typeof runSidecar>>;
  try {
    sidecar = await runSidecar({
      endpoint,
      appPorts,
      ...(agentSocket !== undefined ? { agentSocket } : {}),
      ...(inboundPort !== undefined ? { inboundPort } : {}),
      ...(outboundPort !== undefined ? { outboundPort } : {}),
      ...(adminPort !== undefined ? { adminPort } : {}),
      ...(inboundHost !== undefined ? { inboundHost } : {}),
      ...(upstreamPort !== undefined || !intercept
        ? { upstream: (ip: string) => ({ host: ip, port: upstreamPort ?? 15006 }) }
        : {}),
      intercept,
      appProtocols,
      accessLog: p.values['no-access-log'] === true ? false : process.stdout,
      flows: p.values['no-flows'] !== true,
      ...(startTimeout !== undefined ? { startTimeoutMs: Number(startTimeout) * 1000 } : {}),
      say,
    });
  } catch (e) {
    if (!(e instanceof DataplaneError)) throw e;
    io.stderr.write(`error ${e.code}: ${e.message}\n`);
    return 1;
  }
  await new Promise<void>((resolveStop) => {
    const stop = (sig: string): void => {
      say(`${sig}: draining`);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      void sidecar.close(Number(drain ?? '5') * 1000).then(() => {
        say('stopped');
        resolveStop();
      });
    };
    const onTerm = (): void => stop('SIGTERM');
    const onInt = (): void => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  return 0;
}
