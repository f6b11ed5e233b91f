// The flow record (DESIGN §4 "provenance", issue 8): one aggregated observation of traffic at one
// enforcement point — who talked to whom, how it was judged and by which rule — and the batch a
// node ships. Owns: the wire shape and its validation at the server's boundary.
// Must never: accept a field it does not know, a string without a length bound, or a record whose
// node is not the authenticated node (the server stamps `node` itself).

import { isIP } from 'node:net';
import { FLOW_PROVENANCE_KINDS } from '@palisade/core';

export type FlowVerdict = 'allow' | 'deny';
export type FlowPoint = 'kernel' | 'l7';
export type FlowDirection = 'ingress' | 'egress';

export const PROVENANCE_KINDS = FLOW_PROVENANCE_KINDS;
export type FlowProvenanceKind = (typeof PROVENANCE_KINDS)[number];

export interface FlowEndpoint {
  readonly ip: string;
  readonly port?: number;
  /** Endpoint namespace and name when the address belongs to a known endpoint. */
  readonly namespace?: string;
  readonly name?: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** SPIFFE identity: the peer certificate's at L7, the service account's in the kernel. */
  readonly identity?: string;
}

export interface FlowProvenance {
  readonly kind: FlowProvenanceKind;
  readonly tier?: string;
  readonly policy?: string;
  readonly rule?: number;
  readonly profile?: string;
  readonly reason?: string;
}

export interface FlowStagedVerdict {
  readonly policy: string;
  readonly tier?: string;
  readonly verdict: 'allow' | 'deny' | 'pass' | 'no-match';
  readonly rule?: number;
}

/** What a node sends for one aggregated flow (the server adds `node` and `id`). */
export interface FlowRecordInput {
  /** Window of the aggregate, ISO 8601. */
  readonly start: string;
  readonly end: string;
  readonly source: FlowEndpoint;
  readonly destination: FlowEndpoint;
  /** `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6` or an IP protocol number as a string. */
  readonly protocol: string;
  readonly method?: string;
  readonly path?: string;
  readonly verdict: FlowVerdict;
  readonly point: FlowPoint;
  readonly direction?: FlowDirection;
  readonly provenance: FlowProvenance;
  readonly staged?: readonly FlowStagedVerdict[];
  readonly packets: number;
  readonly bytes: number;
  /** Connections (kernel) or requests (L7) aggregated into this record. */
  readonly count: number;
}

export interface FlowRecord extends FlowRecordInput {
  readonly id: number;
  readonly node: string;
}

/** Records a node could not keep or send (sampling, a full buffer, an unreachable server). */
export interface FlowShed {
  readonly reason: 'buffer-full' | 'rate-limit' | 'send-failed' | 'kernel-untraced' | 'parse';
  readonly count: number;
  readonly point: FlowPoint;
}

export interface FlowBatch {
  readonly records: readonly FlowRecordInput[];
  readonly shed?: readonly FlowShed[];
}

export const FLOW_LIMITS = {
  recordsPerBatch: 5000,
  bodyBytes: 4 * 1024 * 1024,
  labels: 64,
  labelKey: 253,
  labelValue: 253,
  name: 253,
  identity: 512,
  path: 2048,
  method: 32,
  reason: 512,
  staged: 32,
  /** Records may describe at most this far into the future (clock skew). */
  futureMs: 5 * 60_000,
  /** And no window longer than this. */
  windowMs: 24 * 3600_000,
} as const;

const SHED_REASONS: ReadonlySet<string> = new Set([
  'buffer-full',
  'rate-limit',
  'send-failed',
  'kernel-untraced',
  'parse',
]);
const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPv6']);
const METHOD_RE = /^[A-Z][A-Z0-9_-]{0,31}$/;
const DNS_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const PRINTABLE_RE = /^[\x20-\x7e]*$/;

/** Problems with a batch, each `path: message`; empty when the batch is valid. */
export function validateFlowBatch(value: unknown, nowMs: number): string[] {
  const problems: string[] = [];
  const add = (p: string, m: string) => {
    if (problems.length < 50) problems.push(`${p}: ${m}`);
  };
  if (!isObject(value)) return ['body: must be a JSON object {"records":[...],"shed":[...]}'];
  onlyKeys(value, ['records', 'shed'], 'body', add);
  const records = value.records;
  if (!Array.isArray(records)) add('records', 'must be an array');
  else {
    if (records.length > FLOW_LIMITS.recordsPerBatch)
      add('records', `at most ${FLOW_LIMITS.recordsPerBatch} records a batch`);
    else records.forEach((r, i) => checkRecord(r, `records[${i}]`, nowMs, add));
  }
  if (value.shed !== undefined) {
    if (!Array.isArray(value.shed) || value.shed.length > 16)
      add('shed', 'must be an array of at most 16 entries');
    else
      value.shed.forEach((s, i) => {
        const p = `shed[${i}]`;
        if (!isObject(s)) return add(p, 'must be an object');
        onlyKeys(s, ['reason', 'count', 'point'], p, add);
        if (typeof s.reason !== 'string' || !SHED_REASONS.has(s.reason))
          add(`${p}.reason`, `must be one of ${[...SHED_REASONS].join(', ')}`);
        count(s.count, `${p}.count`, add);
        if (s.point !== 'kernel' && s.point !== 'l7') add(`${p}.point`, 'must be kernel or l7');
      });
  }
  return problems;
}

type Add = (path: string, message: string) => void;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyKeys(o: Record<string, unknown>, keys: readonly string[], p: string, add: Add): void {
  for (const k of Object.keys(o))
    if (!keys.includes(k)) add(`${p}.${k.slice(0, 40)}`, 'unknown field');
}

function str(v: unknown, p: string, max: number, add: Add, re?: RegExp): void {
  if (typeof v !== 'string') return add(p, 'must be a string');
  if (v.length === 0 || v.length > max) return add(p, `must be 1..${max} characters`);
  if (!PRINTABLE_RE.test(v)) return add(p, 'must be printable ASCII');
  if (re && !re.test(v)) add(p, 'is not well formed');
}

function count(v: unknown, p: string, add: Add): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    add(p, 'must be a non-negative integer');
}

function time(v: unknown, p: string, add: Add): number | undefined {
  if (typeof v !== 'string' || v.length > 40) {
    add(p, 'must be an ISO 8601 time');
    return undefined;
  }
  const t = Date.parse(v);
  if (Number.isNaN(t) || !/^\d{4}-\d\d-\d\dT/.test(v)) {
    add(p, 'must be an ISO 8601 time');
    return undefined;
  }
  return t;
}

function checkEndpoint(v: unknown, p: string, add: Add): void {
  if (!isObject(v)) return add(p, 'must be an object');
  onlyKeys(v, ['ip', 'port', 'namespace', 'name', 'labels', 'identity'], p, add);
  if (typeof v.ip !== 'string' || v.ip.length > 45 || isIP(v.ip) === 0)
    add(`${p}.ip`, 'must be an IPv4 or IPv6 address');
  if (
    v.port !== undefined &&
    (!Number.isInteger(v.port) || (v.port as number) < 0 || (v.port as number) > 65535)
  )
    add(`${p}.port`, 'must be 0..65535');
  if (v.namespace !== undefined) str(v.namespace, `${p}.namespace`, 63, add, DNS_RE);
  if (v.name !== undefined) str(v.name, `${p}.name`, FLOW_LIMITS.name, add, DNS_RE);
  if (v.identity !== undefined)
    str(v.identity, `${p}.identity`, FLOW_LIMITS.identity, add, /^spiffe:\/\/[^\s/]+\/\S*$/);
  if (v.labels !== undefined) {
    if (!isObject(v.labels)) return add(`${p}.labels`, 'must be an object of strings');
    const entries = Object.entries(v.labels);
    if (entries.length > FLOW_LIMITS.labels)
      return add(`${p}.labels`, `at most ${FLOW_LIMITS.labels} labels`);
    for (const [k, val] of entries) {
      if (k.length === 0 || k.length > FLOW_LIMITS.labelKey || !PRINTABLE_RE.test(k))
        add(`${p}.labels`, `label key ${JSON.stringify(k.slice(0, 40))} is not a label key`);
      if (typeof val !== 'string' || val.length > FLOW_LIMITS.labelValue || !PRINTABLE_RE.test(val))
        add(
          `${p}.labels.${k.slice(0, 40)}`,
          'must be a printable string of at most 253 characters',
        );
    }
  }
}

function checkRecord(r: unknown, p: string, nowMs: number, add: Add): void {
  if (!isObject(r)) return add(p, 'must be an object');
  onlyKeys(
    r,
    [
      'start',
      'end',
      'source',
      'destination',
      'protocol',
      'method',
      'path',
      'verdict',
      'point',
      'direction',
      'provenance',
      'staged',
      'packets',
      'bytes',
      'count',
    ],
    p,
    add,
  );
  const s = time(r.start, `${p}.start`, add);
  const e = time(r.end, `${p}.end`, add);
  if (s !== undefined && e !== undefined) {
    if (e < s) add(`${p}.end`, 'is before start');
    else if (e - s > FLOW_LIMITS.windowMs) add(`${p}.end`, 'the window is longer than 24 h');
    if (e > nowMs + FLOW_LIMITS.futureMs) add(`${p}.end`, 'is in the future');
  }
  checkEndpoint(r.source, `${p}.source`, add);
  checkEndpoint(r.destination, `${p}.destination`, add);
  if (
    typeof r.protocol !== 'string' ||
    !(PROTOCOLS.has(r.protocol) || (/^\d{1,3}$/.test(r.protocol) && Number(r.protocol) < 256))
  )
    add(`${p}.protocol`, 'must be TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number');
  if (r.method !== undefined) str(r.method, `${p}.method`, FLOW_LIMITS.method, add, METHOD_RE);
  if (r.path !== undefined) str(r.path, `${p}.path`, FLOW_LIMITS.path, add, /^[/*]/);
  if (r.verdict !== 'allow' && r.verdict !== 'deny') add(`${p}.verdict`, 'must be allow or deny');
  if (r.point !== 'kernel' && r.point !== 'l7') add(`${p}.point`, 'must be kernel or l7');
  if (r.direction !== undefined && r.direction !== 'ingress' && r.direction !== 'egress')
    add(`${p}.direction`, 'must be ingress or egress');
  const pv = r.provenance;
  if (!isObject(pv)) add(`${p}.provenance`, 'must be an object');
  else {
    onlyKeys(pv, ['kind', 'tier', 'policy', 'rule', 'profile', 'reason'], `${p}.provenance`, add);
    if (typeof pv.kind !== 'string' || !(PROVENANCE_KINDS as readonly string[]).includes(pv.kind))
      add(`${p}.provenance.kind`, `must be one of ${PROVENANCE_KINDS.join(', ')}`);
    if (pv.tier !== undefined) str(pv.tier, `${p}.provenance.tier`, FLOW_LIMITS.name, add);
    if (pv.policy !== undefined) str(pv.policy, `${p}.provenance.policy`, FLOW_LIMITS.name, add);
    if (pv.profile !== undefined) str(pv.profile, `${p}.provenance.profile`, FLOW_LIMITS.name, add);
    if (pv.reason !== undefined) str(pv.reason, `${p}.provenance.reason`, FLOW_LIMITS.reason, add);
    if (
      pv.rule !== undefined &&
      (!Number.isInteger(pv.rule) || (pv.rule as number) < 0 || (pv.rule as number) > 100_000)
    )
      add(`${p}.provenance.rule`, 'must be a rule index 0..100000');
  }
  if (r.staged !== undefined) {
    if (!Array.isArray(r.staged) || r.staged.length > FLOW_LIMITS.staged)
      add(`${p}.staged`, `must be an array of at most ${FLOW_LIMITS.staged}`);
    else
      r.staged.forEach((sv, i) => {
        const q = `${p}.staged[${i}]`;
        if (!isObject(sv)) return add(q, 'must be an object');
        onlyKeys(sv, ['policy', 'tier', 'verdict', 'rule'], q, add);
        str(sv.policy, `${q}.policy`, FLOW_LIMITS.name, add);
        if (sv.tier !== undefined) str(sv.tier, `${q}.tier`, FLOW_LIMITS.name, add);
        if (!['allow', 'deny', 'pass', 'no-match'].includes(sv.verdict as string))
          add(`${q}.verdict`, 'must be allow, deny, pass or no-match');
        if (sv.rule !== undefined && (!Number.isInteger(sv.rule) || (sv.rule as number) < 0))
          add(`${q}.rule`, 'must be a rule index');
      });
  }
  count(r.packets, `${p}.packets`, add);
  count(r.bytes, `${p}.bytes`, add);
  count(r.count, `${p}.count`, add);
  if (typeof r.count === 'number' && r.count < 1) add(`${p}.count`, 'must be at least 1');
}
