// Part of `npm run bench -- l7`: the agent's policy sync, CPU per change with many endpoints —
// each change recomputing every subscriber's view (the former way, `recomputeAll`) against
// recomputing only the subscribers it can affect. A generated cluster (pods in namespaces,
// Calico policies between apps), some pods local with a subscriber each; the changes are remote
// pods relabelled (pod churn, the common case) and one policy edit (which recomputes everyone
// in both ways). CPU time of this process, so a busy machine distorts it little.

import type { Resource } from '@palisade/core';
import type { Agent, MirrorChange } from '../packages/dataplane/src/agent/agent.js';
import { PolicySync } from '../packages/dataplane/src/agent/policysync.js';

const NODE = 'bench-node';

class Mirror {
  readonly mirror = new Map<string, Resource>();
  private readonly listeners = new Set<(c: MirrorChange) => void>();
  private rev = 1;
  readonly api = { call: () => Promise.reject(new Error('no API')) };
  onMirrorChange(f: (c: MirrorChange) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
  workloadEndpoints(): Resource[] {
    return [...this.mirror.values()].filter(
      (r) => r.kind === 'WorkloadEndpoint' && r.spec.node === NODE,
    );
  }
  reset(rs: readonly Resource[]): void {
    for (const r of rs) this.mirror.set(`${r.kind}/${r.metadata.namespace}/${r.metadata.name}`, r);
    const c: MirrorChange = {
      kind: 'reset',
      resources: [...this.mirror.values()],
      revision: `${this.rev++}`,
    };
    for (const f of this.listeners) f(c);
  }
  upsert(r: Resource): void {
    this.mirror.set(`${r.kind}/${r.metadata.namespace}/${r.metadata.name}`, r);
    const c: MirrorChange = { kind: 'upsert', resource: r, revision: `${this.rev++}` };
    for (const f of this.listeners) f(c);
  }
}

function podOf(i: number, app: string): Resource {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `p${i}`, namespace: `ns${i % 4}`, labels: { app } },
    spec: {
      serviceAccountName: `sa${i % 7}`,
      containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }],
    },
    status: { podIP: `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}` },
  };
}

function cluster(pods: number, local: number): Resource[] {
  const out: Resource[] = [];
  for (let n = 0; n < 4; n++)
    out.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns${n}` } });
  for (let i = 0; i < pods; i++) {
    const app = `app${i % 10}`;
    out.push(podOf(i, app));
    if (i < local)
      out.push({
        apiVersion: 'projectcalico.org/v3',
        kind: 'WorkloadEndpoint',
        metadata: { name: `${NODE}-k8s-p${i}-eth0`, namespace: `ns${i % 4}`, labels: { app } },
        spec: {
          node: NODE,
          orchestrator: 'k8s',
          pod: `p${i}`,
          endpoint: 'eth0',
          interfaceName: `cali${i}`,
          ipNetworks: [`10.1.${Math.floor(i / 250)}.${(i % 250) + 1}/32`],
          serviceAccountName: `sa${i % 7}`,
          ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        },
      });
  }
  for (let a = 0; a < 10; a++)
    for (let n = 0; n < 4; n++)
      out.push({
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: `app${a}-in`, namespace: `ns${n}` },
        spec: {
          selector: `app == 'app${a}'`,
          ingress: [
            {
              action: 'Allow',
              protocol: 'TCP',
              source: { selector: `app == 'app${(a + 1) % 10}'` },
              destination: { ports: [8080] },
            },
          ],
        },
      });
  return out;
}

function measure(pods: number, local: number, changes: number, recomputeAll: boolean) {
  const m = new Mirror();
  const sync = new PolicySync(m as unknown as Agent, {
    bundleRefreshMs: 0,
    debounceMs: 3_600_000,
    recomputeAll,
  });
  try {
    m.reset(cluster(pods, local));
    let sent = 0;
    for (let i = 0; i < local; i++) sync.subscribe(`ns${i % 4}/p${i}`, [8080], () => void sent++);
    sync.flush();
    const c0 = process.cpuUsage();
    for (let k = 0; k < changes; k++) {
      const i = local + ((k * 37) % (pods - local)); // a remote pod
      m.upsert(podOf(i, `app${(i + k + 1) % 10}`));
      sync.flush();
    }
    const c = process.cpuUsage(c0);
    const podMs = (c.user + c.system) / 1000 / changes;
    const p0 = process.cpuUsage();
    m.upsert({
      apiVersion: 'projectcalico.org/v3',
      kind: 'NetworkPolicy',
      metadata: { name: 'app0-in', namespace: 'ns0' },
      spec: { selector: "app == 'app0'", ingress: [{ action: 'Allow', protocol: 'TCP' }] },
    });
    sync.flush();
    const p = process.cpuUsage(p0);
    return {
      pod_change_cpu_ms: Math.round(podMs * 100) / 100,
      policy_change_cpu_ms: Math.round(((p.user + p.system) / 1000) * 100) / 100,
      messages_sent: sent,
      work: { ...sync.work },
    };
  } finally {
    sync.close();
  }
}

export function runPolicySyncMeasure(quick: boolean, log: (s: string) => void) {
  const pods = quick ? 300 : 1000;
  const local = 20;
  const changes = quick ? 10 : 30;
  const before = measure(pods, local, changes, true);
  const after = measure(pods, local, changes, false);
  log(
    `policy sync, ${pods} pods, ${local} local subscribers: CPU per remote pod change ${before.pod_change_cpu_ms} ms recomputing all, ${after.pod_change_cpu_ms} ms incremental; one policy change ${before.policy_change_cpu_ms} / ${after.policy_change_cpu_ms} ms`,
  );
  return { pods, local_subscribers: local, changes, recompute_all: before, incremental: after };
}
