// `palisade agent`'s flow records: starts the agent's flow runtime (kernel tracing, the L7
// intake of the endpoint sockets, aggregation and shipping with the node's token) and the
// optional Prometheus endpoint. Loaded only when the agent runs. Owns: start-up order and
// progress lines. Must never: delay or stop enforcement (everything here starts in the
// background and its failures are printed, not thrown), or print the token.

import { dirname, join } from 'node:path';
import type * as AgentModuleNs from '@palisade/dataplane/agent';
import type { Io } from './input.js';
import type { AgentFlowFlags } from './node-flows-flags.js';

type AgentModule = typeof AgentModuleNs;
type Agent = InstanceType<AgentModule['Agent']>;
type AgentFlows = InstanceType<AgentModule['AgentFlows']>;

export interface AgentFlowsHandle {
  readonly agentFlows: AgentFlows;
  stop(): Promise<void>;
}

export function startAgentFlows(
  dp: AgentModule,
  agent: Agent,
  o: {
    readonly server: string;
    readonly token: string;
    readonly ca?: string;
    readonly table?: string;
    readonly netns?: string;
    readonly trustDomain?: string | undefined;
    /** The endpoint record's path (the agent's state directory holds the flow spool too). */
    readonly recordPath?: string;
    readonly flags: AgentFlowFlags;
    readonly io: Io;
  },
): AgentFlowsHandle {
  const say = (l: string): void => void o.io.stdout.write(`${l}\n`);
  const spool =
    o.flags.spool ??
    (o.recordPath !== undefined && o.recordPath !== 'none'
      ? join(dirname(o.recordPath), 'flows-spool.json')
      : undefined);
  const agentFlows = new dp.AgentFlows(agent, {
    server: o.server,
    token: o.token,
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    ...(o.table !== undefined ? { table: o.table } : {}),
    ...(o.netns !== undefined ? { netns: o.netns } : {}),
    ...(o.trustDomain !== undefined ? { trustDomain: o.trustDomain } : {}),
    ...(o.flags.traceRate !== undefined ? { traceRate: o.flags.traceRate } : {}),
    intervalMs: o.flags.intervalMs,
    kernel: o.flags.kernel,
    ...(spool !== undefined && spool !== 'none' ? { spoolFile: spool } : {}),
    say,
  });
  const started = agentFlows.start().catch((e: unknown) => {
    say(`flows: not started: ${e instanceof Error ? e.message : String(e)}`);
  });
  let metrics: Promise<{ close(): Promise<void> } | undefined> = Promise.resolve(undefined);
  const m = o.flags.metrics;
  if (m)
    metrics = dp
      .startMetricsServer(m.host, m.port, () => agentFlows.metricsText())
      .then((s) => {
        say(`metrics at http://${m.host.includes(':') ? `[${m.host}]` : m.host}:${s.port}/metrics`);
        return s;
      })
      .catch((e: unknown) => {
        say(
          `metrics: cannot listen on ${m.host}:${m.port}: ${e instanceof Error ? e.message : String(e)}`,
        );
        return undefined;
      });
  return {
    agentFlows,
    stop: async () => {
      await started;
      await Promise.all([agentFlows.stop(), metrics.then((s) => s?.close())]);
    },
  };
}
