// Set-up shared by the tests of the L7-only entry points (`l7-decide.test.ts` for `decideL7`,
// `l7-egress-decide.test.ts` for `decideL7Egress`); no tests of its own. The `.test.ts` suffix
// keeps it out of the core build.

import { compile, Engine } from './engine.js';
import type { Probe } from './types.js';
import type { Resource } from '../model/resources.js';
import { loadText } from '../load/load.js';
import { loadPolicyCorpus } from '../../../../conformance/policy-corpus.js';

/** A resource's identity (what an upsert replaces and a removal names). */
export const idOf = (r: Resource): string =>
  `${r.apiVersion}/${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;

/**
 * Pod `p{i}` of a generated world at 10.0.0.{i+1}, labelled `app`, with a named port `http`
 * (8080); without an L7 point when `l7` is false.
 */
export function pod(
  i: number,
  ns: string,
  app: string,
  l7: boolean,
  serviceAccountName: string,
): { readonly resource: Resource; readonly id: string; readonly ip: string } {
  const ip = `10.0.0.${i + 1}`;
  return {
    resource: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `p${i}`,
        namespace: ns,
        labels: { app },
        ...(l7 ? {} : { annotations: { 'palisade.dev/l7': 'false' } }),
      },
      spec: {
        serviceAccountName,
        containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }],
      },
      status: { podIP: ip },
    },
    id: `${ns}/p${i}`,
    ip,
  };
}

/** Every case of the policy conformance corpus: its engine and its probes (expectations off). */
export function* corpusProbes(): Generator<{ readonly engine: Engine; readonly probes: Probe[] }> {
  for (const c of loadPolicyCorpus()) {
    const engine = compile(loadText(c.resources, c.file).resources);
    const probes = c.probes.map((p) => {
      const { expect: _e, kernel: _k, l7: _l, decidedBy: _d, ...probe } = p;
      void _e;
      void _k;
      void _l;
      void _d;
      return probe;
    });
    yield { engine, probes };
  }
}

/**
 * Edits an engine from world `from` to world `to` one resource at a time (the second world's
 * resources upserted in reverse, so policies come before pods; then the first world's leftovers
 * removed), and after each edit but those `quiet` names, holds `agreeWith(edited, reference, p)`
 * for every probe, the reference compiled from scratch from the resources at that point. `fill`
 * asks each probe once first, so the edited engine's caches are full when the edits begin.
 */
export function followEdits(
  from: readonly Resource[],
  to: readonly Resource[],
  probes: readonly Probe[],
  fill: (e: Engine, p: Probe) => void,
  agreeWith: (e: Engine, reference: Engine, p: Probe) => void,
  quiet: (r: Resource) => boolean,
): void {
  const e = new Engine();
  const current = new Map<string, Resource>();
  for (const r of from) {
    e.upsert(r);
    current.set(idOf(r), r);
  }
  for (const p of probes) fill(e, p);
  const step = (): void => {
    const reference = compile([...current.values()]);
    for (const p of probes) agreeWith(e, reference, p);
  };
  for (const r of [...to].reverse()) {
    e.upsert(r);
    current.set(idOf(r), r);
    if (!quiet(r)) step();
  }
  for (const r of from)
    if (!to.some((x) => idOf(x) === idOf(r))) {
      e.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
      current.delete(idOf(r));
      step();
    }
}

/** Two pods of namespace `x`: `x/a` (10.0.0.1, service account `sa`), `x/b` (10.0.0.2, `sb`). */
export const TWO_PODS = `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {serviceAccountName: sa, containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {serviceAccountName: sb, containers: [{name: c}]}
status: {podIP: 10.0.0.2}
`;
