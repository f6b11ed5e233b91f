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

// ---------------------------------------------------------------------------------------------
// Policy sync and SVIDs: the agent ⇄ sidecar protocol (docs/design/sidecar.md, "Policy sync").
//
// Each local workload endpoint gets its own socket, `<dir>/<namespace>/<name>/agent.sock`
// (directories 0700, socket 0600, root only), which the orchestrator mounts into that pod alone.
// A connection on that socket speaks for that endpoint and nothing else: the caller's identity is
// the socket it could open. Routes:
//
//   GET  /v1/policysync/endpoints/NS/NAME?ports=P[,P...]   long-lived NDJSON stream
//   POST /v1/svid/endpoints/NS/NAME  {"csr": PEM, "spiffeId"?: ID, "ttlSeconds"?: N}
//   POST /v1/flows/endpoints/NS/NAME {"records": [...], "shed"?: [...]}  (flows/l7-report.ts)
//   GET  /v1/healthz
//
// NS/NAME must be the socket's endpoint (403 DATAPLANE_ERR_POLICYSYNC_FORBIDDEN otherwise).
// `ports` are the application ports the sidecar fronts (1–16): the callers in the view are the
// endpoints the kernel lets reach the endpoint on one of them.
//
// The stream: one JSON object a line. First a `snapshot` (once the agent has a complete
// snapshot of the API), then an `update` whenever the endpoint's view changes, each carrying the
// whole view (a sidecar never merges), `bundle` whenever the trust bundle changes (and once after
// the snapshot), and a `heartbeat` every 10 s. `version` is the API revision the view was
// computed at: strictly increasing along a stream and across agent restarts (revisions never go
// backwards), equal for equal content.

export const POLICYSYNC_PREFIX = '/v1/policysync/endpoints';
export const SVID_PREFIX = '/v1/svid/endpoints';
export const DEFAULT_ENDPOINT_SOCKET_DIR = '/run/palisade/endpoints';
/** Largest stream line a sidecar accepts (a view of a few thousand resources). */
export const MAX_POLICYSYNC_LINE_BYTES = 32 * 1024 * 1024;
export const MAX_SYNC_PORTS = 16;

export const isK8sName = (s: string): boolean => K8S_NAME.test(s) && s.length <= 253;

/** The socket of one endpoint under the agent's endpoint directory. */
export function endpointSocketPath(dir: string, namespace: string, name: string): string {
  if (!isK8sName(namespace) || !isK8sName(name))
    throw new Error(`${JSON.stringify(`${namespace}/${name}`)} is not a namespace/name`);
  return `${dir.replace(/\/+$/, '')}/${namespace}/${name}/agent.sock`;
}

/** `namespace/name` → its parts, when both are Kubernetes names. */
export function splitEndpoint(
  endpoint: string,
): { readonly namespace: string; readonly name: string } | undefined {
  const parts = endpoint.split('/');
  if (parts.length !== 2) return undefined;
  const [namespace, name] = parts as [string, string];
  return isK8sName(namespace) && isK8sName(name) ? { namespace, name } : undefined;
}

/** What one endpoint's L7 point gets: the resources it needs to decide, nothing else. */
export interface PolicySyncView {
  readonly endpoint: string;
  /** The endpoint's SPIFFE ID as the agent computes it. */
  readonly identity: string;
  readonly trustDomain: string;
  readonly istioRootNamespace: string;
  /** Resources as the API serves them; the sidecar loads them through the core loader again. */
  readonly resources: readonly unknown[];
}

export type PolicySyncMessage =
  | {
      readonly type: 'snapshot' | 'update';
      readonly version: number;
      readonly view: PolicySyncView;
    }
  | { readonly type: 'bundle'; readonly bundlePem: string }
  | { readonly type: 'heartbeat'; readonly version: number };

/** `?ports=9080,9081` → the ports, or why not. */
export function parseSyncPorts(query: string | null): readonly number[] | string {
  if (query === null || query === '') return 'the ports query parameter is required';
  const parts = query.split(',');
  if (parts.length > MAX_SYNC_PORTS) return `at most ${MAX_SYNC_PORTS} ports`;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^[0-9]{1,5}$/.test(p)) return `port ${JSON.stringify(p.slice(0, 10))} is not a number`;
    const n = Number(p);
    if (n < 1 || n > 65535) return `port ${n} is out of range`;
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

const SPIFFE = /^spiffe:\/\/[a-z0-9._-]{1,255}\/[\x21-\x7e]{1,2000}$/;

/** A stream line from the agent, checked field by field; never throws. */
export function parsePolicySyncMessage(line: string): Validated<PolicySyncMessage> {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { ok: false, problems: ['the line is not JSON'] };
  }
  if (!isRecord(v)) return { ok: false, problems: ['the line is not a JSON object'] };
  const version = v['version'];
  const goodVersion = typeof version === 'number' && Number.isSafeInteger(version) && version >= 0;
  switch (v['type']) {
    case 'heartbeat':
      return goodVersion
        ? { ok: true, value: { type: 'heartbeat', version: version } }
        : { ok: false, problems: ['heartbeat: version must be a non-negative integer'] };
    case 'bundle': {
      const b = v['bundlePem'];
      if (typeof b !== 'string' || !b.includes('-----BEGIN CERTIFICATE-----') || b.length > 1 << 20)
        return { ok: false, problems: ['bundle: bundlePem must be PEM certificates'] };
      return { ok: true, value: { type: 'bundle', bundlePem: b } };
    }
    case 'snapshot':
    case 'update': {
      const type = v['type'];
      const view = v['view'];
      const problems: string[] = [];
      if (!goodVersion) problems.push(`${type}: version must be a non-negative integer`);
      if (!isRecord(view)) return { ok: false, problems: [...problems, `${type}: no view`] };
      const endpoint = view['endpoint'];
      const identity = view['identity'];
      const trustDomain = view['trustDomain'];
      const root = view['istioRootNamespace'];
      const resources = view['resources'];
      if (typeof endpoint !== 'string' || !splitEndpoint(endpoint))
        problems.push('view.endpoint must be namespace/name');
      if (typeof identity !== 'string' || !SPIFFE.test(identity))
        problems.push('view.identity must be a SPIFFE ID');
      if (typeof trustDomain !== 'string' || !/^[a-z0-9._-]{1,255}$/.test(trustDomain))
        problems.push('view.trustDomain must be a trust domain name');
      if (typeof root !== 'string' || !isK8sName(root))
        problems.push('view.istioRootNamespace must be a namespace name');
      if (!Array.isArray(resources) || !resources.every(isRecord))
        problems.push('view.resources must be a list of objects');
      if (problems.length > 0) return { ok: false, problems };
      return {
        ok: true,
        value: {
          type,
          version: version as number,
          view: {
            endpoint: endpoint as string,
            identity: identity as string,
            trustDomain: trustDomain as string,
            istioRootNamespace: root as string,
            resources: resources as unknown[],
          },
        },
      };
    }
    default:
      return {
        ok: false,
        problems: [`unknown message type ${JSON.stringify(v['type']).slice(0, 40)}`],
      };
  }
}

/** POST /v1/svid/endpoints/NS/NAME: a CSR made in the pod (the key never leaves it). */
export interface SvidRequest {
  readonly csr: string;
  /** Optional: when given it must be the endpoint's own identity. */
  readonly spiffeId?: string;
  readonly ttlSeconds?: number;
}

export function validateSvidRequest(v: unknown): Validated<SvidRequest> {
  if (!isRecord(v)) return { ok: false, problems: ['the body must be a JSON object'] };
  const problems: string[] = [];
  for (const k of Object.keys(v))
    if (!['csr', 'spiffeId', 'ttlSeconds'].includes(k)) problems.push(`unknown field ${k}`);
  const { csr, spiffeId, ttlSeconds } = v;
  if (
    typeof csr !== 'string' ||
    !csr.includes('-----BEGIN CERTIFICATE REQUEST-----') ||
    csr.length > MAX_BODY_BYTES
  )
    problems.push('csr must be a PEM certificate request');
  if (spiffeId !== undefined && (typeof spiffeId !== 'string' || !SPIFFE.test(spiffeId)))
    problems.push('spiffeId must be a SPIFFE ID');
  if (
    ttlSeconds !== undefined &&
    (typeof ttlSeconds !== 'number' ||
      !Number.isInteger(ttlSeconds) ||
      ttlSeconds < 60 ||
      ttlSeconds > 90 * 86400)
  )
    problems.push('ttlSeconds must be an integer from 60 to 7776000');
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    value: {
      csr: csr as string,
      ...(spiffeId !== undefined ? { spiffeId: spiffeId as string } : {}),
      ...(ttlSeconds !== undefined ? { ttlSeconds: ttlSeconds as number } : {}),
    },
  };
}

/** The agent's answer: the chain the CA issued and the trust bundle to verify peers with. */
export interface SvidResponse {
  readonly spiffeId: string;
  readonly certPem: string;
  readonly chainPem: string;
  readonly bundlePem: string;
  readonly notBefore: string;
  readonly notAfter: string;
}

export function validateSvidResponse(v: unknown): Validated<SvidResponse> {
  if (!isRecord(v)) return { ok: false, problems: ['the answer is not a JSON object'] };
  const problems: string[] = [];
  const s = (k: string): string => {
    const x = v[k];
    if (typeof x !== 'string' || x.length > 1 << 20) problems.push(`${k} must be a string`);
    return typeof x === 'string' ? x : '';
  };
  const out: SvidResponse = {
    spiffeId: s('spiffeId'),
    certPem: s('certPem'),
    chainPem: s('chainPem'),
    bundlePem: s('bundlePem'),
    notBefore: s('notBefore'),
    notAfter: s('notAfter'),
  };
  if (!out.certPem.includes('-----BEGIN CERTIFICATE-----')) problems.push('certPem is not PEM');
  if (!out.bundlePem.includes('-----BEGIN CERTIFICATE-----')) problems.push('bundlePem is not PEM');
  if (Number.isNaN(Date.parse(out.notBefore)) || Number.isNaN(Date.parse(out.notAfter)))
    problems.push('notBefore and notAfter must be times');
  return problems.length > 0 ? { ok: false, problems } : { ok: true, value: out };
}

// ---------------------------------------------------------------------------------------------
// Interception: the sidecar tells the agent which listeners it has open (docs/design/intercept.md).
//
//   PUT /v1/intercept/endpoints/NS/NAME
//   {"uid": 1337, "inbound": [{"appPort": 9080, "sidecarPort": 15006}],
//    "outbound": [{"ip": "10.244.0.7", "port": 9080, "sidecarPort": 15101}]}
//
// Sent once the listeners accept connections, again whenever they change and after every
// reconnect (the announcement is the whole set, never a delta). The agent answers 200 once the
// redirects are in the pod's namespace: inbound as announced, outbound only to the destinations
// its own policy calculation lets the endpoint reach (the intersection), with `skipped` naming
// announced destinations it left out. A sidecar stopping sends nothing: the redirects stay, so
// redirected connections are refused rather than reaching the application unproxied.

export const INTERCEPT_PREFIX = '/v1/intercept/endpoints';
/** Fits the 64 KiB body limit (about 55 bytes an entry). */
export const MAX_INTERCEPT_OUTBOUND = 1000;

export interface InterceptAnnouncement {
  /** The uid the sidecar runs under (the agent refuses one other than its configured uid). */
  readonly uid: number;
  readonly inbound: readonly { readonly appPort: number; readonly sidecarPort: number }[];
  readonly outbound: readonly {
    readonly ip: string;
    readonly port: number;
    readonly sidecarPort: number;
  }[];
}

export interface InterceptReply {
  readonly table: string;
  readonly inbound: number;
  readonly outbound: number;
  /** Announced destinations the agent did not redirect (`ip:port`). */
  readonly skipped: readonly string[];
}

const isPort = (x: unknown): x is number =>
  typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 65535;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9a-fA-F:.]{2,45}$/;

/** Every problem of an announcement at once; never throws. */
export function validateInterceptAnnouncement(v: unknown): Validated<InterceptAnnouncement> {
  if (!isRecord(v)) return { ok: false, problems: ['the body must be a JSON object'] };
  const problems: string[] = [];
  for (const k of Object.keys(v))
    if (!['uid', 'inbound', 'outbound'].includes(k)) problems.push(`unknown field ${k}`);
  const uid = v['uid'];
  if (typeof uid !== 'number' || !Number.isInteger(uid) || uid < 0 || uid > 0xfffffffe)
    problems.push('uid must be an integer uid');
  const inbound: { appPort: number; sidecarPort: number }[] = [];
  const inb = v['inbound'];
  if (!Array.isArray(inb) || inb.length > MAX_SYNC_PORTS)
    problems.push(`inbound must be a list of at most ${MAX_SYNC_PORTS} entries`);
  else
    for (const [i, x] of inb.entries()) {
      if (
        !isRecord(x) ||
        Object.keys(x).some((k) => k !== 'appPort' && k !== 'sidecarPort') ||
        !isPort(x['appPort']) ||
        !isPort(x['sidecarPort'])
      )
        problems.push(`inbound[${i}] must be {"appPort": PORT, "sidecarPort": PORT}`);
      else inbound.push({ appPort: x['appPort'], sidecarPort: x['sidecarPort'] });
    }
  const outbound: { ip: string; port: number; sidecarPort: number }[] = [];
  const out = v['outbound'];
  if (!Array.isArray(out) || out.length > MAX_INTERCEPT_OUTBOUND)
    problems.push(`outbound must be a list of at most ${MAX_INTERCEPT_OUTBOUND} entries`);
  else
    for (const [i, x] of out.entries()) {
      if (
        !isRecord(x) ||
        Object.keys(x).some((k) => !['ip', 'port', 'sidecarPort'].includes(k)) ||
        typeof x['ip'] !== 'string' ||
        !(IPV4.test(x['ip']) || (IPV6.test(x['ip']) && x['ip'].includes(':'))) ||
        !isPort(x['port']) ||
        !isPort(x['sidecarPort'])
      ) {
        if (problems.length < 20)
          problems.push(
            `outbound[${i}] must be {"ip": ADDRESS, "port": PORT, "sidecarPort": PORT}`,
          );
      } else outbound.push({ ip: x['ip'], port: x['port'], sidecarPort: x['sidecarPort'] });
    }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, value: { uid: uid as number, inbound, outbound } };
}
