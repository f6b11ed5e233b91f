// PLACEHOLDER — the selector language is being written (parser, printer, evaluator, index).
// The exported signatures below are the contract other modules code against.

/** A parsed selector: an immutable, `kind`-tagged syntax tree. */
export type Selector = { readonly kind: 'all' };

export interface SelectorError {
  readonly message: string;
  /** 0-based offset into the selector text. */
  readonly position: number;
}

export type ParseSelectorResult =
  | { readonly ok: true; readonly selector: Selector }
  | { readonly ok: false; readonly error: SelectorError };

/** Label lookup: plain record. */
export type Labels = Readonly<Record<string, string>>;

export function parseSelector(_text: string): ParseSelectorResult {
  return { ok: true, selector: { kind: 'all' } };
}

export function printSelector(_s: Selector): string {
  return 'all()';
}

export function matchSelector(_s: Selector, _labels: Labels): boolean {
  return true;
}
