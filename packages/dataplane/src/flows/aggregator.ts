// Folds observations from both enforcement points into flow records per interval (default 10 s)
// and ships them as batches. One record per (source, destination, destination port, protocol,
// point, direction, verdict, provenance, L7 method and path) per interval; the source port is
// kept when every folded observation had the same one. Bounded: at most `maxKeys` records per
// interval and `maxPending` unsent batches; whatever does not fit is counted, by reason, and the
// counts ride along with the next batch — nothing is dropped silently. Kernel records get the
// would-be verdicts of staged policies when the interval closes (`staged`, asked once per
// distinct tuple per interval, at most `maxStagedLookups` times). With a `spool`, what is held
// and not shipped is written to disk every second (when it changed) and after each send, and a
// new aggregator ships what a killed one left (spool.ts).
// Owns: aggregation, the shed ledger and the send loop. Must never: block an enforcement point
// (observe() is O(1) and never waits), or lose a shed count on a failed send.

import type {
  FlowObservation,
  FlowPoint,
  ShedReason,
  StagedObservation,
  WireBatch,
  WireEndpoint,
  WireFlowRecord,
  WireShed,
} from './observation.js';
import { FlowCounters } from './flow-counters.js';
import type { FlowSpool } from './spool.js';
import type { StagedLookup } from './staged.js';
import { stagedKey } from './staged.js';

export interface EndpointInfo {
  readonly namespace: string;
  readonly name: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** The SPIFFE identity of the endpoint's service account (network identity in the kernel). */
  readonly identity?: string;
}

export interface FlowAggregatorOptions {
  /** Ships one batch; throws (or rejects) when the server did not take it. */
  readonly send: (batch: WireBatch) => Promise<void>;
  /** Who is at this address (the agent's view of endpoints); undefined for outside addresses. */
  readonly resolve?: (ip: string) => EndpointInfo | undefined;
  readonly intervalMs?: number;
  readonly maxKeys?: number;
  readonly maxPending?: number;
  /**
   * The would-be verdicts of staged policies for a kernel observation's tuple (the node's
   * engine, `engineStagedLookup`); asked when the interval closes, once per distinct tuple.
   */
  readonly staged?: StagedLookup;
  /** Distinct tuples asked per interval (default 5000); records beyond go without, counted. */
  readonly maxStagedLookups?: number;
  /** Where unshipped records survive the process (the agent's state directory). */
  readonly spool?: FlowSpool;
  /** How often a changed state is written to the spool (default 1 s). */
  readonly spoolEveryMs?: number;
  readonly now?: () => number;
  readonly log?: (line: Readonly<Record<string, unknown>>) => void;
}

interface Agg {
  readonly first: FlowObservation;
  srcPort: number | undefined | null;
  startMs: number;
  endMs: number;
  packets: number;
  bytes: number;
  count: number;
}

export interface AggregatorCounters {
  observed: number;
  recordsSent: number;
  batchesSent: number;
  sendFailures: number;
  shed: Record<string, number>;
  /** Tuples the staged lookup was asked about. */
  stagedLookups: number;
  /** Kernel records shipped without staged verdicts: over the lookup budget, or it failed. */
  stagedSkipped: number;
}

function keyOf(o: FlowObservation): string {
  const p = o.provenance;
  return [
    o.point,
    o.direction ?? '',
    o.srcIp,
    o.dstIp,
    o.dstPort ?? '',
    o.protocol,
    o.verdict,
    p.kind,
    p.tier ?? '',
    p.policy ?? '',
    p.rule ?? '',
    p.profile ?? '',
    o.method ?? '',
    o.path ?? '',
    o.srcIdentity ?? '',
    o.staged ? JSON.stringify(o.staged) : '',
  ].join('\u0000');
}

export class FlowAggregator {
  readonly counters: AggregatorCounters = {
    observed: 0,
    recordsSent: 0,
    batchesSent: 0,
    sendFailures: 0,
    shed: {},
    stagedLookups: 0,
    stagedSkipped: 0,
  };
  /** Judged flows by point, verdict and deciding policy (the node's /metrics). */
  readonly flows = new FlowCounters();
  private current = new Map<string, Agg>();
  private readonly pending: WireBatch[] = [];
  /** Shed counts not yet reported to the server, by `point reason`. */
  private unreported = new Map<string, WireShed>();
  private readonly o: FlowAggregatorOptions;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly maxPending: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private spoolTimer: NodeJS.Timeout | undefined;
  /** Something changed since the spool was last written. */
  private dirty = false;
  private flushing: Promise<void> | undefined;

  constructor(o: FlowAggregatorOptions) {
    this.o = o;
    this.intervalMs = o.intervalMs ?? 10_000;
    this.maxKeys = o.maxKeys ?? 50_000;
    this.maxPending = o.maxPending ?? 30;
    this.now = o.now ?? Date.now;
  }

  /** Batches waiting to be sent (kept after a failed send, bounded by maxPending). */
  get pendingBatches(): number {
    return this.pending.length;
  }

  start(): void {
    this.restore();
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
    if (this.o.spool) {
      this.spoolTimer = setInterval(() => {
        if (!this.dirty) return;
        this.dirty = false;
        this.writeSpool();
      }, this.o.spoolEveryMs ?? 1000);
      this.spoolTimer.unref();
    }
  }

  /**
   * Takes over what a previous process left in the spool: its batches go out first (beyond
   * `maxPending` they are counted `send-failed`), its shed counts with the next batch. A spool
   * that cannot be read is reported (its contents are unknown). Returns the records restored.
   */
  restore(): number {
    const spool = this.o.spool;
    if (!spool) return 0;
    const got = spool.read();
    if (got.problem)
      this.o.log?.({
        msg: 'flow spool of the previous run not fully readable',
        problem: got.problem,
      });
    const c = got.content;
    if (!c) return 0;
    let restored = 0;
    const room = Math.max(0, this.maxPending - this.pending.length);
    const batches = c.batches.filter((b) => b.records.length > 0);
    for (const b of batches.slice(0, Math.max(0, batches.length - room)))
      for (const r of b.records) this.shed(r.point, 'send-failed', r.count);
    const kept = batches.slice(Math.max(0, batches.length - room));
    this.pending.unshift(...kept.map((b) => ({ records: b.records })));
    for (const b of kept) restored += b.records.length;
    for (const x of c.shed) this.shed(x.point, x.reason, x.count);
    if (restored > 0 || c.shed.length > 0)
      this.o.log?.({
        msg: 'flow records of the previous run restored from the spool; shipped first',
        records: restored,
        shed: c.shed.reduce((a, x) => a + x.count, 0),
      });
    this.dirty = true;
    return restored;
  }

  /**
   * Writes what is held and not shipped to the spool: pending batches, the current interval's
   * records (the first `maxRecords` of the spool; the rest only as counts) and unreported shed.
   */
  private writeSpool(): void {
    const spool = this.o.spool;
    if (!spool) return;
    let room = spool.maxRecords - this.pending.reduce((a, b) => a + b.records.length, 0);
    const current: WireFlowRecord[] = [];
    const over = new Map<FlowPoint, number>();
    for (const a of this.current.values()) {
      if (room-- > 0) current.push(this.record(a, (o) => o.staged));
      else over.set(a.first.point, (over.get(a.first.point) ?? 0) + a.count);
    }
    const ok = spool.write({
      batches: [...this.pending, ...(current.length > 0 ? [{ records: current }] : [])],
      shed: [
        ...this.unreported.values(),
        ...[...over].map(([point, count]) => ({ point, reason: 'send-failed' as const, count })),
      ],
    });
    if (!ok) this.dirty = true;
  }

  /** Folds one observation into the current interval. Never blocks, never throws. */
  observe(ob: FlowObservation): void {
    this.counters.observed++;
    this.dirty = true;
    this.flows.count(ob.point, ob.verdict, ob.provenance);
    const k = keyOf(ob);
    const a = this.current.get(k);
    if (a) {
      a.count++;
      a.packets += ob.packets;
      a.bytes += ob.bytes;
      a.startMs = Math.min(a.startMs, ob.timeMs);
      a.endMs = Math.max(a.endMs, ob.timeMs);
      if (a.srcPort !== ob.srcPort) a.srcPort = null;
      return;
    }
    if (this.current.size >= this.maxKeys) {
      this.shed(ob.point, 'buffer-full', 1);
      return;
    }
    this.current.set(k, {
      first: ob,
      srcPort: ob.srcPort,
      startMs: ob.timeMs,
      endMs: ob.timeMs,
      packets: ob.packets,
      bytes: ob.bytes,
      count: 1,
    });
  }

  /** Counts records that could not be kept or sent; reported with the next batch. */
  shed(point: FlowPoint, reason: ShedReason, count: number): void {
    if (count <= 0) return;
    this.dirty = true;
    const k = `${point} ${reason}`;
    const prev = this.unreported.get(k);
    this.unreported.set(k, { point, reason, count: (prev?.count ?? 0) + count });
    this.counters.shed[k] = (this.counters.shed[k] ?? 0) + count;
  }

  /** Closes the current interval into a batch and sends every pending batch, oldest first. */
  flush(): Promise<void> {
    this.flushing ??= this.doFlush().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async doFlush(): Promise<void> {
    try {
      await this.sendAll();
    } finally {
      // Once per interval, right after the sends: what the server took leaves the spool.
      this.dirty = false;
      this.writeSpool();
    }
  }

  private async sendAll(): Promise<void> {
    const closed = this.current;
    this.current = new Map();
    const staged = this.stagedMemo();
    const records = [...closed.values()].map((a) => this.record(a, staged));
    // Batches stay under the server's limit of 5000 records.
    for (let i = 0; i < records.length; i += 5000) {
      if (this.pending.length >= this.maxPending) {
        const dropped = this.pending.shift();
        for (const r of dropped?.records ?? []) this.shed(r.point, 'send-failed', r.count);
      }
      this.pending.push({ records: records.slice(i, i + 5000) });
    }
    if (this.pending.length === 0 && this.unreported.size > 0) this.pending.push({ records: [] });
    while (this.pending.length > 0) {
      const head = this.pending[0] as WireBatch;
      const shed = [...this.unreported.values()];
      const batch: WireBatch = shed.length > 0 ? { records: head.records, shed } : head;
      try {
        await this.o.send(batch);
      } catch (e) {
        this.counters.sendFailures++;
        this.o.log?.({
          msg: 'flow batch not sent; kept for the next interval',
          error: e instanceof Error ? e.message : String(e),
          pending: this.pending.length,
        });
        return;
      }
      this.pending.shift();
      // What was reported is subtracted (more may have been counted while the send was out).
      for (const s of shed) {
        const k = `${s.point} ${s.reason}`;
        const now = this.unreported.get(k);
        if (!now) continue;
        if (now.count <= s.count) this.unreported.delete(k);
        else this.unreported.set(k, { ...now, count: now.count - s.count });
      }
      this.counters.batchesSent++;
      this.counters.recordsSent += head.records.length;
    }
  }

  private endpoint(
    ip: string,
    port: number | undefined,
    identity: string | undefined,
  ): WireEndpoint {
    const info = this.o.resolve?.(ip);
    const id = identity ?? info?.identity;
    return {
      ip,
      ...(port !== undefined ? { port } : {}),
      ...(info ? { namespace: info.namespace, name: info.name } : {}),
      ...(info?.labels && Object.keys(info.labels).length > 0 ? { labels: info.labels } : {}),
      ...(id !== undefined ? { identity: id } : {}),
    };
  }

  /**
   * One interval's staged lookups: memoised by tuple (records of one tuple with other verdicts,
   * provenances or source ports share the answer), at most `maxStagedLookups` questions.
   */
  private stagedMemo(): (o: FlowObservation) => readonly StagedObservation[] | undefined {
    const lookup = this.o.staged;
    if (!lookup) return (o) => o.staged;
    const memo = new Map<string, readonly StagedObservation[] | undefined | null>();
    const budget = this.o.maxStagedLookups ?? 5000;
    let asked = 0;
    let skipped = 0;
    return (o) => {
      // L7 points judge their requests themselves and report the staged verdicts they saw.
      if (o.point !== 'kernel' || o.staged) return o.staged;
      const k = stagedKey(o);
      let v = memo.get(k);
      if (v === undefined && !memo.has(k)) {
        if (asked >= budget) v = null;
        else {
          asked++;
          this.counters.stagedLookups++;
          try {
            v = lookup(o);
          } catch {
            v = null;
          }
        }
        memo.set(k, v);
      }
      if (v !== null) return v;
      this.counters.stagedSkipped++;
      if (skipped++ === 0)
        this.o.log?.({
          msg: 'kernel flow records shipped without staged verdicts (lookup budget spent or failed)',
          budget,
        });
      return undefined;
    };
  }

  private record(
    a: Agg,
    stagedOf: (o: FlowObservation) => readonly StagedObservation[] | undefined,
  ): WireFlowRecord {
    const o = a.first;
    const staged = stagedOf(o);
    const srcPort = a.srcPort === null ? undefined : a.srcPort;
    return {
      start: new Date(a.startMs).toISOString(),
      end: new Date(a.endMs).toISOString(),
      source: this.endpoint(o.srcIp, srcPort, o.srcIdentity),
      destination: this.endpoint(o.dstIp, o.dstPort, undefined),
      protocol: o.protocol,
      ...(o.method !== undefined ? { method: o.method } : {}),
      ...(o.path !== undefined ? { path: o.path } : {}),
      verdict: o.verdict,
      point: o.point,
      ...(o.direction !== undefined ? { direction: o.direction } : {}),
      provenance: o.provenance,
      ...(staged && staged.length > 0 ? { staged } : {}),
      packets: a.packets,
      bytes: a.bytes,
      count: a.count,
    };
  }

  /** Prometheus text of the node's flow pipeline (the agent's and the sidecar's /metrics). */
  metricsText(prefix = 'palisade_node'): string {
    const c = this.counters;
    return [
      `# HELP ${prefix}_flow_observations_total Judged connections and requests seen by the flow aggregator.`,
      `# TYPE ${prefix}_flow_observations_total counter`,
      `${prefix}_flow_observations_total ${c.observed}`,
      `# HELP ${prefix}_flow_records_sent_total Flow records the server accepted.`,
      `# TYPE ${prefix}_flow_records_sent_total counter`,
      `${prefix}_flow_records_sent_total ${c.recordsSent}`,
      `# HELP ${prefix}_flow_batches_pending Flow batches waiting to be sent (kept after a failed send).`,
      `# TYPE ${prefix}_flow_batches_pending gauge`,
      `${prefix}_flow_batches_pending ${this.pending.length}`,
      `# HELP ${prefix}_flow_send_failures_total Flow batches the server did not take (retried).`,
      `# TYPE ${prefix}_flow_send_failures_total counter`,
      `${prefix}_flow_send_failures_total ${c.sendFailures}`,
      `# HELP ${prefix}_flow_staged_lookups_total Kernel flow tuples judged for the would-be verdicts of staged policies.`,
      `# TYPE ${prefix}_flow_staged_lookups_total counter`,
      `${prefix}_flow_staged_lookups_total ${c.stagedLookups}`,
      `# HELP ${prefix}_flow_staged_skipped_total Kernel flow records shipped without staged verdicts (lookup budget spent, or the lookup failed).`,
      `# TYPE ${prefix}_flow_staged_skipped_total counter`,
      `${prefix}_flow_staged_skipped_total ${c.stagedSkipped}`,
      `# HELP ${prefix}_flow_spool_write_failures_total Writes of the flow spool that failed (the records stay in memory).`,
      `# TYPE ${prefix}_flow_spool_write_failures_total counter`,
      `${prefix}_flow_spool_write_failures_total ${this.o.spool?.failures ?? 0}`,
      `# HELP ${prefix}_flows_shed_total Observations not kept or not sent, by point and reason.`,
      `# TYPE ${prefix}_flows_shed_total counter`,
      ...Object.entries(c.shed)
        .sort()
        .map(([k, v]) => {
          const [point, reason] = k.split(' ');
          return `${prefix}_flows_shed_total{point="${point ?? ''}",reason="${reason ?? ''}"} ${v}`;
        }),
      this.flows.render(
        prefix,
        'Connections (kernel) and requests (l7) judged on this node and seen by the flow aggregator',
      ),
    ].join('\n');
  }

  /** Stops the timer and sends what is left (one attempt). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.spoolTimer);
    await this.flush();
  }
}
