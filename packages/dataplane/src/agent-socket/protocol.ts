// The JSON messages between `palisade cni` and the local agent's CNI socket, and their validation.
// Owns: the wire shapes (both sides import them) and the checks the agent applies to every
// request before acting. Must never: trust a field it has not validated.

import type { WorkloadEndpoint } from '@palisade/core';

export const API_PREFIX = '/v1/cni';
/** Largest request body the agent reads. */
export const MAX_BODY_BYTES = 64 * 1024;

/** POST /v1/cni/endpoints: the plugin has wired an attachment and asks for it to be registered. */
export interface RegisterRequest {
  readonly network: string;
  readonly containerId: string;
  /** The interface inside the pod (CNI_IFNAME). */
  readonly ifname: string;
  /** The node-side veth, where the agent enforces the endpoint's policy. */
  readonly hostIfname: string;
  readonly netns: string;
  readonly namespace: string;
  readonly pod: string;
  readonly podUid?: string;
  /** CIDRs as configured in the pod, e.g. `10.244.0.5/32`. */
  readonly ips: readonly string[];
  readonly mac: string;
  /** Labels given in CNI_ARGS; the pod's own labels take precedence. */
  readonly labels: Readonly<Record<string, string>>;
  /** Service account given in CNI_ARGS; the pod's own takes precedence. */
  readonly serviceAccount?: string;
}

/** An endpoint as the agent recorded it. */
export interface RegisteredEndpoint {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  readonly hostIfname: string;
  readonly netns: string;
  /** Where labels and service account came from: the orchestrator's pod, or CNI_ARGS alone. */
  readonly source: 'pod' | 'cni-args';
  readonly workloadEndpoint: WorkloadEndpoint;
  readonly registeredAt: string;
}

export interface RegisterResponse {
  readonly endpoint: RegisteredEndpoint;
}

export interface DeregisterResponse {
  readonly removed: boolean;
}

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

export function endpointPath(containerId: string, ifname: string): string {
  return `${API_PREFIX}/endpoints/${encodeURIComponent(containerId)}/${encodeURIComponent(ifname)}`;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,1023}$/;
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/;
const IFNAME = /^[^/:\s\0]{1,15}$/;
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4_CIDR =
  /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/(3[0-2]|[12]?\d)$/;
const MAX_LABELS = 256;

export const isContainerId = (s: string): boolean => CONTAINER_ID.test(s);
export const isIfname = (s: string): boolean => IFNAME.test(s) && s !== '.' && s !== '..';

export type Validated<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly problems: readonly string[] };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const KEYS = new Set([
  'network',
  'containerId',
  'ifname',
  'hostIfname',
  'netns',
  'namespace',
  'pod',
  'podUid',
  'ips',
  'mac',
  'labels',
  'serviceAccount',
]);

/** Every problem of a register request at once; never throws. */
export function validateRegisterRequest(v: unknown): Validated<RegisterRequest> {
  if (!isRecord(v)) return { ok: false, problems: ['the body must be a JSON object'] };
  const problems: string[] = [];
  for (const k of Object.keys(v)) if (!KEYS.has(k)) problems.push(`unknown field ${k}`);
  const str = (k: string, re: RegExp, what: string, optional = false): string => {
    const x = v[k];
    if (x === undefined && optional) return '';
    if (typeof x !== 'string' || !re.test(x)) problems.push(`${k} must be ${what}`);
    return typeof x === 'string' ? x : '';
  };
  const network = str('network', NETWORK_NAME, 'a CNI network name');
  const containerId = str('containerId', CONTAINER_ID, 'a CNI container id');
  const ifname = str('ifname', IFNAME, 'an interface name');
  const hostIfname = str('hostIfname', IFNAME, 'an interface name');
  const netns = str('netns', /^\/[^\0]{0,4095}$/, 'an absolute path');
  const namespace = str('namespace', K8S_NAME, 'a Kubernetes namespace name');
  const pod = str('pod', K8S_NAME, 'a Kubernetes pod name');
  const podUid = str('podUid', /^[A-Za-z0-9-]{1,64}$/, 'a UID', true);
  const mac = str('mac', MAC, 'a lower-case MAC address');
  const serviceAccount = str('serviceAccount', K8S_NAME, 'a service account name', true);
  const ips = v['ips'];
  if (
    !Array.isArray(ips) ||
    ips.length === 0 ||
    ips.length > 2 ||
    !ips.every((x) => typeof x === 'string' && IPV4_CIDR.test(x))
  )
    problems.push('ips must be a list of one or two IPv4 CIDRs');
  const labels = v['labels'] ?? {};
  const outLabels: Record<string, string> = {};
  if (!isRecord(labels)) problems.push('labels must be an object');
  else {
    const entries = Object.entries(labels);
    if (entries.length > MAX_LABELS) problems.push(`labels: more than ${MAX_LABELS}`);
    for (const [k, x] of entries) {
      if (!LABEL_KEY.test(k) || typeof x !== 'string' || !LABEL_VALUE.test(x))
        problems.push(`labels: ${JSON.stringify(k)} is not a valid label`);
      else outLabels[k] = x;
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    value: {
      network,
      containerId,
      ifname,
      hostIfname,
      netns,
      namespace,
      pod,
      ...(podUid ? { podUid } : {}),
      ips: ips as string[],
      mac,
      labels: outLabels,
      ...(serviceAccount ? { serviceAccount } : {}),
    },
  };
}
