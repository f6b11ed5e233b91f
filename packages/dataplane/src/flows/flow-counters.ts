// Prometheus counters of judged flows on the node (issue 8 §4): allowed and refused connections
// (kernel) and requests (l7) per enforcement point and deciding policy, as the agent and the
// sidecars export them on their own /metrics. Owns: counting and the text format. Must never: let
// label values grow without bound (at most `maxPolicies` distinct policies; the rest count under
// policy="(other)") or print unescaped text.

import type { FlowPoint, FlowVerdict, ObservedProvenance } from './observation.js';

function esc(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The policy label of a verdict: the deciding policy, else the provenance kind in parentheses. */
export function policyLabel(p: ObservedProvenance): string {
  if (p.policy !== undefined) return p.policy;
  if (p.kind === 'tier-default' && p.tier !== undefined) return `(default deny of tier ${p.tier})`;
  if (p.profile !== undefined) return `(profile ${p.profile})`;
  return `(${p.kind})`;
}

export class FlowCounters {
  private readonly counts = new Map<string, number>();
  private readonly policies = new Set<string>();

  constructor(private readonly maxPolicies = 5000) {}

  /** Counts `n` judged connections or requests. O(1), never throws. */
  count(point: FlowPoint, verdict: FlowVerdict, p: ObservedProvenance, n = 1): void {
    let policy = policyLabel(p);
    if (!this.policies.has(policy)) {
      if (this.policies.size >= this.maxPolicies) policy = '(other)';
      else this.policies.add(policy);
    }
    const k = `point="${point}",verdict="${verdict}",policy="${esc(policy.slice(0, 300))}"`;
    this.counts.set(k, (this.counts.get(k) ?? 0) + n);
  }

  /** Total of one point and verdict (tests, status lines). */
  total(point?: FlowPoint, verdict?: FlowVerdict): number {
    let n = 0;
    for (const [k, v] of this.counts)
      if (
        (point === undefined || k.startsWith(`point="${point}"`)) &&
        (verdict === undefined || k.includes(`,verdict="${verdict}",`))
      )
        n += v;
    return n;
  }

  /** `<prefix>_flows_total{point,verdict,policy}` with its HELP and TYPE lines. */
  render(prefix: string, what: string): string {
    return [
      `# HELP ${prefix}_flows_total ${what}, by enforcement point, verdict (allow or deny) and deciding policy.`,
      `# TYPE ${prefix}_flows_total counter`,
      ...[...this.counts.entries()].sort().map(([k, v]) => `${prefix}_flows_total{${k}} ${v}`),
      '',
    ].join('\n');
  }
}
