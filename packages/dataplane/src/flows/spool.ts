// The node's flow spool: what the aggregator holds and has not shipped (the current interval's
// records, batches kept after failed sends, unreported shed counts), written to one file in the
// agent's state directory so that an agent killed with SIGKILL does not lose it uncounted: the
// next agent ships it. Written atomically (temporary name, fsync, rename) and bounded: beyond
// `maxRecords` records only their counts are kept (shipped as shed `send-failed`).
// Owns: the file format and its bounds. Must never: throw into the flow pipeline (a spool that
// cannot be written or read is reported, and enforcement goes on), or grow without bound.

import { readFileSync } from 'node:fs';
import { replaceFileDurably } from '../durable-file.js';
import type { FlowPoint, WireBatch, WireFlowRecord, WireShed } from './observation.js';

export interface SpoolContent {
  readonly batches: readonly WireBatch[];
  readonly shed: readonly WireShed[];
}

const VERSION = 1;
const REASONS = new Set(['buffer-full', 'rate-limit', 'send-failed', 'kernel-untraced', 'parse']);

export class FlowSpool {
  /** Writes that failed (metrics, tests). */
  failures = 0;

  constructor(
    readonly file: string,
    readonly maxRecords = 20_000,
  ) {}

  /**
   * Replaces the spool with `c`, keeping at most `maxRecords` records (the oldest batches first);
   * the records beyond are kept as their observation counts, shed `send-failed`.
   */
  write(c: SpoolContent): boolean {
    let room = this.maxRecords;
    const batches: WireBatch[] = [];
    const over = new Map<FlowPoint, number>();
    for (const b of c.batches) {
      const keep = b.records.slice(0, Math.max(0, room));
      room -= keep.length;
      for (const r of b.records.slice(keep.length))
        over.set(r.point, (over.get(r.point) ?? 0) + r.count);
      if (keep.length > 0) batches.push({ records: keep });
    }
    const shed = mergeShed([
      ...c.shed,
      ...[...over].map(([point, count]) => ({ point, reason: 'send-failed' as const, count })),
    ]);
    const text = JSON.stringify({ version: VERSION, batches, shed });
    try {
      replaceFileDurably(this.file, text);
      return true;
    } catch {
      this.failures++;
      return false;
    }
  }

  /**
   * What a previous process left: undefined when there is no spool; `problem` when it cannot be
   * read (its contents are then unknown and cannot be counted — reported instead).
   */
  read(): { content?: SpoolContent; problem?: string } {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      return { problem: e instanceof Error ? e.message : String(e) };
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return { problem: 'the spool is not JSON (cut short?)' };
    }
    if (!isObject(doc) || doc['version'] !== VERSION)
      return { problem: 'the spool is of an unknown version' };
    const batches: WireBatch[] = [];
    const shed: WireShed[] = [];
    let dropped = 0;
    for (const b of Array.isArray(doc['batches']) ? (doc['batches'] as unknown[]) : []) {
      if (!isObject(b) || !Array.isArray(b['records'])) continue;
      // The server validates every field; here only the shape the aggregator relies on.
      const records = (b['records'] as unknown[]).filter(
        (r): r is WireFlowRecord =>
          isObject(r) &&
          (r['point'] === 'kernel' || r['point'] === 'l7') &&
          Number.isSafeInteger(r['count']),
      );
      dropped += (b['records'] as unknown[]).length - records.length;
      if (records.length > 0) batches.push({ records });
    }
    for (const s of Array.isArray(doc['shed']) ? (doc['shed'] as unknown[]) : []) {
      if (
        isObject(s) &&
        (s['point'] === 'kernel' || s['point'] === 'l7') &&
        typeof s['reason'] === 'string' &&
        REASONS.has(s['reason']) &&
        Number.isSafeInteger(s['count']) &&
        (s['count'] as number) > 0
      )
        shed.push(s as unknown as WireShed);
    }
    return {
      content: { batches, shed },
      ...(dropped > 0 ? { problem: `${dropped} unreadable record(s) in the spool` } : {}),
    };
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function mergeShed(list: readonly WireShed[]): WireShed[] {
  const m = new Map<string, WireShed>();
  for (const s of list) {
    const k = `${s.point} ${s.reason}`;
    const prev = m.get(k);
    m.set(k, { ...s, count: (prev?.count ?? 0) + s.count });
  }
  return [...m.values()];
}
