// What an enforcement point saw once: one judged connection attempt (kernel) or one judged request
// (L7), with the provenance of its verdict. The aggregator folds observations into flow records.
// Owns: that shape and the wire shape of the records the node ships (the server's
// controlplane/src/flows/flow-record.ts validates it; flows/wire.test.ts keeps the two in step).

export type FlowPoint = 'kernel' | 'l7';
export type FlowVerdict = 'allow' | 'deny';

export interface ObservedProvenance {
  readonly kind: string;
  readonly tier?: string;
  readonly policy?: string;
  readonly rule?: number;
  readonly profile?: string;
  readonly reason?: string;
}

export interface StagedObservation {
  readonly policy: string;
  readonly tier?: string;
  readonly verdict: 'allow' | 'deny' | 'pass' | 'no-match';
  readonly rule?: number;
}

export interface FlowObservation {
  readonly timeMs: number;
  readonly point: FlowPoint;
  readonly direction?: 'ingress' | 'egress';
  readonly srcIp: string;
  readonly srcPort?: number;
  readonly dstIp: string;
  readonly dstPort?: number;
  /** TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number. */
  readonly protocol: string;
  readonly method?: string;
  readonly path?: string;
  readonly verdict: FlowVerdict;
  readonly provenance: ObservedProvenance;
  /** The peer certificate's SPIFFE ID at L7. */
  readonly srcIdentity?: string;
  readonly staged?: readonly StagedObservation[];
  readonly packets: number;
  readonly bytes: number;
}

export interface WireEndpoint {
  readonly ip: string;
  readonly port?: number;
  readonly namespace?: string;
  readonly name?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly identity?: string;
}

export interface WireFlowRecord {
  readonly start: string;
  readonly end: string;
  readonly source: WireEndpoint;
  readonly destination: WireEndpoint;
  readonly protocol: string;
  readonly method?: string;
  readonly path?: string;
  readonly verdict: FlowVerdict;
  readonly point: FlowPoint;
  readonly direction?: 'ingress' | 'egress';
  readonly provenance: ObservedProvenance;
  readonly staged?: readonly StagedObservation[];
  readonly packets: number;
  readonly bytes: number;
  readonly count: number;
}

export type ShedReason = 'buffer-full' | 'rate-limit' | 'send-failed' | 'kernel-untraced' | 'parse';

export interface WireShed {
  readonly reason: ShedReason;
  readonly count: number;
  readonly point: FlowPoint;
}

export interface WireBatch {
  readonly records: readonly WireFlowRecord[];
  readonly shed?: readonly WireShed[];
}
