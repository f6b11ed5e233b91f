// Calico's selector language: tokenizer, parser, canonical printer and evaluator.
// Owns: the syntax and meaning of selectors. Must never: throw on user input (parse errors are
// returned with their position) or do I/O.

export type Labels = Readonly<Record<string, string>>;

/** An immutable, `kind`-tagged syntax tree. */
export type Selector =
  | { readonly kind: 'all' }
  | { readonly kind: 'global' }
  | { readonly kind: 'has'; readonly key: string }
  | { readonly kind: 'eq'; readonly key: string; readonly value: string }
  | { readonly kind: 'ne'; readonly key: string; readonly value: string }
  | { readonly kind: 'in'; readonly key: string; readonly values: readonly string[] }
  | { readonly kind: 'notin'; readonly key: string; readonly values: readonly string[] }
  | { readonly kind: 'contains'; readonly key: string; readonly value: string }
  | { readonly kind: 'startswith'; readonly key: string; readonly value: string }
  | { readonly kind: 'endswith'; readonly key: string; readonly value: string }
  | { readonly kind: 'not'; readonly operand: Selector }
  | { readonly kind: 'and'; readonly operands: readonly Selector[] }
  | { readonly kind: 'or'; readonly operands: readonly Selector[] };

export interface SelectorError {
  readonly message: string;
  /** 0-based offset into the selector text. */
  readonly position: number;
}

export type ParseSelectorResult =
  | { readonly ok: true; readonly selector: Selector }
  | { readonly ok: false; readonly error: SelectorError };

/** Longest selector accepted, in characters. */
export const MAX_SELECTOR_LENGTH = 4096;
/** Deepest nesting of parentheses and `!` accepted. */
export const MAX_SELECTOR_DEPTH = 128;

/** The label used by `global()`: present on every namespaced entity. */
export const NAMESPACE_LABEL = 'projectcalico.org/namespace';

// ------------------------------------------------------------------ tokens

type Token =
  | { t: 'ident'; v: string; pos: number }
  | { t: 'string'; v: string; pos: number }
  | { t: 'op'; v: string; pos: number }
  | { t: 'eof'; pos: number };

const KEY_CHAR = /[A-Za-z0-9_./-]/;

/** Internal: unwinds the recursive-descent parser; never escapes parseSelector. */
class ParseError extends Error {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(message);
  }
}

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] ?? '';
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    const two = text.slice(i, i + 2);
    if (two === '==' || two === '!=' || two === '&&' || two === '||') {
      out.push({ t: 'op', v: two, pos: i });
      i += 2;
      continue;
    }
    if ('!(){},'.includes(c)) {
      out.push({ t: 'op', v: c, pos: i });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1);
      if (end < 0) throw new ParseError(`unterminated string starting at ${i}`, i);
      out.push({ t: 'string', v: text.slice(i + 1, end), pos: i });
      i = end + 1;
      continue;
    }
    if (KEY_CHAR.test(c)) {
      const start = i;
      while (i < text.length && KEY_CHAR.test(text[i] ?? '')) i++;
      out.push({ t: 'ident', v: text.slice(start, i), pos: start });
      continue;
    }
    throw new ParseError(`unexpected character ${JSON.stringify(c)} at ${i}`, i);
  }
  out.push({ t: 'eof', pos: text.length });
  return out;
}

// ------------------------------------------------------------------ label keys

const NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Calico (Kubernetes) label key syntax: optional DNS-subdomain prefix, `/`, then a name. */
export function validLabelKey(key: string): string | undefined {
  const slash = key.indexOf('/');
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    if (prefix.length === 0 || prefix.length > 253)
      return 'the prefix before "/" must be 1-253 characters';
    if (!prefix.split('.').every((l) => DNS_LABEL.test(l)))
      return 'the prefix before "/" must be a lower-case DNS subdomain';
  }
  if (!NAME.test(name))
    return 'the name must be 1-63 characters of letters, digits, "-", "_" and ".", starting and ending with a letter or digit';
  return undefined;
}

// ------------------------------------------------------------------ parser

class Parser {
  private i = 0;
  private depth = 0;
  constructor(private readonly toks: Token[]) {}

  private peek(): Token {
    return this.toks[this.i] ?? { t: 'eof', pos: 0 };
  }
  private next(): Token {
    const t = this.peek();
    this.i++;
    return t;
  }
  private isOp(v: string): boolean {
    const t = this.peek();
    return t.t === 'op' && t.v === v;
  }
  private expectOp(v: string, what: string): void {
    const t = this.peek();
    if (t.t === 'op' && t.v === v) {
      this.i++;
      return;
    }
    throw new ParseError(`expected ${what} at ${t.pos}, found ${describe(t)}`, t.pos);
  }

  parseTop(): Selector {
    if (this.peek().t === 'eof') return { kind: 'all' };
    const s = this.parseOr();
    const t = this.peek();
    if (t.t !== 'eof') throw new ParseError(`unexpected ${describe(t)} at ${t.pos}`, t.pos);
    return s;
  }

  private enter(pos: number): void {
    if (++this.depth > MAX_SELECTOR_DEPTH)
      throw new ParseError(`selector nests deeper than ${MAX_SELECTOR_DEPTH} levels`, pos);
  }

  private parseOr(): Selector {
    const first = this.parseAnd();
    if (!this.isOp('||')) return first;
    const ops: Selector[] = [first];
    while (this.isOp('||')) {
      this.next();
      ops.push(this.parseAnd());
    }
    return { kind: 'or', operands: ops.flatMap((o) => (o.kind === 'or' ? o.operands : [o])) };
  }

  private parseAnd(): Selector {
    const first = this.parseUnary();
    if (!this.isOp('&&')) return first;
    const ops: Selector[] = [first];
    while (this.isOp('&&')) {
      this.next();
      ops.push(this.parseUnary());
    }
    return { kind: 'and', operands: ops.flatMap((o) => (o.kind === 'and' ? o.operands : [o])) };
  }

  private parseUnary(): Selector {
    const t = this.peek();
    if (t.t === 'op' && t.v === '!') {
      this.next();
      this.enter(t.pos);
      const operand = this.parseUnary();
      this.depth--;
      return { kind: 'not', operand };
    }
    if (t.t === 'op' && t.v === '(') {
      this.next();
      this.enter(t.pos);
      const inner = this.parseOr();
      this.depth--;
      this.expectOp(')', '")"');
      return inner;
    }
    if (t.t !== 'ident')
      throw new ParseError(
        `expected a label key, has(), all() or global() at ${t.pos}, found ${describe(t)}`,
        t.pos,
      );
    this.next();
    if (this.isOp('(')) {
      if (t.v === 'all' || t.v === 'global') {
        this.next();
        this.expectOp(')', '")" after ' + t.v + '(');
        return { kind: t.v === 'all' ? 'all' : 'global' };
      }
      if (t.v === 'has') {
        this.next();
        const k = this.next();
        if (k.t !== 'ident')
          throw new ParseError(`expected a label key in has() at ${k.pos}`, k.pos);
        this.checkKey(k.v, k.pos);
        this.expectOp(')', '")" after has(key');
        return { kind: 'has', key: k.v };
      }
      throw new ParseError(`unknown function ${t.v}() at ${t.pos} (use has, all or global)`, t.pos);
    }
    this.checkKey(t.v, t.pos);
    return this.parseComparison(t.v, t.pos);
  }

  private checkKey(key: string, pos: number): void {
    const problem = validLabelKey(key);
    if (problem)
      throw new ParseError(`invalid label key ${JSON.stringify(key)} at ${pos}: ${problem}`, pos);
  }

  private value(after: string): string {
    const v = this.next();
    if (v.t !== 'string')
      throw new ParseError(
        `expected a quoted value after ${after} at ${v.pos}, found ${describe(v)}`,
        v.pos,
      );
    return v.v;
  }

  private parseComparison(key: string, keyPos: number): Selector {
    const t = this.next();
    if (t.t === 'op' && t.v === '==') return { kind: 'eq', key, value: this.value("'=='") };
    if (t.t === 'op' && t.v === '!=') return { kind: 'ne', key, value: this.value("'!='") };
    if (t.t === 'ident') {
      switch (t.v) {
        case 'in':
          return { kind: 'in', key, values: this.set() };
        case 'not': {
          const n = this.next();
          if (n.t !== 'ident' || n.v !== 'in')
            throw new ParseError(`expected "in" after "not" at ${n.pos}`, n.pos);
          return { kind: 'notin', key, values: this.set() };
        }
        case 'contains':
          return { kind: 'contains', key, value: this.value("'contains'") };
        case 'starts':
        case 'ends': {
          const w = this.next();
          if (w.t !== 'ident' || w.v !== 'with')
            throw new ParseError(`expected "with" after "${t.v}" at ${w.pos}`, w.pos);
          const value = this.value(`'${t.v} with'`);
          return t.v === 'starts'
            ? { kind: 'startswith', key, value }
            : { kind: 'endswith', key, value };
        }
      }
    }
    throw new ParseError(
      `expected an operator (==, !=, in, not in, contains, starts with, ends with) after label ${JSON.stringify(key)} at ${t.pos}, found ${describe(t)}`,
      t.t === 'eof' ? keyPos + key.length : t.pos,
    );
  }

  private set(): string[] {
    this.expectOp('{', '"{"');
    const values: string[] = [];
    if (this.isOp('}')) {
      this.next();
      return values;
    }
    for (;;) {
      values.push(this.value('"{" or ","'));
      if (this.isOp(',')) {
        this.next();
        continue;
      }
      this.expectOp('}', '"," or "}"');
      return values;
    }
  }
}

function describe(t: Token): string {
  switch (t.t) {
    case 'eof':
      return 'the end of the selector';
    case 'string':
      return `string ${JSON.stringify(t.v)}`;
    case 'op':
      return `"${t.v}"`;
    case 'ident':
      return `"${t.v}"`;
  }
}

export function parseSelector(text: string): ParseSelectorResult {
  if (text.length > MAX_SELECTOR_LENGTH) {
    return {
      ok: false,
      error: {
        message: `selector is ${text.length} characters long; the limit is ${MAX_SELECTOR_LENGTH}`,
        position: MAX_SELECTOR_LENGTH,
      },
    };
  }
  try {
    return { ok: true, selector: new Parser(tokenize(text)).parseTop() };
  } catch (e) {
    if (e instanceof ParseError)
      return { ok: false, error: { message: e.message, position: e.position } };
    throw e;
  }
}

// ------------------------------------------------------------------ printer

function quote(v: string): string {
  return v.includes("'") ? `"${v}"` : `'${v}'`;
}

function printOperand(s: Selector, parent: 'and' | 'or'): string {
  const p = printSelector(s);
  return s.kind === 'or' || (s.kind === 'and' && parent === 'and') ? `(${p})` : p;
}

/**
 * The canonical form: single quotes (double where the value holds one), one space around binary
 * operators, parentheses only where precedence needs them. `parse(print(x))` equals `x`.
 */
export function printSelector(s: Selector): string {
  switch (s.kind) {
    case 'all':
      return 'all()';
    case 'global':
      return 'global()';
    case 'has':
      return `has(${s.key})`;
    case 'eq':
      return `${s.key} == ${quote(s.value)}`;
    case 'ne':
      return `${s.key} != ${quote(s.value)}`;
    case 'in':
      return `${s.key} in {${s.values.map(quote).join(', ')}}`;
    case 'notin':
      return `${s.key} not in {${s.values.map(quote).join(', ')}}`;
    case 'contains':
      return `${s.key} contains ${quote(s.value)}`;
    case 'startswith':
      return `${s.key} starts with ${quote(s.value)}`;
    case 'endswith':
      return `${s.key} ends with ${quote(s.value)}`;
    case 'not': {
      const o = s.operand;
      if (o.kind === 'has') return `!has(${o.key})`;
      return o.kind === 'and' || o.kind === 'or' || isBinary(o)
        ? `!(${printSelector(o)})`
        : `!${printSelector(o)}`;
    }
    case 'and':
      return s.operands.map((o) => printOperand(o, 'and')).join(' && ');
    case 'or':
      return s.operands.map((o) => printOperand(o, 'or')).join(' || ');
  }
}

function isBinary(s: Selector): boolean {
  return (
    s.kind === 'eq' ||
    s.kind === 'ne' ||
    s.kind === 'in' ||
    s.kind === 'notin' ||
    s.kind === 'contains' ||
    s.kind === 'startswith' ||
    s.kind === 'endswith'
  );
}

// ------------------------------------------------------------------ evaluation

export function matchSelector(s: Selector, labels: Labels): boolean {
  switch (s.kind) {
    case 'all':
      return true;
    case 'global':
      return labels[NAMESPACE_LABEL] === undefined;
    case 'has':
      return labels[s.key] !== undefined;
    case 'eq':
      return labels[s.key] === s.value;
    case 'ne':
      return labels[s.key] !== s.value;
    case 'in': {
      const v = labels[s.key];
      return v !== undefined && s.values.includes(v);
    }
    case 'notin': {
      const v = labels[s.key];
      return v === undefined || !s.values.includes(v);
    }
    case 'contains': {
      const v = labels[s.key];
      return v !== undefined && v.includes(s.value);
    }
    case 'startswith': {
      const v = labels[s.key];
      return v !== undefined && v.startsWith(s.value);
    }
    case 'endswith': {
      const v = labels[s.key];
      return v !== undefined && v.endsWith(s.value);
    }
    case 'not':
      return !matchSelector(s.operand, labels);
    case 'and':
      return s.operands.every((o) => matchSelector(o, labels));
    case 'or':
      return s.operands.some((o) => matchSelector(o, labels));
  }
}

/** Compiles a selector to a closure: the hot path of policy evaluation. */
export function compileSelector(s: Selector): (labels: Labels) => boolean {
  switch (s.kind) {
    case 'all':
      return () => true;
    case 'global':
      return (l) => l[NAMESPACE_LABEL] === undefined;
    case 'has': {
      const k = s.key;
      return (l) => l[k] !== undefined;
    }
    case 'eq': {
      const { key, value } = s;
      return (l) => l[key] === value;
    }
    case 'ne': {
      const { key, value } = s;
      return (l) => l[key] !== value;
    }
    case 'in':
    case 'notin': {
      const key = s.key;
      const set = new Set(s.values);
      return s.kind === 'in'
        ? (l) => {
            const v = l[key];
            return v !== undefined && set.has(v);
          }
        : (l) => {
            const v = l[key];
            return v === undefined || !set.has(v);
          };
    }
    case 'contains':
    case 'startswith':
    case 'endswith': {
      const { key, value } = s;
      const kind = s.kind;
      return (l) => {
        const v = l[key];
        if (v === undefined) return false;
        return kind === 'contains'
          ? v.includes(value)
          : kind === 'startswith'
            ? v.startsWith(value)
            : v.endsWith(value);
      };
    }
    case 'not': {
      const f = compileSelector(s.operand);
      return (l) => !f(l);
    }
    case 'and': {
      const fs = s.operands.map(compileSelector);
      if (fs.length === 2) {
        const [a, b] = fs as [(l: Labels) => boolean, (l: Labels) => boolean];
        return (l) => a(l) && b(l);
      }
      return (l) => fs.every((f) => f(l));
    }
    case 'or': {
      const fs = s.operands.map(compileSelector);
      return (l) => fs.some((f) => f(l));
    }
  }
}

/** True when the selector matches every label set. */
export function isAllSelector(s: Selector): boolean {
  return s.kind === 'all';
}
