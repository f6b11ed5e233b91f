// The selector syntax tree: immutable nodes tagged by `kind`. Every consumer switches over `kind`
// exhaustively, so adding a node kind fails to compile until each consumer handles it.

/** Label lookup: plain record. Only own properties count as labels. */
export type Labels = Readonly<Record<string, string>>;

/** Matches every endpoint: `all()`, also what the empty selector parses to. */
export interface AllSelector {
  readonly kind: 'all';
}

/** Matches endpoints outside any namespace: `global()`. */
export interface GlobalSelector {
  readonly kind: 'global';
}

/** `has(key)`. */
export interface HasSelector {
  readonly kind: 'has';
  readonly key: string;
}

/** `key == "value"`, `key != "value"`, `key contains "s"`, `key starts with "s"`, `key ends with "s"`. */
export interface CompareSelector {
  readonly kind: 'eq' | 'neq' | 'contains' | 'startsWith' | 'endsWith';
  readonly key: string;
  readonly value: string;
}

/** `key in {...}`, `key not in {...}`. `values` is sorted and free of duplicates. */
export interface SetSelector {
  readonly kind: 'in' | 'notIn';
  readonly key: string;
  readonly values: readonly string[];
}

/** `!operand`. */
export interface NotSelector {
  readonly kind: 'not';
  readonly operand: Selector;
}

/**
 * `a && b && ...` or `a || b || ...`. The parser flattens: an `and` node never has an `and`
 * operand directly, an `or` node never an `or` operand.
 */
export interface BoolSelector {
  readonly kind: 'and' | 'or';
  readonly operands: readonly [Selector, Selector, ...Selector[]];
}

/** A parsed selector: an immutable, `kind`-tagged syntax tree. */
export type Selector =
  | AllSelector
  | GlobalSelector
  | HasSelector
  | CompareSelector
  | SetSelector
  | NotSelector
  | BoolSelector;

export type SelectorKind = Selector['kind'];

export interface SelectorError {
  readonly message: string;
  /** 0-based offset into the selector text. */
  readonly position: number;
}

export type ParseSelectorResult =
  | { readonly ok: true; readonly selector: Selector }
  | { readonly ok: false; readonly error: SelectorError };

/** The label Calico sets on endpoints that live in a namespace; `global()` requires its absence. */
export const NAMESPACE_LABEL = 'projectcalico.org/namespace';

/** Longest selector text accepted, in UTF-16 code units. */
export const MAX_SELECTOR_LENGTH = 4096;

/** Deepest nesting of parentheses and `!` accepted. */
export const MAX_SELECTOR_DEPTH = 128;

/** Reads a label, ignoring inherited properties such as `constructor`. */
export function labelValue(labels: Labels, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}

/** True for the match-everything selector (`all()`, or the empty selector). */
export function isAllSelector(s: Selector): boolean {
  return s.kind === 'all';
}
