// Host endpoint policy beyond traffic to and from the host's own processes, with Calico's
// semantics (docs.tigera.io, "Host endpoints": "Apply on forwarded traffic", "Pre-DNAT policy",
// "Summary of host endpoint policies"):
// - applyOnForward: true — the policy also applies to traffic forwarded through the host endpoint
//   (in via it to a local workload or another interface; out via it from a workload or another
//   interface). Forwarded traffic is allowed when no applyOnForward policy selects the endpoint for
//   that direction; when some do, the tiers' default deny applies. Profiles do not apply.
// - preDNAT: true — ingress only, before DNAT, for everything arriving through the host endpoint
//   (also to local workloads). A packet it allows skips the normal host endpoint policy; one it
//   neither allows nor denies goes on to normal policy (no default deny).
// - doNotTrack: true — untracked, before connection tracking, both directions, for traffic to and
//   from the host and forwarded. A packet it allows is not tracked and skips pre-DNAT and normal
//   host endpoint policy; one it neither allows nor denies goes on (no default deny).
// - Normal host endpoint policy never contains preDNAT or doNotTrack policies, and those two
//   never apply to workload endpoints. All-interfaces host endpoints (`interfaceName: '*'`) have
//   no untracked stage (HostEndpoint resource: "do not support untracked policy").
// The engine models the same stages (core `engine/host-stages.ts`); the differential test
// `host-stages-differential.test.ts` holds the two to each other with real traffic.
// Each mode is its own Calculation (its own engine) fed the same endpoints, namespaces, network
// sets and tiers but only the policies of the mode, so selector semantics, ordering and sets stay
// the engine's; set names are derived from their meaning, so equal sets of two modes coincide.
// Owns: the split of policies by mode. Must never: change what a policy means within a mode.

import type { Resource } from '@palisade/core';
import { Calculation } from './calculation.js';
import type { CalculationOptions } from './calculation.js';
import type {
  DesiredState,
  DirectionProgram,
  EndpointProgram,
  LocalEndpoint,
  NamedSet,
} from './types.js';

export type HostMode = 'normal' | 'forward' | 'preDNAT' | 'untracked';

const CALICO_POLICY_KINDS = new Set<string>([
  'NetworkPolicy',
  'StagedKubernetesNetworkPolicy',
  'GlobalNetworkPolicy',
  'StagedNetworkPolicy',
  'StagedGlobalNetworkPolicy',
]);

interface Flags {
  readonly applyOnForward: boolean;
  readonly preDNAT: boolean;
  readonly doNotTrack: boolean;
}

const NO_FLAGS: Flags = { applyOnForward: false, preDNAT: false, doNotTrack: false };

function flagsOf(r: Resource): Flags | undefined {
  // Kubernetes policies select pods only: normal mode.
  if (r.kind === 'StagedKubernetesNetworkPolicy') return NO_FLAGS;
  if (!CALICO_POLICY_KINDS.has(r.kind)) return undefined;
  if (!r.apiVersion.startsWith('projectcalico.org/')) return NO_FLAGS;
  const s = (r as { spec?: Partial<Record<keyof Flags, unknown>> }).spec ?? {};
  return {
    applyOnForward: s.applyOnForward === true,
    preDNAT: s.preDNAT === true,
    doNotTrack: s.doNotTrack === true,
  };
}

/** The policy's mode set: which calculations it belongs to. */
export function policyModes(r: Resource): ReadonlySet<HostMode> | undefined {
  const f = flagsOf(r);
  if (!f) return undefined;
  if (f.doNotTrack) return new Set(['untracked']);
  if (f.preDNAT) return new Set(['preDNAT']);
  if (f.applyOnForward) return new Set(['normal', 'forward']);
  return new Set(['normal']);
}

/** A copy the mode's engine evaluates as a plain policy (the engine hides preDNAT from hosts). */
function asPlain(r: Resource): Resource {
  const spec = { ...(r as unknown as { spec: Record<string, unknown> }).spec };
  delete spec['preDNAT'];
  delete spec['doNotTrack'];
  return { ...r, spec } as Resource;
}

export interface HostModePrograms {
  readonly forward: readonly EndpointProgram[];
  readonly preDNAT: readonly EndpointProgram[];
  readonly untracked: readonly EndpointProgram[];
  readonly sets: readonly NamedSet[];
}

const EMPTY_DIRECTION: DirectionProgram = { tiers: [], profiles: [], fallback: 'continue' };

/**
 * The calculations of the three extra modes. `upsert`/`remove` every resource here as well as
 * into the normal calculation (which must see only `acceptsNormal` policies).
 */
export class HostModes {
  private readonly calcs: Record<Exclude<HostMode, 'normal'>, Calculation>;
  private readonly modes = new Map<string, ReadonlySet<HostMode>>();
  private hostLocals: LocalEndpoint[] = [];

  constructor(options: CalculationOptions = {}) {
    this.calcs = {
      forward: new Calculation(options),
      preDNAT: new Calculation(options),
      untracked: new Calculation(options),
    };
  }

  /** Whether the normal calculation should receive this resource. */
  static acceptsNormal(r: Resource): boolean {
    return policyModes(r)?.has('normal') ?? true;
  }

  upsert(r: Resource): void {
    const modes = policyModes(r);
    const key = `${r.apiVersion}/${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
    if (!modes) {
      for (const c of Object.values(this.calcs)) c.upsert(r);
      return;
    }
    const before = this.modes.get(key);
    this.modes.set(key, modes);
    for (const [m, c] of Object.entries(this.calcs) as [
      Exclude<HostMode, 'normal'>,
      Calculation,
    ][]) {
      if (modes.has(m)) c.upsert(asPlain(r));
      else if (before?.has(m))
        c.remove(r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion);
    }
  }

  remove(kind: Resource['kind'], namespace: string | undefined, name: string, apiVersion: string) {
    const key = `${apiVersion}/${kind}/${namespace ?? ''}/${name}`;
    const before = this.modes.get(key);
    this.modes.delete(key);
    for (const [m, c] of Object.entries(this.calcs) as [Exclude<HostMode, 'normal'>, Calculation][])
      if (!CALICO_POLICY_KINDS.has(kind) || before === undefined || before.has(m))
        c.remove(kind, namespace, name, apiVersion);
  }

  /** Only host endpoints have these modes. */
  setLocalHostEndpoints(list: readonly LocalEndpoint[]): void {
    this.hostLocals = [...list];
    for (const c of Object.values(this.calcs)) c.setLocalEndpoints(this.hostLocals);
  }

  desired(): HostModePrograms {
    if (this.hostLocals.length === 0) return { forward: [], preDNAT: [], untracked: [], sets: [] };
    const sets = new Map<string, NamedSet>();
    const take = (c: Calculation, shape: (p: EndpointProgram) => EndpointProgram) => {
      const d = c.desired();
      for (const s of d.sets) sets.set(s.name, s);
      return d.endpoints.filter((e) => e.kind === 'host').map(shape);
    };
    // Forwarded: no profiles; allowed when no policy of the direction selects the endpoint.
    const fwd = (d: DirectionProgram): DirectionProgram => ({
      tiers: d.tiers,
      profiles: [],
      fallback: 'accept',
    });
    // Pre-DNAT and untracked: no default deny, no profiles; unmatched traffic goes on.
    const early = (d: DirectionProgram): DirectionProgram => ({
      tiers: d.tiers.map((t) => ({ ...t, defaultAction: 'Pass' as const })),
      profiles: [],
      fallback: 'continue',
    });
    const forward = take(this.calcs.forward, (p) => ({
      ...p,
      ingress: fwd(p.ingress),
      egress: fwd(p.egress),
    }));
    const preDNAT = take(this.calcs.preDNAT, (p) => ({
      ...p,
      ingress: early(p.ingress),
      egress: EMPTY_DIRECTION,
    }));
    // Calico: all-interfaces host endpoints do not support untracked policy (ignored there).
    const untracked = take(this.calcs.untracked, (p) => ({
      ...p,
      ingress: early(p.ingress),
      egress: early(p.egress),
    })).filter((p) => p.iface !== '*');
    return {
      forward,
      preDNAT,
      untracked,
      sets: [...sets.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    };
  }
}

/** The normal desired state with the host endpoint stages added (sets merged by name). */
export function withHostModes(normal: DesiredState, host: HostModePrograms): DesiredState {
  if (host.forward.length + host.preDNAT.length + host.untracked.length === 0) return normal;
  const sets = new Map(normal.sets.map((x) => [x.name, x]));
  for (const x of host.sets) if (!sets.has(x.name)) sets.set(x.name, x);
  return {
    ...normal,
    sets: [...sets.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    hostForward: host.forward,
    hostPreDnat: host.preDNAT,
    hostUntracked: host.untracked,
  };
}
