// The sidecar's access log (one JSON line per decision) and its counters. Owns: the record
// shape. Must never: write certificate material, header values or bodies (no secrets in logs).

import type { Writable } from 'node:stream';
import type { Provenance, StagedVerdict } from '@palisade/core';

export interface AccessRecord {
  readonly time: string;
  readonly requestId: string;
  /** `inbound` (a request to this endpoint) or `outbound` (a request it sends). */
  readonly side: 'inbound' | 'outbound';
  /** `request` for a judged HTTP request, `connection` for a refusal before any request. */
  readonly stage: 'request' | 'connection';
  readonly source: { readonly ip: string; readonly identity: string | null };
  readonly destination: { readonly endpoint: string; readonly port: number };
  readonly method: string | null;
  readonly path: string | null;
  readonly verdict: 'allow' | 'deny' | 'error';
  readonly status: number | null;
  readonly provenance: Pick<Provenance, 'kind' | 'tier' | 'policy' | 'rule' | 'reason'>;
  /** The would-be verdicts of staged policies for this request, when any applied. */
  readonly staged?: readonly StagedVerdict[];
  readonly policyVersion: number;
  readonly latencyMs: number;
}

export interface SidecarCounters {
  allowed: number;
  denied: number;
  /** Denials per deciding policy (or provenance kind when no policy decided). */
  deniedBy: Record<string, number>;
  /** Connections refused before any request (certificate, PeerAuthentication). */
  refusedConnections: number;
  /** Decisions that failed (answered 500, never forwarded) and upstream failures. */
  errors: number;
}

export function newCounters(): SidecarCounters {
  return { allowed: 0, denied: 0, deniedBy: {}, refusedConnections: 0, errors: 0 };
}

/** Writes records as JSON lines and keeps the counters. A full stream drops lines, never blocks. */
export class AccessLog {
  readonly counters: SidecarCounters = newCounters();
  private readonly listeners: ((r: AccessRecord) => void)[] = [];

  constructor(private readonly out: Writable | undefined) {}

  /** Calls `f` with every record (the flow reporter); `f` must not block or throw. */
  onRecord(f: (r: AccessRecord) => void): void {
    this.listeners.push(f);
  }

  record(r: AccessRecord): void {
    for (const f of this.listeners) {
      try {
        f(r);
      } catch {
        // visibility never affects a decision
      }
    }
    const c = this.counters;
    if (r.verdict === 'allow') c.allowed++;
    else if (r.verdict === 'error') c.errors++;
    else {
      if (r.stage === 'connection') c.refusedConnections++;
      else c.denied++;
      const key = r.provenance.policy ?? r.provenance.kind;
      c.deniedBy[key] = (c.deniedBy[key] ?? 0) + 1;
    }
    if (this.out && this.out.writable && !this.out.writableNeedDrain)
      this.out.write(`${JSON.stringify(r)}\n`);
  }

  /** A snapshot of the counters (for the admin endpoint and tests). */
  snapshot(): SidecarCounters {
    return { ...this.counters, deniedBy: { ...this.counters.deniedBy } };
  }
}

/** The short summary a 403 body carries: the deciding policy and rule, or the reason kind. */
export function provenanceSummary(p: Provenance): string {
  if (p.policy !== undefined)
    return `${p.kind} ${p.policy}${p.rule !== undefined ? ` rule ${p.rule}` : ''}${p.tier !== undefined ? ` tier ${p.tier}` : ''}`;
  return p.kind;
}

export function provenanceForLog(p: Provenance): AccessRecord['provenance'] {
  return {
    kind: p.kind,
    ...(p.tier !== undefined ? { tier: p.tier } : {}),
    ...(p.policy !== undefined ? { policy: p.policy } : {}),
    ...(p.rule !== undefined ? { rule: p.rule } : {}),
    reason: p.reason,
  };
}
