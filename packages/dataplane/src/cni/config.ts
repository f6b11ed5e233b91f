// Parsing of one CNI invocation: the CNI_* environment and the network configuration on stdin
// (CNI spec 1.0 §2 "Parameters", §1 "Configuration format", §3 "Deriving execution
// configuration"). Owns: every validation of runtime input, each problem as a CniError with the
// spec's code. Must never: touch the network, the disk or the agent.

import { CniError } from './cni-error.js';
import { cidrHas, formatIpv4, parseIpv4, parseIpv4Cidr } from './ipv4.js';
import type { Ipv4Cidr } from './ipv4.js';

/** The spec versions this plugin speaks (VERSION's `supportedVersions`). */
export const SUPPORTED_VERSIONS: readonly string[] = ['1.0.0'];

export const DEFAULT_DATA_DIR = '/var/lib/palisade/cni';
export const DEFAULT_AGENT_SOCKET = '/run/palisade/agent.sock';
/** Largest network configuration accepted on stdin (prevResult included). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

export interface CniDns {
  readonly nameservers?: readonly string[];
  readonly domain?: string;
  readonly search?: readonly string[];
  readonly options?: readonly string[];
}

export interface CniInterface {
  readonly name: string;
  readonly mac?: string;
  readonly sandbox?: string;
}

export interface CniIpConfig {
  readonly address: string;
  readonly gateway?: string;
  readonly interface?: number;
}

export interface CniRoute {
  readonly dst: string;
  readonly gw?: string;
}

/** The spec's Success result (§5). */
export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces: readonly CniInterface[];
  readonly ips: readonly CniIpConfig[];
  readonly routes: readonly CniRoute[];
  readonly dns: CniDns;
}

export interface NetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly type: string;
  readonly subnet: Ipv4Cidr;
  /** An address of the subnet kept out of allocation (`ipam.gateway`). */
  readonly reserved: readonly number[];
  readonly dataDir: string;
  readonly agentSocket: string;
  readonly mtu: number | undefined;
  readonly dns: CniDns;
  /** The `ips` capability (runtimeConfig.ips), as bare addresses. */
  readonly runtimeIps: readonly number[];
  readonly prevResult: CniResult | undefined;
}

/** The CNI_ARGS this plugin understands (Kubernetes' keys plus Palisade's own). */
export interface CniArgs {
  readonly podNamespace: string | undefined;
  readonly podName: string | undefined;
  readonly podUid: string | undefined;
  /** `IP=`: a requested address. */
  readonly ip: number | undefined;
  /** `K8S_POD_SERVICE_ACCOUNT=`: for runtimes without an orchestrator view of the pod. */
  readonly serviceAccount: string | undefined;
  /** `K8S_POD_LABEL_<key>=<value>`, one argument per label. */
  readonly labels: Readonly<Record<string, string>>;
}

export interface Attachment {
  readonly containerId: string;
  readonly ifname: string;
  /** Absent only on DEL, where the spec makes CNI_NETNS optional. */
  readonly netns: string | undefined;
  readonly args: CniArgs;
}

export type CniRequest =
  | { readonly command: 'VERSION'; readonly cniVersion: string }
  | {
      readonly command: 'ADD' | 'DEL' | 'CHECK';
      readonly conf: NetConf;
      readonly attachment: Attachment;
    };

export type ParseOutcome =
  | { readonly ok: true; readonly request: CniRequest }
  | {
      readonly ok: false;
      readonly error: CniError;
      /** The version to answer the error with: the configuration's if it gave one. */
      readonly cniVersion: string;
    };

export type Env = Readonly<Record<string, string | undefined>>;

const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION'];
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const SEMVER = /^\d+\.\d+\.\d+$/;
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const LABEL_ARG_PREFIX = 'K8S_POD_LABEL_';
const KNOWN_ARGS = new Set([
  'IgnoreUnknown',
  'K8S_POD_NAMESPACE',
  'K8S_POD_NAME',
  'K8S_POD_INFRA_CONTAINER_ID',
  'K8S_POD_UID',
  'IP',
  'K8S_POD_SERVICE_ACCOUNT',
]);
/** Top-level keys accepted beside `cni.dev/*`; anything else is CNI code 2. */
const TOP_LEVEL_KEYS = new Set([
  'cniVersion',
  'name',
  'type',
  'ipam',
  'dns',
  'mtu',
  'agentSocket',
  'runtimeConfig',
  'args',
  'prevResult',
  'capabilities',
]);
const IPAM_KEYS = new Set(['type', 'subnet', 'gateway', 'dataDir']);

/** Linux interface names: 1-15 bytes, not `.`/`..`, no `/`, `:` or whitespace (spec §2, ADD). */
export function isValidIfname(s: string): boolean {
  return (
    s.length > 0 &&
    Buffer.byteLength(s) < 16 &&
    s !== '.' &&
    s !== '..' &&
    !/[/:\s]/.test(s) &&
    // eslint-disable-next-line no-control-regex
    !/[\u0000-\u001f\u007f]/.test(s)
  );
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

function isAbsolutePath(s: string): boolean {
  return s.startsWith('/') && s.length <= 4096 && !s.includes('\0');
}

/** `10.244.0.5` or `10.244.0.5/16` → the address; undefined otherwise. */
function addressPart(s: string): number | undefined {
  const slash = s.indexOf('/');
  if (slash >= 0 && !/^\d{1,2}$/.test(s.slice(slash + 1))) return undefined;
  return parseIpv4(slash < 0 ? s : s.slice(0, slash));
}

function fail(code: CniError['code'], message: string): never {
  throw new CniError(code, message);
}

function parseArgs(text: string | undefined): CniArgs {
  const labels: Record<string, string> = {};
  const seen = new Map<string, string>();
  if (text !== undefined && text !== '') {
    for (const pair of text.split(';')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      if (eq <= 0)
        fail(
          'CNI_ERR_ENV',
          `CNI_ARGS: ${JSON.stringify(pair)} is not KEY=VALUE (pairs are separated by ';')`,
        );
      const key = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      if (seen.has(key)) fail('CNI_ERR_ENV', `CNI_ARGS: ${key} is given twice`);
      seen.set(key, value);
    }
  }
  const ignoreUnknown = /^(1|true)$/i.test(seen.get('IgnoreUnknown') ?? '');
  for (const [key, value] of seen) {
    if (key.startsWith(LABEL_ARG_PREFIX)) {
      const label = key.slice(LABEL_ARG_PREFIX.length);
      if (!LABEL_KEY.test(label) || !LABEL_VALUE.test(value))
        fail('CNI_ERR_ENV', `CNI_ARGS: ${key}=${JSON.stringify(value)} is not a valid label`);
      labels[label] = value;
    } else if (!KNOWN_ARGS.has(key) && !ignoreUnknown) {
      fail('CNI_ERR_ENV', `CNI_ARGS: unknown argument ${key} (set IgnoreUnknown=1 to ignore it)`);
    }
  }
  const name = (key: string): string | undefined => {
    const v = seen.get(key);
    if (v === undefined) return undefined;
    if (!K8S_NAME.test(v))
      fail('CNI_ERR_ENV', `CNI_ARGS: ${key}=${JSON.stringify(v)} is not a valid name`);
    return v;
  };
  const ipText = seen.get('IP');
  let ip: number | undefined;
  if (ipText !== undefined) {
    ip = addressPart(ipText);
    if (ip === undefined)
      fail('CNI_ERR_ENV', `CNI_ARGS: IP=${JSON.stringify(ipText)} is not an IPv4 address`);
  }
  const uid = seen.get('K8S_POD_UID');
  if (uid !== undefined && !/^[A-Za-z0-9-]{1,64}$/.test(uid))
    fail('CNI_ERR_ENV', `CNI_ARGS: K8S_POD_UID=${JSON.stringify(uid)} is not a UID`);
  return {
    podNamespace: name('K8S_POD_NAMESPACE'),
    podName: name('K8S_POD_NAME'),
    podUid: uid,
    ip,
    serviceAccount: name('K8S_POD_SERVICE_ACCOUNT'),
    labels,
  };
}

function parseDns(v: unknown, where: string): CniDns {
  if (v === undefined) return {};
  if (!isRecord(v)) fail('CNI_ERR_CONFIG', `${where} must be an object`);
  const out: { -readonly [K in keyof CniDns]: CniDns[K] } = {};
  for (const [k, x] of Object.entries(v)) {
    switch (k) {
      case 'nameservers':
      case 'search':
      case 'options':
        if (!isStringArray(x)) fail('CNI_ERR_CONFIG', `${where}.${k} must be a list of strings`);
        out[k] = x;
        break;
      case 'domain':
        if (typeof x !== 'string') fail('CNI_ERR_CONFIG', `${where}.domain must be a string`);
        out.domain = x;
        break;
      default:
        fail('CNI_ERR_UNSUPPORTED_FIELD', `${where}.${k}=${JSON.stringify(x)} is not a DNS field`);
    }
  }
  return out;
}

/** prevResult as the runtime cached it from our ADD; only the fields CHECK and DEL consult. */
function parsePrevResult(v: unknown): CniResult | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v)) fail('CNI_ERR_CONFIG', 'prevResult must be an object');
  const interfaces: CniInterface[] = [];
  const rawIfs = v['interfaces'] ?? [];
  if (!Array.isArray(rawIfs)) fail('CNI_ERR_CONFIG', 'prevResult.interfaces must be a list');
  for (const [i, x] of rawIfs.entries()) {
    if (!isRecord(x) || typeof x['name'] !== 'string')
      fail('CNI_ERR_CONFIG', `prevResult.interfaces[${i}] must be an object with a name`);
    interfaces.push({
      name: x['name'],
      ...(typeof x['mac'] === 'string' ? { mac: x['mac'] } : {}),
      ...(typeof x['sandbox'] === 'string' ? { sandbox: x['sandbox'] } : {}),
    });
  }
  const ips: CniIpConfig[] = [];
  const rawIps = v['ips'] ?? [];
  if (!Array.isArray(rawIps)) fail('CNI_ERR_CONFIG', 'prevResult.ips must be a list');
  for (const [i, x] of rawIps.entries()) {
    if (!isRecord(x) || typeof x['address'] !== 'string')
      fail('CNI_ERR_CONFIG', `prevResult.ips[${i}] must be an object with an address`);
    const index = x['interface'];
    if (index !== undefined && (typeof index !== 'number' || !Number.isInteger(index) || index < 0))
      fail('CNI_ERR_CONFIG', `prevResult.ips[${i}].interface must be an index`);
    ips.push({
      address: x['address'],
      ...(typeof x['gateway'] === 'string' ? { gateway: x['gateway'] } : {}),
      ...(index !== undefined ? { interface: index } : {}),
    });
  }
  const routes: CniRoute[] = [];
  const rawRoutes = v['routes'] ?? [];
  if (!Array.isArray(rawRoutes)) fail('CNI_ERR_CONFIG', 'prevResult.routes must be a list');
  for (const [i, x] of rawRoutes.entries()) {
    if (!isRecord(x) || typeof x['dst'] !== 'string')
      fail('CNI_ERR_CONFIG', `prevResult.routes[${i}] must be an object with a dst`);
    routes.push({ dst: x['dst'], ...(typeof x['gw'] === 'string' ? { gw: x['gw'] } : {}) });
  }
  return {
    cniVersion: typeof v['cniVersion'] === 'string' ? v['cniVersion'] : '',
    interfaces,
    ips,
    routes,
    dns: isRecord(v['dns']) ? parseDns(v['dns'], 'prevResult.dns') : {},
  };
}

function parseNetConf(doc: Record<string, unknown>, command: CniCommand): NetConf {
  const version = doc['cniVersion'];
  if (typeof version !== 'string')
    fail('CNI_ERR_CONFIG', 'cniVersion is required (a string, "1.0.0")');
  if (!SUPPORTED_VERSIONS.includes(version))
    fail(
      'CNI_ERR_VERSION',
      `cniVersion ${JSON.stringify(version)} is not supported; this plugin supports ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  for (const [k, v] of Object.entries(doc))
    if (!TOP_LEVEL_KEYS.has(k) && !k.startsWith('cni.dev/'))
      fail('CNI_ERR_UNSUPPORTED_FIELD', `unsupported field ${k}=${JSON.stringify(v)}`);
  const name = doc['name'];
  if (typeof name !== 'string' || !NETWORK_NAME.test(name) || name.length > 253)
    fail(
      'CNI_ERR_CONFIG',
      `name is required: a network name starting with a letter or digit, then letters, digits, '_', '.' or '-' (got ${JSON.stringify(name)})`,
    );
  const type = doc['type'];
  if (typeof type !== 'string' || type === '' || /[/\\]/.test(type))
    fail(
      'CNI_ERR_CONFIG',
      `type is required: the plugin's executable name (got ${JSON.stringify(type)})`,
    );

  const ipam = doc['ipam'];
  if (!isRecord(ipam)) fail('CNI_ERR_CONFIG', 'ipam is required: {"subnet":"10.244.0.0/16"}');
  for (const [k, v] of Object.entries(ipam))
    if (!IPAM_KEYS.has(k))
      fail('CNI_ERR_UNSUPPORTED_FIELD', `unsupported field ipam.${k}=${JSON.stringify(v)}`);
  if (ipam['type'] !== undefined && ipam['type'] !== 'palisade')
    fail(
      'CNI_ERR_UNSUPPORTED_FIELD',
      `unsupported field ipam.type=${JSON.stringify(ipam['type'])}: Palisade allocates addresses itself; remove ipam.type or set it to "palisade"`,
    );
  const subnetText = ipam['subnet'];
  if (typeof subnetText !== 'string')
    fail('CNI_ERR_CONFIG', 'ipam.subnet is required: an IPv4 CIDR such as "10.244.0.0/16"');
  const parsed = parseIpv4Cidr(subnetText);
  if (!parsed.ok)
    fail('CNI_ERR_CONFIG', `ipam.subnet ${JSON.stringify(subnetText)}: ${parsed.reason}`);
  const subnet = parsed.cidr;
  if (subnet.prefix > 30)
    fail(
      'CNI_ERR_CONFIG',
      `ipam.subnet: network ${subnetText} too small to allocate from (at most /30: the network and broadcast addresses are never allocated)`,
    );
  if (subnet.prefix < 8)
    fail(
      'CNI_ERR_CONFIG',
      `ipam.subnet: network ${subnetText} is larger than a /8; split it per node`,
    );
  const reserved: number[] = [];
  if (ipam['gateway'] !== undefined) {
    const g = typeof ipam['gateway'] === 'string' ? parseIpv4(ipam['gateway']) : undefined;
    if (g === undefined || !cidrHas(subnet, g))
      fail(
        'CNI_ERR_CONFIG',
        `ipam.gateway ${JSON.stringify(ipam['gateway'])} must be an IPv4 address inside ${subnetText}`,
      );
    reserved.push(g);
  }
  const dataDir = ipam['dataDir'] ?? DEFAULT_DATA_DIR;
  if (typeof dataDir !== 'string' || !isAbsolutePath(dataDir))
    fail(
      'CNI_ERR_CONFIG',
      `ipam.dataDir must be an absolute path (got ${JSON.stringify(dataDir)})`,
    );
  const agentSocket = doc['agentSocket'] ?? DEFAULT_AGENT_SOCKET;
  if (typeof agentSocket !== 'string' || !isAbsolutePath(agentSocket))
    fail(
      'CNI_ERR_CONFIG',
      `agentSocket must be an absolute path (got ${JSON.stringify(agentSocket)})`,
    );
  const mtu = doc['mtu'];
  if (
    mtu !== undefined &&
    (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535)
  )
    fail('CNI_ERR_CONFIG', `mtu must be an integer 68..65535 (got ${JSON.stringify(mtu)})`);
  if (doc['args'] !== undefined && !isRecord(doc['args']))
    fail('CNI_ERR_CONFIG', 'args must be an object');

  const runtimeIps: number[] = [];
  const rc = doc['runtimeConfig'];
  if (rc !== undefined) {
    if (!isRecord(rc)) fail('CNI_ERR_CONFIG', 'runtimeConfig must be an object');
    const ips = rc['ips'];
    if (ips !== undefined) {
      if (!isStringArray(ips))
        fail('CNI_ERR_CONFIG', 'runtimeConfig.ips must be a list of strings');
      for (const s of ips) {
        const a = addressPart(s);
        if (a === undefined)
          fail('CNI_ERR_CONFIG', `runtimeConfig.ips: ${JSON.stringify(s)} is not an IPv4 address`);
        runtimeIps.push(a);
      }
      if (runtimeIps.length > 1)
        fail(
          'CNI_ERR_CONFIG',
          'runtimeConfig.ips: only one IPv4 address per attachment is supported',
        );
    }
  }
  const prevResult = parsePrevResult(doc['prevResult']);
  if (command === 'CHECK' && prevResult === undefined)
    fail(
      'CNI_ERR_CONFIG',
      'CHECK needs prevResult: the result of the ADD it checks (spec §2, CHECK)',
    );
  return {
    cniVersion: version,
    name,
    type,
    subnet,
    reserved,
    dataDir,
    agentSocket,
    mtu,
    dns: parseDns(doc['dns'], 'dns'),
    runtimeIps,
    prevResult,
  };
}

function versionOf(stdin: string): string {
  try {
    const doc: unknown = JSON.parse(stdin);
    if (isRecord(doc) && typeof doc['cniVersion'] === 'string' && SEMVER.test(doc['cniVersion']))
      return doc['cniVersion'];
  } catch {
    // not JSON: the error result then speaks the newest version we know
  }
  return SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1] ?? '1.0.0';
}

function parseUnsafe(env: Env, stdin: string): CniRequest {
  const command = env['CNI_COMMAND'];
  if (command === undefined || command === '')
    fail('CNI_ERR_ENV', 'CNI_COMMAND is not set (ADD, DEL, CHECK or VERSION)');
  if (!(COMMANDS as readonly string[]).includes(command))
    fail('CNI_ERR_ENV', `CNI_COMMAND=${JSON.stringify(command)} is not ADD, DEL, CHECK or VERSION`);
  const cmd = command as CniCommand;
  if (cmd === 'VERSION') return { command: 'VERSION', cniVersion: versionOf(stdin) };

  const containerId = env['CNI_CONTAINERID'];
  if (containerId === undefined || containerId === '')
    fail('CNI_ERR_ENV', 'CNI_CONTAINERID is not set');
  if (!CONTAINER_ID.test(containerId) || containerId.length > 1024)
    fail(
      'CNI_ERR_ENV',
      "CNI_CONTAINERID must start with a letter or digit, then letters, digits, '_', '.' or '-'",
    );
  const ifname = env['CNI_IFNAME'];
  if (ifname === undefined || ifname === '') fail('CNI_ERR_ENV', 'CNI_IFNAME is not set');
  if (!isValidIfname(ifname))
    fail(
      'CNI_ERR_ENV',
      `CNI_IFNAME=${JSON.stringify(ifname)} is not a Linux interface name (1-15 bytes, not . or .., no '/', ':' or whitespace)`,
    );
  const netnsText = env['CNI_NETNS'];
  let netns: string | undefined;
  if (netnsText !== undefined && netnsText !== '') {
    if (!isAbsolutePath(netnsText))
      fail('CNI_ERR_ENV', `CNI_NETNS=${JSON.stringify(netnsText)} must be an absolute path`);
    netns = netnsText;
  } else if (cmd !== 'DEL') {
    fail('CNI_ERR_ENV', `CNI_NETNS is not set (required for ${cmd})`);
  }
  const args = parseArgs(env['CNI_ARGS']);

  if (Buffer.byteLength(stdin) > MAX_CONFIG_BYTES)
    fail(
      'CNI_ERR_IO',
      `the network configuration on stdin is larger than ${MAX_CONFIG_BYTES} bytes`,
    );
  if (stdin.trim() === '')
    fail('CNI_ERR_DECODE', 'no network configuration on stdin (expected a JSON object)');
  let doc: unknown;
  try {
    doc = JSON.parse(stdin);
  } catch (e) {
    fail('CNI_ERR_DECODE', `the network configuration is not JSON: ${(e as Error).message}`);
  }
  if (!isRecord(doc)) fail('CNI_ERR_DECODE', 'the network configuration must be a JSON object');
  const conf = parseNetConf(doc, cmd);
  if (args.ip !== undefined && conf.runtimeIps.length > 0 && conf.runtimeIps[0] !== args.ip)
    fail(
      'CNI_ERR_CONFIG',
      `CNI_ARGS IP=${formatIpv4(args.ip)} and runtimeConfig.ips ${formatIpv4(conf.runtimeIps[0] ?? 0)} disagree`,
    );
  return { command: cmd, conf, attachment: { containerId, ifname, netns, args } };
}

/** Parses one invocation. Never throws for runtime input: problems come back as the outcome. */
export function parseCniRequest(env: Env, stdin: string): ParseOutcome {
  try {
    return { ok: true, request: parseUnsafe(env, stdin) };
  } catch (e) {
    if (e instanceof CniError) return { ok: false, error: e, cniVersion: versionOf(stdin) };
    throw e;
  }
}
