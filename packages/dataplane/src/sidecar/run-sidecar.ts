// `runSidecar(options)`: the whole L7 enforcement point of one endpoint, as `palisade sidecar`
// runs it inside the pod's network namespace (docs/design/sidecar.md, "Running a sidecar"). It
// connects to the agent's socket for this endpoint, waits for the first policy view and the
// first SVID (key made here), then starts one inbound listener per application port, the
// outbound proxy and the admin endpoint; views are swapped in as the agent pushes them, the SVID
// is renewed before expiry and the trust bundle follows the CA.
// Owns: the wiring and the start/stop order. Must never: start a listener before it has both a
// view and an SVID (fail closed), or drop the last view when the agent goes away (fail static).

import type { Writable } from 'node:stream';
import { DataplaneError } from '../errors.js';
import {
  DEFAULT_ENDPOINT_SOCKET_DIR,
  endpointSocketPath,
  splitEndpoint,
} from '../agent-socket/protocol.js';
import { L7FlowReporter } from '../flows/l7-reporter.js';
import { AccessLog } from './access-log.js';
import type { SidecarCounters } from './access-log.js';
import { AdminServer } from './admin.js';
import { AgentLink } from './agent-link.js';
import type { AgentLinkStatus } from './agent-link.js';
import { credentialProblem } from './credentials.js';
import type { Credentials } from './credentials.js';
import { InboundSidecar } from './inbound.js';
import { InterceptionLink } from './interception.js';
import type { InterceptionLinkStatus } from './interception.js';
import { inboundAppProtocol, isL4Protocol } from './app-protocol.js';
import type { AppProtocolName } from './app-protocol.js';
import { OutboundProxy } from './outbound.js';
import type { HolderStatus, PolicyViewHolder } from './policy-view.js';
import { SvidRotation } from './svid-rotation.js';
import { TcpInboundSidecar } from './tcp-inbound.js';
import { TcpOutbound, splitOutbound } from './tcp-outbound.js';
import type { SvidRotationStatus } from './svid-rotation.js';

export interface SidecarOptions {
  /** `namespace/name` of the endpoint this sidecar stands beside. */
  readonly endpoint: string;
  /** Default `/run/palisade/endpoints/<namespace>/<name>/agent.sock`. */
  readonly agentSocket?: string;
  /** The application's ports on `appHost`, as policies name them (1–16). */
  readonly appPorts: readonly number[];
  readonly appHost?: string;
  readonly inboundHost?: string;
  /** Inbound listener of `appPorts[0]`; `appPorts[i]` gets `inboundPort + i` (default 15006). */
  readonly inboundPort?: number;
  readonly outboundHost?: string;
  /** Default 15001. */
  readonly outboundPort?: number;
  /** Admin endpoint on 127.0.0.1 (default 15000). */
  readonly adminPort?: number;
  readonly sourceAddress?: string;
  readonly upstream?: (
    ip: string,
    port: number,
  ) => { readonly host: string; readonly port: number };
  /** JSON access lines (default process.stdout; false: none). */
  readonly accessLog?: Writable | false;
  readonly say?: (line: string) => void;
  /** Time to wait for the first view and SVID (default 30 s). */
  readonly startTimeoutMs?: number;
  /** Renew the SVID at this fraction of its lifetime (default: half life ± 10 %). */
  readonly renewalFraction?: number;
  /** Lifetime to ask for (default: the CA's). */
  readonly svidTtlSeconds?: number;
  /**
   * Hand every L7 decision to the agent's socket as a flow record (default true); false: the
   * decisions are only counted on /metrics.
   */
  readonly flows?: boolean;
  /**
   * Transparent interception: keep a loopback listener per destination the view allows and
   * announce every listener to the agent, which redirects the pod's traffic to them. Peers are
   * then reached on their own address and port (their inbound redirect leads to their sidecar)
   * unless `upstream` says otherwise. Default off.
   */
  readonly intercept?: boolean | { readonly uid?: number; readonly firstOutboundPort?: number };
  /** What the application speaks on each port (default http). */
  readonly appProtocols?: Readonly<Record<number, AppProtocolName>>;
}

export interface SidecarStatus {
  readonly endpoint: string;
  readonly policy: HolderStatus;
  readonly agent: AgentLinkStatus;
  readonly svid: SvidRotationStatus;
  readonly inbound: SidecarCounters;
  readonly outbound: SidecarCounters;
  readonly interception: InterceptionLinkStatus | undefined;
}

export interface RunningSidecar {
  readonly endpoint: string;
  readonly identity: string;
  readonly inbound: readonly { readonly appPort: number; readonly port: number }[];
  readonly outboundPort: number;
  readonly adminPort: number;
  /** The view holder (tests and embedders read `current`). */
  readonly policy: PolicyViewHolder;
  status(): SidecarStatus;
  /** Renews the SVID now. */
  rotateNow(): Promise<void>;
  /** Stops accepting, lets requests in flight finish (up to `drainMs`, default 5 s), closes. */
  close(drainMs?: number): Promise<void>;
}

function checkPort(n: number, what: string, allowZero: boolean): void {
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1) || n > 65535)
    throw new DataplaneError('DATAPLANE_ERR_INVALID_NAME', `${what} ${n} is not a port`);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => {
      reject(
        new DataplaneError('DATAPLANE_ERR_SIDECAR_START', `${what} did not arrive within ${ms} ms`),
      );
    }, ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

function sumCounters(list: readonly SidecarCounters[]): SidecarCounters {
  const out: SidecarCounters = {
    allowed: 0,
    denied: 0,
    deniedBy: {},
    refusedConnections: 0,
    errors: 0,
  };
  for (const c of list) {
    out.allowed += c.allowed;
    out.denied += c.denied;
    out.refusedConnections += c.refusedConnections;
    out.errors += c.errors;
    for (const [k, v] of Object.entries(c.deniedBy)) out.deniedBy[k] = (out.deniedBy[k] ?? 0) + v;
  }
  return out;
}

/** Starts the sidecar; rejects (with everything it started closed) when it cannot. */
export async function runSidecar(o: SidecarOptions): Promise<RunningSidecar> {
  const parts = splitEndpoint(o.endpoint);
  if (!parts)
    throw new DataplaneError(
      'DATAPLANE_ERR_INVALID_NAME',
      `--endpoint ${JSON.stringify(o.endpoint)} is not namespace/name`,
    );
  if (o.appPorts.length < 1 || o.appPorts.length > 16)
    throw new DataplaneError('DATAPLANE_ERR_INVALID_NAME', 'give 1 to 16 application ports');
  const inboundPort = o.inboundPort ?? 15006;
  const outboundPort = o.outboundPort ?? 15001;
  const adminPort = o.adminPort ?? 15000;
  o.appPorts.forEach((p) => checkPort(p, 'application port', false));
  const l4Ports = new Set(o.appPorts.filter((p) => isL4Protocol(o.appProtocols?.[p] ?? 'http')));
  const protocols = new Map(
    o.appPorts
      .filter((p) => !l4Ports.has(p))
      .map((p) => [p, inboundAppProtocol(o.appProtocols?.[p] ?? 'http', p)] as const),
  );
  for (const p of Object.keys(o.appProtocols ?? {}))
    if (!o.appPorts.includes(Number(p)))
      throw new DataplaneError(
        'DATAPLANE_ERR_INVALID_NAME',
        `an application protocol is given for port ${p}, which is not an application port`,
      );
  const intercept = o.intercept ? (o.intercept === true ? {} : o.intercept) : undefined;
  checkPort(inboundPort, 'inbound port', true);
  if (inboundPort !== 0) checkPort(inboundPort + o.appPorts.length - 1, 'inbound port', false);
  checkPort(outboundPort, 'outbound port', true);
  checkPort(adminPort, 'admin port', true);
  const say = o.say ?? (() => undefined);
  const socketPath =
    o.agentSocket ?? endpointSocketPath(DEFAULT_ENDPOINT_SOCKET_DIR, parts.namespace, parts.name);

  const link = new AgentLink({ socketPath, endpoint: o.endpoint, ports: o.appPorts, say });
  const started: { close(): Promise<void> }[] = [];
  const inbound: (InboundSidecar | TcpInboundSidecar)[] = [];
  let outbound: OutboundProxy | undefined;
  let tcpOut: TcpOutbound | undefined;
  const install = (c: Credentials): string | undefined => {
    // Checked once up front, so the listeners never end up with different credentials.
    const view = link.holder?.current;
    if (!view) return 'no policy view yet';
    const problem = credentialProblem(c, view.identity, view.trustDomain, new Date());
    if (problem) return problem;
    for (const s of [...inbound, ...(outbound ? [outbound] : []), ...(tcpOut ? [tcpOut] : [])]) {
      const p = s.updateCredentials(c);
      if (p) return p;
    }
    return undefined;
  };
  const rotation = new SvidRotation({
    request: (csr) => link.requestSvid(csr, o.svidTtlSeconds),
    install,
    ...(o.renewalFraction !== undefined ? { renewalFraction: o.renewalFraction } : {}),
    say,
  });
  try {
    say(`palisade sidecar: ${o.endpoint}, agent socket ${socketPath}`);
    link.start();
    const timeout = o.startTimeoutMs ?? 30_000;
    const t0 = Date.now();
    const holder = await withTimeout(link.firstView(), timeout, 'a policy view from the agent');
    say(`policy view ${holder.current.version} for ${holder.current.identity}`);
    // The SVID: retried until the start deadline (the agent may still be registering us).
    let creds: Credentials | undefined;
    let lastErr: unknown;
    while (!creds) {
      try {
        creds = await rotation.first();
      } catch (e) {
        lastErr = e;
        if (Date.now() - t0 > timeout)
          throw new DataplaneError(
            'DATAPLANE_ERR_SIDECAR_START',
            `no SVID from the agent: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`,
          );
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    say(
      `SVID for ${holder.current.identity} (renewal ${rotation.status().renewAt?.toISOString() ?? '-'})`,
    );
    const bundleNow = link.trustBundle;
    if (bundleNow !== undefined && bundleNow !== creds.trustBundlePem) {
      rotation.setBundle(bundleNow);
      creds = rotation.credentials ?? creds;
    }
    const accessOut = o.accessLog === false ? undefined : (o.accessLog ?? process.stdout);
    const inLog = new AccessLog(accessOut);
    const outLog = new AccessLog(accessOut);
    const reporter = new L7FlowReporter({
      socketPath,
      endpoint: o.endpoint,
      report: o.flows !== false,
      say,
    });
    inLog.onRecord((r) => reporter.record(r));
    outLog.onRecord((r) => reporter.record(r));
    started.push({ close: () => reporter.stop() });
    const ports: { appPort: number; port: number }[] = [];
    for (const [i, appPort] of o.appPorts.entries()) {
      const common = {
        listenHost: o.inboundHost ?? '0.0.0.0',
        listenPort: inboundPort === 0 ? 0 : inboundPort + i,
        appPort,
        ...(o.appHost !== undefined ? { appHost: o.appHost } : {}),
        podPort: appPort,
        svid: creds.svid,
        trustBundlePem: creds.trustBundlePem,
        policy: holder,
        log: inLog,
      };
      const s = l4Ports.has(appPort)
        ? new TcpInboundSidecar(common)
        : new InboundSidecar({ ...common, appProtocol: protocols.get(appPort) ?? 'http/1.1' });
      const a = await s.start();
      inbound.push(s);
      started.push(s);
      ports.push({ appPort, port: a.port });
      say(
        `inbound ${o.inboundHost ?? '0.0.0.0'}:${a.port} → ${o.appHost ?? '127.0.0.1'}:${appPort}${l4Ports.has(appPort) ? ' (tcp, L4)' : ''}`,
      );
    }
    const ob = new OutboundProxy({
      listenHost: o.outboundHost ?? '127.0.0.1',
      listenPort: outboundPort,
      svid: creds.svid,
      trustBundlePem: creds.trustBundlePem,
      policy: holder,
      ...(o.sourceAddress !== undefined ? { sourceAddress: o.sourceAddress } : {}),
      // Intercepted peers are reached on their own port: their redirect leads to their sidecar.
      upstream:
        o.upstream ??
        (intercept ? (ip, port) => ({ host: ip, port }) : (ip) => ({ host: ip, port: 15006 })),
      log: outLog,
    });
    const oa = await ob.start();
    outbound = ob;
    started.push(ob);
    // Destinations whose port is declared non-HTTP are relayed at L4 (tcp-outbound.ts).
    const tob = new TcpOutbound({
      svid: creds.svid,
      trustBundlePem: creds.trustBundlePem,
      policy: holder,
      ...(o.sourceAddress !== undefined ? { sourceAddress: o.sourceAddress } : {}),
      upstream:
        o.upstream ??
        (intercept ? (ip, port) => ({ host: ip, port }) : (ip) => ({ host: ip, port: 15006 })),
      log: outLog,
    });
    tcpOut = tob;
    started.push(tob);
    say(`outbound ${o.outboundHost ?? '127.0.0.1'}:${oa.port}`);
    link.onBundle((pem) => rotation.setBundle(pem));
    link.onConnected(() => say('policy sync: connected to the agent'));
    link.onView((v) => say(`policy view ${v.version} installed`));
    let il: InterceptionLink | undefined;
    const status = (): SidecarStatus => ({
      endpoint: o.endpoint,
      policy: holder.status(),
      agent: link.status(),
      svid: rotation.status(),
      inbound: inLog.snapshot(),
      outbound: outLog.snapshot(),
      interception: il?.status(),
    });
    const admin = new AdminServer('127.0.0.1', adminPort, {
      policy: holder,
      inbound: { counters: () => sumCounters([inLog.snapshot()]) },
      outbound: { counters: () => outLog.snapshot() },
      extra: () => ({ agent: link.status(), svid: rotation.status(), flows: reporter.status() }),
      metrics: () => reporter.metricsText(),
    });
    const aa = await admin.start();
    started.push(admin);
    reporter.start();
    if (intercept) {
      const uid = intercept.uid ?? process.getuid?.() ?? 0;
      if (uid === 0)
        say('warning: running as root: the agent will not install interception for uid 0');
      il = new InterceptionLink({
        link,
        proxy: splitOutbound(ob, tob, holder),
        holder,
        inbound: ports.map((p) => ({ appPort: p.appPort, sidecarPort: p.port })),
        uid,
        ...(intercept.firstOutboundPort !== undefined
          ? { firstPort: intercept.firstOutboundPort }
          : {}),
        reserved: [oa.port, aa.port],
        say,
      });
      started.push({ close: () => il?.stop() ?? Promise.resolve() });
      // The first announcement is made (and retried in the background if the agent refuses).
      await il.start();
    }
    say(`admin 127.0.0.1:${aa.port}; ready`);
    let closing: Promise<void> | undefined;
    return {
      endpoint: o.endpoint,
      identity: holder.current.identity,
      inbound: ports,
      outboundPort: oa.port,
      adminPort: aa.port,
      policy: holder,
      status,
      rotateNow: () => rotation.rotateNow(),
      close: (drainMs = 5_000) => {
        closing ??= (async () => {
          rotation.stop();
          await il?.stop();
          await Promise.all([
            ...inbound.map((s) => s.drain(drainMs)),
            ob.drain(drainMs),
            tob.drain(drainMs),
          ]);
          await admin.close();
          // The last decisions go to the agent before the link closes.
          await reporter.stop();
          await link.stop();
        })();
        return closing;
      },
    };
  } catch (e) {
    rotation.stop();
    await Promise.all(started.map((s) => s.close().catch(() => undefined)));
    await link.stop();
    throw e;
  }
}
