// The calculation is incremental and order independent (STYLE 10): whatever order and grouping
// the same resources arrive in, with desired() read in between or not, and with everything
// removed and re-added, the end state equals a from-scratch computation.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { Calculation } from './calculation.js';
import type { DesiredState, LocalEndpoint } from './types.js';

const TEXT = readFileSync(
  fileURLToPath(new URL('../nft/testdata/tiers.yaml', import.meta.url)),
  'utf8',
);
const BASE = loadText(TEXT, 'tiers.yaml').resources;
const LOCALS: LocalEndpoint[] = [
  { ref: 'shop/frontend', iface: 'vfront' },
  { ref: 'shop/api', iface: 'vapi' },
  { ref: 'shop/db', iface: 'vdb' },
  { ref: 'node1-eth0', iface: 'eth0' },
];

/** Extra resources so selectors have remote members, network sets and Kubernetes peers churn. */
function extra(): Resource[] {
  const out: Resource[] = [];
  for (let i = 0; i < 12; i++) {
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `remote-${i}`,
        namespace: i % 2 === 0 ? 'shop' : 'other',
        labels: { app: ['frontend', 'api', 'db'][i % 3] ?? 'x' },
      },
      spec: {
        nodeName: 'node2',
        containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 7000 + i }] }],
      },
      status: { podIP: `10.0.1.${i + 1}` },
    });
  }
  out.push({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'other', labels: { team: 'web' } },
  });
  out.push({
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkSet',
    metadata: { name: 'partners', namespace: 'shop', labels: { feed: 'bad' } },
    spec: { nets: ['198.51.100.0/24', '10.0.1.0/30'] },
  });
  return out;
}

const ALL = [...BASE, ...extra()];

function fromScratch(resources: readonly Resource[]): DesiredState {
  const c = new Calculation({ verifySharedSets: true });
  for (const r of resources) c.upsert(r);
  c.setLocalEndpoints(LOCALS);
  return c.desired();
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function shuffled<T>(xs: readonly T[], r: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}

function ns(r: Resource): string | undefined {
  return r.metadata.namespace;
}

const want = fromScratch(ALL);

describe('the calculation is order independent', () => {
  test('reversed input, reading desired() after every step, ends in the from-scratch state', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of [...ALL].reverse()) {
      c.upsert(r);
      c.desired();
    }
    assert.deepEqual(c.desired(), want);
  });

  test('shuffled input with reads at random points, ten seeds', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const r = rng(seed);
      const c = new Calculation({ verifySharedSets: true });
      c.setLocalEndpoints(LOCALS);
      for (const x of shuffled(ALL, r)) {
        c.upsert(x);
        if (r() < 0.3) c.desired();
      }
      assert.deepEqual(c.desired(), want, `seed ${seed}`);
    }
  });

  test('split in two halves with the local endpoints set in between', () => {
    const c = new Calculation({ verifySharedSets: true });
    const half = Math.floor(ALL.length / 2);
    for (const r of ALL.slice(0, half)) c.upsert(r);
    c.desired();
    c.setLocalEndpoints(LOCALS);
    c.desired();
    for (const r of ALL.slice(half)) c.upsert(r);
    assert.deepEqual(c.desired(), want);
  });

  test('with empties in between: everything removed and re-added', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    c.desired();
    for (const r of ALL) c.remove(r.kind, ns(r), r.metadata.name, r.apiVersion);
    const empty = c.desired();
    assert.equal(empty.endpoints.length, 0);
    assert.equal(empty.sets.length, 0);
    assert.equal(empty.unknown.length, LOCALS.length, 'unknown local endpoints are reported');
    for (const r of shuffled(ALL, rng(99))) c.upsert(r);
    assert.deepEqual(c.desired(), want);
  });

  test('churn: labels, policies and network sets changed and changed back', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    c.desired();
    const r = rng(7);
    for (let round = 0; round < 20; round++) {
      const x = ALL[Math.floor(r() * ALL.length)] as Resource;
      const changed = {
        ...x,
        metadata: { ...x.metadata, labels: { ...(x.metadata.labels ?? {}), app: 'churned' } },
      } as Resource;
      c.upsert(changed);
      if (r() < 0.5) c.desired();
      c.upsert(x);
    }
    assert.deepEqual(c.desired(), want);
  });
  test('endpoints that leave a selector leave its set (labels first wrong, then right)', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    const wrong = ALL.map((r) =>
      r.kind === 'Pod' || r.kind === 'GlobalNetworkSet' || r.kind === 'NetworkSet'
        ? {
            ...r,
            metadata: { ...r.metadata, labels: { app: 'frontend', feed: 'bad' } },
          }
        : r,
    );
    for (const r of wrong) c.upsert(r);
    c.desired();
    // Only what changed is fed again (a namespace would rescan everything).
    for (const [i, r] of ALL.entries()) if (wrong[i] !== r) c.upsert(r);
    assert.deepEqual(c.desired(), want);
  });
});

describe('the calculation updates only what a change touches', () => {
  test('a remote pod joining a selector changes set elements, not programs', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    const before = c.desired();
    c.upsert({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'newcomer', namespace: 'shop', labels: { app: 'frontend' } },
      spec: { nodeName: 'node2', containers: [{ name: 'c' }] },
      status: { podIP: '10.0.2.99' },
    });
    const after = c.desired();
    for (let i = 0; i < before.endpoints.length; i++)
      assert.equal(after.endpoints[i], before.endpoints[i], 'the same program object is reused');
    const set = after.sets.find((s) => s.describe === "selector app == 'frontend'");
    assert.ok(set?.v4.includes('10.0.2.99'));
    const old = before.sets.find((s) => s.describe === "selector app == 'frontend'");
    assert.ok(!old?.v4.includes('10.0.2.99'));
  });

  test('a local label change rebuilds only that endpoint program', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    const before = c.desired();
    const api = ALL.find((r) => r.kind === 'Pod' && r.metadata.name === 'api') as Resource;
    c.upsert({ ...api, metadata: { ...api.metadata, labels: { app: 'other' } } });
    const after = c.desired();
    for (let i = 0; i < before.endpoints.length; i++) {
      const b = before.endpoints[i];
      if (b?.ref === 'shop/api') assert.notDeepEqual(after.endpoints[i], b);
      else assert.equal(after.endpoints[i], b);
    }
  });

  test('a policy change rebuilds only the programs of the endpoints it selects', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    const before = c.desired();
    const pol = ALL.find((r) => r.metadata.name === 'api-from-frontend');
    assert.ok(pol?.kind === 'NetworkPolicy');
    c.upsert({ ...pol, spec: { ...pol.spec, order: 5 } } as Resource);
    const after = c.desired();
    for (let i = 0; i < before.endpoints.length; i++) {
      const b = before.endpoints[i];
      if (b?.ref === 'shop/api') assert.notEqual(after.endpoints[i], b);
      else assert.equal(after.endpoints[i], b, `${b?.ref ?? ''} keeps its program`);
    }
    assert.deepEqual(
      after,
      fromScratch([
        ...ALL.filter((r) => r !== pol),
        { ...pol, spec: { ...pol.spec, order: 5 } } as Resource,
      ]),
    );
  });

  test('policies that select no local endpoint produce no program and no set', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    const before = c.desired();
    c.upsert({
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkPolicy',
      metadata: { name: 'remote-only' },
      spec: {
        selector: "app == 'nowhere'",
        ingress: [{ action: 'Allow', source: { selector: "app == 'unique-peer'" } }],
      },
    });
    assert.deepEqual(c.desired(), before);
  });

  test('a missing local endpoint is reported as unknown (its interface will drop)', () => {
    const c = new Calculation({ verifySharedSets: true });
    for (const r of ALL) c.upsert(r);
    c.setLocalEndpoints([...LOCALS, { ref: 'shop/not-there', iface: 'vnone' }]);
    assert.deepEqual(c.desired().unknown, [{ ref: 'shop/not-there', iface: 'vnone' }]);
  });
});
