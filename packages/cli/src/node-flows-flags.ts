// Flow-record flags of the node commands — `palisade agent` (kernel tracing, aggregation,
// shipping, /metrics), `palisade sidecar` and `palisade authz-server` (L7 reports to the agent)
// — and their parsing. Light: main.ts imports the tables at start-up. Owns: argv → flow options.
// Must never: do I/O.

import type { Flags, Parsed } from './args.js';
import { UsageError } from './args.js';

export const AGENT_FLOWS_FLAGS: Flags = {
  'flow-interval': {
    kind: 'string',
    value: 'S',
    help: 'flow records: aggregation and shipping interval in seconds (default 10)',
  },
  'no-flows': {
    kind: 'boolean',
    help: 'record no flows (no kernel tracing, L7 reports of the sidecars refused)',
  },
  'no-kernel-flows': {
    kind: 'boolean',
    help: 'do not trace kernel decisions (the sidecars\u2019 L7 records are still shipped)',
  },
  'flow-trace-rate': {
    kind: 'string',
    value: 'N',
    help: 'new connections traced per second; the rest are counted as shed (default 2000)',
  },
  metrics: {
    kind: 'string',
    value: 'HOST:PORT',
    help: 'serve Prometheus /metrics (flow counters per policy and point) here (default: none)',
  },
  'flow-spool': {
    kind: 'string',
    value: 'PATH',
    help: 'unshipped flow records survive a kill here, shipped by the next agent (default: flows-spool.json beside the endpoint record; none to disable)',
  },
};

export const L7_FLOWS_FLAGS: Flags = {
  'no-flows': {
    kind: 'boolean',
    help: "do not hand L7 decisions to the agent's socket as flow records",
  },
};

export interface AgentFlowFlags {
  readonly enabled: boolean;
  readonly kernel: boolean;
  readonly intervalMs: number;
  readonly traceRate: number | undefined;
  readonly metrics: { readonly host: string; readonly port: number } | undefined;
  /** `--flow-spool`: a path, `none`, or undefined for the default beside the endpoint record. */
  readonly spool: string | undefined;
}

/** host:port (IPv6 in brackets), port 0..65535. */
export function parseHostPort(s: string, flag: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new UsageError(`--${flag} ${JSON.stringify(s)}: expected HOST:PORT`);
  return { host: (m[1] ?? '').replace(/^\[|\]$/g, ''), port };
}

export function agentFlowFlags(p: Parsed): AgentFlowFlags {
  const v = p.values;
  const iv = v['flow-interval'] as string | undefined;
  let intervalMs = 10_000;
  if (iv !== undefined) {
    const n = Number(iv);
    if (!/^\d+(\.\d+)?$/.test(iv) || n < 0.2 || n > 3600)
      throw new UsageError('--flow-interval must be a number of seconds from 0.2 to 3600');
    intervalMs = Math.round(n * 1000);
  }
  const rate = v['flow-trace-rate'] as string | undefined;
  if (rate !== undefined && (!/^\d{1,7}$/.test(rate) || Number(rate) < 1))
    throw new UsageError('--flow-trace-rate must be a whole number from 1 to 9999999');
  const metrics = v['metrics'] as string | undefined;
  const spool = v['flow-spool'] as string | undefined;
  if (spool !== undefined && spool.trim() === '')
    throw new UsageError('--flow-spool needs a path (or none)');
  return {
    spool,
    enabled: v['no-flows'] !== true,
    kernel: v['no-kernel-flows'] !== true,
    intervalMs,
    traceRate: rate === undefined ? undefined : Number(rate),
    metrics:
      metrics === undefined || metrics === 'none' ? undefined : parseHostPort(metrics, 'metrics'),
  };
}
