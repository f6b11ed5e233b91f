// The audit log (DESIGN §7): every write and every refused attempt, append-only and hash-chained.
// Entry n carries the hash of entry n-1 and its own hash over a canonical serialisation of every
// other field; a head record names the last sequence number and hash. Entries are written in the
// same store transaction as the change they record (the server builds the ops here).
// Owns: the entry shape, hashing, the append ops, verification and queries.
// Must never: record a credential (tokens appear only by their public id).

import { createHash } from 'node:crypto';
import type { Principal } from '../auth/principal.js';
import { AUDIT_ENTRIES_PREFIX, AUDIT_HEAD_KEY, auditEntryKey } from '../resources/keys.js';
import type { Compare, KeyValue, Op, Store } from '../store/store.js';
import { canonicalJson } from './canonical.js';

export const GENESIS_HASH = '0'.repeat(64);

export interface AuditChange {
  readonly verb: 'create' | 'update' | 'delete';
  /** `Kind.group`. */
  readonly kind: string;
  readonly namespace?: string;
  readonly name: string;
  /** SHA-256 of the canonical object before / after (absent when there is none). */
  readonly beforeDigest?: string;
  readonly afterDigest?: string;
  /** The objects themselves when small (single-object writes). */
  readonly before?: unknown;
  readonly after?: unknown;
}

export interface AuditRecord {
  readonly time: string;
  readonly principal:
    | {
        readonly kind: string;
        readonly name: string;
        readonly via: string;
        readonly tokenId?: string;
      }
    | undefined;
  readonly remote: string;
  /** The API verb: create, update, delete, apply, label, token.create, ... */
  readonly verb: string;
  readonly kind?: string;
  readonly namespace?: string;
  readonly name?: string;
  readonly outcome: 'allowed' | 'refused';
  readonly status: number;
  readonly code?: string;
  readonly message?: string;
  readonly changes?: readonly AuditChange[];
}

export interface AuditEntry extends AuditRecord {
  readonly seq: number;
  readonly prevHash: string;
  readonly hash: string;
}

interface AuditHead {
  readonly seq: number;
  readonly hash: string;
}

export function digest(v: unknown): string {
  return createHash('sha256').update(canonicalJson(v)).digest('hex');
}

export function entryHash(e: Omit<AuditEntry, 'hash'>): string {
  return digest({ ...e, hash: undefined });
}

/** Objects at most this large are kept whole in an entry; larger ones only by digest. */
const INLINE_OBJECT_BYTES = 16 * 1024;
/** Changes per entry: an apply of many documents writes several chained entries. */
export const CHANGES_PER_ENTRY = 500;

export function change(
  verb: AuditChange['verb'],
  kind: string,
  namespace: string | undefined,
  name: string,
  before: unknown,
  after: unknown,
  inline: boolean,
): AuditChange {
  const small = (o: unknown) =>
    inline && o !== undefined && canonicalJson(o).length <= INLINE_OBJECT_BYTES;
  return {
    verb,
    kind,
    ...(namespace !== undefined ? { namespace } : {}),
    name,
    ...(before !== undefined ? { beforeDigest: digest(before) } : {}),
    ...(after !== undefined ? { afterDigest: digest(after) } : {}),
    ...(small(before) ? { before } : {}),
    ...(small(after) ? { after } : {}),
  };
}

export function principalRecord(p: Principal | undefined): AuditRecord['principal'] {
  if (!p) return undefined;
  return { kind: p.kind, name: p.name, via: p.via, ...(p.tokenId ? { tokenId: p.tokenId } : {}) };
}

/** Reads the head; the compare guarding it makes concurrent appends serialise. */
export async function readHead(store: Store): Promise<{ head: AuditHead; compare: Compare }> {
  const kv = await store.get(AUDIT_HEAD_KEY);
  if (!kv)
    return {
      head: { seq: 0, hash: GENESIS_HASH },
      compare: { key: AUDIT_HEAD_KEY, modRevision: 0 },
    };
  return {
    head: JSON.parse(kv.value) as AuditHead,
    compare: { key: AUDIT_HEAD_KEY, modRevision: kv.modRevision },
  };
}

/**
 * The ops appending `records` after `head` (one entry per record, chained). Pass the compare
 * from readHead in the same transaction.
 */
export function appendOps(
  head: AuditHead,
  records: readonly AuditRecord[],
): { ops: Op[]; entries: AuditEntry[] } {
  const ops: Op[] = [];
  const entries: AuditEntry[] = [];
  let { seq, hash } = head;
  for (const r of records) {
    seq += 1;
    const partial = { ...r, seq, prevHash: hash };
    hash = entryHash(partial);
    const e: AuditEntry = { ...partial, hash };
    entries.push(e);
    ops.push({ kind: 'put', key: auditEntryKey(seq), value: JSON.stringify(e) });
  }
  ops.push({ kind: 'put', key: AUDIT_HEAD_KEY, value: JSON.stringify({ seq, hash }) });
  return { ops, entries };
}

/** Appends records in their own transaction (refusals), retrying when another append wins. */
export async function appendAudit(store: Store, records: readonly AuditRecord[]): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const { head, compare } = await readHead(store);
    const { ops } = appendOps(head, records);
    const r = await store.txn({ compares: [compare], success: ops });
    if (r.succeeded) return;
  }
  throw new Error('audit append did not win the head after 50 attempts');
}

export interface VerifyProblem {
  readonly seq: number;
  readonly problem: string;
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly entries: number;
  readonly headSeq: number;
  readonly problems: readonly VerifyProblem[];
}

async function* allEntries(store: Store): AsyncGenerator<KeyValue> {
  let after: string | undefined;
  for (;;) {
    const page = await store.list(AUDIT_ENTRIES_PREFIX, {
      limit: 1000,
      ...(after ? { after } : {}),
    });
    for (const kv of page.items) yield kv;
    if (!page.more || page.items.length === 0) return;
    after = page.items[page.items.length - 1]?.key;
  }
}

/**
 * Walks the chain: every entry's hash must match its content, its key its sequence number, its
 * prevHash the previous entry's hash, sequence numbers must be contiguous from 1, and the head
 * must name the last entry. An edited, removed, inserted or reordered entry breaks one of these.
 */
export async function verifyAudit(store: Store): Promise<VerifyResult> {
  const problems: VerifyProblem[] = [];
  let expectSeq = 1;
  let prevHash = GENESIS_HASH;
  let count = 0;
  for await (const kv of allEntries(store)) {
    count++;
    let e: AuditEntry;
    try {
      e = JSON.parse(kv.value) as AuditEntry;
    } catch {
      problems.push({ seq: expectSeq, problem: `entry at ${kv.key} is not valid JSON` });
      expectSeq++;
      continue;
    }
    if (kv.key !== auditEntryKey(e.seq))
      problems.push({
        seq: e.seq,
        problem: `entry ${e.seq} is stored at ${kv.key} (moved or reordered)`,
      });
    if (e.seq !== expectSeq)
      problems.push({
        seq: expectSeq,
        problem:
          e.seq > expectSeq
            ? `entries ${expectSeq}..${e.seq - 1} are missing`
            : `entry ${e.seq} appears out of order`,
      });
    if (e.prevHash !== prevHash)
      problems.push({
        seq: e.seq,
        problem: `entry ${e.seq} does not chain to the entry before it`,
      });
    const { hash, ...rest } = e;
    if (entryHash(rest) !== hash)
      problems.push({
        seq: e.seq,
        problem: `entry ${e.seq} was edited (its hash does not match its content)`,
      });
    prevHash = hash;
    expectSeq = Math.max(expectSeq, e.seq) + 1;
  }
  const { head } = await readHead(store);
  if (head.seq !== expectSeq - 1)
    problems.push({
      seq: head.seq,
      problem:
        head.seq > expectSeq - 1
          ? `the head names entry ${head.seq} but the log ends at ${expectSeq - 1} (entries removed from the end)`
          : `the log holds entries after the head (${head.seq})`,
    });
  else if (head.hash !== prevHash)
    problems.push({ seq: head.seq, problem: 'the head hash does not match the last entry' });
  return { ok: problems.length === 0, entries: count, headSeq: head.seq, problems };
}

export interface AuditQuery {
  readonly user?: string;
  readonly kind?: string;
  readonly name?: string;
  readonly namespace?: string;
  readonly since?: Date;
  readonly until?: Date;
  readonly outcome?: 'allowed' | 'refused';
  readonly limit?: number;
}

function matchesKind(e: AuditEntry, kind: string): boolean {
  const eq = (k: string | undefined) =>
    k !== undefined &&
    (k.toLowerCase() === kind.toLowerCase() ||
      k.toLowerCase().startsWith(`${kind.toLowerCase()}.`));
  return eq(e.kind) || (e.changes ?? []).some((c) => eq(c.kind));
}

/** Entries matching every filter, oldest first, at most `limit` (the newest ones). */
export async function queryAudit(store: Store, q: AuditQuery): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  const limit = q.limit ?? 1000;
  for await (const kv of allEntries(store)) {
    const e = JSON.parse(kv.value) as AuditEntry;
    if (q.user !== undefined && e.principal?.name !== q.user) continue;
    if (q.kind !== undefined && !matchesKind(e, q.kind)) continue;
    if (
      q.name !== undefined &&
      e.name !== q.name &&
      !(e.changes ?? []).some((c) => c.name === q.name)
    )
      continue;
    if (
      q.namespace !== undefined &&
      e.namespace !== q.namespace &&
      !(e.changes ?? []).some((c) => c.namespace === q.namespace)
    )
      continue;
    const t = Date.parse(e.time);
    if (q.since && t < q.since.getTime()) continue;
    if (q.until && t > q.until.getTime()) continue;
    if (q.outcome !== undefined && e.outcome !== q.outcome) continue;
    out.push(e);
    if (out.length > limit) out.shift();
  }
  return out;
}
