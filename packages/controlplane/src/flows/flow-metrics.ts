// Prometheus counters of flows (issue 8 §4): allowed and refused flows per deciding policy and per
// enforcement point, records ingested and shed, records evicted by retention. Owns: counting and
// rendering. Must never: let label values grow without bound (at most MAX_SERIES policies; the
// rest count under policy="(other)") or carry unescaped text.

import type { FlowBatch } from './flow-record.js';

const MAX_SERIES = 5000;

function esc(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export class FlowMetrics {
  private readonly flows = new Map<string, number>();
  private readonly shed = new Map<string, number>();
  private policies = 0;
  private readonly seenPolicies = new Set<string>();
  ingestedRecords = 0;
  ingestedBatches = 0;
  rejectedBatches = 0;
  evicted = 0;

  /** Counts a stored batch: flows by policy, point and verdict; shed by node, point, reason. */
  batch(node: string, b: FlowBatch): void {
    this.ingestedBatches++;
    this.ingestedRecords += b.records.length;
    for (const r of b.records) {
      let policy = r.provenance.policy ?? `(${r.provenance.kind})`;
      if (!this.seenPolicies.has(policy)) {
        if (this.policies >= MAX_SERIES) policy = '(other)';
        else {
          this.seenPolicies.add(policy);
          this.policies++;
        }
      }
      const k = `point="${r.point}",verdict="${r.verdict}",policy="${esc(policy)}"`;
      this.flows.set(k, (this.flows.get(k) ?? 0) + r.count);
    }
    for (const s of b.shed ?? []) {
      const k = `node="${esc(node)}",point="${s.point}",reason="${s.reason}"`;
      this.shed.set(k, (this.shed.get(k) ?? 0) + s.count);
    }
  }

  render(): string {
    const lines = [
      '# HELP palisade_flows_total Connections (kernel) and requests (l7) reported by the nodes, by enforcement point, verdict and deciding policy.',
      '# TYPE palisade_flows_total counter',
      ...[...this.flows.entries()].sort().map(([k, v]) => `palisade_flows_total{${k}} ${v}`),
      '# HELP palisade_flows_shed_total Flow records the nodes could not keep or send, by reason (nothing is dropped silently).',
      '# TYPE palisade_flows_shed_total counter',
      ...[...this.shed.entries()].sort().map(([k, v]) => `palisade_flows_shed_total{${k}} ${v}`),
      '# HELP palisade_flow_records_ingested_total Flow records stored.',
      '# TYPE palisade_flow_records_ingested_total counter',
      `palisade_flow_records_ingested_total ${this.ingestedRecords}`,
      '# HELP palisade_flow_batches_rejected_total Flow batches refused as invalid or too large.',
      '# TYPE palisade_flow_batches_rejected_total counter',
      `palisade_flow_batches_rejected_total ${this.rejectedBatches}`,
      '# HELP palisade_flow_records_evicted_total Flow records deleted by retention (age, count or size).',
      '# TYPE palisade_flow_records_evicted_total counter',
      `palisade_flow_records_evicted_total ${this.evicted}`,
    ];
    return `${lines.join('\n')}\n`;
  }
}
