// The desired kernel state of one node, as data: what the calculation produces and the renderer
// consumes (STYLE 2). Owns: the shapes only. Must never: know about nftables syntax.

import type { Engine } from '@palisade/core';

// The engine's compiled forms, reached through its public methods (no deep imports).
export type ActiveTiers = NonNullable<ReturnType<Engine['activeTiers']>>;
export type ActiveTier = ActiveTiers['ingress'][number];
export type CompiledPolicy = ActiveTier['policies'][number];
export type CompiledRule = NonNullable<CompiledPolicy['ingress']>[number];
export type CompiledEntity = CompiledRule['src'];
export type EngineEndpoint = NonNullable<ReturnType<Engine['describeEndpoint']>>;
export type NetSetEntity = ReturnType<Engine['dataplaneInputs']>['networkSets'][number];
export type Entity = EngineEndpoint | NetSetEntity;
export type EntityMatcher = NonNullable<CompiledEntity['selector']>;
export type Cidr = NonNullable<CompiledEntity['nets']>[number];
export type IpAddr = EngineEndpoint['ips'][number];
export type PortMatch = NonNullable<CompiledEntity['ports']>[number];
export type ProfileRules = NonNullable<
  ReturnType<Engine['dataplaneInputs']>['profiles']
>['ingress'][number];

/** An endpoint this node enforces, and the host interface its traffic crosses. */
export interface LocalEndpoint {
  /** `namespace/name` of a workload, or a host endpoint's name. */
  readonly ref: string;
  /** The host side of the workload's veth, or the host endpoint's interface. */
  readonly iface: string;
}

export type Action = 'Allow' | 'Deny' | 'Pass' | 'Log';

/** Where a rule came from, for the nftables comment and for explaining a mismatch. */
export interface RuleProvenance {
  readonly tier?: string;
  readonly policy?: string;
  readonly profile?: string;
  /** 0-based index of the rule within its direction (as the engine reports it). */
  readonly rule: number;
}

export interface PortRange {
  readonly from: number;
  readonly to: number;
}

/** One side (source or destination) of a rule, every part a reference to a named set. */
export interface SideProgram {
  /** Address set of the entities the effective selector matches (with namespace scoping). */
  readonly selectorSet?: string;
  readonly notSelectorSet?: string;
  readonly netsSet?: string;
  readonly notNetsSet?: string;
  /** Numeric ports and ranges. */
  readonly ports?: readonly PortRange[];
  /** Named ports: keys of named-port sets (address . protocol . port of every endpoint). */
  readonly namedPorts?: readonly string[];
  readonly notPorts?: readonly PortRange[];
  readonly notNamedPorts?: readonly string[];
}

export interface RuleProgram {
  readonly provenance: RuleProvenance;
  readonly action: Action;
  readonly protocol?: number;
  readonly notProtocol?: number;
  readonly ipVersion?: 4 | 6;
  readonly icmp?: { readonly type?: number; readonly code?: number };
  readonly notIcmp?: { readonly type?: number; readonly code?: number };
  readonly src: SideProgram;
  readonly dst: SideProgram;
}

export interface TierProgram {
  readonly name: string;
  readonly defaultAction: 'Deny' | 'Pass';
  /** The rules of the tier's enforced policies that select the endpoint, in evaluation order. */
  readonly rules: readonly RuleProgram[];
  /** Names of the policies, in order (for readability and the doc). */
  readonly policies: readonly string[];
}

export interface ProfileProgram {
  readonly name: string;
  readonly rules: readonly RuleProgram[];
}

export interface DirectionProgram {
  readonly tiers: readonly TierProgram[];
  readonly profiles: readonly ProfileProgram[];
  /**
   * The verdict when tiers passed and there are no profiles; `continue` (pre-DNAT and untracked
   * host endpoint policy) goes on to the next stage of processing.
   */
  readonly fallback: 'accept' | 'drop' | 'continue';
}

export interface EndpointProgram {
  readonly ref: string;
  readonly kind: 'workload' | 'host';
  readonly iface: string;
  /** The endpoint's own addresses (anti-spoofing on egress), canonical text. */
  readonly ipv4: readonly string[];
  readonly ipv6: readonly string[];
  readonly ingress: DirectionProgram;
  readonly egress: DirectionProgram;
}

/** A named set of addresses/CIDRs (one kernel set per family). */
export interface AddressSet {
  readonly kind: 'address';
  readonly name: string;
  /** What it stands for, for the comment: the selector or the nets. */
  readonly describe: string;
  /** Canonical, sorted, non-overlapping CIDR text (`/32` and `/128` printed bare). */
  readonly v4: readonly string[];
  readonly v6: readonly string[];
}

/** A named port resolved on every endpoint that declares it: `address . protocol . port`. */
export interface NamedPortSet {
  readonly kind: 'named-port';
  readonly name: string;
  readonly describe: string;
  readonly v4: readonly string[];
  readonly v6: readonly string[];
}

export type NamedSet = AddressSet | NamedPortSet;

export interface DesiredState {
  /** Local endpoints, sorted by ref. */
  readonly endpoints: readonly EndpointProgram[];
  /** Every set the programs reference, sorted by name. */
  readonly sets: readonly NamedSet[];
  /** Local endpoints that could not be programmed (unknown to the engine): their traffic drops. */
  readonly unknown: readonly LocalEndpoint[];
  /**
   * Whether any endpoint or network set has an address of the family. A selector or named-port
   * set of an absent family is empty, so rules matching it positively are not rendered (this
   * halves the ruleset of a single-stack cluster). Absent: both families present.
   */
  readonly families?: { readonly v4: boolean; readonly v6: boolean };
  /**
   * Host endpoint programs of the other stages (see calc/host-modes.ts): forwarded traffic
   * (applyOnForward), pre-DNAT and untracked. Their sets are in `sets`. Absent: none.
   */
  readonly hostForward?: readonly EndpointProgram[];
  readonly hostPreDnat?: readonly EndpointProgram[];
  readonly hostUntracked?: readonly EndpointProgram[];
}
