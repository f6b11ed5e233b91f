// `palisade demo` (what `npm start` runs until the live demo lands): the offline analysis of the
// bundled bookinfo example from the source documents — the reachability matrix, then each call
// the documents allow or forbid, judged with the enforcement point and policy that decided.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { CheckResult, Probe, Provenance } from '@palisade/core';
import type { Parsed } from './args.js';
import type { Io } from './input.js';
import { matrixCommand } from './offline.js';
import { readInputs } from './input.js';
import { compile, formatDiagnostic, hasErrors } from '@palisade/core';

const EXAMPLE = fileURLToPath(new URL('../../../examples/bookinfo', import.meta.url));
const CHECKS = fileURLToPath(new URL('../../../examples/bookinfo.checks.yaml', import.meta.url));

interface DemoCheck {
  readonly name: string;
  readonly expect: 'allow' | 'deny';
  readonly probe: Probe;
}

export interface DemoResult {
  readonly name: string;
  readonly expected: 'allow' | 'deny';
  readonly observed: 'allow' | 'deny' | 'error';
  readonly enforcedBy: string;
  readonly provenance: Provenance | { readonly reason: string };
  readonly pass: boolean;
}

/** The part that decided: the first refusing point, or the one whose rule allowed. */
function decisive(r: CheckResult): { by: string; provenance: Provenance } {
  if (r.kernel.egress.verdict === 'deny')
    return { by: 'kernel (egress at the source)', provenance: r.kernel.egress.provenance };
  if (r.kernel.ingress.verdict === 'deny')
    return { by: 'kernel (ingress at the destination)', provenance: r.kernel.ingress.provenance };
  if (r.l7.verdict === 'deny')
    return { by: 'L7 (sidecar at the destination)', provenance: r.l7.provenance };
  return r.kernel.ingress.deferredToL7
    ? { by: 'kernel and L7', provenance: r.l7.provenance }
    : { by: 'kernel and L7', provenance: r.kernel.ingress.provenance };
}

export async function demoCommand(p: Parsed, io: Io): Promise<number> {
  const json = p.values.json === true;
  const loaded = await readInputs([EXAMPLE], io);
  if (hasErrors(loaded.diagnostics)) {
    for (const d of loaded.diagnostics) io.stderr.write(`${formatDiagnostic(d)}\n`);
    return 1;
  }
  const engine = compile(loaded.resources);
  const checks = (parseYaml(readFileSync(CHECKS, 'utf8')) as { checks: DemoCheck[] }).checks;
  const results: DemoResult[] = checks.map((c) => {
    const r = engine.check(c.probe, false);
    if (!r.ok)
      return {
        name: c.name,
        expected: c.expect,
        observed: 'error',
        enforcedBy: '-',
        provenance: { reason: r.message },
        pass: false,
      };
    const d = decisive(r.result);
    return {
      name: c.name,
      expected: c.expect,
      observed: r.result.verdict,
      enforcedBy: d.by,
      provenance: d.provenance,
      pass: r.result.verdict === c.expect,
    };
  });
  const failed = results.filter((r) => !r.pass).length;
  if (!json) {
    io.stdout.write(
      'Palisade demo — offline analysis of the bookinfo scenario of the source documents\n' +
        '(the live demo with real workloads, kernel rules and mTLS comes with the node agent and sidecar)\n\n' +
        `input: ${loaded.files} files, ${loaded.resources.length} resources in examples/bookinfo\n\n`,
    );
    await matrixCommand({ values: { file: [EXAMPLE], port: '9080' }, positionals: [] }, io);
    io.stdout.write('\nchecks (expected → observed, who decided, why):\n\n');
    for (const r of results) {
      io.stdout.write(
        `${r.pass ? 'PASS' : 'FAIL'}  ${r.name}\n      expected ${r.expected}, observed ${r.observed} — ${r.enforcedBy}\n      ${r.provenance.reason}\n`,
      );
    }
    io.stdout.write(`\n${results.length - failed} of ${results.length} checks pass\n`);
  } else {
    io.stdout.write(`${JSON.stringify({ checks: results })}\n`);
  }
  return failed === 0 ? 0 : 1;
}
