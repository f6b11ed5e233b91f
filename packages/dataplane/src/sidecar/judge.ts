// The per-request judgement both sidecar directions share: a decision of the policy view run
// so that a failure to decide refuses (500, never forwarded) and a deny becomes the 403 with
// the deciding policy, and the access record of a judged request. Inbound (inbound.ts) and
// outbound (outbound.ts), HTTP/1.1 and HTTP/2 alike, answer and log through these.
// Owns: the mapping decision → refusal, and the record's shape per request. Must never: turn a
// decision that threw into an allow.

import type { Provenance, StagedVerdict } from '@palisade/core';
import { provenanceForLog, provenanceSummary } from './access-log.js';
import type { AccessLog, AccessRecord } from './access-log.js';
import type { SidecarDecision } from './policy-view.js';

/** A refusal: what to answer, how to log it, and what it means for the connection. */
export interface Refused {
  readonly ok: false;
  readonly status: number;
  /** The answer's text (the request id is appended). */
  readonly message: string;
  readonly verdict: AccessRecord['verdict'];
  readonly provenance: Provenance;
  /** Close an HTTP/1.1 connection after answering (its framing may be suspect). */
  readonly close: boolean;
  /** The connection itself is refused: HTTP/2 sessions are closed too (GOAWAY). */
  readonly connectionLevel: boolean;
  /** False when the refusal was already logged at the connection stage. */
  readonly log: boolean;
  /** The would-be verdicts of staged policies (flow records). */
  readonly staged?: readonly StagedVerdict[];
}

/** The outcome of judging one request, before anything is answered or forwarded. */
export type Judged =
  | {
      readonly ok: true;
      readonly path: string;
      readonly provenance: Provenance;
      readonly staged?: readonly StagedVerdict[];
    }
  | Refused;

export function refused(
  status: number,
  message: string,
  verdict: AccessRecord['verdict'],
  provenance: Provenance,
  close: boolean,
): Refused {
  return {
    ok: false,
    status,
    message,
    verdict,
    provenance,
    close,
    connectionLevel: false,
    log: true,
  };
}

/** The L7 point's own provenance (refusals before or around the policy). */
export function l7Provenance(
  direction: NonNullable<Provenance['direction']>,
  kind: Provenance['kind'],
  reason: string,
): Provenance {
  return { point: 'l7', direction, kind, reason };
}

/**
 * Runs one decision for the request at `path`: a throw refuses with 500 (and closes), a deny
 * answers 403 naming the deciding policy, an allow carries its provenance on.
 */
export function judgeDecision(
  path: string,
  direction: NonNullable<Provenance['direction']>,
  decide: () => SidecarDecision,
): Judged {
  let d: SidecarDecision;
  try {
    d = decide();
  } catch (e) {
    const p = l7Provenance(direction, 'unmanaged', `decision failed: ${(e as Error).message}`);
    return refused(500, 'RBAC: access denied (decision error)', 'error', p, true);
  }
  const staged = d.staged && d.staged.length > 0 ? { staged: d.staged } : {};
  if (d.verdict === 'deny')
    return {
      ...refused(
        403,
        `RBAC: access denied (${provenanceSummary(d.provenance)})`,
        'deny',
        d.provenance,
        false,
      ),
      ...staged,
    };
  return { ok: true, path, provenance: d.provenance, ...staged };
}

/** What a request's record holds before its outcome is known. */
export type RecordBase = Omit<
  AccessRecord,
  'time' | 'verdict' | 'status' | 'provenance' | 'latencyMs'
>;

/** Writes the record of one judged request once its outcome is known. */
export function recordAccess(
  log: AccessLog,
  base: RecordBase,
  started: bigint,
  now: Date,
  verdict: AccessRecord['verdict'],
  p: Provenance,
  status: number | null,
  staged?: readonly StagedVerdict[],
): void {
  log.record({
    ...base,
    time: now.toISOString(),
    verdict,
    status,
    provenance: provenanceForLog(p),
    ...(staged ? { staged } : {}),
    latencyMs: Number(process.hrtime.bigint() - started) / 1e6,
  });
}
