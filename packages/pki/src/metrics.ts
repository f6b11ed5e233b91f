// Issuance counters: certificates issued, refusals by code. A plain object the server renders
// (Prometheus text provided); no global registry.

import type { PkiErrorCode } from './errors.js';

export interface IssuanceSnapshot {
  readonly issued: number;
  readonly refused: Readonly<Partial<Record<PkiErrorCode, number>>>;
}

export class IssuanceMetrics {
  #issued = 0;
  readonly #refused = new Map<PkiErrorCode, number>();

  recordIssued(): void {
    this.#issued++;
  }

  recordRefused(code: PkiErrorCode): void {
    this.#refused.set(code, (this.#refused.get(code) ?? 0) + 1);
  }

  snapshot(): IssuanceSnapshot {
    return {
      issued: this.#issued,
      refused: Object.fromEntries([...this.#refused].sort(([a], [b]) => a.localeCompare(b))),
    };
  }

  /** Prometheus text exposition of the counters. */
  toPrometheus(prefix = 'palisade_ca'): string {
    const s = this.snapshot();
    const lines = [
      `# HELP ${prefix}_certificates_issued_total Certificates signed by the CA.`,
      `# TYPE ${prefix}_certificates_issued_total counter`,
      `${prefix}_certificates_issued_total ${s.issued}`,
      `# HELP ${prefix}_certificates_refused_total Certificate requests refused, by error code.`,
      `# TYPE ${prefix}_certificates_refused_total counter`,
      ...Object.entries(s.refused).map(
        ([code, n]) => `${prefix}_certificates_refused_total{code="${code}"} ${n}`,
      ),
    ];
    return `${lines.join('\n')}\n`;
  }
}
