// Where the agent learns a pod's labels, service account, named ports and node. Owns: the
// `PodSource` port and `InMemoryPodTable`, its in-memory implementation fed with `v1` Pod
// resources (the real agent backs the port with the API server's Pods, which play the
// orchestrator's part without Kubernetes). Must never: invent a pod it was not given.

import type { EndpointPort, Pod } from '@palisade/core';

export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly serviceAccountName: string;
  /** The node the pod is scheduled to, when the orchestrator says. */
  readonly nodeName: string | undefined;
  /** Every container's named ports. */
  readonly ports: readonly EndpointPort[];
}

export interface PodSource {
  getPod(namespace: string, name: string): Promise<PodInfo | undefined>;
}

/** A pod resource as the agent needs it. */
export function podInfoFromResource(pod: Pod): PodInfo {
  const ports: EndpointPort[] = [];
  for (const c of [...(pod.spec.initContainers ?? []), ...(pod.spec.containers ?? [])])
    for (const p of c.ports ?? [])
      if (p.name !== undefined)
        ports.push({ name: p.name, protocol: p.protocol ?? 'TCP', port: p.containerPort });
  return {
    namespace: pod.metadata.namespace ?? 'default',
    name: pod.metadata.name,
    uid: pod.metadata.uid,
    labels: pod.metadata.labels ?? {},
    annotations: pod.metadata.annotations ?? {},
    serviceAccountName: pod.spec.serviceAccountName ?? pod.spec.serviceAccount ?? 'default',
    nodeName: pod.spec.nodeName,
    ports,
  };
}

/** In-memory pod table, for tests and for an agent started with pods from files. */
export class InMemoryPodTable implements PodSource {
  private readonly pods = new Map<string, PodInfo>();

  constructor(pods: readonly Pod[] = []) {
    for (const p of pods) this.upsert(p);
  }

  upsert(pod: Pod): void {
    const info = podInfoFromResource(pod);
    this.pods.set(`${info.namespace}/${info.name}`, info);
  }

  remove(namespace: string, name: string): void {
    this.pods.delete(`${namespace}/${name}`);
  }

  getPod(namespace: string, name: string): Promise<PodInfo | undefined> {
    return Promise.resolve(this.pods.get(`${namespace}/${name}`));
  }
}
