// The policy conformance corpus: cases as data under conformance/policy/<topic>/*.yaml, each
// citing the documented rule it checks (STYLE 9). A file may hold a shared `setup` (YAML
// documents every case of the file starts from); each case adds its own `resources` and probes.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import type { Probe } from '../packages/core/src/engine/types.js';

export interface CorpusProbe extends Probe {
  readonly expect: 'allow' | 'deny';
  readonly kernel?: 'allow' | 'deny';
  readonly l7?: 'allow' | 'deny';
  readonly decidedBy?: {
    point?: 'kernel' | 'l7';
    tier?: string;
    policy?: string;
    kind?: string;
    /** Legacy Istio RBAC: the ServiceRoleBinding that allowed. */
    binding?: string;
  };
}

export interface CorpusCase {
  readonly file: string;
  readonly name: string;
  readonly rule: string;
  readonly resources: string;
  readonly probes: readonly CorpusProbe[];
  readonly knownEngineGap?: string;
}

const ROOT = fileURLToPath(new URL('./policy', import.meta.url));

function walk(dir: string, out: string[]): string[] {
  for (const n of readdirSync(dir).sort()) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (n.endsWith('.yaml')) out.push(p);
  }
  return out;
}

export function loadPolicyCorpus(): CorpusCase[] {
  const cases: CorpusCase[] = [];
  for (const f of walk(ROOT, [])) {
    const doc = parse(readFileSync(f, 'utf8')) as {
      setup?: string;
      cases?: {
        name: string;
        rule: string;
        resources?: string;
        probes: CorpusProbe[];
        knownEngineGap?: string;
      }[];
    };
    const file = relative(ROOT, f);
    for (const c of doc.cases ?? []) {
      const parts = [doc.setup, c.resources].filter(
        (x): x is string => typeof x === 'string' && x.trim() !== '',
      );
      cases.push({
        file,
        name: c.name,
        rule: c.rule,
        resources: parts.join('\n---\n'),
        probes: c.probes,
        ...(c.knownEngineGap ? { knownEngineGap: c.knownEngineGap } : {}),
      });
    }
  }
  return cases;
}
