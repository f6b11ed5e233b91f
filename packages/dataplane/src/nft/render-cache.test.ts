// The renderer keeps the chains of an unchanged endpoint program between renders (incremental
// rendering). Rule: a cached render is byte for byte the render of the same state built from
// fresh objects (no cache hit possible), after every step of a sequence of policy, label,
// membership and endpoint changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Resource } from '@palisade/core';
import { Calculation } from '../calc/calculation.js';
import { render } from './render.js';

function pods(n: number, labelOf: (i: number) => string): Resource[] {
  return Array.from({ length: n }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `p${i}`, namespace: 'ns', labels: { app: labelOf(i) } },
    spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { podIP: `10.9.0.${i + 1}` },
  }));
}

function policy(i: number, port: number, peer: string): Resource {
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: `pol${i}`, namespace: 'ns' },
    spec: {
      order: i,
      selector: `app == 'a${i % 4}'`,
      ingress: [
        {
          action: i % 3 === 0 ? 'Deny' : 'Allow',
          protocol: 'TCP',
          source: { selector: `app == '${peer}'` },
          destination: { ports: [port, 'http'] },
        },
      ],
      egress: [{ action: 'Allow', destination: { nets: [`10.${i}.0.0/16`] } }],
    },
  };
}

test('a cached render equals a render of fresh objects after every change', () => {
  const calc = new Calculation({ verifySharedSets: true });
  const base: Resource[] = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } },
    ...pods(8, (i) => `a${i % 4}`),
  ];
  for (const r of base) calc.upsert(r);
  calc.setLocalEndpoints(
    Array.from({ length: 8 }, (_, i) => ({ ref: `ns/p${i}`, iface: `veth${i}` })),
  );
  const steps: (() => void)[] = [
    () => {
      for (let i = 0; i < 6; i++) calc.upsert(policy(i, 80 + i, `a${(i + 1) % 4}`));
    },
    () => calc.upsert(policy(2, 9999, 'a3')),
    () => calc.upsert(pods(8, (i) => (i === 5 ? 'a2' : `a${i % 4}`))[5] as Resource),
    () => calc.remove('NetworkPolicy', 'ns', 'pol4', 'projectcalico.org/v3'),
    () =>
      calc.setLocalEndpoints(
        Array.from({ length: 7 }, (_, i) => ({ ref: `ns/p${i}`, iface: `veth${i}` })),
      ),
    () => calc.upsert(policy(7, 443, 'a0')),
  ];
  let previous = '';
  for (const [i, step] of steps.entries()) {
    step();
    const d = calc.desired();
    const cached = render(d, { table: 't', workloadInterfacePrefix: 'veth' });
    const fresh = render(structuredClone(d), { table: 't', workloadInterfacePrefix: 'veth' });
    assert.equal(cached.script, fresh.script, `step ${i}`);
    assert.notEqual(
      cached.skeleton + [...cached.elements].join(),
      previous,
      `step ${i} changed something`,
    );
    previous = cached.skeleton + [...cached.elements].join();
  }
});
