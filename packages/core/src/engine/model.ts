// The world the engine judges: endpoints, namespaces, service accounts, network sets, profiles
// and services, with the labels Calico derives for them (DESIGN §4 item 5).
// Owns: turning orchestrator resources into endpoints. Must never: look at policies.

import type {
  CalicoRule,
  HostEndpoint,
  Namespace,
  Pod,
  Profile,
  Service,
  ServiceAccount,
  WorkloadEndpoint,
  NetworkSet,
  GlobalNetworkSet,
} from '../model/resources.js';
import { LEGACY_ISOLATION_ANNOTATION } from '../model/resources.js';
import { parseCidr, parseIp, formatIp } from '../net/ip.js';
import type { Cidr, IpAddr } from '../net/ip.js';
import { protocolNumber } from './matchers.js';
import type { Labels } from './matchers.js';

export const LABEL_NAMESPACE = 'projectcalico.org/namespace';
export const LABEL_ORCHESTRATOR = 'projectcalico.org/orchestrator';
export const LABEL_SERVICE_ACCOUNT = 'projectcalico.org/serviceaccount';
export const LABEL_NAME = 'projectcalico.org/name';
export const NS_PREFIX = 'pcns.';
export const SA_PREFIX = 'pcsa.';
export const NS_PROFILE_PREFIX = 'kns.';
export const SA_PROFILE_PREFIX = 'ksa.';

export interface NamedPort {
  readonly name: string;
  readonly protocol: number;
  readonly port: number;
}

/** Anything a rule selector can match: a workload or host endpoint, or a network set. */
export interface Entity {
  readonly kind: 'workload' | 'host' | 'netset';
  readonly namespace: string | undefined;
  /** Calico's full label set: own labels over inherited profile labels and system labels. */
  readonly labels: Labels;
  /** Labels a `namespaceSelector` sees: the namespace's labels; `{}` for global entities. */
  readonly nsView: Labels;
  readonly serviceAccount: string | undefined;
  /** Labels a service-account selector sees. */
  readonly saView: Labels | undefined;
}

export interface Endpoint extends Entity {
  readonly kind: 'workload' | 'host';
  /** `namespace/name` for workloads, the name for host endpoints. */
  readonly id: string;
  readonly name: string;
  readonly ownLabels: Labels;
  readonly ips: readonly IpAddr[];
  readonly namedPorts: readonly NamedPort[];
  readonly profiles: readonly string[];
  /** Whether an L7 enforcement point (sidecar) stands beside this endpoint. */
  readonly l7: boolean;
  readonly node: string | undefined;
}

export interface NetSetEntity extends Entity {
  readonly kind: 'netset';
  readonly id: string;
  readonly nets: readonly Cidr[];
}

export interface CompiledProfile {
  readonly name: string;
  readonly labels: Labels;
  readonly ingress: readonly CalicoRule[];
  readonly egress: readonly CalicoRule[];
  /** Set for a namespace profile isolated by the legacy DefaultDeny annotation. */
  readonly legacyIsolation?: boolean;
}

export interface NamespaceInfo {
  readonly name: string;
  readonly labels: Labels;
  readonly legacyIngressIsolation: boolean;
}

export const TRUST_DOMAIN = 'cluster.local';

export function spiffeId(namespace: string, sa: string, trustDomain = TRUST_DOMAIN): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${sa}`;
}

/** Parses `spiffe://td/ns/N/sa/S`; undefined for anything else. */
export function parseSpiffeId(
  id: string,
): { trustDomain: string; namespace: string; serviceAccount: string } | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  if (!m || m[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined;
  return { trustDomain: m[1], namespace: m[2], serviceAccount: m[3] };
}

export function namespaceInfo(name: string, ns: Namespace | undefined): NamespaceInfo {
  const labels: Record<string, string> = { 'kubernetes.io/metadata.name': name };
  Object.assign(labels, ns?.metadata.labels ?? {});
  const ann = ns?.metadata.annotations?.[LEGACY_ISOLATION_ANNOTATION];
  return { name, labels, legacyIngressIsolation: ann !== undefined && isDefaultDeny(ann) };
}

function isDefaultDeny(annotation: string): boolean {
  try {
    const v = JSON.parse(annotation) as { ingress?: { isolation?: unknown } };
    return v.ingress?.isolation === 'DefaultDeny';
  } catch {
    return false;
  }
}

/** The profile Calico derives from a namespace: its labels, and allow-all rules. */
export function namespaceProfile(ns: NamespaceInfo): CompiledProfile {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(ns.labels)) labels[NS_PREFIX + k] = v;
  labels[NS_PREFIX + LABEL_NAME] = ns.name;
  return {
    name: NS_PROFILE_PREFIX + ns.name,
    labels,
    ingress: [{ action: ns.legacyIngressIsolation ? 'Deny' : 'Allow' }],
    egress: [{ action: 'Allow' }],
    legacyIsolation: ns.legacyIngressIsolation,
  };
}

export function saLabels(name: string, sa: ServiceAccount | undefined): Labels {
  return { ...(sa?.metadata.labels ?? {}), [LABEL_NAME]: name };
}

/** The profile Calico derives from a service account: its labels, no rules. */
export function serviceAccountProfile(
  namespace: string,
  name: string,
  sa: ServiceAccount | undefined,
): CompiledProfile {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(saLabels(name, sa))) labels[SA_PREFIX + k] = v;
  return { name: `${SA_PROFILE_PREFIX}${namespace}.${name}`, labels, ingress: [], egress: [] };
}

export function userProfile(p: Profile): CompiledProfile {
  return {
    name: p.metadata.name,
    labels: p.spec.labelsToApply ?? {},
    ingress: p.spec.ingress ?? [],
    egress: p.spec.egress ?? [],
  };
}

const NO_LABELS: Labels = Object.freeze({});
/** One view per namespace object, shared by its endpoints (labels are never mutated). */
const nsViews = new WeakMap<NamespaceInfo, Labels>();

function nsView(ns: NamespaceInfo | undefined): Labels {
  if (!ns) return NO_LABELS;
  let v = nsViews.get(ns);
  if (!v) {
    v = { ...ns.labels, [LABEL_NAME]: ns.name, [LABEL_NAMESPACE]: ns.name };
    nsViews.set(ns, v);
  }
  return v;
}

function parseIps(list: readonly string[]): IpAddr[] {
  if (list.length === 1) {
    // The common case: one address, nothing to deduplicate.
    const s = list[0] as string;
    const ip = parseIp(s.includes('/') ? s.slice(0, s.indexOf('/')) : s);
    return ip ? [ip] : [];
  }
  const out: IpAddr[] = [];
  const seen = new Set<string>();
  for (const s of list) {
    const ip = parseIp(s.includes('/') ? s.slice(0, s.indexOf('/')) : s);
    if (!ip) continue;
    const key = formatIp(ip);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(ip);
  }
  return out;
}

/** Whether the workload opted out of an L7 enforcement point. */
function l7Disabled(labels: Labels | undefined, annotations: Labels | undefined): boolean {
  const v =
    annotations?.['palisade.dev/l7'] ??
    labels?.['palisade.dev/l7'] ??
    annotations?.['sidecar.istio.io/inject'] ??
    labels?.['sidecar.istio.io/inject'];
  return v !== undefined && /^(false|off|disabled|no)$/i.test(v);
}

export interface EndpointParts {
  readonly ns: NamespaceInfo;
  readonly saName: string;
  readonly sa: ServiceAccount | undefined;
  readonly profiles: readonly CompiledProfile[];
  /** `saLabels(saName, sa)` and the profiles' names, when the caller shares them across replicas. */
  readonly saView?: Labels;
  readonly profileNames?: readonly string[];
}

function fullLabels(own: Labels, system: Labels, profiles: readonly CompiledProfile[]): Labels {
  const out: Record<string, string> = {};
  for (let i = profiles.length - 1; i >= 0; i--) Object.assign(out, profiles[i]?.labels ?? {});
  Object.assign(out, system, own);
  return out;
}

function addNamedPorts(out: NamedPort[], containers: Pod['spec']['containers']): void {
  if (containers === undefined) return;
  for (const c of containers) {
    const ports = c.ports;
    if (ports === undefined) continue;
    for (const p of ports)
      if (p.name)
        out.push({
          name: p.name,
          protocol: protocolNumber(p.protocol ?? 'TCP') ?? 6,
          port: p.containerPort,
        });
  }
}

/** `labels`, when given, must be what `fullLabels` gives for this pod (a replica's, shared). */
export function podEndpoint(pod: Pod, parts: EndpointParts, labels?: Labels): Endpoint {
  const ns = parts.ns.name;
  const own = pod.metadata.labels ?? {};
  // Built once per pod of a cluster: no intermediate arrays where the common shapes need none.
  const status = pod.status;
  const podIPs = status?.podIPs;
  const ips =
    podIPs === undefined || podIPs.length === 0
      ? status?.podIP
        ? parseIps([status.podIP])
        : []
      : parseIps([...podIPs.map((p) => p.ip), ...(status?.podIP ? [status.podIP] : [])]);
  const namedPorts: NamedPort[] = [];
  addNamedPorts(namedPorts, pod.spec.containers);
  addNamedPorts(namedPorts, pod.spec.initContainers);
  return {
    kind: 'workload',
    id: `${ns}/${pod.metadata.name}`,
    name: pod.metadata.name,
    namespace: ns,
    ownLabels: own,
    labels:
      labels ??
      fullLabels(
        own,
        {
          [LABEL_NAMESPACE]: ns,
          [LABEL_ORCHESTRATOR]: 'k8s',
          [LABEL_SERVICE_ACCOUNT]: parts.saName,
        },
        parts.profiles,
      ),
    nsView: nsView(parts.ns),
    serviceAccount: parts.saName,
    saView: parts.saView ?? saLabels(parts.saName, parts.sa),
    ips,
    namedPorts,
    profiles: parts.profileNames ?? parts.profiles.map((p) => p.name),
    l7: !l7Disabled(pod.metadata.labels, pod.metadata.annotations),
    node: pod.spec.nodeName,
  };
}

export function workloadEndpoint(
  wep: WorkloadEndpoint,
  parts: EndpointParts,
  explicitProfiles: readonly CompiledProfile[] | undefined,
): Endpoint {
  const ns = parts.ns.name;
  const own = wep.metadata.labels ?? {};
  const profiles = explicitProfiles ?? parts.profiles;
  const system: Record<string, string> = {
    [LABEL_NAMESPACE]: ns,
    [LABEL_ORCHESTRATOR]: wep.spec.orchestrator ?? 'k8s',
  };
  if (wep.spec.serviceAccountName) system[LABEL_SERVICE_ACCOUNT] = wep.spec.serviceAccountName;
  const name = wep.spec.pod ?? wep.spec.workload ?? wep.metadata.name;
  return {
    kind: 'workload',
    id: `${ns}/${name}`,
    name,
    namespace: ns,
    ownLabels: own,
    labels: fullLabels(own, system, profiles),
    nsView: nsView(parts.ns),
    serviceAccount: wep.spec.serviceAccountName ?? parts.saName,
    saView: saLabels(wep.spec.serviceAccountName ?? parts.saName, parts.sa),
    ips: parseIps(wep.spec.ipNetworks ?? []),
    namedPorts: (wep.spec.ports ?? []).map((p) => ({
      name: p.name,
      protocol: protocolNumber(p.protocol) ?? 6,
      port: p.port,
    })),
    profiles: profiles.map((p) => p.name),
    l7: !l7Disabled(wep.metadata.labels, wep.metadata.annotations),
    node: wep.spec.node,
  };
}

export function hostEndpoint(hep: HostEndpoint, profiles: readonly CompiledProfile[]): Endpoint {
  const own = hep.metadata.labels ?? {};
  return {
    kind: 'host',
    id: hep.metadata.name,
    name: hep.metadata.name,
    namespace: undefined,
    ownLabels: own,
    labels: fullLabels(own, {}, profiles),
    nsView: {},
    serviceAccount: undefined,
    saView: undefined,
    ips: parseIps(hep.spec.expectedIPs ?? []),
    namedPorts: (hep.spec.ports ?? []).map((p) => ({
      name: p.name,
      protocol: protocolNumber(p.protocol) ?? 6,
      port: p.port,
    })),
    profiles: profiles.map((p) => p.name),
    l7: false,
    node: hep.spec.node,
  };
}

export function networkSet(
  ns: NetworkSet | GlobalNetworkSet,
  namespace: NamespaceInfo | undefined,
): NetSetEntity {
  const own = ns.metadata.labels ?? {};
  const labels: Record<string, string> = {};
  if (namespace) {
    Object.assign(labels, namespaceProfile(namespace).labels);
    labels[LABEL_NAMESPACE] = namespace.name;
  }
  Object.assign(labels, own);
  const nets: Cidr[] = [];
  for (const n of ns.spec.nets ?? []) {
    const c = parseCidr(n);
    if (c) nets.push(c);
  }
  return {
    kind: 'netset',
    id: namespace ? `${namespace.name}/${ns.metadata.name}` : ns.metadata.name,
    namespace: namespace?.name,
    labels,
    nsView: nsView(namespace),
    serviceAccount: undefined,
    saView: undefined,
    nets,
  };
}

export interface ServiceInfo {
  readonly namespace: string;
  readonly name: string;
  readonly selector: Labels | undefined;
  readonly ports: readonly { port: number; targetPort: number | string; protocol: number }[];
}

export function serviceInfo(s: Service): ServiceInfo {
  return {
    namespace: s.metadata.namespace ?? 'default',
    name: s.metadata.name,
    selector: s.spec.selector,
    ports: (s.spec.ports ?? []).map((p) => ({
      port: p.port,
      targetPort: p.targetPort ?? p.port,
      protocol: protocolNumber(p.protocol ?? 'TCP') ?? 6,
    })),
  };
}
