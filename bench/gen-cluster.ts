// Deterministic synthetic clusters for benchmarks: namespaces, service accounts, pods with
// realistic label distributions, tiers, and a mix of Calico, Kubernetes and Istio policies.
// Owns: generating data. Must never: use Math.random (results must be reproducible).

import type { CalicoPolicySpec, Resource } from '../packages/core/src/model/resources.js';
import type { Probe } from '../packages/core/src/engine/types.js';

export interface ClusterSpec {
  readonly endpoints: number;
  readonly policies: number;
  readonly namespaces?: number;
  readonly seed?: number;
}

export interface Cluster {
  readonly resources: Resource[];
  readonly pods: readonly { id: string; ns: string; app: string; sa: string }[];
  readonly namespaces: readonly string[];
}

/** xorshift32: small, fast, deterministic. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

const TEAMS = ['payments', 'search', 'identity', 'catalog', 'checkout', 'ml', 'infra', 'growth'];
const ENVS = ['prod', 'staging', 'dev'];
const ZONES = ['dmz', 'trusted', 'restricted'];
const TIERS_APP = ['frontend', 'backend', 'db', 'cache', 'queue'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE'];

export function generateCluster(spec: ClusterSpec): Cluster {
  const rnd = prng(spec.seed ?? 1);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const nsCount = spec.namespaces ?? Math.max(2, Math.round(spec.endpoints / 100));
  const appsPerNs = 8;
  const resources: Resource[] = [];
  const namespaces: string[] = [];
  for (let i = 0; i < nsCount; i++) {
    const name = `ns-${i}`;
    namespaces.push(name);
    resources.push({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, labels: { team: pick(TEAMS), env: pick(ENVS), zone: pick(ZONES) } },
    });
    for (let a = 0; a < appsPerNs; a++) {
      resources.push({
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: {
          name: `app-${a}`,
          namespace: name,
          labels:
            a % 3 === 0 ? { 'ratings-reader': 'true', team: pick(TEAMS) } : { team: pick(TEAMS) },
        },
      });
    }
  }
  // Zipf-ish app sizes: app a gets weight 1/(a+1).
  const weights = Array.from({ length: appsPerNs }, (_, a) => 1 / (a + 1));
  const total = weights.reduce((x, y) => x + y, 0);
  const pickApp = () => {
    let r = rnd() * total;
    for (let a = 0; a < appsPerNs; a++) {
      r -= weights[a] ?? 0;
      if (r <= 0) return a;
    }
    return appsPerNs - 1;
  };
  const pods: { id: string; ns: string; app: string; sa: string }[] = [];
  for (let i = 0; i < spec.endpoints; i++) {
    const ns = namespaces[i % nsCount] as string;
    const a = pickApp();
    const app = `app-${a}`;
    const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    const name = `${app}-${i}`;
    pods.push({ id: `${ns}/${name}`, ns, app, sa: app });
    resources.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: ns,
        labels: {
          app,
          version: `v${1 + Math.floor(rnd() * 3)}`,
          tier: TIERS_APP[a % TIERS_APP.length] as string,
          ...(rnd() < 0.05 ? { pci: 'true' } : {}),
        },
      },
      spec: {
        serviceAccountName: app,
        containers: [
          {
            name: 'main',
            ports: [
              { name: 'http', containerPort: 8080 },
              { name: 'metrics', containerPort: 9090 },
            ],
          },
        ],
      },
      status: { podIP: ip },
    });
  }
  resources.push(
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'security' },
      spec: { order: 100 },
    },
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'Tier',
      metadata: { name: 'platform' },
      spec: { order: 200, defaultAction: 'Pass' },
    },
    {
      apiVersion: 'projectcalico.org/v3',
      kind: 'GlobalNetworkSet',
      metadata: { name: 'partners', labels: { role: 'partner' } },
      spec: { nets: ['203.0.113.0/24', '198.51.100.0/24'] },
    },
  );
  for (let p = 0; p < spec.policies; p++) {
    const ns = pick(namespaces);
    const app = `app-${pickApp()}`;
    const other = `app-${pickApp()}`;
    const kind = p % 10;
    if (kind < 4) {
      resources.push({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: `knp-${p}`, namespace: ns },
        spec: {
          podSelector: { matchLabels: { app } },
          ingress: [
            {
              from: [
                { podSelector: { matchLabels: { app: other } } },
                {
                  namespaceSelector: { matchLabels: { team: pick(TEAMS) } },
                  podSelector: { matchLabels: { tier: 'frontend' } },
                },
              ],
              ports: [{ port: 'http' }, { port: 9090 }],
            },
          ],
          ...(rnd() < 0.3
            ? { egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.255.0.0/16'] } }] }] }
            : {}),
        },
      });
    } else if (kind < 8) {
      const global = rnd() < 0.1;
      const tier = global ? pick(['security', 'platform']) : 'default';
      const base = {
        apiVersion: 'projectcalico.org/v3' as const,
        metadata: global ? { name: `${tier}.gnp-${p}` } : { name: `np-${p}`, namespace: ns },
      };
      const spec: CalicoPolicySpec = {
        ...(global ? { tier, namespaceSelector: `zone == '${pick(ZONES)}'` } : {}),
        order: Math.floor(rnd() * 1000),
        selector: `app == '${app}' && version in {'v1', 'v2'}`,
        types: ['Ingress' as const, 'Egress' as const],
        ingress: [
          {
            action: 'Allow' as const,
            protocol: 'TCP',
            source: { selector: `app == '${other}' || has(pci)` },
            destination: { ports: [8080, '9000:9100'] },
          },
          {
            action: 'Allow' as const,
            protocol: 'TCP',
            source: { serviceAccounts: { selector: "ratings-reader == 'true'" } },
            http: { methods: ['GET'], paths: [{ prefix: '/ratings' }] },
          },
          {
            action: rnd() < 0.5 ? 'Deny' : 'Pass',
            source: { selector: "role == 'partner'", namespaceSelector: 'global()' },
          },
        ],
        egress: [{ action: 'Allow' as const, destination: { nets: ['10.0.0.0/8'] } }],
      };
      resources.push(
        global
          ? { ...base, kind: 'GlobalNetworkPolicy', spec }
          : { ...base, kind: 'NetworkPolicy', spec },
      );
    } else {
      resources.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: `az-${p}`, namespace: ns },
        spec: {
          selector: { matchLabels: { app } },
          action: rnd() < 0.8 ? 'ALLOW' : 'DENY',
          rules: [
            {
              from: [
                {
                  source: {
                    principals: [`cluster.local/ns/${ns}/sa/${other}`],
                    namespaces: [pick(namespaces)],
                  },
                },
              ],
              to: [{ operation: { methods: [pick(METHODS)], paths: ['/api/*', '/healthz'] } }],
            },
          ],
        },
      });
    }
  }
  return { resources, pods, namespaces };
}

/** Random probes between pods of the cluster, with HTTP attributes for L7 decisions. */
export function generateProbes(c: Cluster, n: number, seed = 7, http = false): Probe[] {
  const rnd = prng(seed);
  const out: Probe[] = [];
  for (let i = 0; i < n; i++) {
    const a = c.pods[Math.floor(rnd() * c.pods.length)];
    const b = c.pods[Math.floor(rnd() * c.pods.length)];
    if (!a || !b) continue;
    out.push({
      from: a.id,
      to: b.id,
      protocol: 'TCP',
      port: rnd() < 0.7 ? 8080 : 9090,
      ...(http
        ? {
            method: METHODS[Math.floor(rnd() * 4)] as string,
            path: rnd() < 0.5 ? '/ratings/1' : '/api/x',
          }
        : {}),
    });
  }
  return out;
}
