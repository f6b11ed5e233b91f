// Policy sync recomputes only the subscribers a change can affect; whatever it skips, every
// subscriber's last view must equal the view a fresh policy sync computes from scratch over the
// same resources, after every step of random change sequences (workloads coming, going and
// relabelled, Calico and Kubernetes policies, Istio AuthorizationPolicy and PeerAuthentication,
// legacy RBAC, namespaces). And it must really skip work: pod churn re-judges one peer per
// subscriber instead of recomputing every view.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Resource } from '@palisade/core';
import type { PolicySyncMessage, PolicySyncView } from '../agent-socket/protocol.js';
import type { Agent, MirrorChange } from './agent.js';
import { PolicySync } from './policysync.js';

const NODE = 'n1';
const NS = ['a', 'b'];
const APPS = ['web', 'api', 'db'];

/** The part of an agent policy sync reads: the mirror's changes and this node's endpoints. */
class MirrorOnly {
  readonly mirror = new Map<string, Resource>();
  private readonly listeners = new Set<(c: MirrorChange) => void>();
  private rev = 1;
  readonly api = { call: () => Promise.reject(new Error('no API in this test')) };

  onMirrorChange(f: (c: MirrorChange) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  workloadEndpoints(): Resource[] {
    return [...this.mirror.values()].filter(
      (r) => r.kind === 'WorkloadEndpoint' && r.spec.node === NODE,
    );
  }

  private emit(c: MirrorChange): void {
    for (const f of this.listeners) f(c);
  }

  reset(resources: readonly Resource[]): void {
    this.mirror.clear();
    for (const r of resources) this.mirror.set(idOf(r), r);
    this.emit({ kind: 'reset', resources: [...this.mirror.values()], revision: `${this.rev++}` });
  }

  upsert(r: Resource): void {
    this.mirror.set(idOf(r), r);
    this.emit({ kind: 'upsert', resource: r, revision: `${this.rev++}` });
  }

  remove(r: Resource): void {
    const cur = this.mirror.get(idOf(r));
    if (!cur) return;
    this.mirror.delete(idOf(r));
    this.emit({ kind: 'remove', resource: cur, revision: `${this.rev++}` });
  }
}

const idOf = (r: Resource): string =>
  `${r.apiVersion}/${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;

const asAgent = (m: MirrorOnly): Agent => m as unknown as Agent;

function pod(i: number, ns: string, app: string, sa: string): Resource {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `p${i}`, namespace: ns, labels: { app } },
    spec: {
      serviceAccountName: sa,
      nodeName: i < 3 ? NODE : 'n2',
      containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }],
    },
    status: { podIP: `10.0.0.${i + 1}` },
  };
}

function wep(i: number, ns: string, app: string, sa: string): Resource {
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'WorkloadEndpoint',
    metadata: { name: `${NODE}-k8s-p${i}-eth0`, namespace: ns, labels: { app } },
    spec: {
      node: NODE,
      orchestrator: 'k8s',
      pod: `p${i}`,
      endpoint: 'eth0',
      interfaceName: `cali${i}`,
      ipNetworks: [`10.0.0.${i + 1}/32`],
      serviceAccountName: sa,
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    },
  };
}

/** One change: what it upserts or removes (built from small random choices). */
type Step =
  | { op: 'pod'; i: number; app: string; sa: string; remove: boolean }
  | {
      op: 'calico';
      n: number;
      ns: string;
      app: string;
      from: string;
      port: number;
      remove: boolean;
    }
  | { op: 'k8s'; n: number; ns: string; app: string; from: string; remove: boolean }
  | { op: 'authz'; n: number; ns: string; app: string | undefined; remove: boolean }
  | { op: 'peerauthn'; n: number; ns: string; app: string | undefined; remove: boolean }
  | { op: 'rbac'; ns: string; remove: boolean }
  | { op: 'namespace'; ns: string; team: string };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('pod' as const),
      i: fc.nat(5),
      app: fc.constantFrom(...APPS),
      sa: fc.constantFrom('s1', 's2'),
      remove: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('calico' as const),
      n: fc.nat(2),
      ns: fc.constantFrom(...NS),
      app: fc.constantFrom(...APPS),
      from: fc.constantFrom(...APPS),
      port: fc.constantFrom(8080, 9090),
      remove: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('k8s' as const),
      n: fc.nat(1),
      ns: fc.constantFrom(...NS),
      app: fc.constantFrom(...APPS),
      from: fc.constantFrom(...APPS),
      remove: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('authz' as const),
      n: fc.nat(2),
      ns: fc.constantFrom(...NS, 'istio-system'),
      app: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
      remove: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('peerauthn' as const),
      n: fc.nat(1),
      ns: fc.constantFrom(...NS, 'istio-system'),
      app: fc.option(fc.constantFrom(...APPS), { nil: undefined }),
      remove: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('rbac' as const),
      ns: fc.constantFrom(...NS),
      remove: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('namespace' as const),
      ns: fc.constantFrom(...NS),
      team: fc.constantFrom('x', 'y'),
    }),
  },
);

/** The resources one step upserts or removes. */
function resourcesOf(s: Step): { readonly resources: Resource[]; readonly remove: boolean } {
  switch (s.op) {
    case 'pod': {
      const ns = NS[s.i % 2] as string;
      return {
        resources: [pod(s.i, ns, s.app, s.sa), ...(s.i < 3 ? [wep(s.i, ns, s.app, s.sa)] : [])],
        remove: s.remove,
      };
    }
    case 'calico':
      return {
        resources: [
          {
            apiVersion: 'projectcalico.org/v3',
            kind: 'NetworkPolicy',
            metadata: { name: `np${s.n}`, namespace: s.ns },
            spec: {
              selector: `app == '${s.app}'`,
              ingress: [
                {
                  action: 'Allow',
                  protocol: 'TCP',
                  source: { selector: `app == '${s.from}'` },
                  destination: { ports: [s.port] },
                },
              ],
            },
          },
        ],
        remove: s.remove,
      };
    case 'k8s':
      return {
        resources: [
          {
            apiVersion: 'networking.k8s.io/v1',
            kind: 'NetworkPolicy',
            metadata: { name: `k${s.n}`, namespace: s.ns },
            spec: {
              podSelector: { matchLabels: { app: s.app } },
              policyTypes: ['Egress'],
              egress: [{ to: [{ podSelector: { matchLabels: { app: s.from } } }] }],
            },
          },
        ],
        remove: s.remove,
      };
    case 'authz':
      return {
        resources: [
          {
            apiVersion: 'security.istio.io/v1',
            kind: 'AuthorizationPolicy',
            metadata: { name: `ap${s.n}`, namespace: s.ns },
            spec: {
              action: 'ALLOW',
              ...(s.app ? { selector: { matchLabels: { app: s.app } } } : {}),
              rules: [{ to: [{ operation: { methods: ['GET'] } }] }],
            },
          },
        ],
        remove: s.remove,
      };
    case 'peerauthn':
      return {
        resources: [
          {
            apiVersion: 'security.istio.io/v1',
            kind: 'PeerAuthentication',
            metadata: { name: `pa${s.n}`, namespace: s.ns },
            spec: {
              mtls: { mode: 'STRICT' },
              ...(s.app ? { selector: { matchLabels: { app: s.app } } } : {}),
            },
          },
        ],
        remove: s.remove,
      };
    case 'rbac':
      return {
        resources: [
          {
            apiVersion: 'rbac.istio.io/v1alpha1',
            kind: 'ServiceRole',
            metadata: { name: 'r', namespace: s.ns },
            spec: { rules: [{ services: ['*'], methods: ['GET'] }] },
          },
          ...(s.ns === 'a'
            ? [
                {
                  apiVersion: 'rbac.istio.io/v1alpha1',
                  kind: 'ClusterRbacConfig',
                  metadata: { name: 'default' },
                  spec: { mode: 'ON' },
                } as Resource,
              ]
            : []),
        ],
        remove: s.remove,
      };
    case 'namespace':
      return {
        resources: [
          {
            apiVersion: 'v1',
            kind: 'Namespace',
            metadata: { name: s.ns, labels: { team: s.team } },
          },
        ],
        remove: false,
      };
  }
}

function initial(): Resource[] {
  const out: Resource[] = [];
  for (const ns of [...NS, 'istio-system'])
    out.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  for (let i = 0; i < 6; i++) {
    const ns = NS[i % 2] as string;
    const app = APPS[i % 3] as string;
    out.push(pod(i, ns, app, 's1'));
    if (i < 3) out.push(wep(i, ns, app, 's1'));
  }
  return out;
}

/** The subscribers: every local pod, on its port (and one on two ports). */
const SUBS: readonly { endpoint: string; ports: number[] }[] = [
  { endpoint: 'a/p0', ports: [8080] },
  { endpoint: 'b/p1', ports: [8080, 9090] },
  { endpoint: 'a/p2', ports: [8080] },
];

function reference(mirror: MirrorOnly, endpoint: string, ports: number[]) {
  const m = new MirrorOnly();
  const sync = new PolicySync(asAgent(m), { bundleRefreshMs: 0 });
  try {
    m.reset([...mirror.mirror.values()]);
    return sync.viewOf(endpoint, ports);
  } finally {
    sync.close();
  }
}

function run(steps: readonly Step[], options: { recomputeAll?: boolean } = {}) {
  const m = new MirrorOnly();
  const sync = new PolicySync(asAgent(m), { bundleRefreshMs: 0, debounceMs: 60_000, ...options });
  const last = new Map<string, PolicySyncView>();
  try {
    m.reset(initial());
    for (const s of SUBS)
      sync.subscribe(s.endpoint, s.ports, (msg: PolicySyncMessage) => {
        if (msg.type === 'snapshot' || msg.type === 'update') last.set(s.endpoint, msg.view);
      });
    const check = (): void => {
      sync.flush();
      for (const s of SUBS) {
        const want = reference(m, s.endpoint, s.ports);
        if (want === undefined) continue; // not local or no identity now: nothing is sent
        assert.deepEqual(last.get(s.endpoint), want, `view of ${s.endpoint}`);
      }
    };
    check();
    for (const step of steps) {
      const { resources, remove } = resourcesOf(step);
      for (const r of resources) {
        if (remove) m.remove(r);
        else m.upsert(r);
      }
      check();
    }
    return { ...sync.work };
  } finally {
    sync.close();
  }
}

test('incremental policy sync: every view equals a from-scratch computation after random changes', () => {
  fc.assert(
    fc.property(fc.array(stepArb, { minLength: 1, maxLength: 25 }), (steps) => {
      run(steps);
    }),
    { numRuns: 60 },
  );
});

test('incremental policy sync skips what a change cannot affect (pod churn, Istio elsewhere)', () => {
  // Remote pods come and go and an AuthorizationPolicy selects nobody local: views stay, yet
  // every subscriber is judged against the churned pod only.
  const churn: Step[] = [];
  for (let k = 0; k < 10; k++)
    churn.push({ op: 'pod', i: 3 + (k % 3), app: 'db', sa: 's2', remove: k % 2 === 0 });
  churn.push({ op: 'authz', n: 0, ns: 'b', app: 'nothing-local', remove: false });
  const base = run([]);
  const inc = run(churn);
  const all = run(churn, { recomputeAll: true });
  assert.equal(inc.full, base.full, 'no view is computed from scratch after the first');
  assert.ok(inc.skipped > 0, 'some subscribers were not touched at all');
  assert.equal(inc.peerChecks, SUBS.length * 10, 'one peer judged per subscriber and pod change');
  assert.equal(
    all.full,
    base.full + SUBS.length * churn.length,
    'the former way recomputes everything',
  );
});

test('policy sync says, once a revision, which view version each L7 point was sent (and only those whose view changed)', () => {
  const m = new MirrorOnly();
  const lines: string[] = [];
  const sync = new PolicySync(asAgent(m), {
    bundleRefreshMs: 0,
    debounceMs: 60_000,
    say: (l) => lines.push(l),
  });
  try {
    m.reset(initial());
    const versions = new Map<string, number>();
    for (const s of SUBS)
      sync.subscribe(s.endpoint, s.ports, (msg: PolicySyncMessage) => {
        if (msg.type === 'snapshot' || msg.type === 'update') versions.set(s.endpoint, msg.version);
      });
    sync.flush();
    lines.length = 0;
    // A policy selecting a/p0 only: its view changes, the others' do not.
    m.upsert({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'only-p0', namespace: 'a' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] },
    });
    sync.flush();
    const sent = lines.filter((l) => l.startsWith('policy views of revision '));
    assert.equal(sent.length, 1, lines.join('\n'));
    const v = versions.get('a/p0');
    assert.ok(v !== undefined);
    assert.match(sent[0] ?? '', new RegExp(`sent to 1 L7 point\\(s\\): a/p0@${v}$`));
    // A flush with nothing new says nothing.
    sync.flush();
    assert.equal(lines.filter((l) => l.startsWith('policy views of revision ')).length, 1);
  } finally {
    sync.close();
  }
});
