// The flat form of kernel programs (kernel-flat.ts) must answer exactly as the object form and as
// the rule walk: random clusters large enough that peer numbers span many memo words, decided
// twice (the second time from memo), then edited step by step (labels, policies, tiers, network
// sets, Services, namespaces, removals) with decisions between every edit, with and without
// constant renumbering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compile, Engine } from './engine.js';
import type { CalicoRule, EntityRule, Resource } from '../model/resources.js';

type Rnd = () => number;

function prng(seed: number): Rnd {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

const NS = ['a', 'b', 'c', 'd'];
const APPS = ['web', 'db', 'api', 'cache'];
const PORTS = [80, 8080, 9050, 443, 53];

interface World {
  readonly pods: Extract<Resource, { kind: 'Pod' }>[];
  readonly others: Resource[];
  readonly refs: string[];
  readonly rnd: Rnd;
  /** A random resource of the kinds that change decisions (a new policy, set, Service...). */
  readonly edit: () => Resource;
}

function world(seed: number): World {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const maybe = (p: number) => rnd() < p;
  const others: Resource[] = [];
  const pods: Extract<Resource, { kind: 'Pod' }>[] = [];
  const refs: string[] = [];
  const namespace = (name: string): Resource => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { team: pick(['x', 'y']) } },
  });
  for (const ns of NS) others.push(namespace(ns));
  // More than 16 endpoints, so that memo words hold several peers and peers fall in many words.
  const count = 20 + Math.floor(rnd() * 40);
  for (let i = 0; i < count; i++) {
    const ns = pick(NS);
    const v6 = maybe(0.1);
    const ip = `10.1.${Math.floor(i / 200)}.${(i % 200) + 1}`;
    pods.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `p${i}`,
        namespace: ns,
        labels: { app: pick(APPS), ...(maybe(0.3) ? { pci: 'true' } : {}) },
        ...(maybe(0.2) ? { annotations: { 'palisade.dev/l7': 'false' } } : {}),
      },
      spec: {
        containers: [
          {
            name: 'c',
            ports: [
              { name: 'http', containerPort: pick([80, 8080]) },
              ...(maybe(0.4) ? [{ name: 'dns', containerPort: 53, protocol: 'UDP' as const }] : []),
            ],
          },
        ],
      },
      status: v6 ? { podIPs: [{ ip: `fd00::${i + 1}` }, { ip }] } : { podIP: ip },
    });
    refs.push(`${ns}/p${i}`);
  }
  others.push({
    apiVersion: 'projectcalico.org/v3',
    kind: 'HostEndpoint',
    metadata: { name: 'h1', labels: { role: 'node', app: pick(APPS) } },
    spec: { node: 'n1', expectedIPs: ['10.9.0.1'] },
  });
  refs.push('h1', '10.1.0.250', '203.0.113.7');

  const selector = () =>
    pick([
      `app == '${pick(APPS)}'`,
      'has(pci)',
      `app == '${pick(APPS)}' || has(pci)`,
      "role == 'partner'",
      'all()',
      `app != '${pick(APPS)}'`,
    ]);
  const entity = (): EntityRule => {
    const e: Record<string, unknown> = {};
    if (maybe(0.5)) e['selector'] = selector();
    if (maybe(0.15)) e['notSelector'] = selector();
    if (maybe(0.15)) e['namespaceSelector'] = pick(['all()', 'global()', "team == 'x'"]);
    if (maybe(0.25))
      e['nets'] = [pick(['10.1.0.0/28', '10.1.0.16/28', '203.0.113.0/24', 'fd00::/120'])];
    if (maybe(0.15)) e['notNets'] = [pick(['10.1.0.0/30', '10.1.0.32/27'])];
    if (maybe(0.35)) e['ports'] = pick<(number | string)[]>([[80], ['http'], ['dns'], ['70:90']]);
    if (maybe(0.1)) e['notPorts'] = pick<(number | string)[]>([[443], ['http']]);
    if (maybe(0.08)) e['services'] = { name: 'svc', namespace: pick(NS) };
    return e;
  };
  const rule = (): CalicoRule => {
    const r: Record<string, unknown> = { action: pick(['Allow', 'Allow', 'Deny', 'Pass', 'Log']) };
    if (maybe(0.5)) r['protocol'] = pick(['TCP', 'UDP']);
    if (maybe(0.6)) r['source'] = entity();
    if (maybe(0.5)) r['destination'] = entity();
    if (maybe(0.1)) r['http'] = { methods: ['GET'] };
    return r as unknown as CalicoRule;
  };
  const rules = () => Array.from({ length: Math.floor(rnd() * 4) }, rule);
  let serial = 0;
  const policy = (): Resource => {
    const i = serial++;
    if (maybe(0.25)) {
      const ns = pick(NS);
      return {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: `k${i % 6}`, namespace: ns },
        spec: {
          podSelector: maybe(0.3) ? {} : { matchLabels: { app: pick(APPS) } },
          ingress: [
            {
              from: [
                pick([
                  { podSelector: { matchLabels: { app: pick(APPS) } } },
                  { namespaceSelector: { matchLabels: { team: pick(['x', 'y']) } } },
                  { ipBlock: { cidr: '10.1.0.0/26', except: ['10.1.0.0/30'] } },
                ]),
              ],
              ...(maybe(0.6) ? { ports: [pick([{ port: 80 }, { port: 'http' }])] } : {}),
            },
          ],
        },
      };
    }
    const global = maybe(0.5);
    const spec = {
      tier: pick(['default', 'sec']),
      ...(maybe(0.8) ? { order: Math.floor(rnd() * 4) } : {}),
      selector: selector(),
      ingress: rules(),
      egress: rules(),
    };
    return global
      ? {
          apiVersion: 'projectcalico.org/v3',
          kind: 'GlobalNetworkPolicy',
          metadata: { name: `g${i % 8}` },
          spec,
        }
      : {
          apiVersion: 'projectcalico.org/v3',
          kind: 'NetworkPolicy',
          metadata: { name: `n${i % 8}`, namespace: pick(NS) },
          spec,
        };
  };
  const netset = (): Resource => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'GlobalNetworkSet',
    metadata: { name: 'partners', labels: { role: 'partner' } },
    spec: { nets: [pick(['203.0.113.0/24', '10.1.0.0/29', '10.1.0.8/29'])] },
  });
  const service = (): Resource => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'svc', namespace: pick(NS) },
    spec: { selector: { app: pick(APPS) }, ports: [{ port: 80, targetPort: pick([80, 'http']) }] },
  });
  const tier = (): Resource => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'Tier',
    metadata: { name: 'sec' },
    spec: { order: 10, defaultAction: pick(['Deny', 'Pass'] as const) },
  });
  others.push(tier(), netset(), service());
  const policies = 4 + Math.floor(rnd() * 8);
  for (let i = 0; i < policies; i++) others.push(policy());
  const edit = (): Resource => {
    const k = rnd();
    if (k < 0.3) {
      const p = pick(pods);
      const labels: Record<string, string> = { ...(p.metadata.labels ?? {}), app: pick(APPS) };
      if (maybe(0.5)) labels['pci'] = 'true';
      else delete labels['pci'];
      return { ...p, metadata: { ...p.metadata, labels } };
    }
    if (k < 0.65) return policy();
    if (k < 0.75) return netset();
    if (k < 0.85) return service();
    if (k < 0.92) return tier();
    return namespace(pick(NS));
  };
  return { pods, others, refs, rnd, edit };
}

/** Handles of one engine, taken once and kept across edits (as a caller keeps them). */
function handles(e: Engine): (ref: string) => number | undefined {
  const known = new Map<string, number | undefined>();
  return (ref) => {
    if (!known.has(ref) || known.get(ref) === undefined) known.set(ref, e.endpointHandle(ref));
    return known.get(ref);
  };
}

/**
 * Both engines and the walk agree on a sample of decisions (each asked twice), by name and, for
 * endpoint names, by handle.
 */
function agree(
  flat: Engine,
  object: Engine,
  w: World,
  sample: number,
  where: string,
  handle: (ref: string) => number | undefined = handles(flat),
): void {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(w.rnd() * xs.length)] as T;
  for (let i = 0; i < sample; i++) {
    const a = pick(w.refs);
    const b = pick(w.refs);
    const protocol = w.rnd() < 0.85 ? 'TCP' : 'UDP';
    const port = pick(PORTS);
    const walk = object.kernelVerdicts(a, b, protocol, port, 'walk');
    const want = walk ? walk.egress.verdict === 'allow' && walk.ingress.verdict === 'allow' : false;
    const at = `${where}: ${a} -> ${b} ${protocol}/${port}`;
    assert.equal(object.kernelAllows(a, b, protocol, port), want, `object form, ${at}`);
    assert.equal(flat.kernelAllows(a, b, protocol, port), want, `flat form, ${at}`);
    assert.equal(flat.kernelAllows(a, b, protocol, port), want, `flat form from memo, ${at}`);
    const ha = handle(a);
    const hb = handle(b);
    // Every endpoint named has a handle; a kept handle of a removed endpoint answers as its name.
    if (!/^[0-9]/.test(a) && flat.describeEndpoint(a) !== undefined) assert.notEqual(ha, undefined);
    if (ha !== undefined && hb !== undefined)
      assert.equal(flat.kernelAllowsByHandle(ha, hb, protocol, port), want, `by handle, ${at}`);
  }
}

test('flat kernel programs decide as the object form and the walk on random clusters', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
      const w = world(seed);
      const all = [...w.others, ...w.pods];
      const flat = compile(all);
      const object = compile(all, { kernelForm: 'object' });
      // Every pair on one port twice over (programs are built on reuse), then a random sample.
      for (let pass = 0; pass < 3; pass++)
        for (const a of w.refs)
          for (const b of w.refs)
            assert.equal(
              flat.kernelAllows(a, b, 'TCP', 80),
              object.kernelAllows(a, b, 'TCP', 80),
              `pass ${pass}: ${a} -> ${b}`,
            );
      agree(flat, object, w, 600, `seed ${seed}`);
    }),
    { numRuns: 15 },
  );
});

test('flat kernel programs follow every change: edits one at a time agree with the object form, the walk and a fresh compile', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.boolean(), (seed, churn) => {
      const w = world(seed);
      // With slack 0, numbering starts over as soon as numbers exceed twice the endpoints.
      const options = churn ? { peerNumberSlack: 0 } : {};
      const flat = new Engine(options);
      const object = new Engine({ ...options, kernelForm: 'object' });
      const state = new Map<string, Resource>();
      const put = (r: Resource) => {
        flat.upsert(r);
        object.upsert(r);
        state.set(`${r.kind}/${r.apiVersion}/${r.metadata.namespace ?? ''}/${r.metadata.name}`, r);
      };
      for (const r of [...w.others, ...w.pods]) put(r);
      const handle = handles(flat);
      agree(flat, object, w, 200, 'initial', handle);
      for (let step = 0; step < 25; step++) {
        if (w.rnd() < 0.15 && state.size > 0) {
          const keys = [...state.keys()];
          const k = keys[Math.floor(w.rnd() * keys.length)] as string;
          const r = state.get(k) as Resource;
          state.delete(k);
          flat.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
          object.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
        } else put(w.edit());
        agree(flat, object, w, 40, `step ${step}`, handle);
      }
      const fresh = compile([...state.values()], { kernelForm: 'object' });
      for (const a of w.refs)
        for (const b of w.refs)
          for (const port of [80, 8080])
            assert.equal(
              flat.kernelAllows(a, b, 'TCP', port),
              fresh.kernelAllows(a, b, 'TCP', port),
              `after the edits: ${a} -> ${b} TCP/${port}`,
            );
    }),
    { numRuns: 12 },
  );
});
