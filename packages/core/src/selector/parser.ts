// Recursive-descent parser. Precedence, loosest first: `||`, `&&`, `!`; `!` negates the whole
// comparison after it (`!a == "x"` is `!(a == "x")`). Errors are returned, never thrown, and
// carry the 0-based offset of the offending token.

import {
  MAX_SELECTOR_DEPTH,
  MAX_SELECTOR_LENGTH,
  type ParseSelectorResult,
  type Selector,
  type SelectorError,
} from './ast.js';
import { labelKeyProblem } from './keys.js';
import { tokenize, type Token, type TokenKind } from './tokenizer.js';

const ALL: Selector = Object.freeze({ kind: 'all' });

/** Internal: unwinds the recursive descent; caught in parseSelector, never escapes it. */
class ParseFailure extends Error {
  constructor(readonly error: SelectorError) {
    super(error.message);
  }
}

const OPERATORS = '==, !=, in, not in, contains, starts with or ends with';

function describe(t: Token): string {
  switch (t.kind) {
    case 'eof':
      return 'the end of the selector';
    case 'string':
      return `the string ${JSON.stringify(t.text)}`;
    case 'word':
      return `'${t.text}'`;
    case 'lparen':
    case 'rparen':
    case 'lbrace':
    case 'rbrace':
    case 'comma':
    case 'and':
    case 'or':
    case 'not':
    case 'eq':
    case 'neq':
      return `'${t.text}'`;
  }
}

class Parser {
  private i = 0;
  private depth = 0;

  constructor(private readonly tokens: readonly Token[]) {}

  private peek(offset = 0): Token {
    const t = this.tokens[Math.min(this.i + offset, this.tokens.length - 1)];
    if (t === undefined) throw new Error('token stream without eof');
    return t;
  }

  private next(): Token {
    const t = this.peek();
    if (t.kind !== 'eof') this.i++;
    return t;
  }

  private fail(message: string, position: number): never {
    throw new ParseFailure({ message, position });
  }

  private expect(kind: TokenKind, what: string, context: string): Token {
    const t = this.peek();
    if (t.kind !== kind)
      this.fail(`expected ${what} ${context} but found ${describe(t)}`, t.position);
    return this.next();
  }

  private isWord(t: Token, text: string): boolean {
    return t.kind === 'word' && t.text === text;
  }

  parseSelector(): Selector {
    if (this.peek().kind === 'eof') return ALL;
    const s = this.parseOr();
    const t = this.peek();
    if (t.kind !== 'eof') {
      const hint =
        t.kind === 'rparen'
          ? " (this ')' has no matching '(')"
          : ' (join expressions with && or ||)';
      this.fail(`unexpected ${describe(t)} after a complete expression${hint}`, t.position);
    }
    return s;
  }

  private parseOr(): Selector {
    const operands: Selector[] = [];
    const push = (s: Selector): void => {
      if (s.kind === 'or') operands.push(...s.operands);
      else operands.push(s);
    };
    push(this.parseAnd('at the start of an expression'));
    while (this.peek().kind === 'or') {
      this.next();
      push(this.parseAnd("after '||'"));
    }
    return combine('or', operands);
  }

  private parseAnd(context: string): Selector {
    const operands: Selector[] = [];
    const push = (s: Selector): void => {
      if (s.kind === 'and') operands.push(...s.operands);
      else operands.push(s);
    };
    push(this.parseUnary(context));
    while (this.peek().kind === 'and') {
      this.next();
      push(this.parseUnary("after '&&'"));
    }
    return combine('and', operands);
  }

  private enter(t: Token): void {
    if (++this.depth > MAX_SELECTOR_DEPTH) {
      this.fail(
        `selector nested too deeply (more than ${MAX_SELECTOR_DEPTH} levels of '(' and '!')`,
        t.position,
      );
    }
  }

  private parseUnary(context: string): Selector {
    const t = this.peek();
    if (t.kind === 'not') {
      this.next();
      this.enter(t);
      const operand = this.parseUnary("after '!'");
      this.depth--;
      return Object.freeze({ kind: 'not', operand });
    }
    return this.parsePrimary(context);
  }

  private parsePrimary(context: string): Selector {
    const t = this.peek();
    switch (t.kind) {
      case 'lparen': {
        this.next();
        this.enter(t);
        if (this.peek().kind === 'rparen')
          this.fail("empty parentheses '()'", this.peek().position);
        const inner = this.parseOr();
        const close = this.peek();
        if (close.kind !== 'rparen') {
          this.fail(
            `expected ')' to close the '(' at offset ${t.position} but found ${describe(close)}`,
            close.position,
          );
        }
        this.next();
        this.depth--;
        return inner;
      }
      case 'word':
        return this.parseWord();
      case 'eof':
        return this.fail(
          `expected an expression ${context} but reached the end of the selector`,
          t.position,
        );
      case 'string':
        return this.fail(
          `expected an expression ${context} but found ${describe(t)}; a string must follow a label key and an operator`,
          t.position,
        );
      case 'rparen':
      case 'lbrace':
      case 'rbrace':
      case 'comma':
      case 'and':
      case 'or':
      case 'not':
      case 'eq':
      case 'neq':
        return this.fail(`expected an expression ${context} but found ${describe(t)}`, t.position);
    }
  }

  private parseKey(t: Token): string {
    const problem = labelKeyProblem(t.text);
    if (problem !== undefined) this.fail(`invalid label key '${t.text}': ${problem}`, t.position);
    return t.text;
  }

  private parseWord(): Selector {
    const word = this.next();
    if (this.peek().kind === 'lparen') {
      switch (word.text) {
        case 'has': {
          this.next();
          const keyTok = this.expect('word', 'a label key', "inside 'has('");
          const key = this.parseKey(keyTok);
          this.expect('rparen', "')'", `after 'has(${key}'`);
          return Object.freeze({ kind: 'has', key });
        }
        case 'all':
        case 'global': {
          this.next();
          this.expect('rparen', "')'", `after '${word.text}(' (it takes no arguments)`);
          return Object.freeze({ kind: word.text === 'all' ? 'all' : 'global' });
        }
        default:
          this.fail(`unknown function '${word.text}' (known: has, all, global)`, word.position);
      }
    }
    const key = this.parseKey(word);
    const op = this.peek();
    const after = `after '${key}'`;
    switch (op.kind) {
      case 'eq':
      case 'neq': {
        this.next();
        const v = this.expect('string', 'a quoted string', `after '${op.text}'`);
        return Object.freeze({ kind: op.kind, key, value: v.text });
      }
      case 'word':
        break;
      case 'eof':
        this.fail(
          `expected an operator (${OPERATORS}) ${after} but reached the end of the selector`,
          op.position,
        );
        break;
      case 'string':
      case 'lparen':
      case 'rparen':
      case 'lbrace':
      case 'rbrace':
      case 'comma':
      case 'and':
      case 'or':
      case 'not':
        this.fail(
          `expected an operator (${OPERATORS}) ${after} but found ${describe(op)}`,
          op.position,
        );
    }
    this.next();
    switch (op.text) {
      case 'in':
        return Object.freeze({ kind: 'in', key, values: this.parseSet("after 'in'") });
      case 'not': {
        this.expectWord('in', "after 'not'");
        return Object.freeze({ kind: 'notIn', key, values: this.parseSet("after 'not in'") });
      }
      case 'contains':
        return Object.freeze({
          kind: 'contains',
          key,
          value: this.parseString("after 'contains'"),
        });
      case 'starts':
        this.expectWord('with', "after 'starts'");
        return Object.freeze({
          kind: 'startsWith',
          key,
          value: this.parseString("after 'starts with'"),
        });
      case 'ends':
        this.expectWord('with', "after 'ends'");
        return Object.freeze({
          kind: 'endsWith',
          key,
          value: this.parseString("after 'ends with'"),
        });
      default:
        return this.fail(
          `expected an operator (${OPERATORS}) ${after} but found '${op.text}'`,
          op.position,
        );
    }
  }

  private expectWord(text: string, context: string): void {
    const t = this.peek();
    if (!this.isWord(t, text))
      this.fail(`expected '${text}' ${context} but found ${describe(t)}`, t.position);
    this.next();
  }

  private parseString(context: string): string {
    return this.expect('string', 'a quoted string', context).text;
  }

  private parseSet(context: string): readonly string[] {
    this.expect('lbrace', "'{'", context);
    const values = new Set<string>();
    if (this.peek().kind === 'rbrace') {
      this.next();
      return Object.freeze([]);
    }
    for (;;) {
      values.add(this.expect('string', 'a quoted string', 'in the set').text);
      const t = this.next();
      if (t.kind === 'rbrace') break;
      if (t.kind !== 'comma') {
        this.fail(`expected ',' or '}' in the set but found ${describe(t)}`, t.position);
      }
    }
    return Object.freeze([...values].sort());
  }
}

function combine(kind: 'and' | 'or', operands: Selector[]): Selector {
  const [first, second, ...rest] = operands;
  if (first === undefined) throw new Error('combine without operands');
  if (second === undefined) return first;
  return Object.freeze({ kind, operands: Object.freeze<BoolOperands>([first, second, ...rest]) });
}

type BoolOperands = readonly [Selector, Selector, ...Selector[]];

/** Parses selector text. Never throws: malformed or hostile input yields an error with a position. */
export function parseSelector(text: string): ParseSelectorResult {
  if (typeof text !== 'string') {
    return { ok: false, error: { message: 'a selector must be a string', position: 0 } };
  }
  if (text.length > MAX_SELECTOR_LENGTH) {
    return {
      ok: false,
      error: {
        message: `selector is ${text.length} characters long; the limit is ${MAX_SELECTOR_LENGTH}`,
        position: MAX_SELECTOR_LENGTH,
      },
    };
  }
  const tokens = tokenize(text);
  if (!tokens.ok) return tokens;
  try {
    return { ok: true, selector: new Parser(tokens.tokens).parseSelector() };
  } catch (e) {
    if (e instanceof ParseFailure) return { ok: false, error: e.error };
    throw e;
  }
}
