// `palisade demo --simulate`: the live demo's story on the decision engine alone (no root, no
// kernel, no processes): the workloads and policies of examples/demo, and each call of
// examples/demo/checks.yaml judged with the enforcement point and the policy that decided.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { join } from 'node:path';
import type { CheckResult, Engine, Probe, Provenance, Resource } from '@palisade/core';
import type { Parsed } from '../args.js';
import type { Io } from '../input.js';
import { readInputs } from '../input.js';
import { compile, formatDiagnostic, hasErrors } from '@palisade/core';

const DEMO = fileURLToPath(new URL('../../../../examples/demo/', import.meta.url));
const CHECKS = join(DEMO, 'checks.yaml');
interface DemoCheck {
  readonly name: string;
  readonly expect: 'allow' | 'deny';
  readonly probe: Probe;
  /** Files of examples/demo/ added for this check (the firewall change, ...). */
  readonly with?: readonly string[];
  /** false: judged with the workloads only, no policy. */
  readonly policies?: boolean;
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

/** Pods get addresses 10.244.0.1, .2, ... in file order, as the CNI plugin would give them. */
function withAddresses(resources: readonly Resource[]): Resource[] {
  let n = 0;
  return resources.map((r) => {
    if (r.kind !== 'Pod') return r;
    const ip = `10.244.0.${++n}`;
    return { ...r, status: { ...r.status, podIP: ip, podIPs: [{ ip }] } };
  });
}

export async function simulateCommand(p: Parsed, io: Io): Promise<number> {
  const json = p.values.json === true;
  const load = async (files: readonly string[]) => {
    const l = await readInputs(
      files.map((f) => join(DEMO, f)),
      io,
    );
    if (hasErrors(l.diagnostics)) {
      for (const d of l.diagnostics) io.stderr.write(`${formatDiagnostic(d)}\n`);
      throw new Error(`examples/demo does not load`);
    }
    return l.resources;
  };
  const checks = (parseYaml(readFileSync(CHECKS, 'utf8')) as { checks: DemoCheck[] }).checks;
  const engines = new Map<string, Engine>();
  let resourceCount = 0;
  const engineFor = async (c: DemoCheck): Promise<Engine> => {
    const files = [
      'workloads.yaml',
      ...(c.policies === false ? [] : ['policies']),
      ...(c.with ?? []),
    ];
    const key = files.join('\n');
    const cached = engines.get(key);
    if (cached) return cached;
    const resources = withAddresses(await load(files));
    resourceCount = Math.max(resourceCount, resources.length);
    const e = compile(resources);
    engines.set(key, e);
    return e;
  };
  const results: DemoResult[] = [];
  try {
    for (const c of checks) {
      const r = (await engineFor(c)).check(c.probe, false);
      if (!r.ok) {
        results.push({
          name: c.name,
          expected: c.expect,
          observed: 'error',
          enforcedBy: '-',
          provenance: { reason: r.message },
          pass: false,
        });
        continue;
      }
      const d = decisive(r.result);
      results.push({
        name: c.name,
        expected: c.expect,
        observed: r.result.verdict,
        enforcedBy: d.by,
        provenance: d.provenance,
        pass: r.result.verdict === c.expect,
      });
    }
  } catch (e) {
    io.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  const failed = results.filter((r) => !r.pass).length;
  if (!json) {
    io.stdout.write(
      "Palisade demo --simulate — the live demo's story on the decision engine alone\n" +
        '(the live demo, `palisade demo` as root, plays it with real workloads, kernel rules and mTLS)\n\n' +
        `input: examples/demo (${resourceCount} resources; pods at 10.244.0.1, .2, … in file order)\n\n`,
    );
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
