// The sidecar's (and the ext_authz server's) side of L7 flow records: every decision the access
// log records is turned into a report record, queued, and POSTed to the agent's socket for this
// endpoint every second (l7-report.ts). The agent aggregates them with its kernel records and
// ships them with the node's credential; the sidecar holds none.
// Bounded: at most `maxQueued` records wait; beyond that they are counted (`buffer-full`), and
// records the reporter cannot describe are counted (`parse`). The counts ride along with the next
// report and are cleared only once the agent took them — nothing is dropped silently.
// Owns: the queue, the send loop and its counters. Must never: block or fail a request (record()
// only pushes), or send to anything but the agent's unix socket.

import { request } from 'node:http';
import type { AccessRecord } from '../sidecar/access-log.js';
import { FlowCounters } from './flow-counters.js';
import { L7_REPORT_PREFIX, MAX_REPORT_RECORDS, reportRecordOf } from './l7-report.js';
import type { L7Report, L7ReportRecord, L7ShedReason } from './l7-report.js';

export interface L7ReporterOptions {
  /** The agent's socket for this endpoint. */
  readonly socketPath: string;
  /** `namespace/name` of the endpoint. */
  readonly endpoint: string;
  /** Between reports (default 1000 ms). */
  readonly intervalMs?: number;
  /** Records kept while the agent is away (default 20000). */
  readonly maxQueued?: number;
  readonly timeoutMs?: number;
  /** False: only count (the /metrics counters), report nothing (flows off). Default true. */
  readonly report?: boolean;
  readonly say?: (line: string) => void;
}

export interface L7ReporterStatus {
  readonly queued: number;
  readonly sent: number;
  readonly failures: number;
  readonly shed: Readonly<Record<string, number>>;
  readonly lastError: string | undefined;
}

/** One POST of a report; resolves with the status code and the body's first 300 characters. */
function post(
  socketPath: string,
  path: string,
  body: string,
  timeoutMs: number,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: timeoutMs,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (text.length < 300) text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: text.slice(0, 300) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('the agent did not answer in time')));
    req.on('error', reject);
    req.end(body);
  });
}

export class L7FlowReporter {
  /** Judged requests by verdict and deciding policy (the sidecar's /metrics). */
  readonly flows = new FlowCounters();
  private queue: L7ReportRecord[] = [];
  private readonly unreported = new Map<L7ShedReason, number>();
  private readonly shedTotals: Record<string, number> = {};
  private sent = 0;
  private failures = 0;
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private readonly maxQueued: number;
  private readonly path: string;
  private wasFailing = false;

  constructor(private readonly o: L7ReporterOptions) {
    this.maxQueued = o.maxQueued ?? 20_000;
    this.path = `${L7_REPORT_PREFIX}/${o.endpoint}`;
  }

  start(): void {
    if (this.o.report === false) return;
    this.timer ??= setInterval(() => void this.flush(), this.o.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** Takes one decision (an AccessLog listener). Never blocks, never throws. */
  record(r: AccessRecord): void {
    const verdict = r.verdict === 'allow' ? 'allow' : 'deny';
    const rec = reportRecordOf(r);
    if (!rec) {
      this.flows.count('l7', verdict, r.provenance);
      if (this.o.report !== false) this.shed('parse', 1);
      return;
    }
    this.flows.count('l7', verdict, rec.provenance);
    if (this.o.report === false) return;
    if (this.queue.length >= this.maxQueued) {
      this.shed('buffer-full', 1);
      return;
    }
    this.queue.push(rec);
  }

  private shed(reason: L7ShedReason, n: number): void {
    this.unreported.set(reason, (this.unreported.get(reason) ?? 0) + n);
    this.shedTotals[reason] = (this.shedTotals[reason] ?? 0) + n;
  }

  status(): L7ReporterStatus {
    return {
      queued: this.queue.length,
      sent: this.sent,
      failures: this.failures,
      shed: { ...this.shedTotals },
      lastError: this.lastError,
    };
  }

  /** Sends what is queued, in reports of at most MAX_REPORT_RECORDS; stops at the first failure. */
  flush(): Promise<void> {
    this.sending ??= this.doFlush().finally(() => (this.sending = undefined));
    return this.sending;
  }

  private async doFlush(): Promise<void> {
    if (this.o.report === false) return;
    while (this.queue.length > 0 || this.unreported.size > 0) {
      const records = this.queue.slice(0, MAX_REPORT_RECORDS);
      const shed = [...this.unreported.entries()].map(([reason, count]) => ({ reason, count }));
      const report: L7Report = { records, ...(shed.length > 0 ? { shed } : {}) };
      try {
        const r = await post(
          this.o.socketPath,
          this.path,
          JSON.stringify(report),
          this.o.timeoutMs ?? 10_000,
        );
        if (r.status === 422 || r.status === 400 || r.status === 413) {
          // The agent will never take these: counted, not retried forever.
          this.queue.splice(0, records.length);
          this.shed('parse', records.length);
          throw new Error(`the agent refused the report (${r.status}): ${r.text}`);
        }
        if (r.status !== 200) throw new Error(`the agent answered ${r.status}: ${r.text}`);
      } catch (e) {
        this.failures++;
        this.lastError = e instanceof Error ? e.message : String(e);
        if (!this.wasFailing) this.o.say?.(`flow records: ${this.lastError} (kept, retried)`);
        this.wasFailing = true;
        return;
      }
      if (this.wasFailing) this.o.say?.('flow records: the agent takes them again');
      this.wasFailing = false;
      this.lastError = undefined;
      this.queue.splice(0, records.length);
      this.sent += records.length;
      for (const s of shed) {
        const now = this.unreported.get(s.reason) ?? 0;
        if (now <= s.count) this.unreported.delete(s.reason);
        else this.unreported.set(s.reason, now - s.count);
      }
    }
  }

  /** Prometheus text: judged requests by policy, and the reporter's own counters. */
  metricsText(prefix = 'palisade_sidecar'): string {
    return [
      this.flows.render(prefix, 'Requests and connections judged by this L7 point'),
      `# HELP ${prefix}_flow_records_reported_total Flow records the node agent took.`,
      `# TYPE ${prefix}_flow_records_reported_total counter`,
      `${prefix}_flow_records_reported_total ${this.sent}`,
      `# HELP ${prefix}_flow_records_queued Flow records waiting for the node agent.`,
      `# TYPE ${prefix}_flow_records_queued gauge`,
      `${prefix}_flow_records_queued ${this.queue.length}`,
      `# HELP ${prefix}_flows_shed_total Decisions not reported to the agent, by reason (counted and reported).`,
      `# TYPE ${prefix}_flows_shed_total counter`,
      ...Object.entries(this.shedTotals)
        .sort()
        .map(([k, v]) => `${prefix}_flows_shed_total{point="l7",reason="${k}"} ${v}`),
      '',
    ].join('\n');
  }

  /** Stops the timer and makes one last attempt to send. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
