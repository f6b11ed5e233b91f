// The node's calculation (STYLE 2, 3, 10): resources in (any order, incrementally) plus the list of
// local endpoints, desired kernel state out. Only policies that select a local endpoint become
// programs; every peer selector, CIDR list and named port becomes a named set, shared by equal
// selectors. A change recomputes only what it touches: an endpoint change re-tests that endpoint
// against every set, a policy change re-derives the local programs (the engine caches the rest),
// a namespace/service-account/profile change (labels inherited by many) rescans everything.
// Owns: translating the engine's compiled rules into programs. Must never: run nft, keep a "last
// good" output (desired() depends only on the current inputs), or decide semantics the engine
// already decides — membership comes from the engine's own compiled matchers.

import { Engine, parseIp } from '@palisade/core';
import type { CompileOptions, Profile, Resource } from '@palisade/core';
import {
  calicoSelectorKey,
  k8sPeerKey,
  notSelectorKey,
  rawPolicyRules,
  setName,
  type RawRules,
} from './keys.js';
import { addressElements, cidrText, formatIp } from './net.js';
import type {
  CompiledEntity,
  CompiledRule,
  DesiredState,
  DirectionProgram,
  EndpointProgram,
  EngineEndpoint,
  Entity,
  EntityMatcher,
  LocalEndpoint,
  NamedSet,
  PortRange,
  ProfileRules,
  RuleProgram,
  SideProgram,
  TierProgram,
} from './types.js';

type Direction = 'ingress' | 'egress';

/** A problem the calculation had to resolve conservatively (reported, never thrown). */
export interface CalcNote {
  readonly endpoint: string;
  readonly message: string;
}

interface SelectorRef {
  readonly matcher: EntityMatcher;
  readonly describe: string;
  /** With `verifySharedSets`: the other matchers that share this key. */
  readonly alternates: EntityMatcher[];
}

export interface CalculationOptions extends CompileOptions {
  /**
   * Checks on every desired() that all matchers sharing a set key match the same entities, and
   * throws if not (a bug in key derivation). For tests: it rescans every shared set.
   */
  readonly verifySharedSets?: boolean;
}

interface ProgramEntry {
  readonly program: EndpointProgram | undefined;
  /** The engine objects the program was built from (compared by identity to reuse it). */
  readonly inputs: readonly unknown[];
  readonly selectors: ReadonlyMap<string, SelectorRef>;
  readonly nets: ReadonlyMap<string, readonly CompiledEntity['nets'][]>;
  readonly namedPorts: ReadonlySet<string>;
  /** Service sets the program references, by set name. */
  readonly services: ReadonlyMap<string, ServiceRef>;
  readonly notes: readonly CalcNote[];
  /** Keys of the policies (enforced and staged) the program was derived from. */
  readonly policyKeys: readonly string[];
}

/** A Kubernetes Service a rule matches: its endpoint addresses, or addresses with ports. */
interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
  readonly withPorts: boolean;
}

const NAMESPACED = new Set([
  'NetworkPolicy',
  'StagedNetworkPolicy',
  'StagedKubernetesNetworkPolicy',
  'NetworkSet',
  'WorkloadEndpoint',
  'Pod',
  'ServiceAccount',
  'Service',
  'EndpointSlice',
  'Endpoints',
  'AuthorizationPolicy',
  'PeerAuthentication',
]);

const NETSET_PREFIX = 'netset:';

/**
 * The incremental calculation. Feed resources with `upsert`/`remove` (they go on to the engine it
 * owns), say which endpoints are local with `setLocalEndpoints`, and read `desired()`.
 */
export class Calculation {
  readonly engine: Engine;
  private readonly rawPolicies = new Map<string, RawRules>();
  private readonly rawProfiles = new Map<string, Profile>();
  private readonly wepIds = new Map<string, string>();
  private locals: LocalEndpoint[] = [];

  // Caches, each invalidated by the inputs it depends on.
  private readonly entities = new Map<string, Entity>();
  private readonly programs = new Map<string, ProgramEntry>();
  private readonly members = new Map<
    string,
    {
      ref: SelectorRef;
      ids: Set<string>;
      /** The set's elements while neither membership nor a member's addresses changed. */
      el?: { v4: string[]; v6: string[] } | undefined;
      /** The set as handed out, kept (same object) while `el` holds. */
      set?: NamedSet | undefined;
    }
  >();
  /** CIDR-list and named-port sets as handed out, kept while their inputs hold. */
  private readonly netSets = new Map<string, NamedSet>();
  private readonly namedPortSets = new Map<string, NamedSet>();
  /**
   * Which local programs each policy (by compiled key) went into, and each policy's selection
   * signature (everything but its rules): an edit of a policy's rules alone re-derives only the
   * programs of the endpoints it selects (selection cannot have changed), not every local one.
   */
  private readonly policyLocals = new Map<string, Set<string>>();
  private readonly policySignatures = new Map<string, string>();
  private readonly touchedPolicies = new Set<string>();
  private readonly namedPortMembers = new Map<string, Set<string>>();
  private dirtyAll = true;
  private dirtyPrograms = true;
  private dirtyNetsets = true;
  private readonly dirtyEndpoints = new Set<string>();

  private readonly verify: boolean;

  constructor(options: CalculationOptions = {}) {
    this.engine = new Engine(options);
    this.verify = options.verifySharedSets === true;
  }

  upsert(r: Resource): void {
    this.track(r, false);
    this.engine.upsert(r);
  }

  /** `apiVersion` tells a Kubernetes NetworkPolicy from a Calico one of the same name. */
  remove(
    kind: Resource['kind'],
    namespace: string | undefined,
    name: string,
    apiVersion: string,
  ): void {
    const ns = NAMESPACED.has(kind) ? (namespace ?? 'default') : undefined;
    this.track(
      { apiVersion, kind, metadata: { name, ...(ns ? { namespace: ns } : {}) } } as Resource,
      true,
    );
    this.engine.remove(kind, namespace, name, apiVersion);
  }

  setLocalEndpoints(list: readonly LocalEndpoint[]): void {
    const before = new Map(this.locals.map((l) => [l.ref, l.iface]));
    this.locals = [...list].sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
    const now = new Set(this.locals.map((l) => l.ref));
    for (const ref of before.keys()) if (!now.has(ref)) this.dropProgram(ref);
    for (const l of this.locals) if (before.get(l.ref) !== l.iface) this.dropProgram(l.ref);
  }

  private dropProgram(ref: string): void {
    const e = this.programs.get(ref);
    if (e) this.unindex(ref, e);
    this.programs.delete(ref);
  }

  private unindex(ref: string, e: ProgramEntry): void {
    for (const k of e.policyKeys) this.policyLocals.get(k)?.delete(ref);
  }

  private setProgram(ref: string, e: ProgramEntry): void {
    const old = this.programs.get(ref);
    if (old === e) return;
    if (old) this.unindex(ref, old);
    for (const k of e.policyKeys) {
      let refs = this.policyLocals.get(k);
      if (!refs) this.policyLocals.set(k, (refs = new Set()));
      refs.add(ref);
    }
    this.programs.set(ref, e);
  }

  /** The local endpoints last set, sorted by ref. */
  localEndpoints(): readonly LocalEndpoint[] {
    return this.locals;
  }

  private track(r: Resource, removing: boolean): void {
    const ns = NAMESPACED.has(r.kind) ? (r.metadata.namespace ?? 'default') : undefined;
    switch (r.kind) {
      case 'Namespace':
      case 'ServiceAccount':
      case 'Service':
        this.dirtyAll = true;
        break;
      case 'EndpointSlice':
      case 'Endpoints':
        // Service sets have stable names: only their elements change (read at `desired()`).
        break;
      case 'Profile':
        if (removing) this.rawProfiles.delete(r.metadata.name);
        else this.rawProfiles.set(r.metadata.name, r);
        this.dirtyAll = true;
        break;
      case 'Pod':
        this.dirtyEndpoints.add(`${ns}/${r.metadata.name}`);
        break;
      case 'WorkloadEndpoint': {
        const k = `${ns}/${r.metadata.name}`;
        const old = this.wepIds.get(k);
        if (old) this.dirtyEndpoints.add(old);
        if (removing) this.wepIds.delete(k);
        else {
          const id = `${ns}/${r.spec.pod ?? r.spec.workload ?? r.metadata.name}`;
          this.wepIds.set(k, id);
          this.dirtyEndpoints.add(id);
        }
        break;
      }
      case 'HostEndpoint':
        this.dirtyEndpoints.add(r.metadata.name);
        break;
      case 'NetworkSet':
      case 'GlobalNetworkSet':
        this.dirtyNetsets = true;
        break;
      case 'Tier':
      case 'NetworkPolicy':
      case 'StagedNetworkPolicy':
      case 'StagedKubernetesNetworkPolicy':
      case 'GlobalNetworkPolicy':
      case 'StagedGlobalNetworkPolicy': {
        const raw = removing ? undefined : rawPolicyRules(r);
        const key = `${r.kind}/${ns ?? ''}/${r.metadata.name}`;
        if (raw) this.rawPolicies.set(raw.key, raw.rules);
        else this.rawPolicies.delete(key);
        if (r.kind === 'Tier') {
          this.dirtyPrograms = true;
          break;
        }
        // Same selection (selector, namespace, order, tier, types, flags): only the programs
        // the policy is in can change. A new policy or another selection: every program.
        const sigKey = `${r.apiVersion}|${key}`;
        const before = this.policySignatures.get(sigKey);
        const sig = removing ? undefined : selectionSignature(r);
        if (sig === undefined) this.policySignatures.delete(sigKey);
        else this.policySignatures.set(sigKey, sig);
        if (before !== undefined && (removing || before === sig)) this.touchedPolicies.add(key);
        else this.dirtyPrograms = true;
        break;
      }
      case 'AuthorizationPolicy':
      case 'PeerAuthentication':
      case 'ServiceRole':
      case 'ServiceRoleBinding':
      case 'RbacConfig':
      case 'ClusterRbacConfig':
        // L7 only: nothing the kernel enforces.
        break;
    }
  }

  // ------------------------------------------------------------------ entities

  private refreshEntities(): void {
    if (this.dirtyAll) {
      this.entities.clear();
      for (const id of [...this.engine.workloadEndpoints(), ...this.engine.hostEndpoints()]) {
        const ep = this.engine.describeEndpoint(id);
        if (ep) this.entities.set(id, ep);
      }
      this.refreshNetsets();
      return;
    }
    for (const id of this.dirtyEndpoints) {
      const ep = this.engine.describeEndpoint(id);
      if (ep && ep.id === id) this.entities.set(id, ep);
      else this.entities.delete(id);
    }
    if (this.dirtyNetsets) this.refreshNetsets();
  }

  private refreshNetsets(): void {
    for (const id of [...this.entities.keys()])
      if (id.startsWith(NETSET_PREFIX)) this.entities.delete(id);
    for (const s of this.engine.dataplaneInputs().networkSets)
      this.entities.set(NETSET_PREFIX + s.id, s);
  }

  // ------------------------------------------------------------------ programs

  private program(local: LocalEndpoint, previous: ProgramEntry | undefined): ProgramEntry {
    const notes: CalcNote[] = [];
    const selectors = new Map<string, SelectorRef>();
    const nets = new Map<string, readonly CompiledEntity['nets'][]>();
    const namedPorts = new Set<string>();
    const services = new Map<string, ServiceRef>();
    const ep = this.engine.describeEndpoint(local.ref);
    const active = this.engine.activeTiers(local.ref);
    const profiles = this.engine.dataplaneInputs(local.ref).profiles;
    if (!ep || !active || !profiles) {
      return {
        program: undefined,
        inputs: [],
        selectors,
        nets,
        namedPorts,
        services,
        notes,
        policyKeys: [],
      };
    }
    // The engine keeps compiled policies, profiles and endpoints as the same objects while they
    // do not change: an endpoint whose inputs are all identical keeps its program.
    const inputs: unknown[] = [ep];
    const policyKeys = new Set<string>();
    for (const dir of ['ingress', 'egress'] as const) {
      for (const t of active[dir]) {
        inputs.push(t.name, t.defaultAction, ...t.policies, '|');
        for (const p of t.policies) policyKeys.add(p.key);
        for (const p of t.staged) policyKeys.add(p.key);
      }
      for (const pr of profiles[dir]) inputs.push(pr.profile, pr.rules);
      inputs.push('/');
    }
    if (
      previous?.program &&
      previous.inputs.length === inputs.length &&
      previous.inputs.every((x, i) => x === inputs[i])
    )
      return previous;
    const ctx: RuleCtx = {
      verify: this.verify,
      ep,
      selectors,
      nets,
      namedPorts,
      services,
      notes,
      rawPolicies: this.rawPolicies,
      rawProfiles: this.rawProfiles,
    };
    const direction = (dir: Direction): DirectionProgram => {
      const tiers: TierProgram[] = [];
      for (const t of active[dir]) {
        if (t.policies.length === 0) continue;
        const rules: RuleProgram[] = [];
        for (const p of t.policies)
          rules.push(
            ...convertRules(ctx, p[dir] ?? [], dir, { tier: t.name, policy: p.name }, p.key),
          );
        tiers.push({
          name: t.name,
          defaultAction: t.defaultAction,
          rules,
          policies: t.policies.map((p) => p.name),
        });
      }
      const prof = profiles[dir].map((pr: ProfileRules) => ({
        name: pr.profile.name,
        rules: convertRules(
          ctx,
          pr.rules,
          dir,
          { profile: pr.profile.name },
          `profile/${pr.profile.name}`,
        ),
      }));
      return {
        tiers,
        profiles: prof,
        fallback: prof.length > 0 || ep.kind === 'host' ? 'drop' : 'accept',
      };
    };
    const v4 = ep.ips.filter((i) => i.family === 4).map(formatIp);
    const v6 = ep.ips.filter((i) => i.family === 6).map(formatIp);
    const program: EndpointProgram = {
      ref: local.ref,
      kind: ep.kind,
      iface: local.iface,
      ipv4: v4,
      ipv6: v6,
      ingress: direction('ingress'),
      egress: direction('egress'),
    };
    return {
      program,
      inputs,
      selectors,
      nets,
      namedPorts,
      services,
      notes,
      policyKeys: [...policyKeys],
    };
  }

  // ------------------------------------------------------------------ the output

  /** The desired state for the current inputs. */
  desired(): DesiredState {
    this.refreshEntities();
    const programsAll = this.dirtyAll || this.dirtyPrograms;
    // Rules-only policy edits: the programs those policies are in (nothing else can change).
    const touched = new Set<string>();
    if (!programsAll)
      for (const k of this.touchedPolicies)
        for (const ref of this.policyLocals.get(k) ?? []) touched.add(ref);
    this.touchedPolicies.clear();
    for (const l of this.locals) {
      const dirty = this.dirtyEndpoints.has(l.ref);
      if (programsAll || dirty || touched.has(l.ref) || !this.programs.has(l.ref))
        this.setProgram(
          l.ref,
          this.program(
            l,
            !this.dirtyAll && !dirty && (programsAll || touched.has(l.ref))
              ? this.programs.get(l.ref)
              : undefined,
          ),
        );
    }
    // Every selector, nets list and named port referenced by a local program.
    const selectors = new Map<string, SelectorRef>();
    const nets = new Map<string, readonly CompiledEntity['nets'][]>();
    const namedPorts = new Set<string>();
    const services = new Map<string, ServiceRef>();
    for (const l of this.locals) {
      const e = this.programs.get(l.ref);
      if (!e) continue;
      for (const [k, v] of e.services) services.set(k, v);
      for (const [k, v] of e.selectors) {
        const known = selectors.get(k);
        // Copied only to collect alternates (verifySharedSets); otherwise read as is.
        if (!known) selectors.set(k, this.verify ? { ...v, alternates: [...v.alternates] } : v);
        else if (this.verify) known.alternates.push(v.matcher, ...v.alternates);
      }
      for (const [k, v] of e.nets) if (!nets.has(k)) nets.set(k, v);
      for (const n of e.namedPorts) namedPorts.add(n);
    }
    // Memberships: new keys scan every entity; known keys re-test only what changed.
    for (const k of [...this.members.keys()]) if (!selectors.has(k)) this.members.delete(k);
    for (const [k, ref] of selectors) {
      const m = this.members.get(k);
      if (!m || this.dirtyAll) {
        const ids = new Set<string>();
        for (const [id, e] of this.entities) if (ref.matcher(e)) ids.add(id);
        this.members.set(k, { ref, ids });
        continue;
      }
      for (const id of this.dirtyEndpoints) {
        const e = this.entities.get(id);
        const was = m.ids.has(id);
        if (e && ref.matcher(e)) m.ids.add(id);
        else m.ids.delete(id);
        if (was || m.ids.has(id)) m.el = undefined;
      }
      if (this.dirtyNetsets) {
        for (const id of [...m.ids]) if (id.startsWith(NETSET_PREFIX)) m.ids.delete(id);
        for (const [id, e] of this.entities)
          if (id.startsWith(NETSET_PREFIX) && ref.matcher(e)) m.ids.add(id);
        m.el = undefined;
      }
    }
    for (const n of [...this.namedPortMembers.keys()])
      if (!namedPorts.has(n)) this.namedPortMembers.delete(n);
    for (const n of namedPorts) {
      const m = this.namedPortMembers.get(n);
      const has = (e: Entity | undefined) =>
        e !== undefined && e.kind !== 'netset' && e.namedPorts.some((p) => p.name === n);
      if (!m || this.dirtyAll) {
        const ids = new Set<string>();
        for (const [id, e] of this.entities) if (has(e)) ids.add(id);
        this.namedPortMembers.set(n, ids);
        continue;
      }
      for (const id of this.dirtyEndpoints) {
        if (has(this.entities.get(id))) m.add(id);
        else m.delete(id);
      }
    }
    if (this.verify) {
      for (const [k, ref] of selectors) {
        const ids = this.members.get(k)?.ids ?? new Set<string>();
        for (const alt of [ref.matcher, ...ref.alternates])
          for (const [id, e] of this.entities)
            if (alt(e) !== ids.has(id))
              throw new Error(`bug: selectors sharing set key ${k} disagree on ${id}`);
      }
    }
    const endpointsChanged = this.dirtyAll || this.dirtyEndpoints.size > 0;
    this.dirtyAll = false;
    this.dirtyPrograms = false;
    this.dirtyNetsets = false;
    this.dirtyEndpoints.clear();

    const sets: NamedSet[] = [];
    for (const [k, m] of this.members) {
      if (m.el && m.set) {
        sets.push(m.set);
        continue;
      }
      if (!m.el) {
        const ips = [];
        const cidrs = [];
        for (const id of m.ids) {
          const e = this.entities.get(id);
          if (!e) continue;
          if (e.kind === 'netset') cidrs.push(...e.nets);
          else ips.push(...e.ips);
        }
        m.el = addressElements(ips, cidrs);
      }
      const el = m.el;
      m.set = { kind: 'address', name: setName('s_', k), describe: m.ref.describe, ...el };
      sets.push(m.set);
    }
    // A CIDR-list set is named by its sorted content: the same key, the same set.
    for (const k of [...this.netSets.keys()]) if (!nets.has(k)) this.netSets.delete(k);
    for (const [k, lists] of nets) {
      let set = this.netSets.get(k);
      if (!set) {
        const cidrs = lists.flatMap((l) => l ?? []);
        set = {
          kind: 'address',
          name: setName('n_', k),
          describe: `nets ${cidrs.map(cidrText).join(', ')}`,
          ...addressElements([], cidrs),
        };
        this.netSets.set(k, set);
      }
      sets.push(set);
    }
    // Named-port sets depend on the members' addresses and ports: rebuilt when an endpoint changed.
    if (endpointsChanged) this.namedPortSets.clear();
    for (const n of [...this.namedPortSets.keys()])
      if (!this.namedPortMembers.has(n)) this.namedPortSets.delete(n);
    for (const [n, ids] of this.namedPortMembers) {
      const known = this.namedPortSets.get(n);
      if (known) {
        sets.push(known);
        continue;
      }
      const v4 = new Set<string>();
      const v6 = new Set<string>();
      for (const id of ids) {
        const e = this.entities.get(id);
        if (!e || e.kind === 'netset') continue;
        for (const p of e.namedPorts) {
          if (p.name !== n) continue;
          for (const ip of e.ips)
            (ip.family === 4 ? v4 : v6).add(`${formatIp(ip)} . ${p.protocol} . ${p.port}`);
        }
      }
      const set: NamedSet = {
        kind: 'named-port',
        name: setName('p_', n),
        describe: `named port ${n}`,
        v4: [...v4].sort(),
        v6: [...v6].sort(),
      };
      this.namedPortSets.set(n, set);
      sets.push(set);
    }
    let svcV4 = false;
    let svcV6 = false;
    for (const [n, ref] of services) {
      const m = this.engine.serviceMembersOf(ref.namespace, ref.name);
      const describe = `service ${ref.namespace}/${ref.name}${ref.withPorts ? ' (endpoint ports)' : ''}`;
      if (ref.withPorts) {
        const v4: string[] = [];
        const v6: string[] = [];
        for (const k of m.ports) {
          const [addr, proto, port] = k.split('|');
          const ip = parseIp(addr ?? '');
          if (!ip) continue;
          (ip.family === 4 ? v4 : v6).push(`${formatIp(ip)} . ${proto ?? ''} . ${port ?? ''}`);
        }
        svcV4 ||= v4.length > 0;
        svcV6 ||= v6.length > 0;
        sets.push({ kind: 'named-port', name: n, describe, v4: v4.sort(), v6: v6.sort() });
      } else {
        const ips = [...m.addresses].flatMap((a) => {
          const ip = parseIp(a);
          return ip ? [ip] : [];
        });
        const el = addressElements(ips, []);
        svcV4 ||= el.v4.length > 0;
        svcV6 ||= el.v6.length > 0;
        sets.push({ kind: 'address', name: n, describe, ...el });
      }
    }
    sets.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const endpoints: EndpointProgram[] = [];
    const unknown: LocalEndpoint[] = [];
    for (const l of this.locals) {
      const p = this.programs.get(l.ref)?.program;
      if (p) endpoints.push(p);
      else unknown.push(l);
    }
    let v4 = false;
    let v6 = false;
    for (const e of this.entities.values()) {
      const addrs = e.kind === 'netset' ? e.nets : e.ips;
      for (const a of addrs) {
        if (a.family === 4) v4 = true;
        else v6 = true;
      }
      if (v4 && v6) break;
    }
    return { endpoints, sets, unknown, families: { v4: v4 || svcV4, v6: v6 || svcV6 } };
  }

  /** Conservative resolutions made while building the programs (unsupported matches...). */
  notes(): CalcNote[] {
    return this.locals.flatMap((l) => this.programs.get(l.ref)?.notes ?? []);
  }
}

/**
 * What decides which endpoints a policy selects and where it sits: the resource without its
 * rules (only whether each rule list is present and empty, which Kubernetes' policyTypes default
 * reads). Two versions with the same signature select the same endpoints in the same place.
 */
function selectionSignature(r: Resource): string {
  const spec = { ...((r as { spec?: Record<string, unknown> }).spec ?? {}) };
  for (const dir of ['ingress', 'egress'] as const) {
    const rules = spec[dir];
    spec[dir] = rules === undefined ? null : Array.isArray(rules) ? rules.length > 0 : rules;
  }
  return JSON.stringify([
    r.apiVersion,
    r.kind,
    r.metadata.namespace ?? null,
    r.metadata.name,
    spec,
  ]);
}

// ------------------------------------------------------------------ rule conversion

interface RuleCtx {
  readonly verify: boolean;
  readonly ep: EngineEndpoint;
  readonly selectors: Map<string, SelectorRef>;
  readonly nets: Map<string, readonly CompiledEntity['nets'][]>;
  readonly namedPorts: Set<string>;
  readonly services: Map<string, ServiceRef>;
  readonly notes: CalcNote[];
  readonly rawPolicies: ReadonlyMap<string, RawRules>;
  readonly rawProfiles: ReadonlyMap<string, Profile>;
}

interface RawSide {
  readonly selectorKey: string | undefined;
  readonly notSelectorKey: string | undefined;
  readonly describe: string;
}

/** The user-written peer behind compiled rule `pos` of `ownerKey`, as set keys. */
function rawSides(
  ctx: RuleCtx,
  ownerKey: string,
  dir: Direction,
  rule: CompiledRule,
  posInGroup: number,
): { src: RawSide; dst: RawSide } {
  const none: RawSide = { selectorKey: undefined, notSelectorKey: undefined, describe: '' };
  const raw = ctx.rawPolicies.get(ownerKey);
  const calicoSide = (
    er: { selector?: string; notSelector?: string; namespaceSelector?: string } | undefined,
    ns: string | undefined,
  ): RawSide =>
    er
      ? {
          selectorKey: calicoSelectorKey(er, ns),
          notSelectorKey: er.notSelector ? notSelectorKey(er.notSelector) : undefined,
          describe: [
            er.namespaceSelector ? `namespaceSelector ${er.namespaceSelector}` : '',
            er.selector ? `selector ${er.selector}` : '',
          ]
            .filter((s) => s !== '')
            .join(' '),
        }
      : none;
  if (raw?.kind === 'calico') {
    const r = raw[dir][rule.index];
    return {
      src: calicoSide(r?.source, raw.namespace),
      dst: calicoSide(r?.destination, raw.namespace),
    };
  }
  if (raw?.kind === 'k8s') {
    const g = raw[dir][rule.index];
    const peer = g?.peers[Math.floor(posInGroup / g.nPorts)];
    const side: RawSide = peer
      ? {
          selectorKey: k8sPeerKey(peer, raw.namespace),
          notSelectorKey: undefined,
          describe: `k8s peer ${JSON.stringify(peer)}`.slice(0, 100),
        }
      : none;
    return dir === 'ingress' ? { src: side, dst: none } : { src: none, dst: side };
  }
  if (ownerKey.startsWith('profile/')) {
    const p = ctx.rawProfiles.get(ownerKey.slice('profile/'.length));
    const r = p?.spec[dir]?.[rule.index];
    return { src: calicoSide(r?.source, undefined), dst: calicoSide(r?.destination, undefined) };
  }
  return { src: none, dst: none };
}

function share(ctx: RuleCtx, key: string, matcher: EntityMatcher, describe: string): void {
  const known = ctx.selectors.get(key);
  if (!known) ctx.selectors.set(key, { matcher, describe, alternates: [] });
  else if (ctx.verify && known.matcher !== matcher) known.alternates.push(matcher);
}

/** What converting one policy's rules for one direction produced, to replay for the next endpoint. */
interface Converted {
  readonly rules: RuleProgram[];
  readonly shares: (readonly [string, EntityMatcher, string])[];
  readonly nets: (readonly [string, readonly CompiledEntity['nets'][]])[];
  readonly namedPorts: string[];
  readonly services: (readonly [string, ServiceRef])[];
  readonly notes: string[];
}

/**
 * Converted rules by the engine's compiled rule list (the same array while the policy or profile
 * is unchanged) and everything else the conversion reads: a policy selecting many endpoints, or
 * an endpoint rebuilt after an edit of one of its hundred policies, converts each policy once.
 */
const convertedCache = new WeakMap<readonly CompiledRule[], Map<string, Converted>>();

function convertRules(
  ctx: RuleCtx,
  rules: readonly CompiledRule[],
  dir: Direction,
  prov: { tier?: string; policy?: string; profile?: string },
  ownerKey: string,
): RuleProgram[] {
  // The conversion depends on the endpoint only through its L7 point (http rules).
  const key = `${dir}\u0000${ownerKey}\u0000${ctx.ep.l7 ? 1 : 0}\u0000${ctx.verify ? 1 : 0}\u0000${prov.tier ?? ''}\u0000${prov.policy ?? ''}\u0000${prov.profile ?? ''}`;
  let byKey = convertedCache.get(rules);
  let c = byKey?.get(key);
  if (!c) {
    const rec: RuleCtx = {
      ...ctx,
      selectors: new Map(),
      nets: new Map(),
      namedPorts: new Set(),
      services: new Map(),
      notes: [],
    };
    const shares: (readonly [string, EntityMatcher, string])[] = [];
    const out = convertRulesNow(rec, rules, dir, prov, ownerKey, (k, m, d) =>
      shares.push([k, m, d]),
    );
    c = {
      rules: out,
      shares,
      nets: [...rec.nets],
      namedPorts: [...rec.namedPorts],
      services: [...rec.services],
      notes: rec.notes.map((n) => n.message),
    };
    if (!byKey) {
      byKey = new Map();
      convertedCache.set(rules, byKey);
    }
    byKey.set(key, c);
  }
  for (const [k, m, d] of c.shares) share(ctx, k, m, d);
  for (const [k, v] of c.nets) ctx.nets.set(k, v);
  for (const n of c.namedPorts) ctx.namedPorts.add(n);
  for (const [k, v] of c.services) ctx.services.set(k, v);
  for (const message of c.notes) ctx.notes.push({ endpoint: ctx.ep.id, message });
  return c.rules;
}

function convertRulesNow(
  ctx: RuleCtx,
  rules: readonly CompiledRule[],
  dir: Direction,
  prov: { tier?: string; policy?: string; profile?: string },
  ownerKey: string,
  shared: (key: string, matcher: EntityMatcher, describe: string) => void,
): RuleProgram[] {
  const out: RuleProgram[] = [];
  const groupPos = new Map<number, number>();
  rules.forEach((r, pos) => {
    const inGroup = groupPos.get(r.index) ?? 0;
    groupPos.set(r.index, inGroup + 1);
    const where = `${prov.tier ?? 'profile'}/${prov.policy ?? prov.profile ?? ''}/rule ${r.index}`;
    if (r.http) {
      // The kernel cannot see HTTP: an Allow hands on to the L7 point when there is one; without
      // one, and for every other action, the rule does not match here (DESIGN §4 item 7).
      if (r.action !== 'Allow' || !ctx.ep.l7) return;
    }
    // A service match beside a selector (the loader refuses it, as Calico's validator does)
    // cannot be expressed with one address set per side: left out, or a Deny without it.
    if ((r.src.service && r.src.selector) || (r.dst.service && r.dst.selector)) {
      ctx.notes.push({
        endpoint: ctx.ep.id,
        message: `${where}: a service match beside a selector is not enforced in the kernel; ${r.action === 'Deny' ? 'the rule denies without the service restriction' : 'the rule never matches'} (fail closed)`,
      });
      if (r.action !== 'Deny') return;
    }
    const raw = rawSides(ctx, ownerKey, dir, r, inGroup);
    const side = (ce: CompiledEntity, rs: RawSide, which: 'src' | 'dst'): SideProgram => {
      const positional = JSON.stringify(['pos', ownerKey, dir, pos, which]);
      const s: {
        -readonly [K in keyof SideProgram]: SideProgram[K];
      } = {};
      if (ce.selector) {
        const key = rs.selectorKey ?? positional;
        shared(key, ce.selector, rs.describe || where);
        s.selectorSet = setName('s_', key);
      }
      if (ce.notSelector) {
        const key = rs.notSelectorKey ?? `${positional}!`;
        const m = ce.notSelector;
        shared(key, m, `not ${where}`);
        s.notSelectorSet = setName('s_', key);
      }
      const netsKey = (list: NonNullable<CompiledEntity['nets']>) =>
        JSON.stringify(['nets', [...list.map(cidrText)].sort()]);
      if (ce.nets) {
        const k = netsKey(ce.nets);
        ctx.nets.set(k, [ce.nets]);
        s.netsSet = setName('n_', k);
      }
      if (ce.notNets) {
        const k = netsKey(ce.notNets);
        ctx.nets.set(k, [ce.notNets]);
        s.notNetsSet = setName('n_', k);
      }
      // Kubernetes Service: its endpoints' addresses, and on the destination (without ports of
      // the rule's own) each endpoint with its ports — `address . protocol . port`, as the
      // engine's serviceMatch (core engine/services.ts).
      let servicePorts: string | undefined;
      if (ce.service && !ce.selector) {
        const key = JSON.stringify(['svc', ce.service.namespace, ce.service.name]);
        const withPorts = which === 'dst' && !ce.ports;
        const n = setName(withPorts ? 'q_' : 'v_', key);
        ctx.services.set(n, { ...ce.service, withPorts });
        if (withPorts) servicePorts = n;
        else s.selectorSet = n;
      }
      const split = (list: CompiledEntity['ports']) => {
        const ranges: PortRange[] = [];
        const named: string[] = [];
        for (const p of list ?? []) {
          if (p.kind === 'range') ranges.push({ from: p.from, to: p.to });
          else {
            named.push(setName('p_', p.name));
            ctx.namedPorts.add(p.name);
          }
        }
        return { ranges, named };
      };
      if (ce.ports) {
        const { ranges, named } = split(ce.ports);
        s.ports = ranges;
        s.namedPorts = named;
      }
      if (servicePorts !== undefined) s.namedPorts = [servicePorts];
      if (ce.notPorts) {
        const { ranges, named } = split(ce.notPorts);
        s.notPorts = ranges;
        s.notNamedPorts = named;
      }
      return s;
    };
    out.push({
      provenance: { ...prov, rule: r.index },
      action: r.action,
      ...(r.protocol !== undefined ? { protocol: r.protocol } : {}),
      ...(r.notProtocol !== undefined ? { notProtocol: r.notProtocol } : {}),
      ...(r.ipVersion !== undefined ? { ipVersion: r.ipVersion } : {}),
      ...(r.icmp ? { icmp: r.icmp } : {}),
      ...(r.notIcmp ? { notIcmp: r.notIcmp } : {}),
      src: side(r.src, raw.src, 'src'),
      dst: side(r.dst, raw.dst, 'dst'),
    });
  });
  return out;
}
