// L7 flow observations: every decision the sidecar logs (sidecar/access-log.ts) becomes an
// observation for the aggregator. The tap is a Writable the AccessLog writes its JSON lines to,
// so the sidecar needs no change; it can pass each line on to the real log file (`tee`).
// Owns: the mapping AccessRecord → observation. Must never: carry header values, bodies or the
// query string of a path (they may hold secrets), or block the sidecar (it only folds counts).

import { Writable } from 'node:stream';
import type { AccessRecord } from '../sidecar/access-log.js';
import type { FlowAggregator } from './aggregator.js';
import type { FlowObservation } from './observation.js';

export interface L7TapOptions {
  /** The address of the endpoint this sidecar sits beside (inbound destination, outbound source). */
  readonly localIp: string;
  /** The address of an endpoint the access log names `namespace/name` (outbound destinations). */
  readonly ipOf?: (endpoint: string) => string | undefined;
}

const IP_RE = /^[0-9a-fA-F.:]{2,45}$/;
const METHOD_RE = /^[A-Z][A-Z0-9_-]{0,31}$/;

/** The path without its query or fragment, printable and at most 2048 characters. */
export function flowPath(p: string | null): string | undefined {
  if (p === null) return undefined;
  const bare = p.split(/[?#]/, 1)[0] ?? '';
  if (!/^[/*]/.test(bare)) return undefined;
  return bare.replace(/[^\x20-\x7e]/g, '?').slice(0, 2048);
}

export function l7Observation(r: AccessRecord, o: L7TapOptions): FlowObservation | undefined {
  const t = Date.parse(r.time);
  const inbound = r.side === 'inbound';
  const srcIp = inbound ? r.source.ip : o.localIp;
  const dest = r.destination.endpoint;
  const dstIp = inbound ? o.localIp : IP_RE.test(dest) ? dest : o.ipOf?.(dest);
  if (dstIp === undefined || !IP_RE.test(srcIp) || Number.isNaN(t)) return undefined;
  const method = r.method !== null && METHOD_RE.test(r.method) ? r.method : undefined;
  const path = flowPath(r.path);
  const p = r.provenance;
  return {
    timeMs: t,
    point: 'l7',
    direction: inbound ? 'ingress' : 'egress',
    srcIp,
    dstIp,
    dstPort: r.destination.port,
    protocol: 'TCP',
    ...(method !== undefined ? { method } : {}),
    ...(path !== undefined ? { path } : {}),
    // An error is never forwarded (answered 500): for the flow log it is a refusal.
    verdict: r.verdict === 'allow' ? 'allow' : 'deny',
    provenance: {
      kind: p.kind,
      ...(p.tier !== undefined ? { tier: p.tier } : {}),
      ...(p.policy !== undefined ? { policy: p.policy } : {}),
      ...(p.rule !== undefined ? { rule: p.rule } : {}),
      ...(p.reason ? { reason: p.reason.slice(0, 512) } : {}),
    },
    ...(r.source.identity?.startsWith('spiffe://') && inbound
      ? { srcIdentity: r.source.identity }
      : {}),
    packets: 0,
    bytes: 0,
  };
}

/** A Writable for `new AccessLog(tap)`: each JSON line is folded into the aggregator. */
export function l7FlowTap(
  agg: FlowAggregator,
  o: L7TapOptions & { readonly tee?: Writable },
): Writable {
  let partial = '';
  return new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      const text = partial + chunk.toString();
      const lines = text.split('\n');
      partial = (lines.pop() ?? '').slice(0, 64 * 1024);
      for (const line of lines) {
        if (line === '') continue;
        let ob: FlowObservation | undefined;
        try {
          ob = l7Observation(JSON.parse(line) as AccessRecord, o);
        } catch {
          ob = undefined;
        }
        if (ob) agg.observe(ob);
        else agg.shed('l7', 'parse', 1);
      }
      if (o.tee && o.tee.writable && !o.tee.writableNeedDrain) o.tee.write(chunk);
      cb();
    },
  });
}
