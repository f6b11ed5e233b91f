// The live demo's readable report: one block per check (verdict expected and observed, the
// enforcement point, the rules or policies that decided, what was seen), then a summary.
// Owns: layout only.

import type { Check } from './scenario.js';

export function formatReport(checks: readonly Check[], elapsedMs: number): string {
  const lines: string[] = ['', 'Checks (expected → observed, enforced by, what decided):', ''];
  for (const c of checks) {
    lines.push(`${c.pass ? 'PASS' : 'FAIL'}  ${c.name}`);
    lines.push(
      `      expected ${c.expected}, observed ${c.observed} — ${c.enforcedBy}${c.measuredMs !== undefined ? ` — ${c.measuredMs} ms` : ''}`,
    );
    if (c.provenance.kernel.length > 0)
      lines.push(
        `      kernel: ${c.provenance.kernel.slice(0, 4).join('; ')}${c.provenance.kernel.length > 4 ? `; … (${c.provenance.kernel.length} rules)` : ''}`,
      );
    if (c.provenance.l7 !== undefined) lines.push(`      L7: ${c.provenance.l7}`);
    if (c.provenance.api !== undefined) lines.push(`      API: ${c.provenance.api}`);
    lines.push(`      ${c.detail}`);
  }
  const failed = checks.filter((c) => !c.pass).length;
  lines.push(
    '',
    `${checks.length - failed} of ${checks.length} checks pass (${(elapsedMs / 1000).toFixed(1)} s)`,
    '',
  );
  return lines.join('\n');
}
