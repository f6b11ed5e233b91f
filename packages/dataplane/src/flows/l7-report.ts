// The L7 decisions a sidecar (or the ext_authz server) hands to its node's agent over the
// endpoint's own socket (`POST /v1/flows/endpoints/NS/NAME`, agent-socket/protocol.ts): one
// record per judged request or refused connection, naming only the peer. The agent fills in the
// endpoint's own side from its view of the cluster, so a sidecar can describe nothing but traffic
// to or from its own endpoint, and holds no API credential (least privilege).
// Owns: the wire shape, AccessRecord → record, validation on the agent's side, and record →
// observation. Must never: carry header values, bodies or a path's query string, accept a field
// it does not know, or pass on a text the server would refuse (one such record would hold back
// the node's whole batch).

import { isIP } from 'node:net';
import { FLOW_PROVENANCE_KINDS } from '@palisade/core';
import type { AccessRecord } from '../sidecar/access-log.js';
import type { FlowObservation, ObservedProvenance, StagedObservation } from './observation.js';
import { flowPath } from './l7.js';

export const L7_REPORT_PREFIX = '/v1/flows/endpoints';
/** Records in one report (the reporter sends at most this many at a time). */
export const MAX_REPORT_RECORDS = 2000;
export const MAX_REPORT_BYTES = 4 * 1024 * 1024;

export interface L7ReportRecord {
  /** When the decision was made (ms since the epoch). */
  readonly time: number;
  /** `ingress`: a request to this endpoint; `egress`: one it sent. */
  readonly direction: 'ingress' | 'egress';
  /**
   * The other side: the source of an ingress request, the destination of an egress one — its
   * address, or (egress, as the outbound proxy names it) its `namespace/name`, which the agent
   * resolves.
   */
  readonly peer: {
    readonly ip?: string;
    readonly endpoint?: string;
    /** The verified SPIFFE ID of the peer's certificate (ingress). */
    readonly identity?: string;
  };
  /** The destination port as policies name it. */
  readonly port?: number;
  readonly method?: string;
  readonly path?: string;
  readonly verdict: 'allow' | 'deny';
  readonly provenance: ObservedProvenance;
  readonly staged?: readonly StagedObservation[];
}

export type L7ShedReason = 'buffer-full' | 'send-failed' | 'parse';

export interface L7Report {
  readonly records: readonly L7ReportRecord[];
  /** What the reporter could not keep or describe since its last accepted report. */
  readonly shed?: readonly { readonly reason: L7ShedReason; readonly count: number }[];
}

/** Provenance kinds the flow store accepts (controlplane/src/flows/flow-record.ts). */
const STORE_KINDS: ReadonlySet<string> = new Set(FLOW_PROVENANCE_KINDS);

/** Engine kinds the store has no name for, mapped to the nearest it has (the reason says which). */
const KIND_ALIASES: Readonly<Record<string, string>> = {};

/** Printable ASCII of at most `max` characters (others become `?`); undefined when empty. */
export function flowText(s: unknown, max: number): string | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.replace(/[^\x20-\x7e]/g, '?').slice(0, max);
  return t === '' ? undefined : t;
}

const NAME_MAX = 253;
const REASON_MAX = 512;

/** A provenance the store accepts: known kind, printable bounded texts, a sane rule index. */
export function storableProvenance(p: {
  readonly kind: string;
  readonly tier?: string | undefined;
  readonly policy?: string | undefined;
  readonly rule?: number | undefined;
  readonly profile?: string | undefined;
  readonly reason?: string | undefined;
}): ObservedProvenance {
  const alias = KIND_ALIASES[p.kind];
  const kind = STORE_KINDS.has(p.kind) ? p.kind : (alias ?? 'unmanaged');
  const reasonText =
    kind === p.kind ? p.reason : `${flowText(p.kind, 40) ?? '?'}: ${p.reason ?? ''}`.trim();
  const tier = flowText(p.tier, NAME_MAX);
  const policy = flowText(p.policy, NAME_MAX);
  const profile = flowText(p.profile, NAME_MAX);
  const reason = flowText(reasonText, REASON_MAX);
  const rule =
    p.rule !== undefined && Number.isInteger(p.rule) && p.rule >= 0 && p.rule <= 100_000
      ? p.rule
      : undefined;
  return {
    kind,
    ...(tier !== undefined ? { tier } : {}),
    ...(policy !== undefined ? { policy } : {}),
    ...(rule !== undefined ? { rule } : {}),
    ...(profile !== undefined ? { profile } : {}),
    ...(reason !== undefined ? { reason } : {}),
  };
}

const METHOD_RE = /^[A-Z][A-Z0-9_-]{0,31}$/;
const K8S = '[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?';
const ENDPOINT_RE = new RegExp(`^${K8S}/${K8S}$`);
const SPIFFE_RE = /^spiffe:\/\/[^\s/]+\/[\x21-\x7e]{0,480}$/;
const STAGED_VERDICTS = new Set(['allow', 'deny', 'pass', 'no-match']);

function storableStaged(
  list: readonly StagedObservation[] | undefined,
): StagedObservation[] | undefined {
  if (!list || list.length === 0) return undefined;
  const out: StagedObservation[] = [];
  for (const s of list.slice(0, 32)) {
    const policy = flowText(s.policy, NAME_MAX);
    if (policy === undefined || !STAGED_VERDICTS.has(s.verdict)) continue;
    const tier = flowText(s.tier, NAME_MAX);
    out.push({
      policy,
      verdict: s.verdict,
      ...(tier !== undefined ? { tier } : {}),
      ...(s.rule !== undefined && Number.isInteger(s.rule) && s.rule >= 0 ? { rule: s.rule } : {}),
    });
  }
  return out.length > 0 ? out : undefined;
}

/** One access-log record as a report record; undefined when it names no peer address. */
export function reportRecordOf(r: AccessRecord): L7ReportRecord | undefined {
  const time = Date.parse(r.time);
  if (Number.isNaN(time)) return undefined;
  const inbound = r.side === 'inbound';
  const peerName = inbound ? r.source.ip : r.destination.endpoint;
  const peer =
    isIP(peerName) !== 0
      ? { ip: peerName }
      : !inbound && ENDPOINT_RE.test(peerName) && peerName.length <= 507
        ? { endpoint: peerName }
        : undefined;
  if (!peer) return undefined;
  const identity =
    inbound && r.source.identity !== null && SPIFFE_RE.test(r.source.identity)
      ? r.source.identity
      : undefined;
  const port = r.destination.port;
  const method = r.method !== null && METHOD_RE.test(r.method) ? r.method : undefined;
  const path = flowPath(r.path);
  const staged = storableStaged(r.staged);
  return {
    time,
    direction: inbound ? 'ingress' : 'egress',
    peer: { ...peer, ...(identity !== undefined ? { identity } : {}) },
    ...(Number.isInteger(port) && port > 0 && port <= 65535 ? { port } : {}),
    ...(method !== undefined ? { method } : {}),
    ...(path !== undefined ? { path } : {}),
    // An error is never forwarded (answered 500): for the flow log it is a refusal.
    verdict: r.verdict === 'allow' ? 'allow' : 'deny',
    provenance: storableProvenance(r.provenance),
    ...(staged ? { staged } : {}),
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export type ReportValidation =
  | { readonly ok: true; readonly report: L7Report }
  | { readonly ok: false; readonly problems: readonly string[] };

/**
 * A report as the agent receives it, checked field by field (the first 20 problems named).
 * Times must lie within the last 24 h and at most 5 minutes ahead of `nowMs`.
 */
export function validateL7Report(v: unknown, nowMs: number): ReportValidation {
  const problems: string[] = [];
  const add = (p: string, m: string): void => {
    if (problems.length < 20) problems.push(`${p}: ${m}`);
  };
  if (!isObject(v)) return { ok: false, problems: ['the body must be a JSON object'] };
  for (const k of Object.keys(v))
    if (k !== 'records' && k !== 'shed') add(k.slice(0, 40), 'unknown field');
  const records = v['records'];
  if (!Array.isArray(records) || records.length > MAX_REPORT_RECORDS)
    return { ok: false, problems: [`records must be a list of at most ${MAX_REPORT_RECORDS}`] };
  const out: L7ReportRecord[] = [];
  records.forEach((r: unknown, i) => {
    const p = `records[${i}]`;
    if (!isObject(r)) return add(p, 'must be an object');
    for (const k of Object.keys(r))
      if (
        ![
          'time',
          'direction',
          'peer',
          'port',
          'method',
          'path',
          'verdict',
          'provenance',
          'staged',
        ].includes(k)
      )
        add(`${p}.${k.slice(0, 40)}`, 'unknown field');
    const before = problems.length;
    const time = r['time'];
    if (
      typeof time !== 'number' ||
      !Number.isSafeInteger(time) ||
      time < nowMs - 24 * 3600_000 ||
      time > nowMs + 5 * 60_000
    )
      add(`${p}.time`, 'must be a time (ms) within the last 24 h');
    const direction = r['direction'];
    if (direction !== 'ingress' && direction !== 'egress')
      add(`${p}.direction`, 'must be ingress or egress');
    const peer = r['peer'];
    if (!isObject(peer)) add(`${p}.peer`, 'must be an object');
    else {
      for (const k of Object.keys(peer))
        if (k !== 'ip' && k !== 'endpoint' && k !== 'identity')
          add(`${p}.peer.${k.slice(0, 40)}`, 'unknown field');
      const ip = peer['ip'];
      const ep = peer['endpoint'];
      if ((ip === undefined) === (ep === undefined))
        add(`${p}.peer`, 'must have exactly one of ip and endpoint');
      else if (ip !== undefined && (typeof ip !== 'string' || ip.length > 45 || isIP(ip) === 0))
        add(`${p}.peer.ip`, 'must be an IP address');
      else if (
        ep !== undefined &&
        (typeof ep !== 'string' ||
          ep.length > 507 ||
          !ENDPOINT_RE.test(ep) ||
          direction !== 'egress')
      )
        add(`${p}.peer.endpoint`, 'must be namespace/name (egress only)');
      const id = peer['identity'];
      if (id !== undefined && (typeof id !== 'string' || !SPIFFE_RE.test(id)))
        add(`${p}.peer.identity`, 'must be a SPIFFE ID');
    }
    const port = r['port'];
    if (
      port !== undefined &&
      (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535)
    )
      add(`${p}.port`, 'must be 1..65535');
    const method = r['method'];
    if (method !== undefined && (typeof method !== 'string' || !METHOD_RE.test(method)))
      add(`${p}.method`, 'must be an HTTP method');
    const path = r['path'];
    if (
      path !== undefined &&
      (typeof path !== 'string' ||
        path.length > 2048 ||
        !/^[/*][\x20-\x7e]*$/.test(path) ||
        /[?#]/.test(path))
    )
      add(`${p}.path`, 'must be a printable path without query, at most 2048 characters');
    const verdict = r['verdict'];
    if (verdict !== 'allow' && verdict !== 'deny') add(`${p}.verdict`, 'must be allow or deny');
    const pv = r['provenance'];
    if (!isObject(pv) || typeof pv['kind'] !== 'string' || pv['kind'].length > 40)
      add(`${p}.provenance`, 'must be an object with a kind');
    else
      for (const k of Object.keys(pv)) {
        if (!['kind', 'tier', 'policy', 'rule', 'profile', 'reason'].includes(k))
          add(`${p}.provenance.${k.slice(0, 40)}`, 'unknown field');
        else if (k === 'rule') {
          if (!Number.isInteger(pv[k])) add(`${p}.provenance.rule`, 'must be an integer');
        } else if (typeof pv[k] !== 'string' || pv[k].length > 4096)
          add(`${p}.provenance.${k}`, 'must be a string of at most 4096 characters');
      }
    const staged = r['staged'];
    if (
      staged !== undefined &&
      (!Array.isArray(staged) ||
        staged.length > 32 ||
        !staged.every(
          (s) =>
            isObject(s) &&
            typeof s['policy'] === 'string' &&
            s['policy'].length <= NAME_MAX &&
            STAGED_VERDICTS.has(s['verdict'] as string) &&
            (s['tier'] === undefined ||
              (typeof s['tier'] === 'string' && s['tier'].length <= NAME_MAX)) &&
            (s['rule'] === undefined || Number.isInteger(s['rule'])) &&
            Object.keys(s).every((k) => ['policy', 'tier', 'verdict', 'rule'].includes(k)),
        ))
    )
      add(`${p}.staged`, 'must be at most 32 {policy, tier?, verdict, rule?}');
    if (problems.length !== before) return;
    const rec = r as unknown as L7ReportRecord;
    const st = storableStaged(rec.staged);
    out.push({
      time: rec.time,
      direction: rec.direction,
      peer: {
        ...(rec.peer.ip !== undefined ? { ip: rec.peer.ip } : {}),
        ...(rec.peer.endpoint !== undefined ? { endpoint: rec.peer.endpoint } : {}),
        ...(rec.peer.identity !== undefined ? { identity: rec.peer.identity } : {}),
      },
      ...(rec.port !== undefined ? { port: rec.port } : {}),
      ...(rec.method !== undefined ? { method: rec.method } : {}),
      ...(rec.path !== undefined ? { path: rec.path } : {}),
      verdict: rec.verdict,
      provenance: storableProvenance(rec.provenance),
      ...(st ? { staged: st } : {}),
    });
  });
  const shedIn = v['shed'];
  const shed: { reason: L7ShedReason; count: number }[] = [];
  if (shedIn !== undefined) {
    if (!Array.isArray(shedIn) || shedIn.length > 8) add('shed', 'must be a list of at most 8');
    else
      shedIn.forEach((s: unknown, i) => {
        if (
          !isObject(s) ||
          !['buffer-full', 'send-failed', 'parse'].includes(s['reason'] as string) ||
          !Number.isSafeInteger(s['count']) ||
          (s['count'] as number) < 0 ||
          Object.keys(s).some((k) => k !== 'reason' && k !== 'count')
        )
          add(`shed[${i}]`, 'must be {reason: buffer-full|send-failed|parse, count}');
        else shed.push({ reason: s['reason'] as L7ShedReason, count: s['count'] as number });
      });
  }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, report: { records: out, ...(shed.length > 0 ? { shed } : {}) } };
}

/**
 * A validated record as an observation, the endpoint's own side at `localIp`; a peer named by
 * endpoint is resolved with `addressOf` (undefined when it has no known address).
 */
export function observationOf(
  r: L7ReportRecord,
  localIp: string,
  addressOf: (endpoint: string) => string | undefined = () => undefined,
): FlowObservation | undefined {
  const ingress = r.direction === 'ingress';
  const peerIp =
    r.peer.ip ?? (r.peer.endpoint !== undefined ? addressOf(r.peer.endpoint) : undefined);
  if (peerIp === undefined) return undefined;
  return {
    timeMs: r.time,
    point: 'l7',
    direction: r.direction,
    srcIp: ingress ? peerIp : localIp,
    dstIp: ingress ? localIp : peerIp,
    ...(r.port !== undefined ? { dstPort: r.port } : {}),
    protocol: 'TCP',
    ...(r.method !== undefined ? { method: r.method } : {}),
    ...(r.path !== undefined ? { path: r.path } : {}),
    verdict: r.verdict,
    provenance: r.provenance,
    ...(ingress && r.peer.identity !== undefined ? { srcIdentity: r.peer.identity } : {}),
    ...(r.staged ? { staged: r.staged } : {}),
    packets: 0,
    bytes: 0,
  };
}
