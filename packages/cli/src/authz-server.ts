// `palisade authz-server`: flags and signals around the dataplane's ext_authz server. Progress
// goes to stderr, the access log (one JSON line per decision) to stdout or a file. SIGTERM and
// SIGINT stop accepting, let Checks in flight finish (`--drain-timeout`), print the counters and
// exit 0. Owns: argv → options. Must never: start without a policy source (an empty server
// would deny everything silently). With --agent-socket the policy is the agent's feed for the
// endpoint, as the sidecar gets it.

import { createWriteStream, readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { AccessLog, AgentSource, AuthzServer, FileSource } from '@palisade/dataplane/authz';
import type { ListenerSecurity } from '@palisade/dataplane/authz';
import { L7FlowReporter } from '@palisade/dataplane/flows';
import { UsageError } from './args.js';
import type { Parsed } from './args.js';
import type { Io } from './input.js';

function intFlag(v: unknown, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 86_400_000)
    throw new UsageError(`--${name} must be a number of milliseconds`);
  return n;
}

export function parseListen(s: string): string {
  if (s.startsWith('unix:')) {
    if (s.length <= 5) throw new UsageError('--listen unix: needs a path');
    return s;
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new UsageError(`--listen ${JSON.stringify(s)}: expected HOST:PORT or unix:PATH`);
  return s;
}

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`--${flag} ${JSON.stringify(path)}: ${(e as Error).message}`);
  }
}

/**
 * The listener's security from the flags: TLS with --tls-cert and --tls-key (mutual with
 * --client-ca), plaintext only with --plaintext or on a unix socket. Secure by default: a TCP
 * listener without either is a usage error.
 */
export function listenerSecurity(
  v: Readonly<Record<string, unknown>>,
  listen: string,
): ListenerSecurity | undefined {
  const cert = v['tls-cert'] as string | undefined;
  const key = v['tls-key'] as string | undefined;
  const ca = v['client-ca'] as string | undefined;
  const ids = (v['client-id'] as string[] | undefined) ?? [];
  const plaintext = v['plaintext'] === true;
  const tls = cert !== undefined || key !== undefined;
  if (plaintext && (tls || ca !== undefined || ids.length > 0))
    throw new UsageError('--plaintext excludes --tls-cert, --tls-key, --client-ca and --client-id');
  if (plaintext) return { kind: 'plaintext' };
  if (!tls) {
    if (ca !== undefined || ids.length > 0)
      throw new UsageError('--client-ca and --client-id need --tls-cert and --tls-key');
    if (listen.startsWith('unix:')) return undefined;
    throw new UsageError(
      `--listen ${listen} is TCP: give --tls-cert FILE --tls-key FILE (add --client-ca FILE for mutual TLS), or --plaintext to serve without TLS`,
    );
  }
  if (cert === undefined || key === undefined)
    throw new UsageError('--tls-cert and --tls-key go together');
  if (ids.length > 0 && ca === undefined) throw new UsageError('--client-id needs --client-ca');
  return {
    kind: 'tls',
    certChainPem: readPem(cert, 'tls-cert'),
    keyPem: readPem(key, 'tls-key'),
    ...(ca !== undefined ? { clientCaPem: readPem(ca, 'client-ca') } : {}),
    ...(ids.length > 0 ? { clientIds: ids } : {}),
  };
}

export async function runAuthzServer(p: Parsed, io: Io): Promise<number> {
  const v = p.values;
  const files = (v['file'] as string[] | undefined) ?? [];
  const agentSocket = v['agent-socket'] as string | undefined;
  if (files.length > 0 && agentSocket !== undefined)
    throw new UsageError('give either -f PATH... or --agent-socket PATH, not both');
  if (files.length === 0 && agentSocket === undefined)
    throw new UsageError('authz-server needs -f PATH... or --agent-socket PATH');
  if (files.includes('-'))
    throw new UsageError('-f - (stdin) cannot be watched; give files or directories');
  const endpoint = v['endpoint'] as string | undefined;
  if (endpoint !== undefined && !/^[^/\s]+\/[^/\s]+$/.test(endpoint))
    throw new UsageError(`--endpoint ${JSON.stringify(endpoint)}: expected NAMESPACE/NAME`);
  const ports = ((v['port'] as string[] | undefined) ?? []).map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1 || n > 65535)
      throw new UsageError(`--port ${JSON.stringify(x)} is not a port number`);
    return n;
  });
  if (agentSocket !== undefined && endpoint === undefined)
    throw new UsageError(
      "--agent-socket needs --endpoint NS/NAME (the agent's socket serves one endpoint)",
    );
  if (agentSocket !== undefined && ports.length === 0)
    throw new UsageError('--agent-socket needs --port N (the ports Envoy fronts; repeatable)');
  if (agentSocket === undefined && ports.length > 0)
    throw new UsageError('--port goes with --agent-socket');
  const listen = parseListen((v['listen'] as string | undefined) ?? '127.0.0.1:9191');
  const listener = listenerSecurity(v, listen);
  const interval = intFlag(v['watch-interval'], 'watch-interval', 1000);
  const drain = intFlag(v['drain-timeout'], 'drain-timeout', 5000);
  const logTo = (v['access-log'] as string | undefined) ?? '-';
  const out =
    logTo === 'none'
      ? undefined
      : logTo === '-'
        ? new Writable({
            write(chunk: Buffer, _e, cb) {
              io.stdout.write(chunk.toString('utf8'));
              cb();
            },
          })
        : createWriteStream(logTo, { flags: 'a', mode: 0o640 });
  const say = (l: string): void => void io.stderr.write(`authz-server: ${l}\n`);
  const trustDomain = v['trust-domain'] as string | undefined;
  const root = v['istio-root-namespace'] as string | undefined;
  const log = new AccessLog(out);
  // With the agent's socket, every decision also goes to the agent as a flow record (it ships
  // them with the node's credential); with -f there is no agent: the access log is the record.
  const reporter =
    agentSocket !== undefined && endpoint !== undefined && v['no-flows'] !== true
      ? new L7FlowReporter({ socketPath: agentSocket, endpoint, say })
      : undefined;
  if (reporter) log.onRecord((r) => reporter.record(r));
  const server = new AuthzServer({
    source:
      agentSocket !== undefined && endpoint !== undefined
        ? new AgentSource({ socketPath: agentSocket, endpoint, ports, say })
        : new FileSource({ paths: files, intervalMs: interval }),
    log,
    notify: say,
    ...(endpoint !== undefined ? { endpoint } : {}),
    ...(trustDomain !== undefined ? { trustDomain } : {}),
    ...(root !== undefined ? { istioRootNamespace: root } : {}),
    ...(listener !== undefined ? { listener } : {}),
  });
  let port: number;
  try {
    port = await server.start(listen);
  } catch (e) {
    const code = (e as { code?: unknown }).code === 'AUTHZ_ERR_TLS' ? 'AUTHZ_ERR_TLS' : undefined;
    io.stderr.write(
      code !== undefined
        ? `error ${code}: ${(e as Error).message}\n`
        : `error AUTHZ_ERR_LISTEN: cannot listen on ${listen}: ${(e as Error).message}\n`,
    );
    await server.close(0);
    return 2;
  }
  reporter?.start();
  const where = listen.startsWith('unix:') ? listen : listen.replace(/:\d+$/, `:${port}`);
  const st = server.views.status();
  say(
    `listening on ${where} (envoy.service.auth.v3.Authorization/Check, ${server.listenerDescription}), ${endpoint !== undefined ? `endpoint ${endpoint}` : `${st.endpoints.length} endpoint view(s), chosen by destination address`}, policy from ${agentSocket !== undefined ? `the agent at ${agentSocket}` : `${files.join(', ')}${interval > 0 ? ' (watched)' : ''}`}`,
  );
  if (st.endpoints.length === 0) say('no policy view yet: every Check is denied until one builds');
  await new Promise<void>((resolveStop) => {
    const stop = (sig: string): void => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      say(`${sig}: draining (up to ${drain} ms)`);
      void server.close(drain).then(async () => {
        await reporter?.stop();
        const s = server.stats();
        say(
          `stopped: ${s.checks} check(s), ${s.counters.allowed} allowed, ${s.counters.denied} denied, ${s.counters.errors} error(s)`,
        );
        out?.end();
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
