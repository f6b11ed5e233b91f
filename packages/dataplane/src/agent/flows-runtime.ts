// The agent's flow records (docs/design/flows.md): the kernel flow source (trace table + `nft
// monitor trace`) for the agent's own table, the L7 reports the sidecars and ext_authz servers of
// this node hand in over their endpoint sockets, one aggregator for both (per interval, default
// 10 s) and the shipper to the API server with the node's credential. Endpoints are named from
// the agent's own view of the cluster (the calculation's engine), and the same engine gives each
// kernel record the would-be verdicts of the staged policies at its side (flows/staged.ts).
// Fail soft: nothing here can change a verdict or stop enforcement. A kernel source that cannot
// start is retried every 30 s; a failed shipment is kept (bounded) and counted as shed beyond
// that; an L7 report the agent cannot use is refused to its sender and counted.
// Owns: the wiring of source, aggregator and shipper, the L7 intake and the agent's flow metrics.
// Must never: block the apply loop, accept a report from one endpoint about another endpoint's
// traffic (the endpoint's own side is always filled in here), or log the token.

import { formatIp } from '@palisade/core';
import { FlowAggregator } from '../flows/aggregator.js';
import type { EndpointInfo } from '../flows/aggregator.js';
import { KernelFlowSource } from '../flows/kernel-source.js';
import { MAX_REPORT_BYTES, observationOf, validateL7Report } from '../flows/l7-report.js';
import { flowShipper } from '../flows/shipper.js';
import { FlowSpool } from '../flows/spool.js';
import { engineStagedLookup } from '../flows/staged.js';
import type { WireBatch } from '../flows/observation.js';
import type { Agent } from './agent.js';

export interface AgentFlowsOptions {
  readonly server: string;
  readonly token: string;
  readonly ca?: string;
  /** The agent's table (default `palisade`) and netns, as the agent's own options. */
  readonly table?: string;
  readonly netns?: string;
  /** Aggregation interval (default 10 s). */
  readonly intervalMs?: number;
  /** Trace kernel decisions (default true); false: only the L7 reports are shipped. */
  readonly kernel?: boolean;
  /** New connections traced per second (default 2000). */
  readonly traceRate?: number;
  /** Distinct kernel tuples judged for staged verdicts per interval (default 5000). */
  readonly stagedLookupsPerInterval?: number;
  /**
   * The flow spool (in the agent's state directory): what the agent holds and has not shipped
   * survives a SIGKILL and is shipped by the next agent. Default: none.
   */
  readonly spoolFile?: string;
  readonly trustDomain?: string;
  /** Delay before a kernel source that failed to start is tried again (default 30 s). */
  readonly retryMs?: number;
  /** Tests: replaces the shipper. */
  readonly send?: (batch: WireBatch) => Promise<void>;
  readonly say?: (line: string) => void;
}

export interface FlowReportReply {
  readonly status: number;
  readonly body: unknown;
}

export class AgentFlows {
  readonly aggregator: FlowAggregator;
  private kernel: KernelFlowSource | undefined;
  private kernelRunning = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly say: (line: string) => void;
  private readonly trustDomain: string;
  /** L7 reports refused (malformed, or from an endpoint without an address). */
  reportsRefused = 0;
  reportsTaken = 0;
  private lastShedLine = '';

  constructor(
    private readonly agent: Agent,
    private readonly o: AgentFlowsOptions,
  ) {
    this.say = o.say ?? (() => undefined);
    this.trustDomain = o.trustDomain ?? 'cluster.local';
    this.aggregator = new FlowAggregator({
      send:
        o.send ??
        flowShipper({
          server: o.server,
          token: o.token,
          ...(o.ca !== undefined ? { ca: o.ca } : {}),
        }),
      resolve: (ip) => this.resolve(ip),
      staged: engineStagedLookup(() => this.agent.view().engine),
      ...(o.spoolFile !== undefined ? { spool: new FlowSpool(o.spoolFile) } : {}),
      ...(o.stagedLookupsPerInterval !== undefined
        ? { maxStagedLookups: o.stagedLookupsPerInterval }
        : {}),
      ...(o.intervalMs !== undefined ? { intervalMs: o.intervalMs } : {}),
      log: (l) => this.say(`flows: ${JSON.stringify(l)}`),
    });
  }

  /** Who is at an address, from the agent's view of the cluster. */
  resolve(ip: string): EndpointInfo | undefined {
    let ep;
    try {
      ep = this.agent.view().engine.describeEndpoint(ip);
    } catch {
      return undefined;
    }
    if (!ep || ep.kind !== 'workload' || ep.namespace === undefined) return undefined;
    const labels = Object.fromEntries(Object.entries(ep.ownLabels).slice(0, 64));
    return {
      namespace: ep.namespace,
      name: ep.name,
      labels,
      ...(ep.serviceAccount !== undefined
        ? { identity: `spiffe://${this.trustDomain}/ns/${ep.namespace}/sa/${ep.serviceAccount}` }
        : {}),
    };
  }

  /** The first address of a local endpoint (`namespace/name`), as the agent knows it. */
  addressOf(endpoint: string): string | undefined {
    try {
      const ep = this.agent.view().engine.describeEndpoint(endpoint);
      const ip = ep?.ips[0];
      return ip ? formatIp(ip) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Starts the aggregator and (unless disabled) the kernel source; never throws. */
  async start(): Promise<void> {
    this.aggregator.start();
    if (this.o.kernel === false) {
      this.say('flows: kernel tracing disabled; L7 records only');
      return;
    }
    this.kernel = new KernelFlowSource({
      ...(this.o.table !== undefined ? { table: this.o.table } : {}),
      ...(this.o.netns !== undefined ? { netns: this.o.netns } : {}),
      ...(this.o.traceRate !== undefined ? { ratePerSecond: this.o.traceRate } : {}),
      onObservation: (ob) => this.aggregator.observe(ob),
      onShed: (reason, n) => {
        this.aggregator.shed('kernel', reason, n);
        this.noteShed();
      },
      log: (l) => this.say(`flows: ${JSON.stringify(l)}`),
    });
    // Every apply may renumber the table's rule handles (a full apply recreates the table).
    this.agent.onApplied(() => this.kernel?.invalidateRules());
    await this.startKernel();
  }

  private async startKernel(): Promise<void> {
    const k = this.kernel;
    if (!k || this.stopped) return;
    try {
      await k.start();
      this.kernelRunning = true;
      this.say(
        `flows: tracing new connections of table inet ${k.table} (trace table inet ${k.traceTable}), shipping every ${(this.o.intervalMs ?? 10_000) / 1000} s`,
      );
    } catch (e) {
      // Visibility only: enforcement goes on; try again later.
      this.say(
        `flows: kernel tracing unavailable, retried in ${(this.o.retryMs ?? 30_000) / 1000} s: ${e instanceof Error ? e.message : String(e)}`,
      );
      this.retryTimer = setTimeout(() => void this.startKernel(), this.o.retryMs ?? 30_000);
      this.retryTimer.unref();
    }
  }

  private noteShed(): void {
    const shed = this.aggregator.counters.shed;
    const line = Object.entries(shed)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    if (line !== '' && line !== this.lastShedLine) {
      this.lastShedLine = line;
      this.say(`flows: shed so far (counted and shipped): ${line}`);
    }
  }

  /**
   * An L7 report from the socket of `endpoint` (the caller is that endpoint's sidecar or
   * ext_authz server). Its records are folded with the endpoint's own address on its side.
   */
  report(endpoint: string, text: string): FlowReportReply {
    if (Buffer.byteLength(text) > MAX_REPORT_BYTES) {
      this.reportsRefused++;
      return fail(413, `a report is at most ${MAX_REPORT_BYTES} bytes`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      this.reportsRefused++;
      return fail(400, 'the body is not JSON');
    }
    const v = validateL7Report(doc, Date.now());
    if (!v.ok) {
      this.reportsRefused++;
      return fail(422, v.problems.join('; '));
    }
    const local = this.addressOf(endpoint);
    if (local === undefined) {
      // Not known yet (or gone): the sender keeps the records and tries again.
      return {
        status: 503,
        body: {
          error: {
            code: 'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
            message: `no address known for ${endpoint} yet`,
          },
        },
      };
    }
    for (const r of v.report.records) {
      const ob = observationOf(r, local, (ep) => this.addressOf(ep));
      if (ob) this.aggregator.observe(ob);
      else this.aggregator.shed('l7', 'parse', 1);
    }
    for (const s of v.report.shed ?? []) this.aggregator.shed('l7', s.reason, s.count);
    if ((v.report.shed ?? []).length > 0) this.noteShed();
    this.reportsTaken++;
    return { status: 200, body: { taken: v.report.records.length } };
  }

  get kernelTracing(): boolean {
    return this.kernelRunning;
  }

  /** Prometheus text of the agent's flow pipeline. */
  metricsText(): string {
    return [
      this.aggregator.metricsText('palisade_agent'),
      '# HELP palisade_agent_flow_reports_total L7 reports from sidecars and ext_authz servers, by outcome.',
      '# TYPE palisade_agent_flow_reports_total counter',
      `palisade_agent_flow_reports_total{outcome="taken"} ${this.reportsTaken}`,
      `palisade_agent_flow_reports_total{outcome="refused"} ${this.reportsRefused}`,
      '# HELP palisade_agent_flow_trace_lines_total Lines read from nft monitor trace.',
      '# TYPE palisade_agent_flow_trace_lines_total counter',
      `palisade_agent_flow_trace_lines_total ${this.kernel?.lines ?? 0}`,
      '# HELP palisade_agent_flow_rule_listings_total Listings of the table to name rules nft monitor did not know.',
      '# TYPE palisade_agent_flow_rule_listings_total counter',
      `palisade_agent_flow_rule_listings_total ${this.kernel?.listings ?? 0}`,
      '# HELP palisade_agent_flow_kernel_tracing Whether kernel decisions are traced (1) or not (0).',
      '# TYPE palisade_agent_flow_kernel_tracing gauge',
      `palisade_agent_flow_kernel_tracing ${this.kernelRunning ? 1 : 0}`,
      '',
    ].join('\n');
  }

  /**
   * Stops tracing (removes the trace table) and ships what is left: one attempt, given at most
   * `finalSendMs` (default 3 s) so that stopping the agent never waits on an unreachable server.
   */
  async stop(finalSendMs = 3000): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.kernelRunning) await this.kernel?.stop().catch(() => undefined);
    this.kernelRunning = false;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.aggregator.stop().catch(() => undefined),
      new Promise<void>((r) => {
        timer = setTimeout(r, finalSendMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}

function fail(status: number, message: string): FlowReportReply {
  return {
    status,
    body: { error: { code: 'DATAPLANE_ERR_POLICYSYNC_BAD_REQUEST', message } },
  };
}
