// The calculation is incremental and order independent (STYLE 10): whatever order and grouping
// the same resources arrive in, with desired() read in between or not, and with everything
// removed and re-added, the end state equals a from-scratch computation.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { render } from '../nft/render.js';
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

describe('a policy edit that keeps its selection re-derives only the programs it is in', () => {
  const pol = ALL.find((r) => r.metadata.name === 'api-from-frontend');
  assert.ok(pol?.kind === 'NetworkPolicy');
  const edited = {
    ...pol,
    spec: {
      ...pol.spec,
      ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [4444] } }],
    },
  } as Resource;

  test('a rules-only edit rebuilds the selected endpoint alone and equals from scratch', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    const before = c.desired();
    c.upsert(edited);
    const after = c.desired();
    for (let i = 0; i < before.endpoints.length; i++) {
      const b = before.endpoints[i];
      if (b?.ref === 'shop/api') assert.notEqual(after.endpoints[i], b);
      else assert.equal(after.endpoints[i], b, `${b?.ref ?? ''} keeps its program`);
    }
    assert.deepEqual(after, fromScratch([...ALL.filter((r) => r !== pol), edited]));
    // Unchanged sets are handed out as the same objects (the renderer caches by identity).
    const kept = new Map(before.sets.map((x) => [x.name, x]));
    for (const x of after.sets)
      if (kept.has(x.name) && JSON.stringify(kept.get(x.name)) === JSON.stringify(x))
        assert.equal(x, kept.get(x.name), `set ${x.name} is the same object`);
  });

  test('removing the policy and adding it back equals from scratch at every step', () => {
    const c = new Calculation({ verifySharedSets: true });
    c.setLocalEndpoints(LOCALS);
    for (const r of ALL) c.upsert(r);
    c.desired();
    c.remove('NetworkPolicy', 'shop', 'api-from-frontend', 'projectcalico.org/v3');
    assert.deepEqual(c.desired(), fromScratch(ALL.filter((r) => r !== pol)));
    c.upsert(edited);
    assert.deepEqual(c.desired(), fromScratch([...ALL.filter((r) => r !== pol), edited]));
  });
});

/** One random change of the current resources (policy rules, selectors, order, labels...). */
function randomEdit(
  cur: Map<string, Resource>,
  r: () => number,
): { upsert?: Resource; remove?: Resource } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const policies = [...cur.values()].filter(
    (x) => x.kind === 'NetworkPolicy' || x.kind === 'GlobalNetworkPolicy',
  );
  const pods = [...cur.values()].filter((x) => x.kind === 'Pod');
  const labels = ['frontend', 'api', 'db', 'x'];
  const op = Math.floor(r() * 7);
  if (policies.length === 0)
    return {
      upsert: pick(
        BASE.filter((x) => x.kind === 'NetworkPolicy' || x.kind === 'GlobalNetworkPolicy'),
      ),
    };
  const p = pick(policies);
  const spec = (p as unknown as { spec: Record<string, unknown> }).spec;
  const calico = p.apiVersion === 'projectcalico.org/v3';
  switch (op) {
    case 0:
    case 1: {
      // Rules only: a port, an action, a rule added or all rules dropped.
      const port = 1000 + Math.floor(r() * 50);
      const rules = calico
        ? pick([
            [{ action: 'Allow', protocol: 'TCP', destination: { ports: [port, 'http'] } }],
            [
              { action: 'Deny', protocol: 'UDP', source: { selector: `app == '${pick(labels)}'` } },
              { action: 'Allow', protocol: 'TCP', destination: { ports: [port] } },
            ],
            [{ action: 'Pass', source: { nets: [`10.${port % 250}.0.0/16`] } }],
            [],
          ])
        : pick([
            [
              {
                from: [{ podSelector: { matchLabels: { app: pick(labels) } } }],
                ports: [{ port }],
              },
            ],
            [{ ports: [{ port: 'http' }] }],
            [],
          ]);
      const dir = calico && r() < 0.5 ? 'egress' : 'ingress';
      return { upsert: { ...p, spec: { ...spec, [dir]: rules } } as Resource };
    }
    case 2:
      // The selection changes.
      return {
        upsert: {
          ...p,
          spec: calico
            ? { ...spec, selector: `app == '${pick(labels)}'` }
            : { ...spec, podSelector: { matchLabels: { app: pick(labels) } } },
        } as Resource,
      };
    case 3:
      return calico
        ? { upsert: { ...p, spec: { ...spec, order: Math.floor(r() * 300) } } }
        : { remove: p };
    case 4:
      return { remove: p };
    case 5: {
      const base = BASE.find((x) => x.kind === p.kind && x.metadata.name === p.metadata.name);
      return base ? { upsert: base } : { remove: p };
    }
    default: {
      const pod = pick(pods);
      return {
        upsert: {
          ...pod,
          metadata: { ...pod.metadata, labels: { app: pick(labels) } },
        },
      };
    }
  }
}

describe('incremental calculation and rendering after random edits equal a full computation', () => {
  const key = (x: Resource) =>
    `${x.apiVersion}/${x.kind}/${x.metadata.namespace ?? ''}/${x.metadata.name}`;
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    test(`seed ${seed}: 40 random edits, checked after each`, () => {
      const r = rng(seed);
      const cur = new Map(ALL.map((x) => [key(x), x]));
      const c = new Calculation({ verifySharedSets: true });
      for (const x of ALL) c.upsert(x);
      c.setLocalEndpoints(LOCALS);
      c.desired();
      for (let step = 0; step < 40; step++) {
        const e = randomEdit(cur, r);
        if (e.upsert) {
          cur.set(key(e.upsert), e.upsert);
          c.upsert(e.upsert);
        }
        if (e.remove) {
          cur.delete(key(e.remove));
          c.remove(e.remove.kind, ns(e.remove), e.remove.metadata.name, e.remove.apiVersion);
        }
        // Sometimes two edits fold into one read, as the agent's debounce does.
        if (r() < 0.3) continue;
        const got = c.desired();
        const full = fromScratch(shuffled([...cur.values()], r));
        assert.deepEqual(got, full, `seed ${seed} step ${step}`);
        // The cached render of the incremental state is the render of fresh objects.
        const opts = { table: 't', workloadInterfacePrefix: 'v' };
        assert.equal(
          render(got, opts).script,
          render(structuredClone(full), opts).script,
          `seed ${seed} step ${step}: render`,
        );
      }
    });
  }
});
