// The only code that runs `nft` (STYLE 2, 8). Applies a rendered table in ONE transaction
// (`nft -f -`: the kernel commits the whole batch or none of it, so there is never a moment with
// half the rules), updates set elements alone when only memberships changed, reads the table back
// and repairs drift (tampering) on a periodic resync. It names only its own table in every
// command, so no other table is ever read, changed or flushed. Conntrack lives outside the ruleset:
// replacing the table keeps established connections.
// Owns: talking to the kernel. Must never: decide policy, or touch a table it does not own.

import { elementCommand, skeletonParts, validTableName } from './render.js';
import type { Rendered } from './render.js';
import { DataplaneError } from '../errors.js';
import { openSession } from './session.js';
import type { NftResult, NftRunner, NftSession } from './session.js';

export { processRunner } from './session.js';
export type { NftResult, NftRunner } from './session.js';

export interface DriverOptions {
  /** The owned table in family inet (default `palisade`). */
  readonly table?: string;
  /** Run every command inside this network namespace (`ip netns exec NS nft ...`). */
  readonly netns?: string;
  readonly nft?: string;
  /** Replaces the nft session (tests of callers). */
  readonly runner?: NftRunner;
  /**
   * The libnftables file for the long-lived session (default: Debian's); false: one `nft`
   * process per command, as before (also with PALISADE_NFT_SESSION=process).
   */
  readonly library?: string | false;
  /** Where the session's fallback and restart lines go (default: standard error, once). */
  readonly log?: (line: string) => void;
  /** Rule changes as minimal chain/set deltas in one batch (default true); false: always full. */
  readonly delta?: boolean;
  readonly timeoutMs?: number;
  /**
   * Quiet time after the last apply before the baseline read-back (`nft -j list table`) runs
   * (default 1 s). The read-back never runs in an apply's path, and is discarded when an apply
   * overlapped it.
   */
  readonly baselineIdleMs?: number;
}

export type ApplyKind = 'full' | 'delta' | 'elements' | 'unchanged';

export interface ApplyReport {
  readonly kind: ApplyKind;
  readonly ms: number;
  /** CPU time of the nft commands of this apply, where the session reports it (the worker). */
  readonly nftCpuMs?: number;
}

export interface ResyncReport {
  readonly drift: boolean;
  readonly repaired: boolean;
}

const PROTO_NUMBERS: Readonly<Record<string, string>> = {
  icmp: '1',
  tcp: '6',
  udp: '17',
  'ipv6-icmp': '58',
  icmpv6: '58',
  sctp: '132',
  udplite: '136',
};

/** One set element as nft prints it in JSON, in the renderer's text form. */
function elementText(e: unknown): string {
  if (typeof e === 'string') return PROTO_NUMBERS[e] ?? e;
  if (typeof e === 'number') return String(e);
  if (e && typeof e === 'object') {
    const o = e as Record<string, unknown>;
    if ('elem' in o) return elementText((o['elem'] as Record<string, unknown>)['val']);
    if ('prefix' in o) {
      const p = o['prefix'] as { addr: unknown; len: unknown };
      return `${elementText(p.addr)}/${String(p.len)}`;
    }
    if ('concat' in o) return (o['concat'] as unknown[]).map(elementText).join(' . ');
    if ('range' in o) return (o['range'] as unknown[]).map(elementText).join('-');
  }
  return JSON.stringify(e);
}

/**
 * What "the same table" means, from `nft -j list table`: the skeleton (sorted-key JSON without
 * handles, counter values and set elements) and each set's elements in the renderer's text form.
 */
export function readTable(listJson: string): {
  skeleton: string;
  elements: Map<string, string[]>;
} {
  const data = JSON.parse(listJson) as { nftables?: unknown[] };
  const elements = new Map<string, string[]>();
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        if (k === 'handle' || k === 'metainfo' || k === 'elem') continue;
        const x = (v as Record<string, unknown>)[k];
        out[k] = k === 'counter' && x && typeof x === 'object' ? {} : strip(x);
      }
      return out;
    }
    return v;
  };
  // Objects in name order, rules grouped by chain in their order: the listing order of objects
  // depends on the history of the table (a delta adds chains last), their meaning does not.
  const objects: string[] = [];
  const rules = new Map<string, string[]>();
  for (const e of data.nftables ?? []) {
    if (!e || typeof e !== 'object' || 'metainfo' in e) continue;
    const set = (e as { set?: { name?: string; elem?: unknown[] } }).set;
    if (set?.name !== undefined) elements.set(set.name, (set.elem ?? []).map(elementText).sort());
    const rule = (e as { rule?: { chain?: string } }).rule;
    const text = JSON.stringify(strip(e));
    if (rule) {
      const l = rules.get(rule.chain ?? '') ?? [];
      l.push(text);
      rules.set(rule.chain ?? '', l);
    } else objects.push(text);
  }
  objects.sort();
  const chains = [...rules.entries()].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
  return { skeleton: JSON.stringify({ objects, rules: chains }), elements };
}

/** The elements a rendering wants, sorted, per set. */
function wantedElements(r: Rendered): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of r.elements) out.set(k, [...v].sort());
  return out;
}

function sameElements(a: Map<string, string[]>, b: Map<string, string[]>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w || w.length !== v.length || w.some((x, i) => x !== v[i])) return false;
  }
  return true;
}

const COMMENT_AT_END = /comment "([^"]*)"$/;

/**
 * Whether a listing is the table a rendering describes, chain by chain: the same chains with the
 * same number of rules carrying the same provenance comments in the same order, and the same
 * sets. Used to adopt a read-back as the baseline after a delta (a rule added, removed or moved
 * by hand is caught; a rule edited in place keeping its comment is caught by the next full
 * comparison only).
 */
export function listingMatches(rendered: Rendered, listJson: string): boolean {
  const parts = rendered.parts ?? skeletonParts(rendered.skeleton);
  const data = JSON.parse(listJson) as { nftables?: unknown[] };
  const chains = new Map<string, (string | undefined)[]>();
  const sets = new Set<string>();
  for (const e of data.nftables ?? []) {
    const o = e as {
      chain?: { name?: string };
      rule?: { chain?: string; comment?: unknown };
      set?: { name?: string };
    };
    if (o.chain?.name !== undefined && !chains.has(o.chain.name)) chains.set(o.chain.name, []);
    if (o.set?.name !== undefined) sets.add(o.set.name);
    if (o.rule?.chain !== undefined) {
      const l = chains.get(o.rule.chain) ?? [];
      l.push(typeof o.rule.comment === 'string' ? o.rule.comment : undefined);
      chains.set(o.rule.chain, l);
    }
  }
  const want = new Map<string, readonly string[]>([...parts.baseChains, ...parts.chains]);
  if (want.size !== chains.size) return false;
  for (const [name, rules] of want) {
    const body = name.length > 0 && parts.baseChains.has(name) ? rules.slice(1) : rules;
    const got = chains.get(name);
    if (!got || got.length !== body.length) return false;
    for (let i = 0; i < body.length; i++)
      if ((COMMENT_AT_END.exec(body[i] ?? '')?.[1] ?? undefined) !== got[i]) return false;
  }
  const wantSets = new Set<string>();
  for (const n of parts.sets.keys()) wantSets.add(n);
  if (wantSets.size !== sets.size) return false;
  for (const n of wantSets) if (!sets.has(n)) return false;
  return true;
}

export class NftDriver {
  readonly table: string;
  private readonly run: NftRunner;
  private readonly session: NftSession | undefined;
  /** The session generation the last apply went to (another one: reconcile in full). */
  private generation = 0;
  private readonly delta: boolean;
  /** What was last applied, and the skeleton nft printed back right after the full apply. */
  private last: { rendered: Rendered; skeleton: string | undefined } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<unknown> = Promise.resolve();
  /** Applies waiting in the queue (a baseline read-back is skipped when one is). */
  private pendingApplies = 0;
  /** Counts applies started: a read-back that overlapped one is discarded. */
  private epoch = 0;
  private baselineTimer: NodeJS.Timeout | undefined;
  private readonly baselineIdleMs: number;

  constructor(options: DriverOptions = {}) {
    this.table = options.table ?? 'palisade';
    this.delta = options.delta !== false;
    this.baselineIdleMs = options.baselineIdleMs ?? 1_000;
    if (!validTableName(this.table))
      throw new DataplaneError(
        'DATAPLANE_ERR_INVALID_NAME',
        `invalid table name ${JSON.stringify(this.table)}`,
      );
    if (options.runner) {
      this.run = options.runner;
      this.session = undefined;
    } else {
      const session = openSession({
        ...(options.netns !== undefined ? { netns: options.netns } : {}),
        ...(options.nft !== undefined ? { nft: options.nft } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
        ...(options.library !== undefined ? { library: options.library } : {}),
        ...(options.log !== undefined ? { log: options.log } : {}),
      });
      this.session = session;
      this.run = session.run;
    }
  }

  /** What runs nft commands now: `library`, `worker`, `process` (fallback), or `runner`. */
  sessionKind(): string {
    return this.session?.kind() ?? 'runner';
  }

  /** Ends the long-lived nft session (the worker process); a later command starts a new one. */
  close(): void {
    this.stopResync();
    if (this.baselineTimer) clearTimeout(this.baselineTimer);
    this.session?.close();
  }

  /**
   * Forgets what was applied when the session was restarted since (a worker died): the next
   * apply is a full reconcile, whatever the dead session may or may not have committed.
   */
  private checkGeneration(): void {
    if ((this.session?.generation() ?? 0) !== this.generation) this.last = undefined;
  }

  /** Records the generation a command just succeeded in. */
  private seen(): void {
    this.generation = this.session?.generation() ?? 0;
  }

  /** Serialises kernel operations: one transaction at a time. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const p = this.busy.then(f, f);
    this.busy = p.catch(() => undefined);
    return p;
  }

  /** CPU time of the current apply's nft commands (undefined: the session does not report it). */
  private applyCpu: number | undefined;

  private counted(r: NftResult): NftResult {
    if (r.cpuMs !== undefined) this.applyCpu = (this.applyCpu ?? 0) + r.cpuMs;
    return r;
  }

  private async nft(args: readonly string[], stdin?: string): Promise<string> {
    const r = this.counted(await this.run(args, stdin));
    if (r.code !== 0)
      throw new DataplaneError(
        'DATAPLANE_ERR_NFT',
        `nft ${args.join(' ')} failed: ${r.stderr.trim().slice(0, 2000)}`,
      );
    return r.stdout;
  }

  /** The owned table as nft prints it (JSON), or undefined when it does not exist. */
  async readBack(): Promise<string | undefined> {
    const r = await this.run(['-j', 'list', 'table', 'inet', this.table]);
    if (r.code !== 0) {
      if (/No such file or directory|does not exist/i.test(r.stderr)) return undefined;
      throw new DataplaneError('DATAPLANE_ERR_NFT', `nft list table failed: ${r.stderr.trim()}`);
    }
    return r.stdout;
  }

  /** The full replacement: create-if-missing, delete, define — one batch, one commit. */
  fullScript(rendered: Rendered): string {
    if (rendered.table !== this.table)
      throw new DataplaneError(
        'DATAPLANE_ERR_FOREIGN',
        `rendered table ${rendered.table} is not the owned table ${this.table}`,
      );
    return `add table inet ${this.table}\ndelete table inet ${this.table}\n${rendered.script}`;
  }

  /** The element delta between two renderings with equal skeletons. */
  elementScript(from: Pick<Rendered, 'elements'>, to: Pick<Rendered, 'elements'>): string {
    // Most sets are unchanged (often the very same array): only the others are diffed.
    const changed: [string, readonly string[], readonly string[]][] = [];
    for (const [name, els] of to.elements) {
      const before = from.elements.get(name) ?? [];
      if (before === els) continue;
      if (before.length === els.length && before.every((e, i) => e === els[i])) continue;
      changed.push([name, before, els]);
    }
    let out = '';
    for (const [name, before, els] of changed) {
      const now = new Set(els);
      const gone = before.filter((e) => !now.has(e));
      if (gone.length > 0) out += elementCommand('delete', this.table, name, gone);
    }
    for (const [name, before, els] of changed) {
      const was = new Set(before);
      const added = els.filter((e) => !was.has(e));
      if (added.length > 0) out += elementCommand('add', this.table, name, added);
    }
    return out;
  }

  /**
   * The minimal transaction from one rendering to another when only regular chains, maps and
   * sets changed: new sets and chains added, changed chains flushed and refilled, maps refilled,
   * unused chains and sets removed (after everything that referenced them), element deltas — all
   * in one batch, so still atomic. Undefined when a base chain or a set declaration changed (then
   * the full replacement is used).
   */
  deltaScript(from: Rendered, to: Rendered): string | undefined {
    const d = this.delta_(from, to);
    return d === undefined ? undefined : d.rules + d.elements;
  }

  /** The delta split into its rule part (empty: same skeleton) and its element part. */
  private delta_(from: Rendered, to: Rendered): { rules: string; elements: string } | undefined {
    const a = from.parts ?? skeletonParts(from.skeleton);
    const b = to.parts ?? skeletonParts(to.skeleton);
    const same = (x: readonly string[] | undefined, y: readonly string[] | undefined) =>
      x !== undefined &&
      y !== undefined &&
      (x === y || (x.length === y.length && x.every((v, i) => v === y[i])));
    if (a.baseChains.size !== b.baseChains.size) return undefined;
    for (const [n, body] of b.baseChains) if (!same(a.baseChains.get(n), body)) return undefined;
    for (const [n, decl] of b.sets)
      if (a.sets.has(n) && !same(a.sets.get(n), decl)) return undefined;
    for (const [n, m] of b.maps) if (a.maps.get(n)?.type !== m.type) return undefined;
    if (a.maps.size !== b.maps.size) return undefined;
    const T = `inet ${this.table}`;
    const out: string[] = [];
    for (const [n, decl] of b.sets)
      if (!a.sets.has(n)) out.push(`add set ${T} ${n} { ${decl.join('; ')}; }`);
    for (const n of b.chains.keys()) if (!a.chains.has(n)) out.push(`add chain ${T} ${n}`);
    for (const [n, rules] of b.chains) {
      const old = a.chains.get(n);
      if (old && same(old, rules)) continue;
      if (old) out.push(`flush chain ${T} ${n}`);
      for (const r of rules) out.push(`add rule ${T} ${n} ${r}`);
    }
    for (const [n, m] of b.maps) {
      if (same(a.maps.get(n)?.entries, m.entries)) continue;
      out.push(`flush map ${T} ${n}`);
      if (m.entries.length > 0) out.push(`add element ${T} ${n} { ${m.entries.join(', ')} }`);
    }
    const goneChains = [...a.chains.keys()].filter((n) => !b.chains.has(n));
    for (const n of goneChains) out.push(`flush chain ${T} ${n}`);
    for (const n of goneChains) out.push(`delete chain ${T} ${n}`);
    for (const n of a.sets.keys()) if (!b.sets.has(n)) out.push(`delete set ${T} ${n}`);
    const rules = out.length > 0 ? out.join('\n') + '\n' : '';
    // Elements: deltas for kept sets, everything for new ones.
    const kept: Pick<Rendered, 'elements'> = {
      elements: new Map([...from.elements].filter(([n]) => b.sets.has(n))),
    };
    return { rules, elements: this.elementScript(kept, to) };
  }

  /**
   * Brings the kernel to `rendered`: nothing when it is what we last applied, set elements when
   * only memberships changed, else one full transaction. A failed element update falls back to a
   * full apply; a failed full apply leaves the previous table intact (the batch is atomic).
   */
  apply(rendered: Rendered): Promise<ApplyReport> {
    this.pendingApplies++;
    const report = this.serial(async () => {
      this.pendingApplies--;
      this.epoch++;
      const t0 = performance.now();
      this.checkGeneration();
      this.applyCpu = undefined;
      const cpu = () => (this.applyCpu !== undefined ? { nftCpuMs: this.applyCpu } : {});
      const last = this.last;
      // With both renderings' objects at hand the delta says whether the skeleton is the same
      // (no rule part) without comparing the whole text.
      const d =
        last && this.delta && last.rendered.parts && rendered.parts
          ? this.delta_(last.rendered, rendered)
          : undefined;
      const sameSkeleton =
        last !== undefined &&
        (d !== undefined ? d.rules === '' : last.rendered.skeleton === rendered.skeleton);
      if (last && sameSkeleton) {
        const delta = d?.elements ?? this.elementScript(last.rendered, rendered);
        if (delta === '') return { kind: 'unchanged' as const, ms: performance.now() - t0 };
        const r = this.counted(await this.run(['-f', '-'], delta));
        if (r.code === 0) {
          this.seen();
          // Rules are unchanged, so the skeleton read back after the full apply still holds.
          this.last = { rendered, skeleton: last.skeleton };
          return { kind: 'elements' as const, ms: performance.now() - t0, ...cpu() };
        }
      } else if (last && this.delta) {
        const script =
          d !== undefined ? d.rules + d.elements : this.deltaScript(last.rendered, rendered);
        if (script !== undefined) {
          const r = this.counted(await this.run(['-f', '-'], script));
          if (r.code === 0) {
            this.seen();
            this.last = { rendered, skeleton: undefined };
            this.queueBaseline(rendered);
            return { kind: 'delta' as const, ms: performance.now() - t0, ...cpu() };
          }
        }
      }
      await this.full(rendered);
      return { kind: 'full' as const, ms: performance.now() - t0, ...cpu() };
    });
    return report;
  }

  /** One full transaction; the read-back of its skeleton is queued right behind it. */
  private async full(rendered: Rendered): Promise<void> {
    await this.nft(['-f', '-'], this.fullScript(rendered));
    this.seen();
    this.last = { rendered, skeleton: undefined };
    this.queueBaseline(rendered);
  }

  /**
   * The baseline read-back, off every apply's path: after a quiet `baselineIdleMs`, one
   * `nft -j list table`, adopted only if no apply overlapped it and it matches the rendering
   * (listingMatches); a delta leaves the skeleton of the last full apply, which no longer holds.
   */
  private queueBaseline(rendered: Rendered): void {
    if (this.baselineTimer) clearTimeout(this.baselineTimer);
    this.baselineTimer = setTimeout(() => {
      this.baselineTimer = undefined;
      if (this.pendingApplies > 0 || this.last?.rendered !== rendered) return;
      const epoch = this.epoch;
      void this.readBack()
        .then((back) => {
          if (back === undefined || epoch !== this.epoch || this.last?.rendered !== rendered)
            return;
          if (listingMatches(rendered, back))
            this.last = { rendered, skeleton: readTable(back).skeleton };
        })
        .catch(() => undefined);
    }, this.baselineIdleMs);
    this.baselineTimer.unref();
  }

  /**
   * Reads the table back and compares it with what was applied: the rules (against the skeleton
   * read back after the full apply) and every set's elements (against the rendering). On any
   * difference (a rule deleted by hand, an element added, the table removed) it re-applies in
   * full. Without a previous apply in this process (an agent restart) it applies `desired` —
   * atomically, so established connections stay up.
   */
  resync(desired?: Rendered): Promise<ResyncReport> {
    return this.serial(async () => {
      const before = this.last;
      this.checkGeneration();
      const last = this.last;
      const target = desired ?? before?.rendered;
      if (!target) return { drift: false, repaired: false };
      if (!last || last.rendered.script !== target.script) {
        await this.full(target);
        return { drift: last !== undefined, repaired: true };
      }
      const back = await this.readBack();
      const now = back === undefined ? undefined : readTable(back);
      // No baseline yet (a delta was the last apply): adopt this listing if it matches.
      if (now !== undefined && back !== undefined && last.skeleton === undefined)
        if (listingMatches(target, back)) this.last = { rendered: target, skeleton: now.skeleton };
      const baseline = this.last?.skeleton;
      const ok =
        now !== undefined &&
        baseline !== undefined &&
        now.skeleton === baseline &&
        sameElements(now.elements, wantedElements(target));
      if (ok) return { drift: false, repaired: false };
      await this.full(target);
      return { drift: true, repaired: true };
    });
  }

  /** Resolves when every queued kernel operation (such as the read-back after a full apply) is done. */
  async settled(): Promise<void> {
    await this.busy;
  }

  /** Takes the baseline read-back now (tests; the agent lets it happen when idle). */
  async baselineNow(): Promise<void> {
    await this.serial(async () => {
      const last = this.last;
      if (!last || last.skeleton !== undefined) return;
      const back = await this.readBack();
      if (back !== undefined && this.last === last && listingMatches(last.rendered, back))
        this.last = { rendered: last.rendered, skeleton: readTable(back).skeleton };
    });
  }

  /** Periodic resync; errors go to `onError` (the table stays as it is). */
  startResync(intervalMs: number, onError: (e: unknown) => void = () => undefined): void {
    this.stopResync();
    this.timer = setInterval(() => {
      this.resync().catch(onError);
    }, intervalMs);
    this.timer.unref();
  }

  stopResync(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Removes the owned table (uninstall); other tables are untouched. */
  removeTable(): Promise<void> {
    return this.serial(async () => {
      await this.nft(
        ['-f', '-'],
        `add table inet ${this.table}\ndelete table inet ${this.table}\n`,
      );
      this.last = undefined;
    });
  }
}
