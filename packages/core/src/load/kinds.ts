// The schema of every accepted kind (DESIGN §3), with the field rules and limits of the upstream
// validators: Calico's v3 validator, the Kubernetes API validation and Istio's CRD validation.
// Owns: what a valid resource looks like. Must never: give meaning to fields (the engine does).

import { parseCidr, parseIp, cidrWithin } from '../net/ip.js';
import { parseSelector } from '../selector/selector.js';
import { suggest } from '../diagnostics/suggest.js';
import type { Path, Problem, Schema } from './schema.js';
import { fieldPath } from './schema.js';

/** Calico's limits (libcalico-go validator) and ours. */
export const LIMITS = {
  /** Rules per direction of one policy. */
  rulesPerPolicy: 1000,
  /** Entries in `ports`/`notPorts` of one entity rule. */
  portsPerRule: 1000,
  /** Entries in `nets`/`notNets` of one entity rule. */
  netsPerRule: 10000,
  /** Characters in one selector. */
  selectorLength: 4096,
  /** Characters in any string value. */
  stringLength: 65536,
  /** Endpoints of one EndpointSlice (the Kubernetes API's limit), addresses of one subset. */
  endpointsPerSlice: 1000,
} as const;

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export function checkSubdomain(v: string): string | undefined {
  if (v.length > 253 || !DNS1123_SUBDOMAIN.test(v))
    return `${JSON.stringify(v)} is not a valid name: use lower-case letters, digits, "-" and ".", starting and ending with a letter or digit (at most 253 characters)`;
  return undefined;
}

export function checkDnsLabel(v: string): string | undefined {
  if (v.length > 63 || !DNS1123_LABEL.test(v))
    return `${JSON.stringify(v)} is not a valid name: use lower-case letters, digits and "-", starting and ending with a letter or digit (at most 63 characters)`;
  return undefined;
}

const LABEL_NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;

/** Kubernetes label key syntax: optional DNS-subdomain prefix and "/", then a name. */
function labelKey(k: string): string | undefined {
  const slash = k.indexOf('/');
  const name = slash < 0 ? k : k.slice(slash + 1);
  if (slash >= 0 && checkSubdomain(k.slice(0, slash)) !== undefined)
    return `invalid label key ${JSON.stringify(k)}: the prefix before "/" must be a DNS subdomain`;
  if (!LABEL_NAME.test(name))
    return `invalid label key ${JSON.stringify(k)}: the name must be 1-63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit`;
  return undefined;
}

function labelValue(v: string): string | undefined {
  if (v.length > 63 || !LABEL_VALUE.test(v))
    return `invalid label value ${JSON.stringify(v)}: at most 63 letters, digits, "-", "_" and ".", starting and ending with a letter or digit`;
  return undefined;
}

function cidr(v: string): string | undefined {
  return parseCidr(v) ? undefined : `${JSON.stringify(v)} is not an IP address or CIDR`;
}

function ip(v: string): string | undefined {
  return parseIp(v) ? undefined : `${JSON.stringify(v)} is not an IP address`;
}

const str: Schema = { t: 'string', max: LIMITS.stringLength };
const strings: Schema = { t: 'list', of: str };
const labels: Schema = { t: 'map', key: labelKey, values: { t: 'string', check: labelValue } };
const annotations: Schema = { t: 'map', values: { t: 'string' } };

/** A selector string, validated by the selector parser; errors point inside the string. */
function selectorCheck(value: unknown, path: Path, report: (p: Problem) => void): void {
  if (typeof value !== 'string') return;
  const r = parseSelector(value);
  if (!r.ok)
    report({
      code: 'POLICY_ERR_INVALID_SELECTOR',
      path,
      offset: r.error.position,
      message: `invalid selector in ${fieldPath(path)}: ${r.error.message}`,
      hint: "selectors look like app == 'web' && has(tier); see docs/design/selector.md",
    });
}

function selectorFields(
  rec: Record<string, unknown>,
  path: Path,
  report: (p: Problem) => void,
  names: readonly string[],
): void {
  for (const n of names) selectorCheck(rec[n], [...path, n], report);
}

const selector: Schema = { t: 'string', max: LIMITS.selectorLength };

export function portSpecProblem(v: number | string): string | undefined {
  if (typeof v === 'number')
    return v >= 0 && v <= 65535 ? undefined : `port ${v} is outside 0-65535`;
  const m = /^(\d+):(\d+)$/.exec(v);
  if (m) {
    const a = Number(m[1]);
    const b = Number(m[2]);
    if (a > 65535 || b > 65535) return `port range ${v} is outside 0-65535`;
    if (a > b) return `port range ${v} has its start after its end`;
    return undefined;
  }
  if (/^\d+$/.test(v)) return Number(v) <= 65535 ? undefined : `port ${v} is outside 0-65535`;
  if (v.length > 15 || !PORT_NAME.test(v) || !/[a-z]/.test(v))
    return `${JSON.stringify(v)} is not a port number, a range "from:to" or a port name (at most 15 lower-case letters, digits and "-")`;
  return undefined;
}

const PROTOCOL_NAMES = ['TCP', 'UDP', 'ICMP', 'ICMPv6', 'SCTP', 'UDPLite'];
const protocol: Schema = {
  t: 'intOrString',
  check: (v) => {
    if (typeof v === 'number')
      return v >= 1 && v <= 255 ? undefined : `protocol number ${v} is outside 1-255`;
    if (PROTOCOL_NAMES.includes(v) || PROTOCOL_NAMES.map((p) => p.toLowerCase()).includes(v))
      return undefined;
    if (/^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 255) return undefined;
    return `${JSON.stringify(v)} is not a protocol: use ${PROTOCOL_NAMES.join(', ')} or a number 1-255`;
  },
};

const icmp: Schema = {
  t: 'obj',
  fields: { type: { t: 'int', min: 0, max: 254 }, code: { t: 'int', min: 0, max: 255 } },
  check: (v, path, report) => {
    if (v.code !== undefined && v.type === undefined)
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path,
        message: `${fieldPath(path)}: an ICMP code needs a type`,
      });
  },
};

const portList: Schema = {
  t: 'list',
  max: LIMITS.portsPerRule,
  what: 'ports',
  of: { t: 'intOrString', check: portSpecProblem },
};
const netList: Schema = {
  t: 'list',
  max: LIMITS.netsPerRule,
  what: 'nets',
  of: { t: 'string', check: cidr },
};

const entityRule: Schema = {
  t: 'obj',
  fields: {
    nets: netList,
    notNets: netList,
    selector,
    notSelector: selector,
    namespaceSelector: selector,
    ports: portList,
    notPorts: portList,
    serviceAccounts: {
      t: 'obj',
      fields: { names: strings, selector },
      check: (v, p, r) => selectorFields(v, p, r, ['selector']),
    },
    services: { t: 'obj', fields: { name: str, namespace: str }, required: ['name'] },
  },
  check: (v, p, r) => {
    selectorFields(v, p, r, ['selector', 'notSelector', 'namespaceSelector']);
    if (v.services === undefined || v.services === null) return;
    // Calico's validator: a service match stands for its endpoints' addresses (and ports).
    const name = (v.services as { name?: unknown }).name;
    if (name === '')
      r({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...p, 'services', 'name'],
        message: `${fieldPath([...p, 'services'])} must name a service`,
      });
    for (const [f, what] of [
      ['selector', 'selector'],
      ['notSelector', 'notSelector'],
      ['namespaceSelector', 'namespaceSelector'],
      ['serviceAccounts', 'serviceAccounts'],
      ['nets', 'nets'],
      ['notNets', 'notNets'],
    ] as const) {
      const x = v[f];
      if (x === undefined || x === '' || (Array.isArray(x) && x.length === 0)) continue;
      r({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...p, f],
        atKey: true,
        message: `${fieldPath([...p, f])}: cannot specify ${what} and services on the same rule (the service's endpoints give the addresses)`,
      });
    }
  },
};

const httpMatch: Schema = {
  t: 'obj',
  fields: {
    methods: strings,
    paths: {
      t: 'list',
      of: {
        t: 'obj',
        fields: { exact: str, prefix: str },
        check: (v, path, report) => {
          if ((v.exact === undefined) === (v.prefix === undefined))
            report({
              code: 'POLICY_ERR_INVALID_VALUE',
              path,
              message: `${fieldPath(path)} must set exactly one of "exact" and "prefix"`,
            });
        },
      },
    },
    headers: {
      t: 'list',
      of: {
        t: 'obj',
        fields: {
          header: str,
          operator: {
            t: 'enum',
            values: ['HasPrefix', 'Equals', 'Exists', 'NotEquals', 'NotExists', 'Contains'],
          },
          values: strings,
        },
        required: ['header', 'operator'],
      },
    },
  },
};

const PORTED = new Set(['TCP', 'UDP', 'SCTP', 'UDPLITE', '6', '17', '132', '136']);

function protoName(p: unknown): string | undefined {
  return typeof p === 'string' || typeof p === 'number' ? String(p).toUpperCase() : undefined;
}

const calicoRule: Schema = {
  t: 'obj',
  fields: {
    action: { t: 'enum', values: ['Allow', 'Deny', 'Pass', 'Log'] },
    protocol,
    notProtocol: protocol,
    icmp,
    notICMP: icmp,
    ipVersion: { t: 'enum', values: [4, 6] },
    source: entityRule,
    destination: entityRule,
    http: httpMatch,
    metadata: { t: 'obj', fields: { annotations } },
  },
  required: ['action'],
  check: (v, path, report) => {
    const dst = v.destination as Record<string, unknown> | undefined;
    if (dst && typeof dst === 'object' && dst.services !== undefined && dst.services !== null)
      for (const f of ['ports', 'notPorts'] as const)
        if (Array.isArray(dst[f]) && (dst[f] as unknown[]).length > 0)
          report({
            code: 'POLICY_ERR_INVALID_VALUE',
            path: [...path, 'destination', f],
            atKey: true,
            message: `${fieldPath([...path, 'destination', f])}: cannot specify ${f} with a destination service (its endpoints' ports apply)`,
          });
    const proto = protoName(v.protocol);
    for (const side of ['source', 'destination'] as const) {
      const e = v[side] as Record<string, unknown> | undefined;
      if (!e || typeof e !== 'object') continue;
      for (const f of ['ports', 'notPorts'] as const) {
        if (e[f] !== undefined && (proto === undefined || !PORTED.has(proto)))
          report({
            code: 'POLICY_ERR_INVALID_VALUE',
            path: [...path, side, f],
            atKey: true,
            message: `${fieldPath([...path, side, f])} needs "protocol" set to TCP, UDP, SCTP or UDPLite`,
            hint: 'ports only exist for those protocols; add protocol: TCP to the rule',
          });
      }
    }
    const isIcmp4 = proto === 'ICMP' || proto === '1';
    const isIcmp6 = proto === 'ICMPV6' || proto === '58';
    if ((v.icmp !== undefined || v.notICMP !== undefined) && !isIcmp4 && !isIcmp6)
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path,
        message: `${fieldPath(path)}: icmp/notICMP need protocol ICMP or ICMPv6`,
      });
    if ((v.ipVersion === 4 && isIcmp6) || (v.ipVersion === 6 && isIcmp4))
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...path, 'ipVersion'],
        message: `${fieldPath(path)}: ipVersion ${String(v.ipVersion)} contradicts protocol ${String(v.protocol)}`,
      });
    if (v.ipVersion === 4 || v.ipVersion === 6) {
      for (const side of ['source', 'destination'] as const) {
        const e = v[side] as Record<string, unknown> | undefined;
        for (const f of ['nets', 'notNets'] as const) {
          const list = e?.[f];
          if (!Array.isArray(list)) continue;
          list.forEach((n, i) => {
            const c = typeof n === 'string' ? parseCidr(n) : undefined;
            if (c && c.family !== v.ipVersion)
              report({
                code: 'POLICY_ERR_INVALID_VALUE',
                path: [...path, side, f, i],
                message: `${fieldPath([...path, side, f, i])} is an IPv${c.family} net in a rule with ipVersion ${String(v.ipVersion)}`,
              });
          });
        }
      }
    }
  },
};

const rules: Schema = { t: 'list', of: calicoRule, max: LIMITS.rulesPerPolicy, what: 'rules' };
const policyTypes: Schema = { t: 'list', of: { t: 'enum', values: ['Ingress', 'Egress'] } };

const calicoPolicyFields: Record<string, Schema> = {
  tier: { t: 'string', check: checkDnsLabel },
  order: { t: 'any' },
  selector,
  serviceAccountSelector: selector,
  types: policyTypes,
  ingress: rules,
  egress: rules,
  performanceHints: strings,
};

/**
 * Host endpoint policy modes: fields of Calico's GlobalNetworkPolicy only (a namespaced policy
 * selects workloads of its namespace, which these modes never apply to).
 */
const globalPolicyFields: Record<string, Schema> = {
  namespaceSelector: selector,
  doNotTrack: { t: 'bool' },
  preDNAT: { t: 'bool' },
  applyOnForward: { t: 'bool' },
};

function calicoPolicySpec(global: boolean, staged: boolean): Schema {
  return {
    t: 'obj',
    fields: {
      ...calicoPolicyFields,
      ...(global ? globalPolicyFields : {}),
      ...(staged ? { stagedAction: { t: 'enum', values: ['Set', 'Delete'] } } : {}),
    },
    check: (v, path, report) => {
      selectorFields(v, path, report, ['selector', 'serviceAccountSelector', 'namespaceSelector']);
      if (v.order !== undefined && (typeof v.order !== 'number' || !Number.isFinite(v.order)))
        report({
          code: 'POLICY_ERR_INVALID_TYPE',
          path: [...path, 'order'],
          message: `${fieldPath([...path, 'order'])} must be a number`,
        });
      // Calico: services only as the destination of egress rules and the source of ingress
      // rules; a global policy's service reference needs a namespace.
      for (const [dir, wrong, right] of [
        ['egress', 'source', 'destination'],
        ['ingress', 'destination', 'source'],
      ] as const) {
        const list = v[dir];
        if (!Array.isArray(list)) continue;
        list.forEach((rule: unknown, i: number) => {
          const side = (rule as Record<string, unknown> | null)?.[wrong] as
            Record<string, unknown> | undefined;
          if (side && typeof side === 'object' && side.services != null)
            report({
              code: 'POLICY_ERR_INVALID_VALUE',
              path: [...path, dir, i, wrong, 'services'],
              atKey: true,
              message: `services are not allowed in the ${wrong} of an ${dir} rule (only in its ${right})`,
            });
          const good = (rule as Record<string, unknown> | null)?.[right] as
            Record<string, unknown> | undefined;
          const svc = good?.services as { namespace?: unknown } | null | undefined;
          if (global && svc && typeof svc === 'object' && (svc.namespace ?? '') === '')
            report({
              code: 'POLICY_ERR_MISSING_FIELD',
              path: [...path, dir, i, right, 'services'],
              atKey: true,
              message: `${fieldPath([...path, dir, i, right, 'services'])} needs a namespace in a global policy`,
            });
        });
      }
      // The mode flags exist on global policies only (elsewhere they are unknown fields).
      if (global && v.doNotTrack === true && v.preDNAT === true)
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path,
          message: 'doNotTrack and preDNAT cannot both be set',
        });
      if (global && (v.doNotTrack === true || v.preDNAT === true) && v.applyOnForward !== true)
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path,
          message: 'doNotTrack and preDNAT policies need applyOnForward: true',
        });
      if (global && v.preDNAT === true && Array.isArray(v.egress) && v.egress.length > 0)
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path: [...path, 'egress'],
          message: 'preDNAT policies cannot have egress rules',
        });
      if (global && v.preDNAT === true && Array.isArray(v.types) && v.types.includes('Egress'))
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path: [...path, 'types'],
          message:
            "preDNAT policies cannot have the 'Egress' type (pre-DNAT policy is ingress only)",
        });
      for (const [field, type] of [
        ['ingress', 'Ingress'],
        ['egress', 'Egress'],
      ] as const) {
        const rules = v[field];
        if (
          Array.isArray(rules) &&
          rules.length > 0 &&
          Array.isArray(v.types) &&
          !v.types.includes(type)
        )
          report({
            code: 'POLICY_ERR_INVALID_VALUE',
            path: [...path, field],
            atKey: true,
            message: `${field} rules are given but types does not include ${type}`,
          });
      }
    },
  };
}

// ------------------------------------------------------------------ Kubernetes

const k8sLabelSelector: Schema = {
  t: 'obj',
  fields: {
    matchLabels: labels,
    matchExpressions: {
      t: 'list',
      of: {
        t: 'obj',
        fields: {
          key: { t: 'string', check: labelKey },
          operator: { t: 'enum', values: ['In', 'NotIn', 'Exists', 'DoesNotExist'] },
          values: strings,
        },
        required: ['key', 'operator'],
        check: (v, path, report) => {
          const n = Array.isArray(v.values) ? v.values.length : 0;
          if ((v.operator === 'In' || v.operator === 'NotIn') && n === 0)
            report({
              code: 'POLICY_ERR_INVALID_VALUE',
              path,
              message: `${fieldPath(path)}: operator ${String(v.operator)} needs values`,
            });
          if ((v.operator === 'Exists' || v.operator === 'DoesNotExist') && n > 0)
            report({
              code: 'POLICY_ERR_INVALID_VALUE',
              path,
              message: `${fieldPath(path)}: operator ${String(v.operator)} takes no values`,
            });
        },
      },
    },
  },
};

const k8sPeer: Schema = {
  t: 'obj',
  fields: {
    podSelector: k8sLabelSelector,
    namespaceSelector: k8sLabelSelector,
    ipBlock: {
      t: 'obj',
      fields: {
        cidr: { t: 'string', check: cidr },
        except: { t: 'list', of: { t: 'string', check: cidr } },
      },
      required: ['cidr'],
      check: (v, path, report) => {
        const outer = typeof v.cidr === 'string' ? parseCidr(v.cidr) : undefined;
        if (!outer || !Array.isArray(v.except)) return;
        v.except.forEach((e, i) => {
          const inner = typeof e === 'string' ? parseCidr(e) : undefined;
          if (inner && !cidrWithin(inner, outer))
            report({
              code: 'POLICY_ERR_INVALID_VALUE',
              path: [...path, 'except', i],
              message: `${String(e)} is not inside the block's cidr ${String(v.cidr)}`,
            });
        });
      },
    },
  },
  check: (v, path, report) => {
    const set = ['podSelector', 'namespaceSelector', 'ipBlock'].filter((k) => v[k] !== undefined);
    if (set.length === 0)
      report({
        code: 'POLICY_ERR_MISSING_FIELD',
        path,
        message: `${fieldPath(path)} must set podSelector, namespaceSelector or ipBlock`,
      });
    if (v.ipBlock !== undefined && set.length > 1)
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path,
        message: `${fieldPath(path)}: ipBlock cannot be combined with selectors in one peer`,
      });
  },
};

const k8sPort: Schema = {
  t: 'obj',
  fields: {
    protocol: { t: 'enum', values: ['TCP', 'UDP', 'SCTP'] },
    port: {
      t: 'intOrString',
      check: (p) =>
        typeof p === 'number'
          ? p >= 1 && p <= 65535
            ? undefined
            : `port ${p} is outside 1-65535`
          : PORT_NAME.test(p) && p.length <= 15 && /[a-z]/.test(p)
            ? undefined
            : `${JSON.stringify(p)} is not a valid port name (IANA_SVC_NAME: at most 15 lower-case letters, digits and "-")`,
    },
    endPort: { t: 'int', min: 1, max: 65535 },
  },
  check: (v, path, report) => {
    if (v.endPort === undefined) return;
    if (typeof v.port !== 'number')
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...path, 'endPort'],
        message: 'endPort needs a numeric port',
      });
    else if (typeof v.endPort === 'number' && v.endPort < v.port)
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...path, 'endPort'],
        message: `endPort ${v.endPort} is below port ${v.port}`,
      });
  },
};

const k8sPolicySpec = (staged: boolean): Schema => ({
  t: 'obj',
  fields: {
    podSelector: k8sLabelSelector,
    ingress: {
      t: 'list',
      of: {
        t: 'obj',
        fields: { from: { t: 'list', of: k8sPeer }, ports: { t: 'list', of: k8sPort } },
      },
    },
    egress: {
      t: 'list',
      of: {
        t: 'obj',
        fields: { to: { t: 'list', of: k8sPeer }, ports: { t: 'list', of: k8sPort } },
      },
    },
    policyTypes,
    ...(staged ? { stagedAction: { t: 'enum', values: ['Set', 'Delete'] } } : {}),
  },
  required: ['podSelector'],
});

const containerPort: Schema = {
  t: 'obj',
  tolerant: true,
  fields: {
    name: {
      t: 'string',
      check: (n) =>
        n.length <= 15 && PORT_NAME.test(n) ? undefined : `invalid port name ${JSON.stringify(n)}`,
    },
    containerPort: { t: 'int', min: 1, max: 65535 },
    protocol: { t: 'enum', values: ['TCP', 'UDP', 'SCTP'] },
    hostPort: { t: 'any' },
    hostIP: { t: 'any' },
  },
  required: ['containerPort'],
};

const container: Schema = {
  t: 'obj',
  tolerant: true,
  fields: { name: str, image: str, ports: { t: 'list', of: containerPort } },
  required: ['name'],
};

// Kubernetes core objects come straight from clusters with many fields we do not use: those are
// tolerated, but near-misspellings of the fields we read are errors (see docs/design/loader.md).
const podSpec: Schema = {
  t: 'obj',
  tolerant: true,
  fields: {
    serviceAccountName: { t: 'string', check: checkSubdomain },
    serviceAccount: { t: 'string', check: checkSubdomain },
    nodeName: str,
    hostNetwork: { t: 'bool' },
    containers: { t: 'list', of: container },
    initContainers: { t: 'list', of: container },
  },
};

const podStatus: Schema = {
  t: 'obj',
  tolerant: true,
  fields: {
    podIP: { t: 'string', check: ip },
    podIPs: {
      t: 'list',
      of: { t: 'obj', fields: { ip: { t: 'string', check: ip } }, required: ['ip'] },
    },
    phase: str,
  },
};

const endpointPorts: Schema = {
  t: 'list',
  max: 100,
  what: 'ports',
  of: {
    t: 'obj',
    tolerant: true,
    fields: {
      name: str,
      protocol: { t: 'enum', values: ['TCP', 'UDP', 'SCTP'] },
      port: { t: 'int', min: 1, max: 65535 },
      appProtocol: str,
    },
  },
};

const endpointAddresses: Schema = {
  t: 'list',
  max: LIMITS.endpointsPerSlice,
  what: 'addresses',
  of: {
    t: 'obj',
    tolerant: true,
    fields: { ip: { t: 'string', check: ip }, hostname: str, nodeName: str },
    required: ['ip'],
  },
};

const serviceSpec: Schema = {
  t: 'obj',
  tolerant: true,
  fields: {
    selector: labels,
    ports: {
      t: 'list',
      of: {
        t: 'obj',
        tolerant: true,
        fields: {
          name: str,
          protocol: { t: 'enum', values: ['TCP', 'UDP', 'SCTP'] },
          port: { t: 'int', min: 1, max: 65535 },
          targetPort: { t: 'intOrString' },
          nodePort: { t: 'int', min: 0, max: 65535 },
        },
        required: ['port'],
      },
    },
    clusterIP: str,
    clusterIPs: strings,
    type: str,
  },
};

// ------------------------------------------------------------------ Istio

const ISTIO_WHEN_KEYS = [
  'source.ip',
  'remote.ip',
  'source.namespace',
  'source.principal',
  'request.auth.principal',
  'request.auth.audiences',
  'request.auth.presenter',
  'destination.ip',
  'destination.port',
  'connection.sni',
];

const istioSelector: Schema = { t: 'obj', fields: { matchLabels: labels } };
const targetRef: Schema = {
  t: 'obj',
  fields: { group: str, kind: str, name: str, namespace: str },
  required: ['kind', 'name'],
};

function istioPorts(v: string): string | undefined {
  return /^\d+$/.test(v) && Number(v) >= 0 && Number(v) <= 65535
    ? undefined
    : `${JSON.stringify(v)} is not a port number`;
}

const authzRule: Schema = {
  t: 'obj',
  fields: {
    from: {
      t: 'list',
      of: {
        t: 'obj',
        required: ['source'],
        fields: {
          source: {
            t: 'obj',
            fields: Object.fromEntries(
              [
                'principals',
                'requestPrincipals',
                'namespaces',
                'ipBlocks',
                'remoteIpBlocks',
              ].flatMap((f) => {
                const s: Schema =
                  f === 'ipBlocks' || f === 'remoteIpBlocks'
                    ? { t: 'list', of: { t: 'string', check: cidr } }
                    : strings;
                return [
                  [f, s],
                  [`not${f[0]?.toUpperCase() ?? ''}${f.slice(1)}`, s],
                ];
              }),
            ),
          },
        },
      },
    },
    to: {
      t: 'list',
      of: {
        t: 'obj',
        required: ['operation'],
        fields: {
          operation: {
            t: 'obj',
            fields: {
              hosts: strings,
              notHosts: strings,
              ports: { t: 'list', of: { t: 'string', check: istioPorts } },
              notPorts: { t: 'list', of: { t: 'string', check: istioPorts } },
              methods: strings,
              notMethods: strings,
              paths: strings,
              notPaths: strings,
            },
          },
        },
      },
    },
    when: {
      t: 'list',
      of: {
        t: 'obj',
        fields: {
          key: {
            t: 'string',
            check: (k) =>
              ISTIO_WHEN_KEYS.includes(k) ||
              /^request\.headers\[[^\]]+\]$/.test(k) ||
              /^request\.auth\.claims\[.+\]$/.test(k) ||
              k.startsWith('experimental.envoy.filters.')
                ? undefined
                : `unknown condition key ${JSON.stringify(k)}; Istio supports ${ISTIO_WHEN_KEYS.join(', ')}, request.headers[NAME] and request.auth.claims[NAME]`,
          },
          values: strings,
          notValues: strings,
        },
        required: ['key'],
        check: (v, path, report) => {
          if (v.values === undefined && v.notValues === undefined)
            report({
              code: 'POLICY_ERR_MISSING_FIELD',
              path,
              message: `${fieldPath(path)} needs values or notValues`,
            });
        },
      },
    },
  },
};

const authzSpec: Schema = {
  t: 'obj',
  fields: {
    selector: istioSelector,
    targetRef,
    targetRefs: { t: 'list', of: targetRef },
    action: { t: 'enum', values: ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] },
    provider: { t: 'obj', fields: { name: str } },
    rules: { t: 'list', of: authzRule },
  },
  check: (v, path, report) => {
    if (v.action === 'CUSTOM')
      report({
        code: 'POLICY_ERR_UNSUPPORTED',
        path: [...path, 'action'],
        message: 'CUSTOM authorization is not supported: Palisade decides every request itself',
        hint: 'use ALLOW or DENY rules instead of an external authorizer',
      });
    if (v.selector !== undefined && (v.targetRef !== undefined || v.targetRefs !== undefined))
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path,
        message: 'selector cannot be combined with targetRef or targetRefs',
      });
  },
};

const mtlsMode: Schema = { t: 'enum', values: ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] };
const peerAuthnSpec: Schema = {
  t: 'obj',
  fields: {
    selector: istioSelector,
    mtls: { t: 'obj', fields: { mode: mtlsMode } },
    portLevelMtls: {
      t: 'map',
      key: (k) =>
        /^\d+$/.test(k) && Number(k) >= 1 && Number(k) <= 65535
          ? undefined
          : `${JSON.stringify(k)} is not a port number`,
      values: { t: 'obj', fields: { mode: mtlsMode } },
    },
  },
  check: (v, path, report) => {
    if (v.portLevelMtls !== undefined && v.selector === undefined)
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...path, 'portLevelMtls'],
        atKey: true,
        message: 'portLevelMtls needs a workload selector',
      });
  },
};

// ------------------------------------------------------------------ Istio RBAC (legacy)

/** ServiceRole constraint keys Istio's RBAC filter generator understands (v1alpha1). */
export const RBAC_CONSTRAINT_KEYS = [
  'destination.ip',
  'destination.port',
  'destination.labels[NAME]',
  'destination.name',
  'destination.namespace',
  'destination.user',
  'request.headers[NAME]',
  'connection.sni',
];

/** ServiceRoleBinding property keys Istio's RBAC filter generator understands (v1alpha1). */
export const RBAC_PROPERTY_KEYS = [
  'source.ip',
  'source.namespace',
  'source.principal',
  'source.user',
  'request.auth.principal',
  'request.auth.audiences',
  'request.auth.presenter',
  'request.auth.claims[NAME]',
  'request.headers[NAME]',
];

/** `request.headers[User-Agent]` → `request.headers[NAME]`, so keys compare with the lists above. */
function bracketed(key: string): string {
  const m = /^([a-z.]+)\[([^\]]+)\]$/.exec(key);
  return m ? `${m[1] ?? ''}[NAME]` : key;
}

function rbacKeyProblem(
  key: string,
  known: readonly string[],
  what: string,
  path: Path,
  report: (p: Problem) => void,
): boolean {
  if (known.includes(bracketed(key))) return true;
  const near = suggest(bracketed(key), known);
  report({
    code: 'POLICY_ERR_UNSUPPORTED',
    path,
    message: `${fieldPath(path)}: ${JSON.stringify(key)} is not a ${what} Istio's RBAC supports (custom Mixer attributes never match in the proxy)`,
    hint: near ? `did you mean ${JSON.stringify(near)}?` : `supported keys: ${known.join(', ')}`,
  });
  return false;
}

function rbacValueProblems(
  key: string,
  values: readonly unknown[],
  path: Path,
  report: (p: Problem) => void,
): void {
  values.forEach((v, i) => {
    if (typeof v !== 'string') return;
    let m: string | undefined;
    if (key === 'destination.ip' || key === 'source.ip') m = cidr(v);
    else if (key === 'destination.port') m = istioPorts(v);
    if (m)
      report({
        code: 'POLICY_ERR_INVALID_VALUE',
        path: [...path, i],
        message: `${fieldPath([...path, i])}: ${m}`,
      });
  });
}

const serviceRoleRule: Schema = {
  t: 'obj',
  fields: {
    services: strings,
    methods: strings,
    paths: strings,
    constraints: {
      t: 'list',
      of: {
        t: 'obj',
        fields: { key: str, values: strings },
        required: ['key', 'values'],
        check: (v, path, report) => {
          if (typeof v.key !== 'string') return;
          if (v.key === '') {
            report({
              code: 'POLICY_ERR_INVALID_VALUE',
              path: [...path, 'key'],
              message: `${fieldPath([...path, 'key'])} cannot be empty`,
            });
            return;
          }
          if (!rbacKeyProblem(v.key, RBAC_CONSTRAINT_KEYS, 'constraint', [...path, 'key'], report))
            return;
          if (Array.isArray(v.values)) {
            if (v.values.length === 0)
              report({
                code: 'POLICY_ERR_MISSING_FIELD',
                path: [...path, 'values'],
                message: `${fieldPath(path)} needs at least 1 value`,
              });
            rbacValueProblems(v.key, v.values, [...path, 'values'], report);
          }
        },
      },
    },
    hosts: { t: 'any' },
    notHosts: { t: 'any' },
    notPaths: { t: 'any' },
    notMethods: { t: 'any' },
    ports: { t: 'any' },
    notPorts: { t: 'any' },
  },
  required: ['services'],
  check: (v, path, report) => {
    if (Array.isArray(v.services) && v.services.length === 0)
      report({
        code: 'POLICY_ERR_MISSING_FIELD',
        path: [...path, 'services'],
        message: `${fieldPath(path)} needs at least 1 service`,
        hint: 'use services: ["*"] for every service of the namespace',
      });
    for (const f of ['hosts', 'notHosts', 'notPaths', 'notMethods', 'ports', 'notPorts'])
      if (v[f] !== undefined) hiddenField(f, [...path, f], report);
  },
};

/** Fields Istio kept out of its documentation ($hide_from_docs): refused, never ignored. */
function hiddenField(f: string, path: Path, report: (p: Problem) => void): void {
  report({
    code: 'POLICY_ERR_UNSUPPORTED',
    path,
    atKey: true,
    message: `${fieldPath(path)}: the undocumented v1alpha1 field ${JSON.stringify(f)} is not supported`,
    hint: 'write the rule as a security.istio.io AuthorizationPolicy instead',
  });
}

const rbacSubject: Schema = {
  t: 'obj',
  fields: {
    user: str,
    group: str,
    properties: { t: 'map', values: str },
    names: { t: 'any' },
    notNames: { t: 'any' },
    groups: { t: 'any' },
    notGroups: { t: 'any' },
    namespaces: { t: 'any' },
    notNamespaces: { t: 'any' },
    ips: { t: 'any' },
    notIps: { t: 'any' },
  },
  check: (v, path, report) => {
    const props =
      v.properties && typeof v.properties === 'object'
        ? (v.properties as Record<string, unknown>)
        : undefined;
    if (
      (v.user === undefined || v.user === '') &&
      (v.group === undefined || v.group === '') &&
      (props === undefined || Object.keys(props).length === 0)
    )
      report({
        code: 'POLICY_ERR_MISSING_FIELD',
        path,
        message: `${fieldPath(path)} needs at least 1 of user, group or properties`,
      });
    for (const f of [
      'names',
      'notNames',
      'groups',
      'notGroups',
      'namespaces',
      'notNamespaces',
      'ips',
      'notIps',
    ])
      if (v[f] !== undefined) hiddenField(f, [...path, f], report);
    for (const [k, val] of Object.entries(props ?? {})) {
      const p = [...path, 'properties', k];
      if (k === 'source.ip' && typeof val === 'string' && cidr(val) !== undefined)
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path: p,
          message: `${fieldPath(p)}: ${cidr(val) ?? ''}`,
        });
      else rbacKeyProblem(k, RBAC_PROPERTY_KEYS, 'property', p, report);
    }
  },
};

const serviceRoleBindingSpec: Schema = {
  t: 'obj',
  fields: {
    subjects: { t: 'list', of: rbacSubject },
    roleRef: {
      t: 'obj',
      fields: { kind: { t: 'enum', values: ['ServiceRole'] }, name: str },
      required: ['kind', 'name'],
      check: (v, path, report) => {
        if (v.name === '')
          report({
            code: 'POLICY_ERR_INVALID_VALUE',
            path: [...path, 'name'],
            message: `${fieldPath([...path, 'name'])} cannot be empty`,
          });
      },
    },
    mode: { t: 'enum', values: ['ENFORCED', 'PERMISSIVE'] },
    actions: { t: 'any' },
    role: { t: 'any' },
  },
  required: ['subjects', 'roleRef'],
  check: (v, path, report) => {
    if (Array.isArray(v.subjects) && v.subjects.length === 0)
      report({
        code: 'POLICY_ERR_MISSING_FIELD',
        path: [...path, 'subjects'],
        message: `${fieldPath(path)} needs at least 1 subject`,
      });
    for (const f of ['actions', 'role'])
      if (v[f] !== undefined) hiddenField(f, [...path, f], report);
  },
};

const rbacTarget: Schema = { t: 'obj', fields: { services: strings, namespaces: strings } };
const rbacConfigSpec: Schema = {
  t: 'obj',
  fields: {
    mode: { t: 'enum', values: ['OFF', 'ON', 'ON_WITH_INCLUSION', 'ON_WITH_EXCLUSION'] },
    inclusion: rbacTarget,
    exclusion: rbacTarget,
    enforcementMode: { t: 'enum', values: ['ENFORCED', 'PERMISSIVE'] },
  },
  check: (v, path, report) => {
    if (v.mode === 'ON_WITH_INCLUSION' && v.inclusion === undefined)
      report({
        code: 'POLICY_ERR_MISSING_FIELD',
        path,
        message: 'mode ON_WITH_INCLUSION needs inclusion (use "inclusion: {}" for none)',
      });
    if (v.mode === 'ON_WITH_EXCLUSION' && v.exclusion === undefined)
      report({
        code: 'POLICY_ERR_MISSING_FIELD',
        path,
        message: 'mode ON_WITH_EXCLUSION needs exclusion (use "exclusion: {}" for none)',
      });
  },
};

/** Istio accepts only the singleton named `default` of RbacConfig and ClusterRbacConfig. */
function rbacConfigName(doc: Record<string, unknown>, report: (p: Problem) => void): void {
  const meta = doc.metadata as Record<string, unknown> | undefined;
  if (meta && typeof meta.name === 'string' && meta.name !== 'default')
    report({
      code: 'POLICY_ERR_INVALID_VALUE',
      path: ['metadata', 'name'],
      message: `${String(doc.kind)} must be named "default", not ${JSON.stringify(meta.name)}`,
      hint: 'Istio reads only the singleton named default',
    });
}

// ------------------------------------------------------------------ the table

const endpointPort: Schema = {
  t: 'obj',
  fields: { name: str, protocol, port: { t: 'int', min: 1, max: 65535 } },
  required: ['name', 'protocol', 'port'],
};

export interface KindSpec {
  readonly namespaced: boolean;
  /** Schema of `spec`; undefined when the kind has none. */
  readonly spec: Schema | undefined;
  readonly specRequired?: boolean;
  /** Extra top-level fields (e.g. Pod `status`). */
  readonly extra?: Readonly<Record<string, Schema>>;
  /** Kubernetes core objects: tolerate unknown upstream fields. */
  readonly tolerant?: boolean;
  /** A cluster-scoped kind whose upstream examples carry a namespace: it is accepted and dropped. */
  readonly dropsNamespace?: boolean;
  /** Checks on the whole document (e.g. names a kind requires). */
  readonly check?: (doc: Record<string, unknown>, report: (p: Problem) => void) => void;
}

const CALICO = 'projectcalico.org/v3';

export const KINDS: ReadonlyMap<string, KindSpec> = new Map<string, KindSpec>([
  [
    `${CALICO}/Tier`,
    {
      namespaced: false,
      spec: {
        t: 'obj',
        fields: { order: { t: 'any' }, defaultAction: { t: 'enum', values: ['Deny', 'Pass'] } },
      },
    },
  ],
  [`${CALICO}/GlobalNetworkPolicy`, { namespaced: false, spec: calicoPolicySpec(true, false) }],
  [`${CALICO}/NetworkPolicy`, { namespaced: true, spec: calicoPolicySpec(false, false) }],
  [
    `${CALICO}/StagedGlobalNetworkPolicy`,
    { namespaced: false, spec: calicoPolicySpec(true, true) },
  ],
  [`${CALICO}/StagedNetworkPolicy`, { namespaced: true, spec: calicoPolicySpec(false, true) }],
  [`${CALICO}/StagedKubernetesNetworkPolicy`, { namespaced: true, spec: k8sPolicySpec(true) }],
  [
    `${CALICO}/GlobalNetworkSet`,
    {
      namespaced: false,
      spec: { t: 'obj', fields: { nets: netList, allowedEgressDomains: strings } },
    },
  ],
  [
    `${CALICO}/NetworkSet`,
    {
      namespaced: true,
      spec: { t: 'obj', fields: { nets: netList, allowedEgressDomains: strings } },
    },
  ],
  [
    `${CALICO}/HostEndpoint`,
    {
      namespaced: false,
      spec: {
        t: 'obj',
        fields: {
          node: str,
          interfaceName: str,
          expectedIPs: { t: 'list', of: { t: 'string', check: ip } },
          profiles: strings,
          ports: { t: 'list', of: endpointPort },
        },
        check: (v, path, report) => {
          if (
            v.interfaceName === undefined &&
            (!Array.isArray(v.expectedIPs) || v.expectedIPs.length === 0)
          )
            report({
              code: 'POLICY_ERR_MISSING_FIELD',
              path,
              message: 'a host endpoint needs interfaceName or expectedIPs',
            });
        },
      },
    },
  ],
  [
    `${CALICO}/WorkloadEndpoint`,
    {
      namespaced: true,
      spec: {
        t: 'obj',
        fields: {
          node: str,
          orchestrator: str,
          workload: str,
          pod: str,
          endpoint: str,
          serviceAccountName: str,
          ipNetworks: netList,
          ipNATs: {
            t: 'list',
            of: {
              t: 'obj',
              fields: {
                internalIP: { t: 'string', check: ip },
                externalIP: { t: 'string', check: ip },
              },
            },
          },
          profiles: strings,
          interfaceName: str,
          mac: str,
          ports: { t: 'list', of: endpointPort },
          containerID: str,
          allowSpoofedSourcePrefixes: strings,
        },
      },
    },
  ],
  [
    `${CALICO}/Profile`,
    {
      namespaced: false,
      spec: { t: 'obj', fields: { ingress: rules, egress: rules, labelsToApply: labels } },
    },
  ],
  [
    'networking.k8s.io/v1/NetworkPolicy',
    { namespaced: true, spec: k8sPolicySpec(false), specRequired: true },
  ],
  [
    'extensions/v1beta1/NetworkPolicy',
    { namespaced: true, spec: k8sPolicySpec(false), specRequired: true },
  ],
  [
    'v1/Namespace',
    { namespaced: false, spec: { t: 'any' }, extra: { status: { t: 'any' } }, tolerant: true },
  ],
  [
    'v1/ServiceAccount',
    {
      namespaced: true,
      spec: undefined,
      extra: {
        secrets: { t: 'any' },
        imagePullSecrets: { t: 'any' },
        automountServiceAccountToken: { t: 'any' },
      },
      tolerant: true,
    },
  ],
  [
    'v1/Pod',
    {
      namespaced: true,
      spec: podSpec,
      specRequired: true,
      extra: { status: podStatus },
      tolerant: true,
    },
  ],
  [
    'v1/Service',
    { namespaced: true, spec: serviceSpec, extra: { status: { t: 'any' } }, tolerant: true },
  ],
  [
    'discovery.k8s.io/v1/EndpointSlice',
    {
      namespaced: true,
      spec: undefined,
      extra: {
        addressType: { t: 'enum', values: ['IPv4', 'IPv6', 'FQDN'] },
        endpoints: {
          t: 'list',
          max: LIMITS.endpointsPerSlice,
          what: 'endpoints',
          of: {
            t: 'obj',
            tolerant: true,
            fields: {
              addresses: { t: 'list', of: str, max: 100 },
              conditions: {
                t: 'obj',
                tolerant: true,
                fields: {
                  ready: { t: 'bool' },
                  serving: { t: 'bool' },
                  terminating: { t: 'bool' },
                },
              },
              nodeName: str,
              hostname: str,
              zone: str,
            },
            required: ['addresses'],
          },
        },
        ports: endpointPorts,
      },
      tolerant: true,
      check: (doc, report) => {
        if (doc.addressType === undefined)
          report({
            code: 'POLICY_ERR_MISSING_FIELD',
            path: ['addressType'],
            message: 'an EndpointSlice needs addressType (IPv4, IPv6 or FQDN)',
          });
        const family = doc.addressType === 'IPv4' ? 4 : doc.addressType === 'IPv6' ? 6 : undefined;
        if (family === undefined || !Array.isArray(doc.endpoints)) return;
        (doc.endpoints as unknown[]).forEach((e, i) => {
          const addrs = (e as { addresses?: unknown } | null)?.addresses;
          if (!Array.isArray(addrs)) return;
          addrs.forEach((a, j) => {
            const parsed = typeof a === 'string' ? parseIp(a) : undefined;
            if (!parsed || parsed.family !== family)
              report({
                code: 'POLICY_ERR_INVALID_VALUE',
                path: ['endpoints', i, 'addresses', j],
                message: `endpoints[${i}].addresses[${j}] must be an IPv${family} address (addressType ${String(doc.addressType)})`,
              });
          });
        });
      },
    },
  ],
  [
    'v1/Endpoints',
    {
      namespaced: true,
      spec: undefined,
      extra: {
        subsets: {
          t: 'list',
          max: LIMITS.endpointsPerSlice,
          what: 'subsets',
          of: {
            t: 'obj',
            tolerant: true,
            fields: {
              addresses: endpointAddresses,
              notReadyAddresses: endpointAddresses,
              ports: endpointPorts,
            },
          },
        },
      },
      tolerant: true,
    },
  ],
  ['security.istio.io/v1/AuthorizationPolicy', { namespaced: true, spec: authzSpec }],
  ['security.istio.io/v1beta1/AuthorizationPolicy', { namespaced: true, spec: authzSpec }],
  ['security.istio.io/v1/PeerAuthentication', { namespaced: true, spec: peerAuthnSpec }],
  ['security.istio.io/v1beta1/PeerAuthentication', { namespaced: true, spec: peerAuthnSpec }],
  [
    'rbac.istio.io/v1alpha1/ServiceRole',
    {
      namespaced: true,
      specRequired: true,
      spec: {
        t: 'obj',
        fields: { rules: { t: 'list', of: serviceRoleRule, max: LIMITS.rulesPerPolicy } },
        required: ['rules'],
        check: (v, path, report) => {
          if (Array.isArray(v.rules) && v.rules.length === 0)
            report({
              code: 'POLICY_ERR_MISSING_FIELD',
              path: [...path, 'rules'],
              message: 'a ServiceRole needs at least 1 rule',
            });
        },
      },
    },
  ],
  [
    'rbac.istio.io/v1alpha1/ServiceRoleBinding',
    { namespaced: true, specRequired: true, spec: serviceRoleBindingSpec },
  ],
  [
    'rbac.istio.io/v1alpha1/RbacConfig',
    { namespaced: true, specRequired: true, spec: rbacConfigSpec, check: rbacConfigName },
  ],
  [
    'rbac.istio.io/v1alpha1/ClusterRbacConfig',
    {
      namespaced: false,
      dropsNamespace: true,
      specRequired: true,
      spec: rbacConfigSpec,
      check: rbacConfigName,
    },
  ],
]);

/** Kinds recognised but refused, with the reason (none at present). */
export const UNSUPPORTED_KINDS: ReadonlyMap<string, string> = new Map();

export const metadataSchema = (tolerant: boolean): Schema => ({
  t: 'obj',
  tolerant,
  fields: {
    name: str,
    namespace: { t: 'string', check: checkDnsLabel },
    labels,
    annotations,
    resourceVersion: str,
    uid: str,
    creationTimestamp: { t: 'any' },
    generation: { t: 'any' },
    generateName: str,
    ownerReferences: { t: 'any' },
    finalizers: { t: 'any' },
    managedFields: { t: 'any' },
    deletionTimestamp: { t: 'any' },
    deletionGracePeriodSeconds: { t: 'any' },
    selfLink: str,
  },
  required: ['name'],
});
