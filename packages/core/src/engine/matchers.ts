// Small compiled matchers shared by the Calico, Kubernetes and Istio compilers: selectors (with
// Calico's label-prefix conventions), Kubernetes label selectors, protocols and ports.
// Owns: turning text and YAML shapes into predicates. Must never: evaluate whole policies.

import { compileSelector, isAllSelector, parseSelector } from '../selector/selector.js';
import type { K8sLabelSelector, PortSpec, ProtocolSpec } from '../model/resources.js';

export type Labels = Readonly<Record<string, string>>;
export type LabelMatcher = (labels: Labels) => boolean;

export interface SelectorCompileError {
  readonly text: string;
  readonly message: string;
}

/**
 * Compiles a Calico selector. An invalid selector (the loader reports those first) compiles to
 * a matcher that matches nothing: enforcement fails closed.
 */
export function compileCalicoSelector(
  text: string,
  onError?: (e: SelectorCompileError) => void,
): LabelMatcher {
  const c = parsedSelector(text);
  if (!c.r.ok) {
    onError?.({ text, message: c.r.error.message });
    return NOTHING;
  }
  c.m ??= compileSelector(c.r.selector);
  return c.m;
}

const NOTHING: LabelMatcher = () => false;

/**
 * Parses and compiled matchers by selector text. Policies repeat the same selectors (thousands of
 * `app == 'x'`), and both the tree and the compiled closure are immutable and depend only on the
 * text, so one copy serves them all. Bounded: it starts over when full.
 */
const selectorCache = new Map<
  string,
  { readonly r: ReturnType<typeof parseSelector>; m: LabelMatcher | undefined }
>();

function parsedSelector(text: string): {
  readonly r: ReturnType<typeof parseSelector>;
  m: LabelMatcher | undefined;
} {
  let c = selectorCache.get(text);
  if (!c) {
    if (selectorCache.size >= 50_000) selectorCache.clear();
    c = { r: parseSelector(text), m: undefined };
    selectorCache.set(text, c);
  }
  return c;
}

/** The parsed selector (shared; never mutate), as `parseSelector` returns it. */
export function parseSelectorCached(text: string): ReturnType<typeof parseSelector> {
  return parsedSelector(text).r;
}

/** True when the text is `all()` (or empty), so callers can take fast paths. */
export function selectorIsAll(text: string | undefined): boolean {
  if (text === undefined || text.trim() === '') return true;
  const r = parsedSelector(text).r;
  return r.ok && isAllSelector(r.selector);
}

/** A Kubernetes metav1.LabelSelector; `{}` matches everything. */
export function compileK8sSelector(s: K8sLabelSelector): LabelMatcher {
  const checks: LabelMatcher[] = [];
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) checks.push((l) => l[k] === v);
  for (const e of s.matchExpressions ?? []) {
    const values = new Set(e.values ?? []);
    const k = e.key;
    switch (e.operator) {
      case 'In':
        checks.push((l) => l[k] !== undefined && values.has(l[k]));
        break;
      case 'NotIn':
        checks.push((l) => l[k] === undefined || !values.has(l[k]));
        break;
      case 'Exists':
        checks.push((l) => l[k] !== undefined);
        break;
      case 'DoesNotExist':
        checks.push((l) => l[k] === undefined);
        break;
    }
  }
  if (checks.length === 0) return () => true;
  if (checks.length === 1) return checks[0] ?? (() => true);
  return (l) => allOf(checks, l);
}

/** An Istio workload selector (`matchLabels` only); absent matches every workload in scope. */
export function compileMatchLabels(m: Readonly<Record<string, string>> | undefined): LabelMatcher {
  const entries = Object.entries(m ?? {});
  if (entries.length === 0) return () => true;
  return (l) => {
    for (const [k, v] of entries) if (l[k] !== v) return false;
    return true;
  };
}

const PROTOCOL_NUMBERS: Readonly<Record<string, number>> = {
  tcp: 6,
  udp: 17,
  icmp: 1,
  icmpv6: 58,
  sctp: 132,
  udplite: 136,
};

const PROTOCOL_NAMES: Readonly<Record<number, string>> = {
  6: 'TCP',
  17: 'UDP',
  1: 'ICMP',
  58: 'ICMPv6',
  132: 'SCTP',
  136: 'UDPLite',
};

/** A protocol name (any case) or number to its IANA number; undefined when unknown. */
export function protocolNumber(p: ProtocolSpec | undefined): number | undefined {
  if (p === undefined) return undefined;
  if (typeof p === 'number') return Number.isInteger(p) && p >= 0 && p <= 255 ? p : undefined;
  // The spellings almost every port carries, without a regular expression or a new string.
  if (p === 'TCP') return 6;
  if (p === 'UDP') return 17;
  if (/^\d+$/.test(p)) return protocolNumber(Number(p));
  const lower = p.toLowerCase();
  // Own keys only: `constructor` or `__proto__` is no protocol.
  return Object.hasOwn(PROTOCOL_NUMBERS, lower) ? PROTOCOL_NUMBERS[lower] : undefined;
}

export function protocolName(n: number): string {
  return PROTOCOL_NAMES[n] ?? String(n);
}

/** Protocols that carry ports. */
export function hasPorts(proto: number): boolean {
  return proto === 6 || proto === 17 || proto === 132 || proto === 136;
}

export type PortMatch =
  | { readonly kind: 'range'; readonly from: number; readonly to: number }
  | { readonly kind: 'named'; readonly name: string };

export function compilePort(p: PortSpec): PortMatch {
  if (typeof p === 'number') return { kind: 'range', from: p, to: p };
  const m = /^(\d+)(?::(\d+))?$/.exec(p);
  if (m) {
    const from = Number(m[1]);
    return { kind: 'range', from, to: m[2] === undefined ? from : Number(m[2]) };
  }
  return { kind: 'named', name: p };
}

/** `preds.every(p => p(x))` without allocating a closure per call: this sits on hot paths. */
export function allOf<T>(preds: readonly ((x: T) => boolean)[], x: T): boolean {
  for (let i = 0; i < preds.length; i++) if (!(preds[i] as (x: T) => boolean)(x)) return false;
  return true;
}
