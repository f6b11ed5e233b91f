// Flat kernel decisions: the yes/no of a `KernelProgram` (kernel-program.ts) evaluated over typed
// arrays, for the kernel's hot path (`Engine.kernelAllows`). The object form stays what provenance,
// `kernelVerdicts`, `check` and the nftables renderer read; this form answers only allow or deny,
// and must answer exactly as `runKernelAllows` on the same program and peers.
//
//   code    one Int32Array holding every compiled program: per step a header word (action, whether
//           a call-out follows, number of tests), the tests, then a jump target for Pass and a
//           call-out index; a program ends with an END word carrying the fall-through verdict
//   tests   memoisable conditions of one peer object: a rule side's selector and notSelector, and
//           a rule side's nets, notNets and named ports for the program's fixed port and protocol
//           (what `matchSidePlan` checks, less Service references)
//   memo    one Uint32Array pool: per test a region of two bits per peer number (known, value)
//
// A decision reads a few words of `code`, one memo word per test, and nothing else while every
// result it needs is known: no object is touched and none is allocated. Service references read
// engine state that changes without the peer changing (Services), so they are never memoised:
// such a step calls out to `matchSidePlan`, as the object form does.
//
// Owns: the flat encoding and its memo. Must never: keep a result beyond the validity of its
// inputs. A test's result is a pure function of an immutable peer object (its address, endpoint
// and network sets) and of the immutable plan the test was made from; peer numbers are unique
// within one numbering of the `PredicateTable`, and a new numbering forgets every memo here.
// Programs are immutable; a compiled program is valid while `gen` is unchanged.

import type { KernelProgram, KernelStep, PeerPredicate, PredicateTable } from './kernel-program.js';
import { matchSidePlan, peerSatisfies } from './rules.js';
import type { MatchContext, Peer, SidePlan } from './rules.js';
import type { Cidr } from '../net/ip.js';

/**
 * One side of a decision as the engine keeps it: its peer's number, and the peer object itself,
 * which is read only when a memo is missing.
 */
export interface FlatSide {
  readonly peerN: number;
  readonly peer: Peer | undefined;
}

/** Action of a step (low two bits of its header word). */
const DENY = 0;
const ALLOW = 1;
const PASS = 2;
const END = 3;
/** Header bit: a call-out index follows (for END: the fall-through allows). */
const CALL = 4;

/** Starts over (every compiled program and memo forgotten) beyond these sizes. */
const MAX_CODE_WORDS = 1 << 24;
const MAX_TESTS = 1 << 18;
const MAX_MEMO_WORDS = 1 << 26;

interface Callout {
  readonly local: SidePlan | undefined;
  readonly peer: SidePlan | undefined;
  readonly localPort: number | undefined;
  readonly peerPort: number | undefined;
  readonly protocol: number;
}

const NO_SERVICE: MatchContext['serviceMatch'] = () => false;

function cidrKey(c: Cidr): string {
  return `${c.family}:${c.base.toString(16)}/${c.prefix}`;
}

function listKey<T>(xs: readonly T[] | undefined, f: (x: T) => string): string {
  return xs === undefined ? '-' : xs.map(f).join(',');
}

export class FlatKernel {
  /** Bumped whenever compiled programs are forgotten (offsets from before are invalid). */
  gen = 0;
  private code = new Int32Array(4096);
  private codeTop = 0;
  private callouts: Callout[] = [];
  /** Test id → the condition it memoises. */
  private tests: ((peer: Peer) => boolean)[] = [];
  private testByKey = new Map<string, number>();
  private testByPredicate = new Map<PeerPredicate, number>();
  /** Per test: where its memo region starts in `memo`, and its size in words (16 peers each). */
  private base = new Int32Array(1024);
  private cap = new Int32Array(1024);
  private memo = new Uint32Array(1 << 16);
  private memoTop = 0;
  private numbering: number;

  constructor(
    private readonly table: PredicateTable,
    private readonly serviceMatch: MatchContext['serviceMatch'],
  ) {
    this.numbering = table.numberingEpoch;
  }

  /**
   * The offset of a program's flat code, compiling it on first use. May forget every earlier
   * program (when the pool is full): callers holding offsets compare `gen` before and after.
   */
  compile(prog: KernelProgram): number {
    if (prog.flatGen === this.gen) return prog.flatAt;
    if (this.codeTop > MAX_CODE_WORDS || this.tests.length > MAX_TESTS) this.startOver();
    const flat = prog.flat;
    const ingress = prog.direction === 'ingress';
    const localPort = ingress ? prog.port : undefined;
    const peerPort = ingress ? undefined : prog.port;
    const words: number[][] = [];
    for (const s of flat) words.push(this.stepWords(s, localPort, peerPort, prog.protocol));
    // Offsets of each step, then the END word: Pass steps jump to the next segment's offset.
    const at = new Array<number>(flat.length + 1);
    let off = this.codeTop;
    for (let i = 0; i < flat.length; i++) {
      at[i] = off;
      off += (words[i] as number[]).length + ((flat[i] as KernelStep).outcome ? 0 : 1);
    }
    at[flat.length] = off;
    this.reserve(off + 1 - this.codeTop);
    const code = this.code;
    let w = this.codeTop;
    for (let i = 0; i < flat.length; i++) {
      const ws = words[i] as number[];
      const s = flat[i] as KernelStep;
      // Header and tests, then (Pass) the jump target, then (call-out) its index.
      code[w++] = ws[0] as number;
      const tests = (ws[0] as number) >>> 3;
      for (let j = 1; j <= tests; j++) code[w++] = ws[j] as number;
      if (!s.outcome) code[w++] = at[prog.next[i] as number] as number;
      if (ws.length > tests + 1) code[w++] = ws[tests + 1] as number;
    }
    code[w++] = END | (prog.otherwise.allow ? CALL : 0);
    const start = this.codeTop;
    this.codeTop = w;
    prog.flatAt = start;
    prog.flatGen = this.gen;
    return start;
  }

  /**
   * Runs compiled code for one connection: `local` is the endpoint whose program it is (the
   * destination for ingress), `peer` the other side. Equal to `runKernelAllows` on the program.
   */
  run(at: number, local: FlatSide, peer: FlatSide): boolean {
    if (this.numbering !== this.table.numberingEpoch) this.forgetMemo();
    const code = this.code;
    const ln = local.peerN;
    const pn = peer.peerN;
    const lw = ln >>> 4;
    const ls = (ln & 15) << 1;
    const pw = pn >>> 4;
    const ps = (pn & 15) << 1;
    let i = at;
    for (;;) {
      const h = code[i] as number;
      const act = h & 3;
      if (act === END) return (h & CALL) !== 0;
      const stop = i + 1 + (h >>> 3);
      let ok = true;
      for (let j = i + 1; j < stop; j++) {
        const r = code[j] as number;
        const t = r >>> 1;
        let x: number;
        if ((r & 1) !== 0) {
          x =
            lw < (this.cap[t] as number)
              ? ((this.memo[(this.base[t] as number) + lw] as number) >>> ls) & 3
              : 0;
          if (x === 0) x = this.fill(t, local.peer as Peer, ln);
        } else {
          x =
            pw < (this.cap[t] as number)
              ? ((this.memo[(this.base[t] as number) + pw] as number) >>> ps) & 3
              : 0;
          if (x === 0) x = this.fill(t, peer.peer as Peer, pn);
        }
        if (x !== 3) {
          ok = false;
          break;
        }
      }
      const jump = act === PASS ? 1 : 0;
      if (ok && (h & CALL) !== 0)
        ok = this.callout(code[stop + jump] as number, local.peer as Peer, peer.peer as Peer);
      if (!ok) {
        i = stop + jump + ((h & CALL) !== 0 ? 1 : 0);
        continue;
      }
      if (act === PASS) {
        i = code[stop] as number;
        continue;
      }
      return act === ALLOW;
    }
  }

  /** Memo words in use (for figures and tests). */
  memoWords(): number {
    return this.memoTop;
  }

  /** Tests known (for figures and tests). */
  testCount(): number {
    return this.tests.length;
  }

  private stepWords(
    s: KernelStep,
    localPort: number | undefined,
    peerPort: number | undefined,
    protocol: number,
  ): number[] {
    const refs: number[] = [];
    if (s.predicate) refs.push(this.predicateTest(s.predicate) << 1);
    let callLocal: SidePlan | undefined;
    let callPeer: SidePlan | undefined;
    if (s.local) {
      if (s.local.service) callLocal = s.local;
      else refs.push((this.planTest(s.local, localPort, protocol) << 1) | 1);
    }
    if (s.peer) {
      if (s.peer.service) callPeer = s.peer;
      else refs.push(this.planTest(s.peer, peerPort, protocol) << 1);
    }
    const act = s.outcome ? (s.allow ? ALLOW : DENY) : PASS;
    const call = callLocal !== undefined || callPeer !== undefined;
    const out = [(refs.length << 3) | (call ? CALL : 0) | act, ...refs];
    if (call) {
      out.push(this.callouts.length);
      this.callouts.push({ local: callLocal, peer: callPeer, localPort, peerPort, protocol });
    }
    return out;
  }

  private predicateTest(p: PeerPredicate): number {
    const known = this.testByPredicate.get(p);
    if (known !== undefined) return known;
    const sel = p.selector;
    const not = p.notSelector;
    const t = this.addTest(
      (peer) =>
        (sel === undefined || peerSatisfies(peer, sel)) &&
        (not === undefined || !peerSatisfies(peer, not)),
    );
    this.testByPredicate.set(p, t);
    return t;
  }

  /** A side plan without Service references, for a fixed port and protocol. */
  private planTest(plan: SidePlan, port: number | undefined, protocol: number): number {
    // Selectors without a key (compiled elsewhere) make the plan a test of its own.
    const keyed =
      (plan.selector === undefined || plan.selectorKey !== undefined) &&
      (plan.notSelector === undefined || plan.notSelectorKey !== undefined);
    const key = keyed
      ? JSON.stringify([
          port ?? null,
          protocol,
          listKey(plan.nets, cidrKey),
          listKey(plan.notNets, cidrKey),
          listKey(plan.namedPorts, (x) => x),
          listKey(plan.notNamedPorts, (x) => x),
          plan.selectorKey ?? null,
          plan.notSelectorKey ?? null,
        ])
      : undefined;
    if (key !== undefined) {
      const known = this.testByKey.get(key);
      if (known !== undefined) return known;
    }
    const t = this.addTest((peer) => matchSidePlan(plan, peer, port, protocol, NO_SERVICE));
    if (key !== undefined) this.testByKey.set(key, t);
    return t;
  }

  private addTest(f: (peer: Peer) => boolean): number {
    const t = this.tests.length;
    this.tests.push(f);
    if (t >= this.base.length) {
      const base = new Int32Array(this.base.length * 2);
      base.set(this.base);
      this.base = base;
      const cap = new Int32Array(this.cap.length * 2);
      cap.set(this.cap);
      this.cap = cap;
    }
    return t;
  }

  private callout(index: number, local: Peer, peer: Peer): boolean {
    const c = this.callouts[index] as Callout;
    return (
      (c.local === undefined ||
        matchSidePlan(c.local, local, c.localPort, c.protocol, this.serviceMatch)) &&
      (c.peer === undefined ||
        matchSidePlan(c.peer, peer, c.peerPort, c.protocol, this.serviceMatch))
    );
  }

  /** Computes and records test `t` for a peer: 3 when it holds, 1 when not. */
  private fill(t: number, peer: Peer, n: number): number {
    const v = (this.tests[t] as (peer: Peer) => boolean)(peer) ? 3 : 1;
    const w = n >>> 4;
    if (w >= (this.cap[t] as number)) this.grow(t, w);
    const k = (this.base[t] as number) + w;
    this.memo[k] = (this.memo[k] as number) | (v << ((n & 15) << 1));
    return v;
  }

  /** Gives test `t` a memo region holding word `w`, moved to the top of the pool. */
  private grow(t: number, w: number): void {
    const old = this.cap[t] as number;
    let size = Math.max(16, old * 2);
    while (size <= w) size *= 2;
    if (this.memoTop + size > this.memo.length) {
      if (this.memoTop + size > MAX_MEMO_WORDS) {
        // Full of regions and the holes growth left: forget every memo (they are recomputed).
        this.forgetMemo();
        return this.grow(t, w);
      }
      let len = this.memo.length * 2;
      while (len < this.memoTop + size) len *= 2;
      const memo = new Uint32Array(len);
      memo.set(this.memo.subarray(0, this.memoTop));
      this.memo = memo;
    }
    const top = this.memoTop;
    this.memo.fill(0, top, top + size);
    if (old > 0) this.memo.copyWithin(top, this.base[t] as number, (this.base[t] as number) + old);
    this.base[t] = top;
    this.cap[t] = size;
    this.memoTop = top + size;
  }

  private forgetMemo(): void {
    this.numbering = this.table.numberingEpoch;
    this.cap.fill(0);
    this.memoTop = 0;
  }

  private reserve(words: number): void {
    if (this.codeTop + words <= this.code.length) return;
    let len = this.code.length * 2;
    while (len < this.codeTop + words) len *= 2;
    const code = new Int32Array(len);
    code.set(this.code.subarray(0, this.codeTop));
    this.code = code;
  }

  private startOver(): void {
    this.gen++;
    this.codeTop = 0;
    this.callouts = [];
    this.tests = [];
    this.testByKey = new Map();
    this.testByPredicate = new Map();
    this.cap.fill(0);
    this.memoTop = 0;
  }
}
