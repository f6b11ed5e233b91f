// Desired state → one nftables table as text (pure; golden-tested in testdata/). The table is the
// only thing Palisade owns in the kernel: base chains on the forward, input and output hooks that
// accept established/related traffic, drop invalid, and dispatch through verdict maps keyed by
// interface to per-endpoint chains; tiers as chains (Pass = return), profiles as chains, peers,
// CIDRs and named ports as named sets, a counter and a provenance comment on every rule.
// Owns: nftables syntax. Must never: run nft, or decide which policies apply (calc/ does).

import { createHash } from 'node:crypto';
import { FAILSAFE_INBOUND, FAILSAFE_OUTBOUND } from '@palisade/core';
import { DataplaneError } from '../errors.js';
import type {
  DesiredState,
  DirectionProgram,
  EndpointProgram,
  NamedSet,
  PortRange,
  RuleProgram,
  SideProgram,
} from '../calc/types.js';

export interface FailsafePort {
  readonly protocol: number;
  readonly port: number;
}

/**
 * The engine's host-endpoint fail-safe ports (Calico's defaults plus the Palisade API port), one
 * list for both (a test checks the engine and the rendered rules agree port by port).
 */
export const DEFAULT_FAILSAFE_INBOUND: readonly FailsafePort[] = FAILSAFE_INBOUND;
export const DEFAULT_FAILSAFE_OUTBOUND: readonly FailsafePort[] = FAILSAFE_OUTBOUND;

export interface RenderOptions {
  /** The owned table's name in family inet (default `palisade`). */
  readonly table?: string;
  readonly failsafeInbound?: readonly FailsafePort[];
  readonly failsafeOutbound?: readonly FailsafePort[];
  /**
   * Interfaces with this prefix are workload interfaces: one not (yet) programmed is dropped, so
   * a pod is never reachable or able to send before its rules exist (fail closed).
   */
  readonly workloadInterfacePrefix?: string;
  /** The mark bit of untracked and pre-DNAT Allow (default DEFAULT_ACCEPT_MARK). */
  readonly acceptMark?: number;
  /**
   * A tier holding more policies than this for one endpoint is split into part chains of this
   * many policies each, jumped to in order (default 16; 0: never split). An edit of one policy
   * then rewrites one part, not the whole tier chain. Tiers with a Pass rule are never split
   * (its `return` must leave the tier, not the part).
   */
  readonly tierPartPolicies?: number;
}

export interface Rendered {
  readonly table: string;
  /**
   * Everything but set elements: equal skeletons mean only memberships changed. Assembled on
   * first use (a change applied as a delta never needs the whole text).
   */
  readonly skeleton: string;
  /** Kernel set name → elements (already formatted). */
  readonly elements: ReadonlyMap<string, readonly string[]>;
  /** The table definition, elements included: the body of a full apply. */
  readonly script: string;
  /** The skeleton's objects, as skeletonParts would parse them (built while rendering). */
  readonly parts?: SkeletonParts;
  /** Rules in the table (base chains included), counted while rendering. */
  readonly ruleCount?: number;
}

const NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;

export function validTableName(name: string): boolean {
  return NAME_RE.test(name);
}

const PROTO_NAMES: Readonly<Record<number, string>> = {
  1: 'icmp',
  6: 'tcp',
  17: 'udp',
  58: 'ipv6-icmp',
  132: 'sctp',
  136: 'udplite',
};
const PORT_PROTOS = '{ tcp, udp, sctp, udplite }';

function proto(n: number): string {
  return PROTO_NAMES[n] ?? String(n);
}

function hash8(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 8);
}

/** An nft-safe, readable chain name: a prefix, the sanitised name and a hash for uniqueness. */
function chainName(prefix: string, name: string, unique: string): string {
  const clean = name.replace(/[^A-Za-z0-9_.]/g, '_').slice(0, 40);
  return `${prefix}-${clean}-${hash8(unique)}`;
}

/** The per-endpoint chain of one direction (introspection finds an endpoint's rules by it). */
export function endpointChainName(
  kind: 'workload' | 'host',
  dir: 'ingress' | 'egress',
  ref: string,
  stage: Stage = 'normal',
): string {
  const prefix = `${kind === 'host' ? 'h' : 'w'}${STAGE_LETTER[stage]}${dir === 'ingress' ? 'in' : 'eg'}`;
  return chainName(prefix, ref, `${prefix}\n${ref}`);
}

/**
 * Where a program is enforced: `normal` (to and from the host's processes, and workloads),
 * `forward` (host endpoint, forwarded traffic: applyOnForward), `preDNAT` and `untracked`.
 */
export type Stage = 'normal' | 'forward' | 'preDNAT' | 'untracked';
const STAGE_LETTER: Readonly<Record<Stage, string>> = {
  normal: '',
  forward: 'f',
  preDNAT: 'p',
  untracked: 'u',
};

/**
 * The packet mark bit an untracked or pre-DNAT Allow sets: the host endpoint's normal and
 * forward chains accept such a packet at once (Calico: it skips the later policy stages).
 */
export const DEFAULT_ACCEPT_MARK = 0x01000000;

/** Comments are user-influenced text: printable ASCII without quotes, at most 120 bytes. */
export function commentText(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, "'");
  return clean.length > 120 ? `${clean.slice(0, 117)}...` : clean;
}

function comment(s: string): string {
  return `comment "${commentText(s)}"`;
}

function ifname(s: string): string {
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(s))
    throw new DataplaneError(
      'DATAPLANE_ERR_INVALID_NAME',
      `invalid interface name ${JSON.stringify(s)}`,
    );
  return `"${s}"`;
}

function portList(ranges: readonly PortRange[]): string {
  const items = ranges.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`));
  return `{ ${items.join(', ')} }`;
}

function provenanceText(r: RuleProgram): string {
  const p = r.provenance;
  if (p.profile !== undefined) return `profile ${p.profile}/rule ${p.rule}`;
  return `${p.tier ?? ''}/${p.policy ?? ''}/rule ${p.rule}`;
}

type Family = 4 | 6;

function setRef(name: string, f: Family): string {
  return `@${name}_v${f}`;
}

function needsFamily(r: RuleProgram): boolean {
  const s = (x: SideProgram) =>
    x.selectorSet !== undefined ||
    x.notSelectorSet !== undefined ||
    x.netsSet !== undefined ||
    x.notNetsSet !== undefined ||
    (x.namedPorts?.length ?? 0) > 0 ||
    (x.notNamedPorts?.length ?? 0) > 0;
  return (
    r.ipVersion !== undefined ||
    r.icmp !== undefined ||
    r.notIcmp !== undefined ||
    s(r.src) ||
    s(r.dst)
  );
}

/** Alternatives (ORed) of expression lists (ANDed). */
type Alternatives = string[][];

function product(a: Alternatives, b: Alternatives): Alternatives {
  const out: Alternatives = [];
  for (const x of a) for (const y of b) out.push([...x, ...y]);
  return out;
}

function sideAlternatives(
  s: SideProgram,
  f: Family | undefined,
  addr: 'saddr' | 'daddr',
  port: 'sport' | 'dport',
  protocol: number | undefined,
  staticEmpty: (set: string, f: Family) => boolean,
  hasFamily: (f: Family) => boolean,
): Alternatives | undefined {
  const ip = f === 6 ? 'ip6' : 'ip';
  const base: string[] = [];
  if (f !== undefined) {
    // No entity has an address of this family: a positive set match cannot succeed.
    if (s.selectorSet && !hasFamily(f)) return undefined;
    if (s.selectorSet) base.push(`${ip} ${addr} ${setRef(s.selectorSet, f)}`);
    if (s.notSelectorSet) base.push(`${ip} ${addr} != ${setRef(s.notSelectorSet, f)}`);
    if (s.netsSet) {
      if (staticEmpty(s.netsSet, f)) return undefined; // no CIDR of this family: cannot match
      base.push(`${ip} ${addr} ${setRef(s.netsSet, f)}`);
    }
    if (s.notNetsSet && !staticEmpty(s.notNetsSet, f))
      base.push(`${ip} ${addr} != ${setRef(s.notNetsSet, f)}`);
  }
  let alts: Alternatives = [base];
  const guard = protocol === undefined ? [`meta l4proto ${PORT_PROTOS}`] : [];
  if (s.ports !== undefined || s.namedPorts !== undefined) {
    const any: Alternatives = [];
    if (s.ports && s.ports.length > 0) any.push([...guard, `th ${port} ${portList(s.ports)}`]);
    for (const n of s.namedPorts ?? []) {
      if (f === undefined || !hasFamily(f)) continue;
      any.push([`${ip} ${addr} . meta l4proto . th ${port} ${setRef(n, f)}`]);
    }
    if (any.length === 0) return undefined;
    alts = product(alts, any);
  }
  if ((s.notPorts?.length ?? 0) > 0 || (s.notNamedPorts?.length ?? 0) > 0) {
    const not: string[] = [];
    if (s.notPorts && s.notPorts.length > 0) not.push(`th ${port} != ${portList(s.notPorts)}`);
    for (const n of s.notNamedPorts ?? [])
      if (f !== undefined) not.push(`${ip} ${addr} . meta l4proto . th ${port} != ${setRef(n, f)}`);
    // A packet without ports (ICMP...) is never excluded by a port list.
    alts = product(
      alts,
      protocol === undefined
        ? [[`meta l4proto != ${PORT_PROTOS}`], [`meta l4proto ${PORT_PROTOS}`, ...not]]
        : [not],
    );
  }
  return alts;
}

function verdictOf(r: RuleProgram, allow = 'accept'): string {
  switch (r.action) {
    case 'Allow':
      return allow;
    case 'Deny':
      return 'drop';
    case 'Pass':
      return 'return';
    case 'Log':
      return `log prefix "palisade ${commentText(provenanceText(r)).slice(0, 40)} "`;
  }
}

/** One program rule as nft rule lines (several when it ORs alternatives). */
export function renderRule(
  r: RuleProgram,
  dir: 'ingress' | 'egress',
  staticEmpty: (set: string, f: Family) => boolean,
  hasFamily: (f: Family) => boolean = () => true,
  allow = 'accept',
): string[] {
  // In both directions the packet's source is the rule's source and its destination the
  // destination: at ingress the destination is the local endpoint, at egress the source is.
  void dir;
  const families: (Family | undefined)[] = !needsFamily(r)
    ? [undefined]
    : r.ipVersion !== undefined
      ? [r.ipVersion]
      : r.protocol === 1 && (r.icmp !== undefined || r.notIcmp !== undefined)
        ? [4]
        : r.protocol === 58 && (r.icmp !== undefined || r.notIcmp !== undefined)
          ? [6]
          : [4, 6];
  const lines: string[] = [];
  for (const f of families) {
    const head: string[] = [];
    if (r.ipVersion !== undefined) head.push(`meta nfproto ipv${r.ipVersion}`);
    if (r.protocol !== undefined) head.push(`meta l4proto ${proto(r.protocol)}`);
    if (r.notProtocol !== undefined) head.push(`meta l4proto != ${proto(r.notProtocol)}`);
    const icmpKw = f === 6 ? 'icmpv6' : 'icmp';
    if (r.icmp) {
      if (f === undefined) continue;
      if (r.icmp.type !== undefined) head.push(`${icmpKw} type ${r.icmp.type}`);
      if (r.icmp.code !== undefined) head.push(`${icmpKw} code ${r.icmp.code}`);
    }
    let alts: Alternatives = [head];
    if (
      r.notIcmp &&
      (r.notIcmp.type !== undefined || r.notIcmp.code !== undefined) &&
      f !== undefined
    ) {
      const l4 = f === 6 ? 'ipv6-icmp' : 'icmp';
      const n = r.notIcmp;
      const neg =
        n.type !== undefined && n.code !== undefined
          ? `${icmpKw} type . ${icmpKw} code != { ${n.type} . ${n.code} }`
          : n.type !== undefined
            ? `${icmpKw} type != ${n.type}`
            : `${icmpKw} code != ${n.code ?? 0}`;
      alts = product(alts, [[`meta l4proto != ${l4}`], [neg]]);
    }
    const src = sideAlternatives(r.src, f, 'saddr', 'sport', r.protocol, staticEmpty, hasFamily);
    const dst = sideAlternatives(r.dst, f, 'daddr', 'dport', r.protocol, staticEmpty, hasFamily);
    if (!src || !dst) continue;
    alts = product(product(alts, src), dst);
    for (const a of alts) {
      const exprs = a.filter((e) => e !== '');
      if (f !== undefined && r.ipVersion === undefined) {
        const implied = exprs.some((e) => e.startsWith(f === 4 ? 'ip ' : 'ip6 '));
        if (!implied) exprs.unshift(`meta nfproto ipv${f}`);
      }
      lines.push([...exprs, 'counter', verdictOf(r, allow), comment(provenanceText(r))].join(' '));
    }
  }
  return lines;
}

interface ChainDef {
  readonly name: string;
  readonly lines: readonly string[];
}

/**
 * Chains rendered for one endpoint program and direction, kept while the calculation hands over
 * the same program object (it does while nothing the program depends on changed): a change
 * re-renders only the programs it touched. Keyed also by everything else the text depends on.
 */
const directionCache = new WeakMap<
  EndpointProgram,
  Map<string, { readonly name: string; readonly chains: readonly ChainDef[] }>
>();

class Builder {
  readonly chains = new Map<string, ChainDef>();
  private recording: ChainDef[] | undefined;
  constructor(
    private readonly staticEmpty: (set: string, f: Family) => boolean,
    private readonly hasFamily: (f: Family) => boolean,
    /** Part of the cache key: the family flags and set-emptiness the rule text depends on. */
    private readonly context: string,
    private readonly partSize: number,
  ) {}

  /** Adds a chain named from its content (equal content is shared), returns its name. */
  shared(prefix: string, label: string, lines: readonly string[]): string {
    const name = chainName(prefix, label, `${prefix}\n${label}\n${lines.join('\n')}`);
    if (!this.chains.has(name)) this.chains.set(name, { name, lines });
    this.recording?.push({ name, lines });
    return name;
  }

  /** `direction`, from the cache when the same program was rendered the same way before. */
  cachedDirection(
    ep: EndpointProgram,
    dir: 'ingress' | 'egress',
    p: DirectionProgram,
    failsafe: readonly FailsafePort[],
    stage: Stage = 'normal',
    mark: number | undefined = undefined,
  ): string {
    const key = `${dir}|${stage}|${mark ?? ''}|${failsafe.map((f) => `${f.protocol}.${f.port}`).join(',')}|${this.context}`;
    let m = directionCache.get(ep);
    const hit = m?.get(key);
    if (hit && (dir === 'ingress' ? ep.ingress : ep.egress) === p) {
      for (const c of hit.chains) if (!this.chains.has(c.name)) this.chains.set(c.name, c);
      return hit.name;
    }
    this.recording = [];
    const name = this.direction(ep, dir, p, failsafe, stage, mark);
    const chains = this.recording;
    this.recording = undefined;
    if (!m) {
      m = new Map();
      directionCache.set(ep, m);
    }
    m.set(key, { name, chains });
    return name;
  }

  direction(
    ep: EndpointProgram,
    dir: 'ingress' | 'egress',
    p: DirectionProgram,
    failsafe: readonly FailsafePort[],
    stage: Stage = 'normal',
    mark: number | undefined = undefined,
  ): string {
    const d = `${STAGE_LETTER[stage]}${dir === 'ingress' ? 'in' : 'eg'}`;
    const markHex = `0x${(mark ?? DEFAULT_ACCEPT_MARK).toString(16).padStart(8, '0')}`;
    const allow =
      stage === 'untracked'
        ? `notrack meta mark set meta mark or ${markHex} accept`
        : stage === 'preDNAT'
          ? `meta mark set meta mark or ${markHex} accept`
          : 'accept';
    const lines: string[] = [];
    // An untracked Allow (the mark) skips every later host endpoint stage, pre-DNAT included.
    if (ep.kind === 'host' && mark !== undefined && stage !== 'untracked')
      lines.push(
        `meta mark & ${markHex} == ${markHex} counter accept ${comment(`allowed by untracked or pre-DNAT policy of ${ep.ref}`)}`,
      );
    if (ep.kind === 'host' && stage !== 'forward' && failsafe.length > 0) {
      const items = failsafe.map((f) => `${proto(f.protocol)} . ${f.port}`).join(', ');
      // Before the normal stage a fail-safe port is left to it (where it is accepted).
      lines.push(
        `meta l4proto . th dport { ${items} } counter ${stage === 'normal' ? 'accept' : 'return'} ${comment(`fail-safe ${dir === 'ingress' ? 'inbound' : 'outbound'} ports of host endpoint ${ep.ref}`)}`,
      );
    }
    if (ep.kind === 'workload' && dir === 'egress') {
      // Anti-spoofing: a workload sends only from its own addresses.
      lines.push(
        ep.ipv4.length > 0
          ? `ip saddr != { ${ep.ipv4.join(', ')} } counter drop ${comment(`source is not an address of ${ep.ref}`)}`
          : `meta nfproto ipv4 counter drop ${comment(`${ep.ref} has no IPv4 address`)}`,
      );
      lines.push(
        ep.ipv6.length > 0
          ? `ip6 saddr != { ${ep.ipv6.join(', ')} } counter drop ${comment(`source is not an address of ${ep.ref}`)}`
          : `meta nfproto ipv6 counter drop ${comment(`${ep.ref} has no IPv6 address`)}`,
      );
    }
    for (const t of p.tiers) {
      const body: string[] = [];
      // The rules of consecutive policies, grouped by policy (provenance), in order.
      const groups: RuleProgram[][] = [];
      let last: string | undefined;
      for (const r of t.rules) {
        const who = r.provenance.policy ?? '';
        if (groups.length === 0 || who !== last) groups.push([]);
        groups[groups.length - 1]?.push(r);
        last = who;
      }
      const split =
        this.partSize > 0 &&
        groups.length > this.partSize &&
        !t.rules.some((r) => r.action === 'Pass');
      if (split) {
        // Allow and Deny are final in a part chain as in the tier chain, Log goes on, and a part
        // without a match returns to the tier chain, which jumps to the next part.
        for (let i = 0; i < groups.length; i += this.partSize) {
          const part = groups.slice(i, i + this.partSize);
          const lines: string[] = [];
          for (const g of part)
            for (const r of g)
              lines.push(...renderRule(r, dir, this.staticEmpty, this.hasFamily, allow));
          const first = part[0]?.[0]?.provenance.policy ?? '';
          const end = part[part.length - 1]?.[0]?.provenance.policy ?? '';
          const pc = this.shared(`t${d}`, `${t.name}.${i / this.partSize + 1}`, lines);
          body.push(
            `counter jump ${pc} ${comment(`tier ${t.name} part ${i / this.partSize + 1}: ${first} .. ${end}`)}`,
          );
        }
      } else
        for (const r of t.rules)
          body.push(...renderRule(r, dir, this.staticEmpty, this.hasFamily, allow));
      if (t.defaultAction === 'Deny')
        body.push(`counter drop ${comment(`default deny of tier ${t.name}`)}`);
      const tc = this.shared(`t${d}`, t.name, body);
      lines.push(`counter jump ${tc} ${comment(`tier ${t.name}: ${t.policies.join(', ')}`)}`);
    }
    for (const pr of p.profiles) {
      const body: string[] = [];
      for (const r of pr.rules)
        body.push(...renderRule(r, dir, this.staticEmpty, this.hasFamily, allow));
      const pc = this.shared(`p${d}`, pr.name, body);
      lines.push(`counter jump ${pc} ${comment(`profile ${pr.name}`)}`);
    }
    if (p.profiles.length > 0) {
      lines.push(`counter drop ${comment(`no rule of the profiles of ${ep.ref} matched`)}`);
    } else if (p.fallback === 'accept') {
      lines.push(
        `counter accept ${comment(
          stage === 'forward'
            ? `forwarded via ${ep.ref}: ${p.tiers.length > 0 ? 'tiers passed' : 'no applyOnForward policy'}`
            : p.tiers.length > 0
              ? `tiers of ${ep.ref} passed`
              : `no policy selects ${ep.ref}`,
        )}`,
      );
    } else if (p.fallback === 'continue') {
      lines.push(
        `counter return ${comment(`${stage} policy of ${ep.ref} did not decide: on to the next stage`)}`,
      );
    } else {
      lines.push(`counter drop ${comment(`host endpoint ${ep.ref}: default deny`)}`);
    }
    const name = endpointChainName(ep.kind, dir, ep.ref, stage);
    this.chains.set(name, { name, lines });
    this.recording?.push({ name, lines });
    return name;
  }
}

/**
 * Whether an address set needs an interval set: only when a member is a prefix. A set of single
 * addresses (a selector's endpoints, as a rule) is a plain hash set, so adding or removing a
 * member needs no interval merge (nft then reads no elements back before the update). A set that
 * gains its first prefix changes declaration, which the driver applies as a full replacement.
 */
export function needsInterval(members: readonly string[]): boolean {
  return members.some((m) => m.includes('/') || m.includes('-'));
}

/** Declarations of a set (the calculation keeps a set the same object while it holds). */
const declCache = new WeakMap<NamedSet, readonly [readonly string[], readonly string[]]>();

function setDecls(s: NamedSet): readonly [readonly string[], readonly string[]] {
  let d = declCache.get(s);
  if (!d) {
    d = [setDecl(s, 4), setDecl(s, 6)];
    declCache.set(s, d);
  }
  return d;
}

/** The kernel sets (`name_v4`, `name_v6`) the rules of a chain reference, kept per chain body. */
const refsCache = new WeakMap<readonly string[], readonly string[]>();
const SET_REF = /@([A-Za-z0-9_]+)/g;

function chainRefs(lines: readonly string[]): readonly string[] {
  let r = refsCache.get(lines);
  if (!r) {
    const out = new Set<string>();
    for (const l of lines)
      if (l.includes('@')) for (const m of l.matchAll(SET_REF)) out.add(m[1] ?? '');
    r = [...out];
    refsCache.set(lines, r);
  }
  return r;
}

function setDecl(s: NamedSet, f: Family): string[] {
  const type =
    s.kind === 'address'
      ? f === 4
        ? 'ipv4_addr'
        : 'ipv6_addr'
      : `${f === 4 ? 'ipv4_addr' : 'ipv6_addr'} . inet_proto . inet_service`;
  return [
    `\tset ${s.name}_v${f} {`,
    `\t\ttype ${type}`,
    ...(s.kind === 'address' && needsInterval(f === 4 ? s.v4 : s.v6) ? ['\t\tflags interval'] : []),
    `\t\t${comment(s.describe)}`,
    '\t}',
  ];
}

function baseChainText(
  name: string,
  hook: string,
  priority: number,
  body: readonly string[],
): string[] {
  return [
    `\tchain ${name} {`,
    `\t\ttype filter hook ${hook} priority ${priority}; policy accept;`,
    ...body.map((l) => `\t\t${l}`),
    '\t}',
  ];
}

/** Policies per part chain of a large tier (RenderOptions.tierPartPolicies). */
export const DEFAULT_TIER_PART = 16;

/** Renders the whole owned table. Deterministic: the same state gives the same text. */
export function render(state: DesiredState, options: RenderOptions = {}): Rendered {
  const table = options.table ?? 'palisade';
  if (!validTableName(table))
    throw new DataplaneError(
      'DATAPLANE_ERR_INVALID_NAME',
      `invalid table name ${JSON.stringify(table)}`,
    );
  const failIn = options.failsafeInbound ?? DEFAULT_FAILSAFE_INBOUND;
  const failOut = options.failsafeOutbound ?? DEFAULT_FAILSAFE_OUTBOUND;
  const setsByName = new Map(state.sets.map((s) => [s.name, s]));
  const staticEmpty = (name: string, f: Family) => {
    const s = setsByName.get(name);
    return !s || (f === 4 ? s.v4 : s.v6).length === 0;
  };
  const families = state.families ?? { v4: true, v6: true };
  // The rule text depends on which families exist and which static CIDR sets are empty.
  const emptyKey = state.sets
    .filter((x) => x.kind === 'address' && x.name.startsWith('n_'))
    .map((x) => `${x.name}:${x.v4.length > 0 ? 1 : 0}${x.v6.length > 0 ? 1 : 0}`)
    .join(',');
  const part = options.tierPartPolicies ?? DEFAULT_TIER_PART;
  if (!Number.isInteger(part) || part < 0)
    throw new DataplaneError('DATAPLANE_ERR_INVALID_NAME', `invalid tierPartPolicies ${part}`);
  const b = new Builder(
    staticEmpty,
    (f) => (f === 4 ? families.v4 : families.v6),
    `${families.v4 ? 1 : 0}${families.v6 ? 1 : 0}|${emptyKey}|${part}`,
    part,
  );
  const wlFrom: string[] = [];
  const wlTo: string[] = [];
  const hostIn: string[] = [];
  const hostOut: string[] = [];
  // Host endpoints on every host interface (`interfaceName: '*'`): reached by a rule after the
  // interface maps, so a host endpoint naming the interface takes precedence.
  const star = { in: '', out: '', fwdIn: '', fwdOut: '', preIn: '', rawIn: '', rawOut: '' };
  const early = (state.hostPreDnat?.length ?? 0) > 0 || (state.hostUntracked?.length ?? 0) > 0;
  const mark = early ? (options.acceptMark ?? DEFAULT_ACCEPT_MARK) : undefined;
  if (mark !== undefined && (!Number.isInteger(mark) || mark <= 0 || mark > 0xffffffff))
    throw new DataplaneError('DATAPLANE_ERR_INVALID_NAME', `invalid accept mark ${mark}`);
  const entry = (list: string[], iface: string, chain: string, key: keyof typeof star) => {
    if (iface === '*') star[key] = chain;
    else list.push(`${ifname(iface)} : goto ${chain}`);
  };
  for (const ep of state.endpoints) {
    const inName = b.cachedDirection(ep, 'ingress', ep.ingress, failIn, 'normal', mark);
    const egName = b.cachedDirection(ep, 'egress', ep.egress, failOut, 'normal', mark);
    if (ep.kind === 'workload') {
      wlTo.push(`${ifname(ep.iface)} : goto ${inName}`);
      wlFrom.push(`${ifname(ep.iface)} : goto ${egName}`);
    } else {
      entry(hostIn, ep.iface, inName, 'in');
      entry(hostOut, ep.iface, egName, 'out');
    }
  }
  const fwdIn: string[] = [];
  const fwdOut: string[] = [];
  const preIn: string[] = [];
  const rawIn: string[] = [];
  const rawOut: string[] = [];
  for (const ep of state.hostForward ?? []) {
    // No applyOnForward policy in a direction: forwarded traffic is allowed, no chain needed.
    if (ep.ingress.tiers.length > 0)
      entry(fwdIn, ep.iface, b.direction(ep, 'ingress', ep.ingress, [], 'forward', mark), 'fwdIn');
    if (ep.egress.tiers.length > 0)
      entry(fwdOut, ep.iface, b.direction(ep, 'egress', ep.egress, [], 'forward', mark), 'fwdOut');
  }
  for (const ep of state.hostPreDnat ?? [])
    if (ep.ingress.tiers.length > 0)
      entry(
        preIn,
        ep.iface,
        b.direction(ep, 'ingress', ep.ingress, failIn, 'preDNAT', mark),
        'preIn',
      );
  for (const ep of state.hostUntracked ?? []) {
    if (ep.ingress.tiers.length > 0)
      entry(
        rawIn,
        ep.iface,
        b.direction(ep, 'ingress', ep.ingress, failIn, 'untracked', mark),
        'rawIn',
      );
    if (ep.egress.tiers.length > 0)
      entry(
        rawOut,
        ep.iface,
        b.direction(ep, 'egress', ep.egress, failOut, 'untracked', mark),
        'rawOut',
      );
  }
  // Local endpoints the engine does not know: nothing may pass until they are programmed.
  for (const u of state.unknown) {
    if (u.iface === '*') continue;
    wlTo.push(`${ifname(u.iface)} : drop`);
    wlFrom.push(`${ifname(u.iface)} : drop`);
  }
  // The skeleton's objects, recorded as they are rendered (the driver's deltas need them; parsing
  // the text back costs tens of milliseconds at 1k policies).
  const pSets = new Map<string, readonly string[]>();
  const pMaps = new Map<string, { readonly type: string; readonly entries: readonly string[] }>();
  const pBase = new Map<string, readonly string[]>();
  const pChains = new Map<string, readonly string[]>();
  const baseChain = (name: string, hook: string, priority: number, body: readonly string[]) => {
    pBase.set(name, [
      `type filter hook ${hook} priority ${priority}; policy accept;`,
      ...body.map((l) => l.trim()),
    ]);
    return baseChainText(name, hook, priority, body);
  };
  const vmap = (name: string, entries: string[]) => {
    const sorted = [...entries].sort();
    pMaps.set(name, { type: 'type ifname : verdict', entries: sorted });
    return [
      `\tmap ${name} {`,
      '\t\ttype ifname : verdict',
      ...(sorted.length > 0 ? [`\t\telements = { ${sorted.join(',\n\t\t\t     ')} }`] : []),
      '\t}',
    ];
  };
  const prefix = options.workloadInterfacePrefix;
  if (prefix !== undefined && !/^[A-Za-z0-9_.-]{1,14}$/.test(prefix))
    throw new DataplaneError(
      'DATAPLANE_ERR_INVALID_NAME',
      `invalid workload interface prefix ${JSON.stringify(prefix)}`,
    );
  const unknownIf = (dir: 'iifname' | 'oifname') =>
    prefix !== undefined
      ? [`${dir} "${prefix}*" counter drop ${comment('workload interface without a program')}`]
      : [];
  const fastPath = [
    `ct state established,related counter accept ${comment('established and related: decided at the first packet')}`,
    `ct state invalid counter drop ${comment('invalid connection state')}`,
  ];
  const nd = `icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } counter accept ${comment('IPv6 neighbour discovery with the host')}`;
  const lines: string[] = [`table inet ${table} {`];
  // A set family no rule references and without elements is not declared (a single-stack
  // cluster has no rule of the other family, so half the sets would be empty and unused):
  // fewer objects for nft to parse and to list into its cache at every change.
  const chainList = [...b.chains.values()];
  const referenced = new Set<string>();
  for (const c of chainList) for (const r of chainRefs(c.lines)) referenced.add(r);
  const declared: NamedSet[] = [];
  const setLines: string[] = [];
  for (const s of state.sets) {
    const [d4, d6] = setDecls(s);
    const in4 = s.v4.length > 0 || referenced.has(`${s.name}_v4`);
    const in6 = s.v6.length > 0 || referenced.has(`${s.name}_v6`);
    if (!in4 && !in6) continue;
    declared.push(s);
    if (in4) {
      pSets.set(`${s.name}_v4`, declBody(d4));
      setLines.push(...d4);
    }
    if (in6) {
      pSets.set(`${s.name}_v6`, declBody(d6));
      setLines.push(...d6);
    }
  }
  lines.push(...setLines);
  lines.push(...vmap('workload_from', wlFrom), ...vmap('workload_to', wlTo));
  lines.push(...vmap('host_in', hostIn), ...vmap('host_out', hostOut));
  // The rule reaching an all-interfaces host endpoint: any interface but loopback and workloads.
  const starRule = (dir: 'iifname' | 'oifname', chain: string, what: string): string[] =>
    chain === ''
      ? []
      : [
          `${dir} != "lo" ${prefix !== undefined ? `${dir} != "${prefix}*" ` : ''}counter goto ${chain} ${comment(what)}`,
        ];
  const hasForward = fwdIn.length + fwdOut.length > 0 || star.fwdIn !== '' || star.fwdOut !== '';
  if (hasForward) lines.push(...vmap('host_fwd_in', fwdIn), ...vmap('host_fwd_out', fwdOut));
  const hasPre = preIn.length > 0 || star.preIn !== '';
  if (hasPre) lines.push(...vmap('host_predn_in', preIn));
  const hasRaw = rawIn.length + rawOut.length > 0 || star.rawIn !== '' || star.rawOut !== '';
  if (hasRaw) lines.push(...vmap('host_raw_in', rawIn), ...vmap('host_raw_out', rawOut));
  if (hasRaw)
    lines.push(
      ...baseChain('raw_prerouting', 'prerouting', -300, [
        `counter iifname vmap @host_raw_in ${comment('untracked policy of a host endpoint, ingress')}`,
        ...starRule('iifname', star.rawIn, 'untracked policy of the all-interfaces host endpoint'),
      ]),
      ...baseChain('raw_output', 'output', -300, [
        `counter oifname vmap @host_raw_out ${comment('untracked policy of a host endpoint, egress')}`,
        ...starRule('oifname', star.rawOut, 'untracked policy of the all-interfaces host endpoint'),
      ]),
    );
  if (hasPre)
    lines.push(
      ...baseChain('prerouting_predn', 'prerouting', -110, [
        fastPath[0] ?? '',
        `counter iifname vmap @host_predn_in ${comment('pre-DNAT policy of a host endpoint')}`,
        ...starRule('iifname', star.preIn, 'pre-DNAT policy of the all-interfaces host endpoint'),
      ]),
    );
  lines.push(
    ...baseChain('forward_egress', 'forward', -1, [
      ...fastPath,
      `counter iifname vmap @workload_from ${comment('egress of the sending workload')}`,
      ...unknownIf('iifname'),
      ...(hasForward
        ? [
            `counter iifname vmap @host_fwd_in ${comment('forwarded in via a host endpoint (applyOnForward)')}`,
            ...starRule('iifname', star.fwdIn, 'forwarded in via the all-interfaces host endpoint'),
          ]
        : []),
    ]),
    ...baseChain('forward_ingress', 'forward', 0, [
      ...fastPath,
      `counter oifname vmap @workload_to ${comment('ingress of the receiving workload')}`,
      ...unknownIf('oifname'),
      ...(hasForward
        ? [
            `counter oifname vmap @host_fwd_out ${comment('forwarded out via a host endpoint (applyOnForward)')}`,
            ...starRule(
              'oifname',
              star.fwdOut,
              'forwarded out via the all-interfaces host endpoint',
            ),
          ]
        : []),
    ]),
    ...baseChain('input', 'input', 0, [
      ...fastPath,
      nd,
      `counter iifname vmap @workload_from ${comment('egress of a workload talking to this host')}`,
      ...unknownIf('iifname'),
      `counter iifname vmap @host_in ${comment('ingress of a host endpoint')}`,
      ...starRule('iifname', star.in, 'ingress of the all-interfaces host endpoint'),
    ]),
    ...baseChain('output', 'output', 0, [
      ...fastPath,
      nd,
      `counter oifname vmap @workload_to ${comment('ingress of a workload from this host')}`,
      ...unknownIf('oifname'),
      `counter oifname vmap @host_out ${comment('egress of a host endpoint')}`,
      ...starRule('oifname', star.out, 'egress of the all-interfaces host endpoint'),
    ]),
  );
  let ruleCount = 0;
  for (const body of pBase.values()) ruleCount += body.length - 1;
  const chains = chainList.sort((x, y) => (x.name < y.name ? -1 : 1));
  for (const c of chains) {
    pChains.set(c.name, c.lines);
    ruleCount += c.lines.length;
  }
  // The text of the skeleton, on first use (a delta needs only the objects above).
  let skeletonText: string | undefined;
  const skeletonOf = (): string => {
    if (skeletonText !== undefined) return skeletonText;
    const out: string[] = [lines.join('\n') + '\n'];
    for (const c of chains) out.push(chainText(c));
    out.push('}\n');
    skeletonText = out.join('');
    return skeletonText;
  };
  const elements = new Map<string, readonly string[]>();
  for (const s of declared) {
    if (pSets.has(`${s.name}_v4`)) elements.set(`${s.name}_v4`, s.v4);
    if (pSets.has(`${s.name}_v6`)) elements.set(`${s.name}_v6`, s.v6);
  }
  const elementLines = {
    join: (sep: string): string => {
      const out: string[] = [];
      for (const [name, els] of elements)
        if (els.length > 0) out.push(elementCommand('add', table, name, els));
      return out.join(sep);
    },
  };
  // The full script (with every element) is only needed for a full apply: built on first use.
  let script: string | undefined;
  return {
    table,
    get skeleton(): string {
      return skeletonOf();
    },
    parts: { sets: pSets, maps: pMaps, baseChains: pBase, chains: pChains },
    ruleCount,
    elements,
    get script(): string {
      script ??= skeletonOf() + elementLines.join('');
      return script;
    },
  };
}

function declBody(d: readonly string[]): readonly string[] {
  let b = bodyCache.get(d);
  if (!b) {
    b = d.slice(1, -1).map((l) => l.trim());
    bodyCache.set(d, b);
  }
  return b;
}
const bodyCache = new WeakMap<readonly string[], readonly string[]>();

/** A regular chain's text, kept per chain body (unchanged chains are the same arrays). */
const chainTextCache = new WeakMap<readonly string[], { name: string; text: string }>();
function chainText(c: ChainDef): string {
  const t = chainTextCache.get(c.lines);
  if (t?.name === c.name) return t.text;
  const text = `\tchain ${c.name} {\n${c.lines.map((l) => `\t\t${l}\n`).join('')}\t}\n`;
  chainTextCache.set(c.lines, { name: c.name, text });
  return text;
}

/** `add element` / `delete element` for one set, in chunks nft parses quickly. */
export function elementCommand(
  verb: 'add' | 'delete',
  table: string,
  set: string,
  els: readonly string[],
): string {
  const out: string[] = [];
  for (let i = 0; i < els.length; i += 500) {
    out.push(`${verb} element inet ${table} ${set} { ${els.slice(i, i + 500).join(', ')} }\n`);
  }
  return out.join('');
}

/** The objects of a rendered skeleton, for the driver's delta transactions. */
export interface SkeletonParts {
  /** Set name → its declaration body (type, flags, comment), one line each. */
  readonly sets: ReadonlyMap<string, readonly string[]>;
  /** Map name → its type line and its elements (`"if" : goto chain`). */
  readonly maps: ReadonlyMap<
    string,
    { readonly type: string; readonly entries: readonly string[] }
  >;
  /** Base chain name → its hook line and rules. */
  readonly baseChains: ReadonlyMap<string, readonly string[]>;
  /** Regular chain name → its rules, in order. */
  readonly chains: ReadonlyMap<string, readonly string[]>;
}

/** Splits a skeleton this renderer produced back into its objects (its own, fixed layout). */
export function skeletonParts(skeleton: string): SkeletonParts {
  const sets = new Map<string, string[]>();
  const maps = new Map<string, { type: string; entries: string[] }>();
  const baseChains = new Map<string, string[]>();
  const chains = new Map<string, string[]>();
  const lines = skeleton.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^\t(set|map|chain) (\S+) \{$/.exec(lines[i] ?? '');
    if (!m) continue;
    const body: string[] = [];
    while (i + 1 < lines.length && lines[i + 1] !== '\t}') body.push((lines[++i] ?? '').trim());
    i++;
    const name = m[2] ?? '';
    if (m[1] === 'set') sets.set(name, body);
    else if (m[1] === 'map') {
      const joined = body.slice(1).join(' ');
      const inner = /^elements = \{ (.*) \}$/.exec(joined)?.[1];
      maps.set(name, {
        type: body[0] ?? '',
        entries: inner === undefined ? [] : inner.split(/,\s+/).map((e) => e.trim()),
      });
    } else if (body[0]?.startsWith('type filter hook')) baseChains.set(name, body);
    else chains.set(name, body);
  }
  return { sets, maps, baseChains, chains };
}
